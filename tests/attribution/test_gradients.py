"""Hook-projected per-example gradients against the slow exact reference (one backward per example)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from attribution_helpers import (adafactor, adamw, exact_gradients, make_tokenizer, query_examples,
                                 reference_second_moment, relative_error, saved_optimizer_state, tiny_gpt2, tiny_llama,
                                 tiny_neox)
from trackstar_pipeline.attribution.gradients import (_HookSet, build_plans, collect_gradients, example_losses,
                                                     gradient_dim, hooked_modules, model_pad_id, pad_batch)
from trackstar_pipeline.attribution.optimizer_state import load_second_moments
from trackstar_pipeline.settings import AttributionSettings

FAMILIES = {"llama": (tiny_llama, True), "gpt2": (tiny_gpt2, False), "neox": (tiny_neox, False)}


def _projected_reference(model, examples, settings, state_dict=None) -> torch.Tensor:
    specs = hooked_modules(model, settings)
    plans = build_plans(specs, settings, None, torch.device("cpu"))  # unfolded P
    rows = []
    for grads in exact_gradients(model, examples, specs):
        parts = []
        for plan, spec, grad in zip(plans, specs, grads):
            if state_dict is not None:
                grad = grad / (reference_second_moment(state_dict, model, spec) + settings.optimizer_epsilon).sqrt()
            parts.append(grad.flatten() if plan.projector is None else plan.projector.project_full(grad[None])[0])
        rows.append(torch.cat(parts))
    return torch.stack(rows)  # (N, d)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("optimizer", ["adafactor", "adamw", None])
def test_projected_hooks_equal_projection_of_exact_corrected_gradients(family, optimizer, tmp_path):
    build, with_bos = FAMILIES[family]
    tokenizer = make_tokenizer(with_bos)
    model = build(len(tokenizer))
    settings = AttributionSettings(projection_dim=1000, batch_size=3,  # 5 mixed lengths: padded batches
                                   optimizer_correction="factored" if optimizer == "adafactor" else "exact",
                                   precision="float32")  # exactness is a float32 claim (bfloat16: test_precision.py)
    moments = state_dict = None
    if optimizer is not None:
        _, path = saved_optimizer_state(model, tokenizer, adafactor if optimizer == "adafactor" else adamw, tmp_path)
        state_dict = torch.load(path, weights_only=True)
        moments = load_second_moments(path, model)
    examples = query_examples(tokenizer)
    got = collect_gradients(model, examples, settings, moments)
    expected = _projected_reference(model, examples, settings, state_dict)
    assert got.shape == (len(examples), 1000)
    assert relative_error(got, expected) < 1e-4
    assert all(p.requires_grad for p in model.parameters())  # restored


@pytest.mark.parametrize("family", ["llama", "neox"])
def test_embedding_and_lm_head_hooks(family):
    build, with_bos = FAMILIES[family]
    tokenizer = make_tokenizer(with_bos)
    model = build(len(tokenizer))
    examples = query_examples(tokenizer)
    for dim in (0, 777):
        settings = AttributionSettings(projection_dim=dim, include_embedding=True, include_lm_head=True, batch_size=2,
                                       precision="float32")
        names = [spec.name for spec in hooked_modules(model, settings)]
        assert names[0].endswith(("embed_tokens", "embed_in")) and names[-1] in ("lm_head", "embed_out")
        got = collect_gradients(model, examples, settings)
        assert got.shape == (len(examples), gradient_dim(model, settings))
        assert relative_error(got, _projected_reference(model, examples, settings)) < 1e-4


def test_a_model_moved_to_the_compute_device_is_moved_back(monkeypatch):
    tokenizer = make_tokenizer(True)
    model = tiny_llama(len(tokenizer))
    examples = query_examples(tokenizer)
    settings = AttributionSettings(projection_dim=64, batch_size=2)
    moves: list[torch.device] = []
    move = model.to
    monkeypatch.setattr(model, "to", lambda target: moves.append(torch.device(target)) or move(target))
    expected = collect_gradients(model, examples, settings)
    assert moves == []  # no device given: computed where the model is
    home = torch.device("cpu")
    # without CUDA, cpu:0 still differs from cpu as a device, so the move-and-return path runs
    other = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu", 0)
    got = collect_gradients(model, examples, settings, device=other)
    assert moves == [other, home] and next(model.parameters()).device == home
    assert relative_error(got, expected) < 1e-4

    def fail(done: int, total: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        collect_gradients(model, examples, settings, device=other, progress=fail)
    assert moves[-1] == home and next(model.parameters()).device == home


def test_target_module_globs_select_modules():
    tokenizer = make_tokenizer(True)
    model = tiny_llama(len(tokenizer))
    settings = AttributionSettings(target_modules=("*.mlp.*",))
    names = [spec.name for spec in hooked_modules(model, settings)]
    assert names and all(".mlp." in name for name in names) and len(names) == 6
    with pytest.raises(ValueError, match="target_modules"):
        hooked_modules(model, AttributionSettings(target_modules=("nothing*",)))


def test_projection_is_unbiased_in_norm():
    """E||P g||^2 = ||g||^2: averaged over seeds the squared norm ratio is close to 1."""
    tokenizer = make_tokenizer(True)
    model = tiny_llama(len(tokenizer))
    examples = query_examples(tokenizer)[:2]
    exact = collect_gradients(model, examples, AttributionSettings(projection_dim=0))
    ratios = [collect_gradients(model, examples, AttributionSettings(projection_dim=2048, projection_seed=seed))
              .norm(dim=1).square() / exact.norm(dim=1).square() for seed in range(12)]
    assert abs(float(torch.stack(ratios).mean()) - 1.0) < 0.1


SCRIPT = textwrap.dedent("""
    import sys, torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from trackstar_pipeline.attribution.examples import TokenizedExample
    from trackstar_pipeline.attribution.gradients import collect_gradients
    from trackstar_pipeline.settings import AttributionSettings
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32))
    examples = [TokenizedExample("a", tuple(range(1, 12)), 4), TokenizedExample("b", (5, 6, 7, 8), 1)]
    settings = AttributionSettings(projection_dim=512, projection_seed=7, projection_kind=sys.argv[2])
    torch.save(collect_gradients(model, examples, settings), sys.argv[1])
""")


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_two_processes_with_the_same_seed_give_identical_vectors(kind, tmp_path):
    outputs = []
    for run in range(2):
        path = tmp_path / f"{run}.pt"
        subprocess.run([sys.executable, "-c", SCRIPT, str(path), kind], check=True, capture_output=True)
        outputs.append(torch.load(path))
    assert outputs[0].shape == (2, 512) and outputs[0].abs().sum() > 0
    assert torch.equal(outputs[0], outputs[1])


def test_modules_reading_one_input_are_projected_by_one_matmul():
    """q/k/v and gate/up share their input: each set is one group, every other module its own."""
    tokenizer = make_tokenizer(True)
    model = tiny_llama(len(tokenizer))
    settings = AttributionSettings(projection_dim=700, batch_size=5)
    plans = build_plans(hooked_modules(model, settings), settings, None, torch.device("cpu"))
    hooks = _HookSet(model, plans)
    try:
        ids, attention, targets = pad_batch(query_examples(tokenizer), model_pad_id(model), torch.device("cpu"))
        hooks.start_batch(attention)
        example_losses(model, ids, attention, targets).sum().backward()
        vectors = hooks.take()
    finally:
        hooks.remove()
    suffixes = sorted(tuple(name.rsplit(".", 1)[1] for name in group) for group in hooks.inputs.groups())
    assert suffixes == sorted([("q_proj", "k_proj", "v_proj"), ("o_proj",), ("gate_proj", "up_proj"),
                               ("down_proj",)] * 2)
    assert vectors.shape == (5, 700) and torch.isfinite(vectors).all()


def test_unpadded_batches_equal_padded_ones():
    """Batches without padding skip the mask; their vectors equal those from padded batches."""
    tokenizer = make_tokenizer(True)
    model = tiny_llama(len(tokenizer))
    examples = query_examples(tokenizer)
    padded = collect_gradients(model, examples, AttributionSettings(projection_dim=500, batch_size=5, precision="float32"))
    single = collect_gradients(model, examples, AttributionSettings(projection_dim=500, batch_size=1, precision="float32"))
    assert relative_error(single, padded) < 1e-5
