"""Second moments V of the optimizer, in the factored form that folds into the projection.

TrackStar divides each gradient elementwise by sqrt(V). For a weight of parameter shape (R, C) we
keep V ~= row_r * col_c (a rank-1 factorisation), which makes 1/sqrt(V) separable:
1/sqrt(V_rc) = rsqrt(row_r) * rsqrt(col_c), so it costs nothing per example.

- transformers' Adafactor stores exp_avg_sq_row (row means of grad^2) and exp_avg_sq_col (column
  means) and preconditions with V = row col^T / mean(row) (its `_approx_sq_grad`); we keep
  row / mean(row) and col.
- Adam/AdamW store the full exp_avg_sq; we bias-correct it (1 / (1 - beta2^step)) when step and
  betas are known, keep it for the exact path, and reduce it to row and column means scaled the same
  way (exact when V has rank 1).

Everything is stored in the parameter's own layout (R, C). A module whose weight is (in, out), such
as GPT-2's Conv1D or an input embedding, transposes at use (see `module_factors`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


class OptimizerStateMismatchError(ValueError):
    """The optimizer state does not belong to this model (parameter count or shapes differ)."""


@dataclass
class ParameterMoments:
    """V of one weight in its parameter layout (R, C): V ~= row[:, None] * col[None, :]."""

    row: torch.Tensor  # (R,)
    col: torch.Tensor  # (C,)
    full: torch.Tensor | None = None  # (R, C): the unfactored V when the optimizer kept one (Adam)

    def dense(self) -> torch.Tensor:
        """V as a full (R, C) matrix: the stored one, else the rank-1 product of the factors."""
        return self.full if self.full is not None else self.row[:, None] * self.col[None, :]  # (R, C)


@dataclass
class SecondMoments:
    """Second moments per parameter name (names as in model.named_parameters())."""

    parameters: dict[str, ParameterMoments]
    source: str = ""

    def get(self, parameter_name: str) -> ParameterMoments:
        """The moments of a hooked parameter, with an error saying what is missing."""
        if parameter_name not in self.parameters:
            raise OptimizerStateMismatchError(
                f"the optimizer state {self.source or ''} has no second moment for parameter '{parameter_name}'; "
                "was it saved for this model, with this parameter trained?"
            )
        return self.parameters[parameter_name]


def module_factors(moments: ParameterMoments, transposed: bool, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out_scale (out,), in_scale (in,)) with 1/sqrt(V_oi) ~= out_scale_o * in_scale_i in module layout."""
    row_scale = (moments.row.float() + epsilon).rsqrt()  # (R,)
    col_scale = (moments.col.float() + epsilon).rsqrt()  # (C,)
    return (col_scale, row_scale) if transposed else (row_scale, col_scale)


def module_dense(moments: ParameterMoments, transposed: bool) -> torch.Tensor:
    """V in module layout (out, in) for the exact elementwise path."""
    dense = moments.dense().float()  # (R, C)
    return dense.T if transposed else dense


def factor_adafactor(row_means: torch.Tensor, col_means: torch.Tensor) -> ParameterMoments:
    """Adafactor's V = row col^T / mean(row), as the factors (row / mean(row), col)."""
    return ParameterMoments(row_means / row_means.mean(), col_means.clone())


def factor_full(second_moment: torch.Tensor) -> ParameterMoments:
    """Reduce a full V to row/column means in Adafactor's form (exact for rank-1 V); keep V itself."""
    row = second_moment.mean(dim=1)  # (R,)
    col = second_moment.mean(dim=0)  # (C,)
    return ParameterMoments(row / row.mean(), col, full=second_moment)


def _check_shape(name: str, what: str, got: tuple[int, ...], expected: tuple[int, ...], source: str) -> None:
    if tuple(got) != tuple(expected):
        raise OptimizerStateMismatchError(
            f"{source}: {what} for parameter '{name}' has shape {tuple(got)} but the model's parameter needs "
            f"{tuple(expected)}; was this optimizer state saved for a different model?"
        )


def _moments_from_state(name: str, parameter: torch.Tensor, state: dict, bias_correction: float,
                        source: str) -> ParameterMoments | None:
    """One parameter's moments from its optimizer-state entries, checked against its shape."""
    shape = tuple(parameter.shape)
    if "exp_avg_sq_row" in state and "exp_avg_sq_col" in state:
        row, col = state["exp_avg_sq_row"].float(), state["exp_avg_sq_col"].float()
        _check_shape(name, "exp_avg_sq_row", tuple(row.shape), shape[:-1], source)
        _check_shape(name, "exp_avg_sq_col", tuple(col.shape), shape[:-2] + shape[-1:], source)
        return factor_adafactor(row, col) if len(shape) == 2 else None
    if "exp_avg_sq" in state:
        full = state["exp_avg_sq"].float()
        _check_shape(name, "exp_avg_sq", tuple(full.shape), shape, source)
        return factor_full(full * bias_correction) if len(shape) == 2 else None
    return None


def _bias_correction(state: dict, group: dict) -> float:
    """Adam's 1 / (1 - beta2^step) when the state has a step and the group has betas, else 1."""
    betas, step = group.get("betas"), state.get("step")
    if betas is None or step is None:
        return 1.0
    step = float(step.item() if isinstance(step, torch.Tensor) else step)
    return 1.0 / (1.0 - float(betas[1]) ** step) if step > 0 else 1.0


def _load_torch_state(path: Path, model: nn.Module) -> SecondMoments:
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
        raise OptimizerStateMismatchError(
            f"{path}: not an optimizer state_dict (expected keys 'state' and 'param_groups', as written by "
            "torch.save(optimizer.state_dict()))"
        )
    named = list(model.named_parameters())
    indexed = [(index, group) for group in state_dict["param_groups"] for index in group["params"]]
    if len(indexed) != len(named):
        raise OptimizerStateMismatchError(
            f"{path}: the optimizer state covers {len(indexed)} parameters but the model has {len(named)}; "
            "the state must come from an optimizer built over model.parameters() of this model"
        )
    moments = {}
    for position, (index, group) in enumerate(indexed):
        name, parameter = named[position]
        state = state_dict["state"].get(index, {})
        found = _moments_from_state(name, parameter, state, _bias_correction(state, group), str(path))
        if found is not None:
            moments[name] = found
    return SecondMoments(moments, source=str(path))


def _load_safetensors_state(path: Path, model: nn.Module) -> SecondMoments:
    from safetensors import safe_open

    parameters = dict(model.named_parameters())
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        for key in handle.keys():
            name, _, field = key.rpartition(".")
            if field not in ("exp_avg_sq", "exp_avg_sq_row", "exp_avg_sq_col"):
                raise OptimizerStateMismatchError(
                    f"{path}: key '{key}' is not '<parameter>.exp_avg_sq', '.exp_avg_sq_row' or '.exp_avg_sq_col'"
                )
            if name not in parameters:
                raise OptimizerStateMismatchError(f"{path}: key '{key}' names no parameter of the model")
            grouped.setdefault(name, {})[field] = handle.get_tensor(key)
    correction = 1.0
    if "step" in metadata and "beta2" in metadata:
        correction = _bias_correction({"step": float(metadata["step"])}, {"betas": (0.0, float(metadata["beta2"]))})
    moments = {}
    for name, state in grouped.items():
        found = _moments_from_state(name, parameters[name], state, correction, str(path))
        if found is not None:
            moments[name] = found
    return SecondMoments(moments, source=str(path))


def load_second_moments(path: str | Path, model: nn.Module) -> SecondMoments:
    """Read V from optimizer.pt (HF Trainer format) or a safetensors file keyed by parameter name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"optimizer state file {path} does not exist")
    if path.suffix == ".safetensors":
        return _load_safetensors_state(path, model)
    return _load_torch_state(path, model)
