"""Tail-patch: does training on a proponent actually raise the model's probability of the answer?

From the final checkpoint and optimizer state, take one optimizer step at the final learning rate
on one proponent, measure the change in p(completion | prompt) of the queries it was retrieved for,
then restore weights and optimizer state exactly. This is the TrackStar paper's influence metric:
it rewards proponents that move the model, whether or not they state the fact.

Efficiency: the original weights and optimizer state are cloned once and restored with `copy_`
(no reload from disk); each distinct proponent is stepped on once and every query that retrieved
it (under any method) is measured in one batched forward pass. The proponents' gradients, the
bulk of a step, are computed for a group of proponents at once (torch.func: vmap of grad over the
group, each example alone, so the same numbers as a batch of one); the optimizer step itself stays
the pretraining optimizer's own, one proponent at a time. `TailPatcher.step_on` is the one-step
definition the batched path is tested against.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from trackstar_pipeline.attribution.examples import TokenizedExample
from trackstar_pipeline.attribution.gradients import example_losses, model_device, model_pad_id, pad_batch
from trackstar_pipeline.settings import TrainingSettings
from trackstar_pipeline.training.pretrain import OPTIMIZER_FILE, TRAINING_STATE_FILE
from trackstar_pipeline.training.pretrain import build_optimizer as pretraining_optimizer

OptimizerKind = Literal["adafactor", "adamw"]


@dataclass(frozen=True)
class TailPatchSetup:
    """How to replay one more pretraining step: optimizer class, its state and the final lr."""

    optimizer_kind: OptimizerKind
    optimizer_state: dict[str, Any]
    """torch `optimizer.state_dict()` over `model.parameters()` in order (pretrain's optimizer.pt)."""
    learning_rate: float
    max_grad_norm: float = 0.0
    """Gradient-norm clip applied before the step, as in pretraining; 0 disables it."""


@dataclass(frozen=True)
class TailPatchEffect:
    """Change in one query's completion probability after one step on one proponent."""

    delta_prob: float
    delta_logprob: float


def load_tailpatch_setup(model_dir: str | Path, optimizer_state_path: str | Path | None = None,
                         max_grad_norm: float | None = None) -> TailPatchSetup:
    """Read pretrain's training_state.json (optimizer kind, final lr) and optimizer.pt.

    max_grad_norm None: training_state.json's 'max_grad_norm', else TrainingSettings' default
    (the clip pretrain applied before every step).
    """
    model_dir = Path(model_dir)
    state_path = model_dir / TRAINING_STATE_FILE
    if not state_path.is_file():
        raise FileNotFoundError(f"{state_path} is missing: tail-patch needs the optimizer kind and final learning "
                                "rate written by `pretrain`; bring a model trained by this pipeline or skip tail-patch")
    training_state = json.loads(state_path.read_text())
    kind = training_state.get("optimizer")
    if kind not in ("adafactor", "adamw"):
        raise ValueError(f"{state_path}: 'optimizer' is {kind!r}; tail-patch supports 'adafactor' and 'adamw'")
    optimizer_path = Path(optimizer_state_path) if optimizer_state_path else model_dir / OPTIMIZER_FILE
    if not optimizer_path.is_file():
        raise FileNotFoundError(f"optimizer state {optimizer_path} is missing; pass the optimizer.pt saved by pretrain")
    state = torch.load(optimizer_path, map_location="cpu", weights_only=False)
    if max_grad_norm is None:
        max_grad_norm = float(training_state.get("max_grad_norm", TrainingSettings().max_grad_norm))
    return TailPatchSetup(kind, state, float(training_state["final_learning_rate"]), max_grad_norm)


def build_optimizer(model: nn.Module, setup: TailPatchSetup) -> torch.optim.Optimizer:
    """The pretraining optimizer class with its saved state loaded and the lr set to the final lr."""
    parameters = list(model.parameters())
    if setup.optimizer_kind not in ("adafactor", "adamw"):
        raise ValueError(f"optimizer_kind must be 'adafactor' or 'adamw', got {setup.optimizer_kind!r}")
    optimizer = pretraining_optimizer(model, TrainingSettings(optimizer=setup.optimizer_kind,
                                                              learning_rate=setup.learning_rate))
    try:
        optimizer.load_state_dict(copy.deepcopy(setup.optimizer_state))
    except (ValueError, KeyError) as error:
        raise ValueError(f"the {setup.optimizer_kind} optimizer state does not fit this model's "
                         f"{len(parameters)} parameters: {error}") from error
    for group in optimizer.param_groups:
        group["lr"] = setup.learning_rate  # one more step at the end of the schedule
        if setup.optimizer_kind == "adafactor":
            group["relative_step"] = False  # the lr above, not Adafactor's own schedule
    return optimizer


class TailPatcher:
    """A model plus optimizer that can take one step on an example and be restored exactly."""

    def __init__(self, model: nn.Module, setup: TailPatchSetup, batch_size: int = 32) -> None:
        self.model = model
        self.setup = setup
        self.batch_size = batch_size
        self.device = model_device(model)
        self.pad_id = model_pad_id(model)
        self.parameters = list(model.parameters())
        self.optimizer = build_optimizer(model, setup)
        self._weights = [parameter.detach().clone() for parameter in self.parameters]
        self._state = {parameter: self._clone_state(self.optimizer.state.get(parameter, {}))
                       for parameter in self.parameters}

    @staticmethod
    def _clone_state(state: Mapping[str, Any]) -> dict[str, Any]:
        return {key: value.detach().clone() if torch.is_tensor(value) else copy.deepcopy(value)
                for key, value in state.items()}

    def restore(self) -> None:
        """Weights and optimizer state back to the snapshot (copy_, no allocation for tensors)."""
        with torch.no_grad():
            for parameter, saved in zip(self.parameters, self._weights):
                parameter.copy_(saved)
                parameter.grad = None
        for parameter in self.parameters:
            saved_state = self._state[parameter]
            if not saved_state:
                self.optimizer.state.pop(parameter, None)
                continue
            live = self.optimizer.state[parameter]
            for key in [key for key in live if key not in saved_state]:
                del live[key]
            for key, value in saved_state.items():
                if torch.is_tensor(value) and torch.is_tensor(live.get(key)) and live[key].shape == value.shape:
                    live[key].copy_(value)
                else:
                    live[key] = value.clone() if torch.is_tensor(value) else copy.deepcopy(value)

    @torch.no_grad()
    def completion_logprobs(self, queries: Sequence[TokenizedExample]) -> torch.Tensor:
        """log p(completion | prompt) per query: (Q,) float64, batched."""
        self.model.eval()
        result = []
        for start in range(0, len(queries), self.batch_size):
            ids, attention, targets = pad_batch(queries[start:start + self.batch_size], self.pad_id, self.device)
            result.append(-example_losses(self.model, ids, attention, targets).double().cpu())  # (B,)
        return torch.cat(result) if result else torch.zeros(0, dtype=torch.float64)

    def gradients(self, examples: Sequence[TokenizedExample]) -> list[torch.Tensor]:
        """Each example's mean-token-loss gradient, per parameter (P, *shape), in self.parameters order.

        One vmapped forward and backward for the group; every example is its own batch of one, right
        padded without an attention mask: in a causal LM the padding after an example's last token
        cannot change its loss, and vmap cannot trace the mask code's data-dependent branches.
        """
        self.model.eval()  # no dropout: the step is deterministic
        ids, _, targets = pad_batch(examples, self.pad_id, self.device)  # (P, T), (P, T-1)
        names = [name for name, _ in self.model.named_parameters()]
        weights = {name: parameter.detach() for name, parameter in self.model.named_parameters()}

        def mean_loss(params: dict[str, torch.Tensor], row: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            logits = functional_call(self.model, params, (row[None],), {"use_cache": False}).logits[0]  # (T, V)
            token_losses = F.cross_entropy(logits[:-1].float(), row[1:], reduction="none")  # (T-1,)
            return (token_losses * mask).sum() / mask.sum().clamp_min(1)

        with warnings.catch_warnings():  # attention's batching rule falls back to a loop: correct, only slower
            warnings.filterwarnings("ignore", message=".*have not yet implemented the batching rule.*")
            grads = vmap(grad(mean_loss), in_dims=(None, 0, 0))(weights, ids, targets)  # name -> (P, *shape)
        return [grads[name] for name in names]

    def step_with(self, gradients: Sequence[torch.Tensor]) -> None:
        """One optimizer step from given gradients (one per parameter), clipped as in pretraining."""
        for parameter, gradient in zip(self.parameters, gradients):
            parameter.grad = gradient  # a row of the group's gradients, used by this step only
        if self.setup.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.setup.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def group_size(self, budget_bytes: int = 512 * 2**20) -> int:
        """Proponents per vmapped gradient group: batch_size, fewer when P x parameters would pass the budget."""
        per_example = sum(parameter.numel() * parameter.element_size() for parameter in self.parameters)
        return max(1, min(self.batch_size, budget_bytes // per_example))

    def step_on(self, example: TokenizedExample) -> None:
        """One optimizer step on one example's mean token loss, as a batch of one in pretraining."""
        self.model.eval()  # no dropout: the step is deterministic
        ids, attention, targets = pad_batch([example], self.pad_id, self.device)
        loss = example_losses(self.model, ids, attention, targets).sum() / targets.sum().clamp_min(1)
        loss.backward()
        if self.setup.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.setup.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def tailpatch_effects(
    model: nn.Module,
    setup: TailPatchSetup,
    proponents: Mapping[str, TokenizedExample],
    queries_of_proponent: Mapping[str, Sequence[str]],
    queries: Mapping[str, TokenizedExample],
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> dict[tuple[str, str], TailPatchEffect]:
    """(proponent id, query id) -> effect of one step on the proponent, for every requested pair.

    Leaves the model exactly as it found it (weights restored; the optimizer is a private copy).
    """
    missing = [pid for pid in queries_of_proponent if pid not in proponents]
    if missing:
        raise KeyError(f"tail-patch: no tokenized example for proponent(s) {missing[:5]}; encode the whole corpus")
    patcher = TailPatcher(model, setup, batch_size)
    query_ids = sorted({qid for qids in queries_of_proponent.values() for qid in qids})
    before = dict(zip(query_ids, patcher.completion_logprobs([queries[qid] for qid in query_ids]).tolist()))
    effects: dict[tuple[str, str], TailPatchEffect] = {}
    work = list(queries_of_proponent.items())
    group = patcher.group_size()
    done = 0
    try:
        for start in range(0, len(work), group):
            chunk = work[start:start + group]
            gradients = patcher.gradients([proponents[proponent_id] for proponent_id, _ in chunk])  # (P, *shape) each
            for row, (proponent_id, targets) in enumerate(chunk):
                targets = list(dict.fromkeys(targets))
                patcher.step_with([gradient[row] for gradient in gradients])
                after = patcher.completion_logprobs([queries[qid] for qid in targets]).tolist()
                patcher.restore()
                for query_id, logprob in zip(targets, after):
                    old = before[query_id]
                    effects[(proponent_id, query_id)] = TailPatchEffect(math.exp(logprob) - math.exp(old),
                                                                        logprob - old)
                done += 1
                if progress is not None:
                    progress(done, len(work))
    finally:
        patcher.restore()
    return effects


def one_step_each_logprob_deltas(patcher: TailPatcher, proponents: Mapping[str, TokenizedExample],
                                 queries_of_proponent: Mapping[str, Sequence[str]],
                                 queries: Mapping[str, TokenizedExample]) -> dict[tuple[str, str], float]:
    """The slow definition tailpatch_effects is tested against: per proponent step_on, measure, restore."""
    deltas = {}
    for proponent_id, query_ids in queries_of_proponent.items():
        before = patcher.completion_logprobs([queries[q] for q in query_ids])  # (Q,)
        patcher.step_on(proponents[proponent_id])
        after = patcher.completion_logprobs([queries[q] for q in query_ids])  # (Q,)
        patcher.restore()
        deltas.update({(proponent_id, q): float(a - b) for q, a, b in zip(query_ids, after, before)})
    return deltas


def proponent_targets(rankings_by_method: Mapping[str, Mapping[str, Sequence[tuple[str, float]]]],
                      k: int) -> dict[str, list[str]]:
    """Proponent id -> query ids it is a top-k proponent of, under any method (the work list)."""
    targets: dict[str, dict[str, None]] = {}
    for rankings in rankings_by_method.values():
        for query_id, ranking in rankings.items():
            for corpus_id, _ in list(ranking)[:k]:
                targets.setdefault(corpus_id, {})[query_id] = None
    return {corpus_id: list(query_ids) for corpus_id, query_ids in targets.items()}


def query_tailpatch(query_id: str, ranking: Sequence[tuple[str, float]],
                    effects: Mapping[tuple[str, str], TailPatchEffect], k: int) -> TailPatchEffect | None:
    """Mean Δp and Δlog p over the measured ones of a query's top-k proponents; None when none was measured."""
    pairs = [effects[(corpus_id, query_id)] for corpus_id, _ in list(ranking)[:k] if (corpus_id, query_id) in effects]
    if not pairs:
        return None
    return TailPatchEffect(sum(effect.delta_prob for effect in pairs) / len(pairs),
                           sum(effect.delta_logprob for effect in pairs) / len(pairs))


def tailpatch_metrics(rankings: Mapping[str, Sequence[tuple[str, float]]],
                      effects: Mapping[tuple[str, str], TailPatchEffect], ks: Sequence[int]) -> dict[str, float | None]:
    """tailpatch@k: mean over queries of the mean Δp over its top-k proponents (also Δlog p)."""
    result: dict[str, float | None] = {}
    for k in ks:
        per_query = [query_tailpatch(query_id, ranking, effects, k) for query_id, ranking in rankings.items()]
        measured = [effect for effect in per_query if effect is not None]
        prob = [effect.delta_prob for effect in measured]
        logprob = [effect.delta_logprob for effect in measured]
        result[f"tailpatch@{k}"] = sum(prob) / len(prob) if prob else None
        result[f"tailpatch_logprob@{k}"] = sum(logprob) / len(logprob) if logprob else None
    return result


@dataclass(frozen=True)
class PairedDifference:
    """One method's tail-patch@k minus another's over the same queries, with its 95% half-width."""

    mean: float
    half_width: float
    queries: int

    @property
    def within_noise(self) -> bool:
        """The sign of the difference is not settled by these queries (the interval holds 0)."""
        return not abs(self.mean) > self.half_width

    def as_record(self) -> dict[str, float | int | None]:
        """As evaluation.json keeps it: JSON has no NaN, so too few queries give nulls."""
        finite = math.isfinite(self.mean)
        return {"mean": self.mean if finite else None, "half_width": self.half_width if finite else None,
                "queries": self.queries}


def paired_tailpatch_difference(rankings: Mapping[str, Sequence[tuple[str, float]]],
                                baseline: Mapping[str, Sequence[tuple[str, float]]],
                                effects: Mapping[tuple[str, str], TailPatchEffect], k: int) -> PairedDifference:
    """tailpatch@k of `rankings` minus `baseline`'s, paired per query, with the 95% half-width of the mean.

    Two methods that share most of their top k differ by far less than either varies across queries,
    so only the paired difference says whether one moves the model more than the other. Counted over
    the queries where each has at least one measured top-k proponent (query_tailpatch); the interval
    is the normal one (1.96 standard errors), fair at the 80-200 tail-patched queries benchmarks use.
    """
    differences = []
    for query_id, ranking in rankings.items():
        ours = query_tailpatch(query_id, ranking, effects, k)
        theirs = query_tailpatch(query_id, baseline[query_id], effects, k) if query_id in baseline else None
        if ours is not None and theirs is not None:
            differences.append(ours.delta_prob - theirs.delta_prob)
    if len(differences) < 2:
        return PairedDifference(float("nan"), float("nan"), len(differences))
    mean = sum(differences) / len(differences)
    variance = sum((difference - mean) ** 2 for difference in differences) / (len(differences) - 1)
    return PairedDifference(mean, 1.96 * math.sqrt(variance / len(differences)), len(differences))


def paired_against(rankings_by_method: Mapping[str, Mapping[str, Sequence[tuple[str, float]]]],
                   effects: Mapping[tuple[str, str], TailPatchEffect], ks: Sequence[int],
                   baseline: str = "trackstar") -> dict[str, dict[str, dict[str, float | int | None]]]:
    """Every other method's tail-patch@k minus the baseline's, paired per query (paired_tailpatch_difference),
    as records: method -> 'tailpatch@k' -> {mean, half_width, queries}. Empty without the baseline; a
    method ranking exactly as the baseline does (the d sweep's entry at the main d) is left out.

    The report shows these beside the plain means because methods' tail-patch figures differ by less
    than one query set's noise more often than not, and a reader should not rank them on that.
    """
    if baseline not in rankings_by_method:
        return {}
    reference = rankings_by_method[baseline]
    return {method: {f"tailpatch@{k}": paired_tailpatch_difference(rankings, reference, effects, k).as_record()
                     for k in ks}
            for method, rankings in rankings_by_method.items() if method != baseline and not _same_order(rankings, reference)}


def _same_order(rankings: Mapping[str, Sequence[tuple[str, float]]],
                reference: Mapping[str, Sequence[tuple[str, float]]]) -> bool:
    """Every query's ranked ids equal (scores may differ): such a method pairs with the baseline at exactly 0."""
    return rankings.keys() == reference.keys() and all(
        [corpus_id for corpus_id, _ in rankings[query_id]] == [corpus_id for corpus_id, _ in reference[query_id]]
        for query_id in rankings)
