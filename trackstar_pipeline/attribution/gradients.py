"""Per-example loss gradients of a causal LM, optimizer-corrected and projected, via hooks.

One forward and one backward per batch. Parameters are frozen for the duration (requires_grad off)
and the output of each hooked module whose input needs no gradient (the first layer's q/k/v and
gate/up, the embedding) is made to require grad, so backward computes the activation gradients
the hooks read and nothing else: no weight gradients, and none below the first hooked modules.
A forward hook on each hooked module projects its input activations (B, T, in) -> (B, T, k_in),
one matmul for all modules that read the same input (q/k/v, gate/up), padding zeroed after
projection; a tensor hook on its output projects the output gradients (B, T, out) -> (B, T, k_out)
and forms the per-example outer product (B, k_out, k_in). Since the loss is a sum of per-example
losses, each example's gradient separates.

Covered: weights of nn.Linear and transformers' GPT-2 Conv1D (weight stored in x out) whose names
match settings.target_modules, the output head when include_lm_head, the input embedding when
include_embedding. Not covered: biases, norms and position embeddings. A weight shared by two
modules (GPT-2's tied wte/lm_head) gets one block per role, each with its own projection; both
roles use the shared parameter's optimizer state.

Vectors of projection_dim == 0 are exact flattened gradients in module (out, in) layout (a Conv1D or
embedding weight is transposed relative to its stored parameter).

Precision (settings.precision, resolved by attribution/precision.py): under bfloat16 the forward runs
under torch.autocast (backward outside it, as torch recommends), so the output gradients are bfloat16,
and the hooks project activations and output gradients with bfloat16 copies of P_in and P_out; the
projected factors are upcast before the per-example combine, which sums over tokens in float32, and
the stored vectors are float32. The exact paths (projection_dim 0, optimizer_correction exact) always
run in float32: they are what the exactness tests compare, and half precision buys them nothing.
"""

from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trackstar_pipeline.attribution.examples import TokenizedExample
from trackstar_pipeline.attribution.optimizer_state import SecondMoments, module_dense, module_factors
from trackstar_pipeline.attribution.precision import autocast, autocast_dtype
from trackstar_pipeline.attribution.projection import ModuleProjector, split_dim
from trackstar_pipeline.settings import AttributionSettings


@dataclass(frozen=True)
class HookedModule:
    """A module whose weight gradient we collect, with its (out, in) sizes and weight's name."""

    name: str
    module: nn.Module
    kind: str  # "linear", "conv1d" or "embedding"
    out_features: int
    in_features: int
    parameter_name: str

    @property
    def transposed(self) -> bool:
        """Whether the stored weight is (in, out) rather than (out, in)."""
        return self.kind != "linear"


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "weight")


def hooked_modules(model: nn.Module, settings: AttributionSettings) -> list[HookedModule]:
    """The modules whose weight gradients make up the vector, in model order."""
    parameter_names: dict[int, str] = {}
    for name, parameter in model.named_parameters():
        parameter_names.setdefault(id(parameter), name)
    embedding = model.get_input_embeddings()
    head = model.get_output_embeddings()
    found = []
    for name, module in model.named_modules():
        if module is embedding:
            if settings.include_embedding:
                vocab, hidden = module.weight.shape
                found.append(HookedModule(name, module, "embedding", hidden, vocab, parameter_names[id(module.weight)]))
            continue
        if module is head and not settings.include_lm_head:
            continue
        if module is not head and not any(fnmatch.fnmatchcase(name, glob) for glob in settings.target_modules):
            continue
        if isinstance(module, nn.Linear):
            out_features, in_features = module.weight.shape
            found.append(HookedModule(name, module, "linear", out_features, in_features,
                                      parameter_names[id(module.weight)]))
        elif _is_conv1d(module):
            in_features, out_features = module.weight.shape
            found.append(HookedModule(name, module, "conv1d", out_features, in_features,
                                      parameter_names[id(module.weight)]))
    if not found:
        raise ValueError(
            f"no nn.Linear/Conv1D module matches target_modules={list(settings.target_modules)}; "
            "check the globs against model.named_modules()"
        )
    return found


def gradient_dim(model: nn.Module, settings: AttributionSettings) -> int:
    """Length of each gradient vector: projection_dim, or the hooked weight count when it is 0."""
    if settings.projection_dim > 0:
        return settings.projection_dim
    return sum(spec.out_features * spec.in_features for spec in hooked_modules(model, settings))


def module_dims(model: nn.Module, settings: AttributionSettings) -> list[int]:
    """Length of each hooked module's slice of the gradient vector, in vector order (the curvature's blocks)."""
    specs = hooked_modules(model, settings)
    if settings.projection_dim > 0:
        return split_dim(settings.projection_dim, len(specs))
    return [spec.out_features * spec.in_features for spec in specs]


@dataclass
class _ModulePlan:
    """What the hooks of one module do: its projector (folded or not) and exact-path correction."""

    spec: HookedModule
    projector: ModuleProjector | None  # None: exact flattened gradient (projection_dim 0)
    exact: bool  # form G (B, out, in) in the hook (projection_dim 0 or exact correction)
    out_scale: torch.Tensor | None = None  # (out,) factored 1/sqrt(V) on the exact path
    in_scale: torch.Tensor | None = None  # (in,)
    inverse_sqrt_v: torch.Tensor | None = None  # (out, in) exact 1/sqrt(V + eps)

    def input_projection(self, activations: torch.Tensor) -> torch.Tensor:
        """What the forward hook keeps: projected (B, T, k_in) or raw (B, T, in) activations."""
        if self.spec.kind == "embedding":
            if self.exact:
                return F.one_hot(activations, self.spec.in_features).float()  # (B, T, vocab)
            return self.projector.p_in[activations].float()  # (B, T, k_in): row gather by token id
        if self.exact:
            return activations.float()  # (B, T, in)
        return (activations.to(self.projector.p_in.dtype) @ self.projector.p_in).float()  # (B, T, k_in)

    def example_vectors(self, kept: torch.Tensor, out_grads: torch.Tensor) -> torch.Tensor:
        """Per-example vectors (B, d_m) from kept activations and output gradients (B, T, out)."""
        if not self.exact:
            p_out = self.projector.p_out  # (out, k_out) in the projection dtype
            return self.projector.combine((out_grads.to(p_out.dtype) @ p_out).float(), kept)  # (B, d_m)
        out_grads = out_grads.float()  # (B, T, out)
        if self.out_scale is not None and self.inverse_sqrt_v is None:
            # a separable 1/sqrt(V) scales the factors, not the (B, out, in) product: the same G, two fewer full passes
            out_grads, kept = out_grads * self.out_scale, kept * self.in_scale  # (B, T, out), (B, T, in)
        full = torch.einsum("bto,bti->boi", out_grads, kept)  # (B, out, in)
        if self.inverse_sqrt_v is not None:
            full = full * self.inverse_sqrt_v  # (B, out, in)
        return full.flatten(1) if self.projector is None else self.projector.project_full(full)


def build_plans(specs: list[HookedModule], settings: AttributionSettings, second_moments: SecondMoments | None,
                device: torch.device, dtype: torch.dtype = torch.float32) -> list[_ModulePlan]:
    """Projection matrices per module with the optimizer correction folded in (or kept exact), in `dtype`
    on the projected path (folded in float32 first) and float32 on the exact one."""
    correction = settings.optimizer_correction if second_moments is not None else "none"
    dims = split_dim(settings.projection_dim, len(specs)) if settings.projection_dim > 0 else [0] * len(specs)
    plans = []
    for spec, dim in zip(specs, dims):
        projector = None
        if dim > 0:
            projector = ModuleProjector.create(spec.name, spec.out_features, spec.in_features, dim,
                                               settings.projection_seed, settings.projection_kind)
        exact = projector is None or correction == "exact"
        plan = _ModulePlan(spec, projector, exact)
        if correction == "exact":
            dense = module_dense(second_moments.get(spec.parameter_name), spec.transposed)  # (out, in)
            plan.inverse_sqrt_v = (dense + settings.optimizer_epsilon).rsqrt().to(device)
        elif correction == "factored":
            out_scale, in_scale = module_factors(second_moments.get(spec.parameter_name), spec.transposed,
                                                 settings.optimizer_epsilon)
            if exact:
                plan.out_scale, plan.in_scale = out_scale.to(device), in_scale.to(device)
            else:
                projector = projector.folded(out_scale, in_scale)
        plan.projector = None if projector is None else projector.to(device, torch.float32 if exact else dtype)
        plans.append(plan)
    return plans


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Turn off weight gradients (and dropout) for the duration, restoring both afterwards."""
    saved = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    was_training = model.training
    for parameter, _ in saved:
        parameter.requires_grad_(False)
    model.eval()
    try:
        yield
    finally:
        for parameter, flag in saved:
            parameter.requires_grad_(flag)
        model.train(was_training)


class _SharedInputProjection:
    """Projects the inputs of consecutive modules that read the same tensor with one matmul.

    q/k/v (and gate/up) read the same hidden states: instead of one (B, T, in) x (in, k_in) matmul
    per module, their P_in are concatenated and the input is projected once. A forward hook queues
    its module while the input is the one already queued; the queue is projected when a module with
    another input arrives or when a backward hook needs a result, so no raw activation outlives the
    next hooked module.
    """

    def __init__(self, plans: list[_ModulePlan]):
        self.plans = plans
        self.mask: torch.Tensor | None = None  # (B, T, 1) 1 on real tokens; None when nothing is padded
        self._input: torch.Tensor | None = None  # (B, T, in), the queued modules' shared input
        self._version = -1
        self._queue: list[tuple[int, list[torch.Tensor]]] = []  # (plan index, slot the result goes into)
        self._matrices: dict[tuple[int, ...], tuple[torch.Tensor, list[int]]] = {}

    def groups(self) -> list[tuple[str, ...]]:
        """Module names projected together so far, one tuple per shared input (for tests and profiling)."""
        return [tuple(self.plans[index].spec.name for index in key) for key in self._matrices]

    def start_batch(self, mask: torch.Tensor | None) -> None:
        """A new batch: its padding mask (B, T, 1) or None, and nothing queued from an aborted one."""
        self.mask, self._queue, self._input = mask, [], None

    def enqueue(self, index: int, activations: torch.Tensor) -> list[torch.Tensor]:
        """Queue plan `index` on its input; the returned slot holds its (B, T, k_in) once projected."""
        if self._queue and (activations is not self._input or activations._version != self._version):
            self.flush()
        self._input, self._version = activations, activations._version
        slot: list[torch.Tensor] = []
        self._queue.append((index, slot))
        return slot

    def flush(self) -> None:
        """Project the queued modules' shared input with their concatenated P_in."""
        if not self._queue:
            return
        key = tuple(index for index, _ in self._queue)
        if key not in self._matrices:
            projectors = [self.plans[index].projector for index in key]
            self._matrices[key] = (torch.cat([projector.p_in for projector in projectors], dim=1),  # (in, sum k_in)
                                   [projector.p_in.shape[1] for projector in projectors])
        matrix, sizes = self._matrices[key]
        projected = (self._input.detach().to(matrix.dtype) @ matrix).float()  # (B, T, sum k_in), summed in float32 later
        if self.mask is not None:
            projected = projected * self.mask  # (B, T, sum k_in), padding zeroed
        for (_, slot), part in zip(self._queue, projected.split(sizes, dim=-1)):
            slot.append(part)  # (B, T, k_in)
        self._queue, self._input = [], None


class _HookSet:
    """Registers the hooks of one collection and gathers per-module vectors of the current batch."""

    def __init__(self, model: nn.Module, plans: list[_ModulePlan]):
        self.plans = plans
        self.inputs = _SharedInputProjection(plans)
        self.vectors: dict[str, torch.Tensor] = {}
        self.handles = []
        for index, plan in enumerate(plans):
            self.handles.append(plan.spec.module.register_forward_hook(self._forward_hook(index, plan)))

    def start_batch(self, attention: torch.Tensor) -> None:
        """The batch's attention mask (B, T); padded positions are zeroed in what the hooks keep."""
        self.inputs.start_batch(None if bool(attention.all()) else attention[:, :, None].float())  # (B, T, 1)

    def _forward_hook(self, index: int, plan: _ModulePlan) -> Callable:
        shared = not plan.exact and plan.spec.kind != "embedding"

        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            if not output.requires_grad:
                output.requires_grad_(True)  # a root of the activation-only backward graph
            if shared:
                slot = self.inputs.enqueue(index, inputs[0])
            else:
                activations = inputs[0].detach()
                if plan.spec.kind != "embedding" and self.inputs.mask is not None:
                    activations = activations * self.inputs.mask.to(activations.dtype)  # (B, T, in), padding zeroed
                slot = [plan.input_projection(activations)]  # (B, T, k_in) or (B, T, in)

            def backward_hook(out_grads: torch.Tensor) -> None:
                if not slot:
                    self.inputs.flush()
                vectors = plan.example_vectors(slot[0], out_grads)  # (B, d_m)
                previous = self.vectors.get(plan.spec.name)
                self.vectors[plan.spec.name] = vectors if previous is None else previous + vectors

            output.register_hook(backward_hook)

        return hook

    def take(self) -> torch.Tensor:
        """The batch's vectors, modules concatenated in model order: (B, d)."""
        self.inputs.flush()
        missing = [plan.spec.name for plan in self.plans if plan.spec.name not in self.vectors]
        if missing:
            raise RuntimeError(f"modules {missing} received no gradient; are they used in the forward pass?")
        stacked = torch.cat([self.vectors[plan.spec.name] for plan in self.plans], dim=1)  # (B, d)
        self.vectors = {}
        return stacked

    def remove(self) -> None:
        """Detach every hook from the model."""
        for handle in self.handles:
            handle.remove()


def pad_batch(examples: Sequence[TokenizedExample], pad_id: int,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T), attention mask (B, T) and loss-target mask (B, T-1): one batch layout for every forward."""
    length = max(len(example.input_ids) for example in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), length), dtype=torch.long)
    targets = torch.zeros((len(examples), length - 1), dtype=torch.bool)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        attention[row, :n] = 1
        targets[row, max(example.loss_start, 1) - 1: n - 1] = True  # target at t is predicted from t-1
    return ids.to(device), attention.to(device), targets.to(device)


def example_losses(model: nn.Module, ids: torch.Tensor, attention: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed token cross-entropy per example over its target positions: (B,)."""
    logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits  # (B, T, V)
    flat = logits[:, :-1].reshape(-1, logits.shape[-1]).float()  # (B * (T-1), V), contiguous for a fast softmax
    token_losses = F.cross_entropy(flat, ids[:, 1:].reshape(-1), reduction="none").view(targets.shape)  # (B, T-1)
    return (token_losses * targets).sum(dim=1)  # (B,)


def model_device(model: nn.Module) -> torch.device:
    """Where the model's weights are (batches are built there)."""
    return next(model.parameters()).device


def model_pad_id(model: nn.Module) -> int:
    """The id padded positions get: the config's pad_token_id, else 0 (padding is masked, so any id works)."""
    return getattr(getattr(model, "config", None), "pad_token_id", None) or 0


def collection_dtype(settings: AttributionSettings, second_moments: SecondMoments | None,
                     device: torch.device) -> torch.dtype | None:
    """Autocast dtype of a collection on `device`: the precision setting's, or None (float32) on the exact paths."""
    exact_correction = settings.optimizer_correction == "exact" and second_moments is not None
    if settings.projection_dim == 0 or exact_correction:
        return None
    return autocast_dtype(settings.precision, device)


def collect_gradients(model: nn.Module, examples: Sequence[TokenizedExample], settings: AttributionSettings,
                      second_moments: SecondMoments | None = None, device: torch.device | None = None,
                      progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Per-example corrected, projected loss gradients (N, d) float32 on CPU, in input order.

    settings.precision picks the forward's autocast dtype (bfloat16 on hardware with fast bfloat16 by
    default); projection_dim 0 and optimizer_correction 'exact' always run in float32 (module docstring).

    device: where to compute (default: where the model is). A model elsewhere is moved there for the
    call and moved back afterwards, even on error, so the caller's model stays where it was; load it
    on the device once (load_model(..., device=)) to avoid the two copies per call.
    """
    home = model_device(model)
    device = device or home
    if home != device:
        model.to(device)
    try:
        return _collect_on_device(model, examples, settings, second_moments, device, progress)
    finally:
        if home != device:
            model.to(home)


def _collect_on_device(model: nn.Module, examples: Sequence[TokenizedExample], settings: AttributionSettings,
                       second_moments: SecondMoments | None, device: torch.device,
                       progress: Callable[[int, int], None] | None) -> torch.Tensor:
    """collect_gradients' loop, with the model already on `device`."""
    specs = hooked_modules(model, settings)
    dtype = collection_dtype(settings, second_moments, device)
    plans = build_plans(specs, settings, second_moments, device, dtype or torch.float32)
    pad_id = model_pad_id(model)
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))  # similar lengths together
    dim = gradient_dim(model, settings)
    result = torch.zeros((len(examples), dim), dtype=torch.float32)  # (N, d)
    with frozen_parameters(model):
        hooks = _HookSet(model, plans)
        try:
            for start in range(0, len(order), settings.batch_size):
                rows = order[start: start + settings.batch_size]
                ids, attention, targets = pad_batch([examples[i] for i in rows], pad_id, device)
                hooks.start_batch(attention)
                with autocast(device, dtype):
                    losses = example_losses(model, ids, attention, targets)  # (B,) float32
                losses.sum().backward()
                result[torch.tensor(rows)] = hooks.take().cpu()
                if progress is not None:
                    progress(min(start + settings.batch_size, len(order)), len(order))
        finally:
            hooks.remove()
    return result
