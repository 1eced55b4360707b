"""Adaptive pretraining: the width and epoch plan follow the corpus size, the probe is held-in corpus text, the stop works."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from trackstar_pipeline.data.world import generate_fact_world
from trackstar_pipeline.settings import TrainingSettings
from trackstar_pipeline.training.adaptive import (candidate_widths, corpus_probe, nominal_tokens_per_s, plan_training,
                                                  token_cost)
from trackstar_pipeline.training import pretrain as pretrain_module
from trackstar_pipeline.training.pretrain import lr_factor, pretrain
from trackstar_pipeline.training.recall import FactRecall

TINY = TrainingSettings(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, vocab_size=320, max_length=48,
                        learning_rate=1e-2, batch_size=16, checkpoint_every=10, log_every=10, num_threads=1)


def test_auto_epochs_shrink_as_the_corpus_grows_and_stay_clamped() -> None:
    settings = TrainingSettings(epochs="auto", time_budget_s=100, nominal_tokens_per_s=1000, min_epochs=3, max_epochs=50,
                                width="fixed")
    assert plan_training(10_000, settings).epochs == 10
    assert plan_training(20_000, settings).epochs == 5
    assert plan_training(1_000_000, settings).epochs == 3
    assert plan_training(100, settings).epochs == 50
    assert plan_training(10_000, replace(settings, epochs=7)).epochs == 7
    assert {plan_training(tokens, settings).hidden_size for tokens in (100, 10_000, 10**9)} == {settings.hidden_size}
    # nominal_tokens_per_s is the default model's speed: a narrower configured model buys more epochs.
    narrow = replace(settings, hidden_size=128, intermediate_size=512, num_heads=2)
    assert plan_training(20_000, narrow).epochs == int(5 * token_cost(256, settings) / token_cost(128, narrow))


def test_fixed_epochs_narrow_the_width_only_when_they_outlast_max_time() -> None:
    settings = TrainingSettings(time_budget_s=100, nominal_tokens_per_s=1000, max_time_s=200, epochs=10,
                                min_hidden_size=64)
    assert candidate_widths(settings) == [256, 192, 128, 64]
    assert candidate_widths(TrainingSettings()) == [256, 192, 128]  # the default floor: 128 wide
    fits = plan_training(20_000, settings)  # 10 epochs x 20k tokens = 200 s: fits at full width
    assert (fits.hidden_size, fits.epochs, fits.speedup) == (256, 10, 1.0)
    assert fits.predicted_seconds == 200
    for tokens in (20_001, 30_000, 50_000):
        plan = plan_training(tokens, settings)
        assert plan.hidden_size < 256 and plan.predicted_seconds <= settings.max_time_s
        wider = plan.hidden_size + 64
        assert 10 * tokens / (1000 * token_cost(256, settings) / token_cost(wider, settings)) > settings.max_time_s
        assert plan.num_heads == plan.hidden_size // 64 and plan.intermediate_size == 4 * plan.hidden_size
        assert plan.speedup > 1 and plan.speedup == pytest.approx(token_cost(256, settings) / token_cost(plan.hidden_size, settings))
        assert plan.model_settings(settings).hidden_size == plan.hidden_size
        assert "narrowed from 256" in plan.describe()
    too_big = plan_training(10**8, settings)
    assert too_big.hidden_size == 64 and too_big.epochs == 10 and too_big.predicted_seconds > settings.max_time_s
    assert "WARNING: over training.max_time_s" in too_big.describe() and "WARNING" not in fits.describe()
    # The default model runs at the nominal speed whatever the overhead constant.
    for overhead in (0.0, 4e6):
        assert nominal_tokens_per_s(256, replace(settings, token_overhead_macs=overhead)) == pytest.approx(1000)
    assert plan_training(10**8, replace(settings, width="fixed")).hidden_size == 256
    assert plan_training(10**8, replace(settings, min_hidden_size=128)).hidden_size == 128
    assert plan_training(10_000, replace(settings, epochs=20)).hidden_size == 256
    assert plan_training(10_000, replace(settings, epochs=40)).hidden_size < 256


def test_auto_epochs_narrow_the_width_until_the_budget_buys_target_epochs() -> None:
    speeds = {256: 1000.0, 192: 1500.0, 128: 3000.0, 64: 6000.0}
    settings = TrainingSettings(time_budget_s=100, max_time_s=200, min_epochs=10, target_epochs=20,
                                min_hidden_size=64)
    speed = speeds.__getitem__
    # 5k tokens: 20 epochs take 100 s at 256 wide, within the budget: full width, 20 epochs
    small = plan_training(5_000, settings, speed)
    assert (small.hidden_size, small.epochs) == (256, 20)
    # 10k tokens: 200 s at 256, 133 s at 192, 67 s at 128: 128 wide, and the epochs its budget buys
    medium = plan_training(10_000, settings, speed)
    assert (medium.hidden_size, medium.epochs) == (128, 30) and "for more passes" in medium.describe()
    # 100k tokens: no width buys 20 epochs: the narrowest, at the epochs its budget buys (floor 10)
    large = plan_training(100_000, settings, speed)
    assert (large.hidden_size, large.epochs) == (64, 10)
    assert large.predicted_seconds == pytest.approx(10 * 100_000 / 6000) and not large.over_time_limit
    # a corpus whose floor outlasts max_time_s even at the narrowest width gets the warning
    huge = plan_training(1_000_000, settings, speed)
    assert huge.hidden_size == 64 and huge.over_time_limit and "WARNING" in huge.describe()
    # width fixed never narrows
    assert plan_training(10_000, replace(settings, width="fixed"), speed).hidden_size == 256


def test_a_measured_speed_sets_the_width_and_epochs_and_is_asked_only_for_the_widths_considered() -> None:
    settings = TrainingSettings(time_budget_s=100, max_time_s=200, min_epochs=10, target_epochs=20)  # nominal_tokens_per_s auto
    with pytest.raises(ValueError, match="nominal_tokens_per_s is 'auto'"):
        plan_training(20_000, settings)
    asked: list[int] = []
    measured = {256: 500.0, 192: 900.0, 128: 2000.0, 64: 5000.0}

    def speed(width: int) -> float:
        asked.append(width)
        return measured[width]

    plan = plan_training(20_000, settings, speed)  # 10 epochs: 400 s at 256, 222 s at 192, 100 s at 128
    assert (plan.hidden_size, plan.tokens_per_s, plan.speed_measured) == (128, 2000.0, True)
    assert plan.epochs == 10 and plan.predicted_seconds == 100 and plan.speedup == 4.0
    assert set(asked) == {256, 192, 128}
    assert "at the measured 2000 tokens/s" in plan.describe()
    # A machine twice as fast buys twice the epochs at the same width.
    fast = plan_training(2_000, settings, lambda width: 2 * measured[width])
    slow = plan_training(2_000, settings, lambda width: measured[width])
    assert (fast.hidden_size, slow.hidden_size) == (256, 256) and (fast.epochs, slow.epochs) == (50, 25)


def test_a_narrowed_plan_trains_and_saves_that_width(tmp_path: Path) -> None:
    corpus = generate_fact_world(200, 10, seed=0)[0]
    settings = replace(TINY, hidden_size=64, intermediate_size=128, num_heads=4, epochs=1, max_time_s=1e-3,
                       min_hidden_size=32)
    result = pretrain(corpus, settings, tmp_path, progress=lambda _: None)
    config = json.loads((result.model_dir / "config.json").read_text())
    assert (config["hidden_size"], config["intermediate_size"], config["num_attention_heads"]) == (32, 64, 2)
    state = json.loads(result.training_state_path.read_text())
    assert state["hidden_size"] == 32 and "narrowed from 64" in state["plan"] == result.plan


def test_probe_is_held_in_corpus_text_cut_before_the_object() -> None:
    corpus, queries = generate_fact_world(400, 20, seed=1)
    probe = corpus_probe(corpus, 50, seed=0)
    texts = dict(zip(corpus["id"].to_list(), corpus["text"].to_list()))
    facts = dict(zip(corpus["id"].to_list(), corpus["facts"].to_list()))
    assert probe.height == 50 and probe["id"].n_unique() == 50
    for example_id, prompt, completion in probe.iter_rows():
        assert len(facts[example_id]) == 1 and completion == " " + facts[example_id][0][2]
        assert texts[example_id].startswith(prompt + completion)
    assert not set(probe["prompt"]) & set(queries["prompt"])
    assert corpus_probe(corpus.drop("facts"), 50, seed=0).height == 0
    assert corpus_probe(corpus, 50, seed=0).equals(probe)
    assert probe.equals(slow_probe(corpus, 50, seed=0))
    assert corpus_probe(corpus, 0, seed=0).height == 0
    no_facts = pl.DataFrame({"id": ["a", "b"], "text": ["x Tarn", "y Bo"], "facts": [[], []]})  # List(Null)
    assert corpus_probe(no_facts, 5, seed=0).height == 0


def slow_probe(corpus: pl.DataFrame, size: int, seed: int) -> pl.DataFrame:
    """The probe row by row in Python: the reference corpus_probe's columnar version must equal."""
    by_fact: dict[tuple[str, ...], tuple[str, str]] = {}
    for example_id, text, facts in zip(corpus["id"], corpus["text"], corpus["facts"]):
        if facts is None or len(facts) != 1:
            continue
        cut = text.rfind(" " + facts[0][2])
        if cut > 0 and tuple(facts[0]) not in by_fact:
            by_fact[tuple(facts[0])] = (example_id, text[:cut])
    chosen = random.Random(seed).sample(sorted(by_fact), min(size, len(by_fact)))
    return pl.DataFrame({"id": [by_fact[fact][0] for fact in chosen], "prompt": [by_fact[fact][1] for fact in chosen],
                         "completion": [" " + fact[2] for fact in chosen]})


def test_training_stops_once_the_probe_reaches_the_target(tmp_path: Path, monkeypatch) -> None:
    corpus = generate_fact_world(200, 10, seed=0)[0]
    probed: list[pl.DataFrame] = []
    recalls = iter([0.5, 0.97])

    def fake_recall(model, tokenizer, frame):
        probed.append(frame)
        return FactRecall(accuracy=next(recalls), correct={}, predictions={})

    monkeypatch.setattr(pretrain_module, "fact_recall", fake_recall)
    settings = replace(TINY, epochs=6, min_epochs=2, learned_recall=0.95, probe_size=16)
    lines: list[str] = []
    result = pretrain(corpus, settings, tmp_path, progress=lines.append)
    log = [json.loads(line) for line in result.log_path.read_text().splitlines()]
    steps_per_epoch = len(log) // 3
    assert [row.get("probe_recall") for row in log if "probe_recall" in row] == [0.5, 0.97]
    assert log[-1]["epoch"] == 2 and result.steps == 3 * steps_per_epoch and result.probe_recall == 0.97
    assert all(set(frame["id"]) <= set(corpus["id"]) and frame.height == 16 for frame in probed)
    assert result.final_learning_rate == settings.learning_rate * lr_factor(result.steps - 1, 6 * steps_per_epoch, settings)
    assert any("stopping" in line for line in lines)
    state = json.loads(result.training_state_path.read_text())
    assert state["epochs_planned"] == 6 and state["epochs_done"] == 3


def test_without_facts_training_runs_the_planned_epochs(tmp_path: Path) -> None:
    corpus = generate_fact_world(200, 10, seed=0)[0].drop("facts")
    settings = replace(TINY, epochs=2, min_epochs=1, learned_recall=1e-9)
    result = pretrain(pl.DataFrame(corpus), settings, tmp_path, progress=lambda _: None)
    assert result.probe_recall is None
    assert json.loads(result.training_state_path.read_text())["epochs_done"] == 2
