"""Tail-patch on a tiny Llama: a step on "X lives in Y" raises p(Y | X lives in); restore is exact."""

import json
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.optimization import Adafactor

from trackstar_pipeline.attribution.examples import TokenizedExample
from trackstar_pipeline.evaluation.tailpatch import (
    TailPatcher,
    TailPatchSetup,
    load_tailpatch_setup,
    one_step_each_logprob_deltas,
    proponent_targets,
    tailpatch_effects,
    tailpatch_metrics,
)

BOS, X, LIVES, IN, Y, Z = 1, 5, 6, 7, 9, 10


def _tiny_model_and_state(kind: str):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=32,
                         bos_token_id=BOS, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(config)
    optimizer = (Adafactor(model.parameters(), lr=1e-2, scale_parameter=False, relative_step=False, warmup_init=False)
                 if kind == "adafactor" else torch.optim.AdamW(model.parameters(), lr=1e-2))
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):  # a few steps on random text, so the optimizer has a real state
        ids = torch.randint(3, 32, (4, 8), generator=generator)
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model, TailPatchSetup(kind, optimizer.state_dict(), learning_rate=1e-2, max_grad_norm=1.0)


def _example(example_id, ids, loss_start=1):
    return TokenizedExample(example_id, tuple(ids), loss_start)


QUERY = _example("q", [BOS, X, LIVES, IN, Y], loss_start=4)
STATES_FACT = _example("states", [BOS, X, LIVES, IN, Y])
CONTRADICTS = _example("contradicts", [BOS, X, LIVES, IN, Z])


@pytest.mark.parametrize("kind", ["adafactor", "adamw"])
def test_step_on_a_stating_proponent_raises_the_completion_probability(kind):
    model, setup = _tiny_model_and_state(kind)
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    effects = tailpatch_effects(model, setup, {"states": STATES_FACT, "contradicts": CONTRADICTS},
                                {"states": ["q"], "contradicts": ["q"]}, {"q": QUERY})
    up, down = effects[("states", "q")], effects[("contradicts", "q")]
    assert up.delta_prob > 0 and up.delta_logprob > 0
    assert up.delta_logprob > down.delta_logprob
    # weights restored bit for bit
    assert all(torch.equal(weights[name], tensor) for name, tensor in model.state_dict().items())
    # optimizer state restored: the same step again gives the same effect exactly
    again = tailpatch_effects(model, setup, {"states": STATES_FACT}, {"states": ["q"]}, {"q": QUERY})
    assert again[("states", "q")] == up


def test_patcher_restores_optimizer_state_and_measures_batches_like_singles():
    model, setup = _tiny_model_and_state("adafactor")
    patcher = TailPatcher(model, setup, batch_size=2)
    saved = {key: value.clone() for key, value in patcher.optimizer.state[patcher.parameters[3]].items()
             if torch.is_tensor(value)}
    saved_step = patcher.optimizer.state[patcher.parameters[3]]["step"]
    queries = [QUERY, _example("short", [BOS, X, Z], loss_start=2), _example("long", [BOS, Y, X, LIVES, IN, Z, Y], 3)]
    batched = patcher.completion_logprobs(queries)
    singles = torch.cat([patcher.completion_logprobs([query]) for query in queries])
    assert torch.allclose(batched, singles, atol=1e-5)
    patcher.step_on(STATES_FACT)
    state = patcher.optimizer.state[patcher.parameters[3]]
    assert state["step"] == saved_step + 1
    patcher.restore()
    assert state["step"] == saved_step
    assert all(torch.equal(state[key], value) for key, value in saved.items())


def test_effects_are_exact_differences_of_probabilities_by_hand():
    model, setup = _tiny_model_and_state("adafactor")
    patcher = TailPatcher(model, setup)
    before = patcher.completion_logprobs([QUERY])[0].item()
    patcher.step_on(STATES_FACT)
    after = patcher.completion_logprobs([QUERY])[0].item()
    patcher.restore()
    effect = tailpatch_effects(model, setup, {"states": STATES_FACT}, {"states": ["q"]}, {"q": QUERY})[("states", "q")]
    # float32 rounding only: the step's gradient comes from a batched per-example pass here (on one CPU
    # bit-identical, on another 2.4e-7 off in a 0.38 change)
    assert effect.delta_logprob == pytest.approx(after - before, abs=1e-6)
    assert effect.delta_prob == pytest.approx(math.exp(after) - math.exp(before), abs=1e-6)


def test_aggregation_over_top_k_and_queries():
    from trackstar_pipeline.evaluation.tailpatch import TailPatchEffect as E

    effects = {("a", "q1"): E(0.3, 1.0), ("b", "q1"): E(0.1, 0.5), ("a", "q2"): E(-0.2, -1.0)}
    rankings = {"q1": [("a", 2.0), ("b", 1.0)], "q2": [("a", 1.0)]}
    result = tailpatch_metrics(rankings, effects, (1, 3))
    assert result["tailpatch@1"] == pytest.approx((0.3 - 0.2) / 2)
    assert result["tailpatch@3"] == pytest.approx((0.2 - 0.2) / 2)
    assert result["tailpatch_logprob@3"] == pytest.approx((0.75 - 1.0) / 2)
    assert proponent_targets({"m1": rankings, "m2": {"q2": [("b", 1.0), ("c", 0.0)]}}, k=1) == {
        "a": ["q1", "q2"], "b": ["q2"]}


def test_a_querys_tailpatch_averages_only_its_measured_proponents():
    from trackstar_pipeline.evaluation.tailpatch import TailPatchEffect as E, query_tailpatch

    effects = {("a", "q1"): E(0.3, 1.0), ("c", "q1"): E(0.1, 0.5)}
    ranking = [("a", 3.0), ("b", 2.0), ("c", 1.0)]  # b was never patched
    assert query_tailpatch("q1", ranking, effects, 3) == E(pytest.approx(0.2), pytest.approx(0.75))
    assert query_tailpatch("q1", ranking, effects, 1) == E(0.3, 1.0)
    assert query_tailpatch("q2", ranking, effects, 3) is None

def test_paired_difference_is_the_mean_of_per_query_differences_with_its_interval():
    from trackstar_pipeline.evaluation.tailpatch import TailPatchEffect as E, paired_tailpatch_difference

    effects = {(c, q): E(v, 0.0) for (c, q), v in {("a", "q1"): 0.4, ("b", "q1"): 0.2, ("a", "q2"): 0.1,
                                                   ("b", "q2"): 0.3, ("a", "q3"): 0.0, ("b", "q3"): 0.6}.items()}
    ours = {"q1": [("a", 1.0)], "q2": [("a", 1.0)], "q3": [("a", 1.0)], "q4": [("a", 1.0)]}  # q4: never patched
    theirs = {"q1": [("b", 1.0)], "q2": [("b", 1.0)], "q3": [("b", 1.0)], "q4": [("b", 1.0)]}
    result = paired_tailpatch_difference(ours, theirs, effects, 1)
    differences = [0.2, -0.2, -0.6]
    mean = sum(differences) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / 2)
    assert result.queries == 3
    assert result.mean == pytest.approx(mean)
    assert result.half_width == pytest.approx(1.96 * sd / math.sqrt(3))
    assert result.within_noise  # -0.2 +- 0.45
    clear = paired_tailpatch_difference({"q1": [("a", 1.0)], "q3": [("b", 1.0)], "q2": [("b", 1.0)]},
                                        {"q1": [("b", 1.0)], "q3": [("a", 1.0)], "q2": [("a", 1.0)]}, effects, 1)
    assert clear.mean == pytest.approx((0.2 + 0.6 + 0.2) / 3) and not clear.within_noise
    assert paired_tailpatch_difference({"q1": ours["q1"]}, theirs, effects, 1).queries == 1  # too few: nan
    assert math.isnan(paired_tailpatch_difference({"q1": ours["q1"]}, theirs, effects, 1).mean)
    assert paired_tailpatch_difference({"q1": ours["q1"]}, theirs, effects, 1).as_record() == {
        "mean": None, "half_width": None, "queries": 1}  # JSON has no NaN


def test_paired_against_compares_every_other_method_with_the_baseline():
    from trackstar_pipeline.evaluation.tailpatch import TailPatchEffect as E, paired_against

    effects = {(c, q): E(v, 0.0) for (c, q), v in {("a", "q1"): 0.4, ("b", "q1"): 0.2, ("c", "q1"): 0.1,
                                                   ("a", "q2"): 0.1, ("b", "q2"): 0.3, ("c", "q2"): 0.0}.items()}
    rankings = {"trackstar": {"q1": [("a", 1.0), ("c", 0.5)], "q2": [("a", 1.0), ("c", 0.5)]},
                "bm25": {"q1": [("b", 1.0), ("a", 0.5)], "q2": [("b", 1.0), ("a", 0.5)]}}
    rankings["trackstar_d2"] = {q: [(c, score / 2) for c, score in ranking]  # same order, other scores
                                for q, ranking in rankings["trackstar"].items()}
    paired = paired_against(rankings, effects, (1, 2))
    assert set(paired) == {"bm25"}  # the baseline itself and a method ranking exactly as it does are left out
    assert paired["bm25"]["tailpatch@1"]["mean"] == pytest.approx(((0.2 - 0.4) + (0.3 - 0.1)) / 2)
    at_2 = [((0.2 + 0.4) / 2 - (0.4 + 0.1) / 2), ((0.3 + 0.1) / 2 - (0.1 + 0.0) / 2)]
    assert paired["bm25"]["tailpatch@2"]["mean"] == pytest.approx(sum(at_2) / 2)
    assert paired["bm25"]["tailpatch@2"]["queries"] == 2
    assert paired_against({"bm25": rankings["bm25"]}, effects, (1,)) == {}  # no baseline, nothing to pair with


def test_load_setup_reads_pretrain_outputs(tmp_path):
    model, setup = _tiny_model_and_state("adamw")
    torch.save(setup.optimizer_state, tmp_path / "optimizer.pt")
    (tmp_path / "training_state.json").write_text(json.dumps({"optimizer": "adamw", "final_learning_rate": 3e-4}))
    loaded = load_tailpatch_setup(tmp_path, max_grad_norm=1.0)
    assert (loaded.optimizer_kind, loaded.learning_rate, loaded.max_grad_norm) == ("adamw", 3e-4, 1.0)
    (tmp_path / "training_state.json").write_text(json.dumps({"optimizer": "adamw", "final_learning_rate": 3e-4,
                                                              "max_grad_norm": 0.5}))
    assert load_tailpatch_setup(tmp_path).max_grad_norm == 0.5
    assert load_tailpatch_setup(tmp_path, max_grad_norm=0.0).max_grad_norm == 0.0
    with pytest.raises(FileNotFoundError, match="training_state.json is missing"):
        load_tailpatch_setup(tmp_path / "nowhere")


@pytest.mark.parametrize("kind", ["adafactor", "adamw"])
def test_grouped_steps_equal_one_optimizer_step_per_proponent(kind):
    """tailpatch_effects (vmapped gradients, groups of 2) against the definition: step_on, measure, restore."""
    model, setup = _tiny_model_and_state(kind)
    proponents = {"states": STATES_FACT, "contradicts": CONTRADICTS,
                  "long": _example("long", [BOS, Y, X, LIVES, IN, Z, Y, X]),
                  "short": _example("short", [BOS, Z, X], loss_start=2),
                  "other": _example("other", [BOS, Z, Z, IN, Y])}
    queries = {"q": QUERY, "r": _example("r", [BOS, Y, LIVES, IN, X], loss_start=3)}
    work = {"states": ["q"], "contradicts": ["q", "r"], "long": ["r"], "short": ["q", "r"], "other": ["r"]}
    patcher = TailPatcher(model, setup, batch_size=2)
    assert patcher.group_size() == 2 and patcher.group_size(budget_bytes=1) == 1
    expected = one_step_each_logprob_deltas(patcher, proponents, work, queries)
    effects = tailpatch_effects(model, setup, proponents, work, queries, batch_size=2)
    assert set(effects) == set(expected)
    for pair, delta in expected.items():
        assert effects[pair].delta_logprob == pytest.approx(delta, rel=1e-4, abs=1e-7)
    assert len({round(delta, 6) for delta in expected.values()}) > 3  # the steps really differ
