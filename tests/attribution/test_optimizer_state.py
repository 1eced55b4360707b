"""Loading second moments and folding Adafactor's factored 1/sqrt(V) into the projection."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from attribution_helpers import (adafactor, adamw, make_tokenizer, query_examples, relative_error,
                                 saved_optimizer_state, tiny_gpt2, tiny_llama)
from trackstar_pipeline.attribution.gradients import collect_gradients
from trackstar_pipeline.attribution.optimizer_state import (OptimizerStateMismatchError, factor_full,
                                                            load_second_moments)
from trackstar_pipeline.settings import AttributionSettings


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
@pytest.mark.parametrize("dim", [0, 1500])
def test_adafactor_folding_equals_elementwise_division(build, dim, tmp_path):
    tokenizer = make_tokenizer(build is tiny_llama)
    model = build(len(tokenizer))
    _, path = saved_optimizer_state(model, tokenizer, adafactor, tmp_path)
    moments = load_second_moments(path, model)
    examples = query_examples(tokenizer)
    folded = collect_gradients(model, examples, AttributionSettings(projection_dim=dim, precision="float32"), moments)
    exact = collect_gradients(model, examples, AttributionSettings(projection_dim=dim, optimizer_correction="exact"),
                              moments)
    plain = collect_gradients(model, examples, AttributionSettings(projection_dim=dim), None)
    assert relative_error(folded, exact) < 1e-5
    assert relative_error(folded, plain) > 0.1  # the correction really changed the vectors


def test_adam_reduction_is_exact_for_rank_one_v():
    row, col = torch.rand(5) + 0.1, torch.rand(7) + 0.1
    v = row[:, None] * col[None, :]  # (5, 7) rank 1
    moments = factor_full(v)
    assert torch.allclose(moments.row[:, None] * moments.col[None, :], v, rtol=1e-6)


def test_adamw_state_is_bias_corrected_and_safetensors_agrees(tmp_path):
    tokenizer = make_tokenizer(True)
    model = tiny_llama(len(tokenizer))
    optimizer, path = saved_optimizer_state(model, tokenizer, adamw, tmp_path, steps=2)
    from_pt = load_second_moments(path, model)
    name = "model.layers.0.mlp.up_proj.weight"
    raw = optimizer.state[model.get_parameter(name)]["exp_avg_sq"]
    assert torch.allclose(from_pt.get(name).full, raw / (1 - 0.95 ** 2))
    tensors = {f"{n}.exp_avg_sq": optimizer.state[p]["exp_avg_sq"] for n, p in model.named_parameters()}
    save_file(tensors, tmp_path / "moments.safetensors", metadata={"step": "2", "beta2": "0.95"})
    from_st = load_second_moments(tmp_path / "moments.safetensors", model)
    assert torch.allclose(from_st.get(name).full, from_pt.get(name).full)


def test_parameter_count_mismatch_names_both_counts(tmp_path):
    tokenizer = make_tokenizer(True)
    other = tiny_llama(len(tokenizer))
    other.model.layers = other.model.layers[:1]  # one layer fewer
    saved_optimizer_state(other, tokenizer, adafactor, tmp_path, steps=1)
    with pytest.raises(OptimizerStateMismatchError, match=r"covers 12 parameters but the model has 21"):
        load_second_moments(tmp_path / "optimizer.pt", tiny_llama(len(tokenizer)))


def test_shape_mismatch_names_the_parameter_and_shapes(tmp_path):
    tokenizer = make_tokenizer(True)
    other = tiny_llama(len(tokenizer), hidden=48)
    saved_optimizer_state(other, tokenizer, adamw, tmp_path, steps=1)
    with pytest.raises(OptimizerStateMismatchError, match=r"'model.embed_tokens.weight' has shape \(300, 48\).*\(300, 32\)"):
        load_second_moments(tmp_path / "optimizer.pt", tiny_llama(len(tokenizer)))
    save_file({"model.layers.0.mlp.up_proj.weight.exp_avg_sq_row": torch.ones(3),
               "model.layers.0.mlp.up_proj.weight.exp_avg_sq_col": torch.ones(32)}, tmp_path / "bad.safetensors")
    with pytest.raises(OptimizerStateMismatchError, match=r"up_proj.weight' has shape \(3,\) .*\(64,\)"):
        load_second_moments(tmp_path / "bad.safetensors", tiny_llama(len(tokenizer)))
    save_file({"nope.exp_avg_sq": torch.ones(3)}, tmp_path / "unknown.safetensors")
    with pytest.raises(OptimizerStateMismatchError, match="'nope.exp_avg_sq' names no parameter"):
        load_second_moments(tmp_path / "unknown.safetensors", tiny_llama(len(tokenizer)))
