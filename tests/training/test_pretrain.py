"""Tiny pretraining runs (seconds): the loss falls, outputs load, the optimizer state fits, resume is exact."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trackstar_pipeline.attribution.optimizer_state import load_second_moments
from trackstar_pipeline.data.world import generate_fact_world
from trackstar_pipeline.models import load_model
from trackstar_pipeline.settings import TrainingSettings
from trackstar_pipeline.training import pretrain as pretrain_module
from trackstar_pipeline.training.pretrain import THREAD_ROUNDS, fingerprint, lr_factor, pretrain, training_texts

TINY = TrainingSettings(
    hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, vocab_size=320, max_length=48,
    learning_rate=1e-2, epochs=4, batch_size=16, checkpoint_every=10, log_every=10, num_threads=1,
    batch_tokens=4096,  # every step holds batch_size rows, so step counts are ceil(rows / 16); the cap has its own tests
)


@pytest.fixture(scope="module")
def corpus():
    return generate_fact_world(200, 10, seed=0)[0]


@pytest.fixture(scope="module")
def finished(corpus, tmp_path_factory):
    lines: list[str] = []
    result = pretrain(corpus, TINY, tmp_path_factory.mktemp("run"), progress=lines.append)
    return result, lines


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_loss_falls_and_progress_is_reported(finished) -> None:
    result, lines = finished
    log = _log(result.log_path)
    assert [row["step"] for row in log] == list(range(1, result.steps + 1))
    assert result.steps == 4 * 13  # ceil(200 / 16) steps per epoch
    first, last = sum(r["loss"] for r in log[:5]) / 5, sum(r["loss"] for r in log[-5:]) / 5
    assert last < first - 1.0
    assert any("examples/s" in line and "ETA" in line and "loss" in line for line in lines)


def test_checkpoint_loads_and_training_state_records_the_final_lr(finished) -> None:
    result, _ = finished
    model, tokenizer = load_model(str(result.model_dir))
    assert model.config.vocab_size == len(tokenizer) and tokenizer.bos_token_id is not None
    logits = model(torch.tensor([[tokenizer.bos_token_id, 5, 6]])).logits  # (1, 3, V)
    assert torch.isfinite(logits).all()
    state = json.loads(result.training_state_path.read_text())
    expected = TINY.learning_rate * lr_factor(result.steps - 1, result.steps, TINY)
    assert state["final_learning_rate"] == pytest.approx(expected) == result.final_learning_rate
    assert expected < TINY.learning_rate
    assert state["optimizer"] == "adafactor" and state["step"] == result.steps and state["seed"] == 0
    assert not (result.model_dir.parent / "checkpoint.pt").exists()


def test_adafactor_state_has_factored_moments_in_parameter_order(finished) -> None:
    result, _ = finished
    model, _ = load_model(str(result.model_dir))
    saved = torch.load(result.optimizer_state_path, weights_only=False)
    parameters = list(model.parameters())
    assert saved["param_groups"][0]["params"] == list(range(len(parameters)))
    for index, parameter in enumerate(parameters):
        state = saved["state"][index]
        if parameter.dim() == 2:
            assert state["exp_avg_sq_row"].shape == parameter.shape[:1]
            assert state["exp_avg_sq_col"].shape == parameter.shape[1:]
        else:
            assert state["exp_avg_sq"].shape == parameter.shape
    moments = load_second_moments(result.optimizer_state_path, model)  # the engine reads it as is
    assert set(moments.parameters) >= {n for n, p in model.named_parameters() if p.dim() == 2}


def test_interrupted_run_resumes_to_the_same_weights(corpus, finished, tmp_path: Path) -> None:
    result, _ = finished

    def interrupt_at_step_30(line: str) -> None:
        if line.startswith("step 30/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(corpus, TINY, tmp_path, progress=interrupt_at_step_30)
    assert (tmp_path / "checkpoint.pt").is_file()
    lines: list[str] = []
    resumed = pretrain(corpus, TINY, tmp_path, progress=lines.append)
    assert lines[0].startswith("resuming from step 20 of 52")  # the last checkpoint before the interruption
    reference, _ = load_model(str(result.model_dir))
    again, _ = load_model(str(resumed.model_dir))
    for (name, expected), got in zip(reference.state_dict().items(), again.state_dict().values()):
        assert torch.equal(expected, got), name
    assert [r["loss"] for r in _log(resumed.log_path)] == [r["loss"] for r in _log(result.log_path)]


def test_checkpoint_from_other_settings_is_refused(corpus, tmp_path: Path) -> None:
    def stop(line: str) -> None:
        if line.startswith("step 20/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(corpus, TINY, tmp_path, progress=stop)
    with pytest.raises(ValueError, match="checkpoint.pt comes from another corpus or other training settings"):
        pretrain(corpus, replace(TINY, learning_rate=5e-3), tmp_path, progress=lambda _: None)


def test_adamw_option_saves_full_second_moments(corpus, tmp_path: Path) -> None:
    settings = replace(TINY, optimizer="adamw", epochs=1, learning_rate=3e-3)
    result = pretrain(corpus, settings, tmp_path, progress=lambda _: None)
    model, _ = load_model(str(result.model_dir))
    saved = torch.load(result.optimizer_state_path, weights_only=False)
    for index, parameter in enumerate(model.parameters()):
        assert saved["state"][index]["exp_avg_sq"].shape == parameter.shape
    assert json.loads(result.training_state_path.read_text())["optimizer"] == "adamw"


def test_epoch_batches_cover_every_row_once_with_similar_lengths() -> None:
    from trackstar_pipeline.training.pretrain import epoch_batches

    lengths = [(i * 7919) % 23 + 3 for i in range(1000)]
    batches = epoch_batches(lengths, 32, seed=0, epoch=1)
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    assert len(batches) == 32  # ceil(1000 / 32)
    assert epoch_batches(lengths, 32, seed=0, epoch=1) == batches != epoch_batches(lengths, 32, seed=0, epoch=2)
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)
    assert padded < 1.15 * sum(lengths)  # sorting within windows keeps padding small


def test_a_token_cap_gives_long_rows_smaller_batches_and_leaves_short_rows_alone() -> None:
    from trackstar_pipeline.training.pretrain import epoch_batches

    short = [(i * 7919) % 23 + 3 for i in range(1000)]  # sentences: at most 25 tokens
    assert epoch_batches(short, 32, 0, 1, batch_tokens=32 * 25) == epoch_batches(short, 32, 0, 1)
    lengths = short + [100 + i % 50 for i in range(300)]  # and paragraphs of 100-149 tokens
    batches = epoch_batches(lengths, 32, 0, 1, batch_tokens=800)
    assert sorted(i for batch in batches for i in batch) == list(range(1300))
    assert all(sum(lengths[i] for i in batch) <= 800 for batch in batches)
    assert all(len(batch) <= 32 for batch in batches)
    paragraph_batches = [batch for batch in batches if min(lengths[i] for i in batch) >= 100]
    assert paragraph_batches and max(len(batch) for batch in paragraph_batches) <= 8 < 32
    assert epoch_batches(lengths, 32, 0, 1, batch_tokens=800) == batches  # a resume sees the same ones
    alone = epoch_batches([5, 5, 900, 5], 4, 0, 0, batch_tokens=100)
    assert [2] in alone and sorted(i for batch in alone for i in batch) == [0, 1, 2, 3]


def test_the_epoch_schedule_locates_steps_in_epochs_of_different_lengths() -> None:
    from trackstar_pipeline.training.pretrain import EpochSchedule, epoch_batches

    lengths = [(i * 7919) % 23 + 3 for i in range(1000)] + [100 + i % 50 for i in range(300)]
    settings = replace(TINY, batch_size=32, batch_tokens=800, seed=3)
    schedule = EpochSchedule.plan(lengths, settings, 4)
    counts = [len(epoch_batches(lengths, 32, 3, epoch, 800)) for epoch in range(4)]
    assert schedule.starts == (0, counts[0], sum(counts[:2]), sum(counts[:3]), sum(counts))
    assert schedule.total_steps == sum(counts)
    second = schedule.starts[1]
    assert schedule.locate(second - 1) == (0, counts[0] - 1) and schedule.locate(second) == (1, 0)
    assert schedule.ends_epoch(second) and not schedule.ends_epoch(second + 1) and not schedule.ends_epoch(0)
    assert schedule.epochs_done(second + counts[1] // 2) == pytest.approx(1 + (counts[1] // 2) / counts[1])
    assert schedule.epochs_done(schedule.total_steps) == 4.0


def test_a_run_with_token_capped_batches_resumes_to_the_same_weights(corpus, tmp_path: Path) -> None:
    """Capped batches make epochs differ in length; a resume must land on the same batch of the same epoch."""
    settings = replace(TINY, epochs=3, batch_tokens=400)
    whole = pretrain(corpus, settings, tmp_path / "whole", progress=lambda _: None)
    assert whole.steps > 3 * 13  # the cap split batches of 16 rows (13 per epoch uncapped)
    log = _log(whole.log_path)
    checkpoint = 10 * (next(row["step"] for row in log if row["epoch"] == 1) // 10 + 1)  # inside the second epoch
    assert log[checkpoint - 1]["epoch"] == log[checkpoint]["epoch"] == 1

    def interrupt(line: str) -> None:
        if line.startswith(f"step {checkpoint + 10}/"):  # before that step's checkpoint is written
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(corpus, settings, tmp_path / "resumed", progress=interrupt)
    lines: list[str] = []
    resumed = pretrain(corpus, settings, tmp_path / "resumed", progress=lines.append)
    assert lines[0].startswith(f"resuming from step {checkpoint} of {whole.steps}")
    reference, _ = load_model(str(whole.model_dir))
    again, _ = load_model(str(resumed.model_dir))
    for (name, expected), got in zip(reference.state_dict().items(), again.state_dict().values()):
        assert torch.equal(expected, got), name
    assert _log(resumed.log_path) == log
    assert json.loads(whole.training_state_path.read_text())["epochs_done"] == 3.0


def test_training_texts_keep_each_texts_first_max_repeats_rows_in_corpus_order() -> None:
    corpus = pl.DataFrame({"id": list("abcdefg"), "text": ["x y", "z", "x y", "w", "z", "x y", "z"]})
    assert training_texts(corpus, replace(TINY, max_repeats=1)).texts == ["x y", "z", "w"]
    assert training_texts(corpus, replace(TINY, max_repeats=2)).texts == ["x y", "z", "x y", "w", "z"]
    assert training_texts(corpus, replace(TINY, max_repeats=0)).texts == corpus["text"].to_list()
    with pytest.raises(ValueError, match="max_repeats"):
        training_texts(corpus, replace(TINY, max_repeats=-1))


def test_split_sentences_trains_every_rows_sentences_in_order_then_caps_repeated_sentences() -> None:
    corpus = pl.DataFrame({"id": list("abcd"), "text": ["A b. C d.", "Filler here. E f. G h.", "Filler here. A b.",
                                                        "One more."]})
    every = replace(TINY, split_sentences=2)
    assert training_texts(corpus, replace(every, max_repeats=0)).texts == ["A b.", "C d.", "Filler here.", "E f.", "G h.",
                                                                     "Filler here.", "A b.", "One more."]
    assert training_texts(corpus, replace(every, max_repeats=1)).texts == ["A b.", "C d.", "Filler here.", "E f.", "G h.",
                                                                     "One more."]
    # at 3, only the row of three sentences is split; 1 splits as 2 does (a row of one sentence is itself)
    assert training_texts(corpus, replace(every, split_sentences=3, max_repeats=0)).texts == [
        "A b. C d.", "Filler here.", "E f.", "G h.", "Filler here. A b.", "One more."]
    assert training_texts(corpus, replace(every, split_sentences=1)).texts == training_texts(corpus, every).texts
    assert [training_texts(corpus, replace(every, split_sentences=n)).rows_split for n in (0, 2, 3)] == [0, 3, 1]
    assert training_texts(corpus, replace(every, max_repeats=0, split_sentences=0)).texts == corpus["text"].to_list()
    with pytest.raises(ValueError, match="split_sentences"):
        training_texts(corpus, replace(every, split_sentences=-1))


def test_split_sentences_trains_a_sentence_that_refers_back_after_the_sentence_it_refers_to() -> None:
    """Cut alone, 'She grew up in Rome.' states a fact about nobody: the model could not learn whose it is."""
    corpus = pl.DataFrame({"id": ["a"], "text": ["Ann Lee plays the lute. She grew up in Rome. Bo Kim speaks Kish."]})
    assert training_texts(corpus, replace(TINY, split_sentences=3, max_repeats=0)).texts == [
        "Ann Lee plays the lute.", "Ann Lee plays the lute. She grew up in Rome.", "Bo Kim speaks Kish."]


def test_a_new_piece_rule_retrains_only_a_corpus_whose_pieces_it_changes(monkeypatch) -> None:
    """A cached model trained other texts from the same rows under an older rule; short rows trained the same."""
    short = pl.DataFrame({"id": ["a", "b"], "text": ["Ann Lee plays the lute.", "Bo Kim sings. She is loud."]})
    cut = pl.DataFrame({"id": ["a"], "text": ["Ann Lee plays the lute. She grew up in Rome. Bo Kim speaks Kish."]})
    whole = replace(TINY, split_sentences=0)
    before = [fingerprint(short, TINY), fingerprint(cut, TINY), fingerprint(cut, whole)]
    rule = pretrain_module.passage_texts
    monkeypatch.setattr(pretrain_module, "passage_texts", lambda text, split_from: list(rule(text, split_from)))
    assert [fingerprint(short, TINY), fingerprint(cut, TINY)] == before[:2]  # a rule giving the same pieces
    monkeypatch.setattr(pretrain_module, "passage_texts",
                        lambda text, split_from: [piece.replace("She", "Ann Lee") for piece in rule(text, split_from)])
    assert fingerprint(short, TINY) == before[0]
    assert fingerprint(cut, TINY) != before[1]
    assert fingerprint(cut, whole) == before[2]  # nothing is cut at split_sentences 0


def test_a_repeat_cap_trains_an_epoch_on_the_capped_rows_and_says_so(corpus, tmp_path: Path) -> None:
    tripled = pl.concat([corpus, corpus.with_columns(id=pl.col("id") + "-2"), corpus.with_columns(id=pl.col("id") + "-3")])
    capped = 2 * corpus["text"].n_unique()  # every text occurs at least 3 times: each trains twice
    runs = {}
    for max_repeats in (2, 0):
        lines: list[str] = []
        runs[max_repeats] = (pretrain(tripled, replace(TINY, epochs=1, max_repeats=max_repeats),
                                      tmp_path / str(max_repeats), progress=lines.append), lines)
    assert capped < tripled.height
    assert runs[2][0].steps == -(-capped // TINY.batch_size)  # ceil(capped rows / 16) steps
    assert runs[0][0].steps == -(-tripled.height // TINY.batch_size)
    assert any(f"{capped} of {tripled.height} rows" in line and "at most 2x" in line for line in runs[2][1])
    assert not any("at most" in line for line in runs[0][1])


def test_a_finished_run_is_not_trained_again(corpus, finished) -> None:
    result, _ = finished
    lines: list[str] = []
    again = pretrain(corpus, TINY, result.model_dir.parent, progress=lines.append)
    assert lines == [f"already trained: {result.model_dir} matches this corpus and these settings"]
    assert (again.steps, again.final_learning_rate, again.final_loss) == (result.steps, result.final_learning_rate, result.final_loss)


def test_precision_setting_picks_the_autocast_dtype() -> None:
    from trackstar_pipeline.attribution.precision import autocast_dtype, cpu_has_fast_bfloat16

    cpu = torch.device("cpu")
    assert autocast_dtype(replace(TINY, precision="float32").precision, cpu) is None
    assert autocast_dtype(replace(TINY, precision="bfloat16").precision, cpu) is torch.bfloat16
    assert autocast_dtype(replace(TINY, precision="auto").precision, cpu) is (
        torch.bfloat16 if cpu_has_fast_bfloat16() else None)


def test_thread_count_is_the_setting_or_the_idle_cores() -> None:
    import os

    from trackstar_pipeline.training.pretrain import training_threads

    assert training_threads(replace(TINY, num_threads=3)) == 3
    assert 1 <= training_threads(replace(TINY, num_threads=0)) <= (os.cpu_count() or 1)


def test_thread_count_auto_trains_on_the_faster_count_and_a_resume_keeps_it(
        corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """num_threads 0: one thread and every core are timed; the plan records the faster, and a resume uses it
    even where the other count would now measure faster."""
    import os

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: there is no other thread count to choose")
    module = "trackstar_pipeline.training.pretrain"
    cores = os.cpu_count()
    timed: list[int] = []

    def speeds(favoured: int):
        def measure(*args, **kwargs):
            timed.append(torch.get_num_threads())
            fast = torch.get_num_threads() == favoured
            return lambda width: 2000.0 if fast else 1000.0  # no real step of TINY is 3x slower
        return measure

    settings = replace(TINY, num_threads=0)
    monkeypatch.setattr(f"{module}.measured_tokens_per_s", speeds(favoured=cores))
    lines: list[str] = []

    def stop(line: str) -> None:
        lines.append(line)
        if line.startswith("step 20/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(corpus, settings, tmp_path, progress=stop)
    assert timed == [1, cores] * THREAD_ROUNDS and any(f"on {cores} threads" in line for line in lines)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["plan"]["threads"] == cores
    monkeypatch.setattr(f"{module}.measured_tokens_per_s", speeds(favoured=1))  # one thread is faster now
    monkeypatch.setattr(f"{module}.training_threads", lambda settings: 1)  # and the idle-core guess says one
    lines.clear()
    pretrain(corpus, settings, tmp_path, progress=lines.append)
    assert any(f"on {cores} threads" in line for line in lines)  # the resumed run keeps its count
    torch.set_num_threads(1)


@pytest.mark.parametrize("slowed_rounds, expected", [((0,), "cores"), ((1,), "cores"), ((0, 1), 1)])
def test_a_neighbour_must_slow_every_round_of_a_thread_count_to_tip_the_choice(
        slowed_rounds: tuple[int, ...], expected: int | str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every core trains 1.5x as fast as one thread, except in the rounds a neighbour slows it to half."""
    import os

    from trackstar_pipeline.training import pretrain as pretrain_module

    cores = os.cpu_count() or 1
    if cores < 2:
        pytest.skip("one core: there is no other thread count to choose")
    assert THREAD_ROUNDS == 2
    measured: list[int] = []

    def measure(*args, **kwargs):
        threads = torch.get_num_threads()
        round_of = sum(count == threads for count in measured)
        measured.append(threads)
        speed = 1000.0 if threads == 1 else 1500.0 * (0.5 if round_of in slowed_rounds else 1.0)
        return lambda width: speed

    monkeypatch.setattr(pretrain_module, "measured_tokens_per_s", measure)
    count, speed = pretrain_module.faster_thread_count(replace(TINY, num_threads=0), None, [], [], None)
    assert measured == [1, cores, 1, cores]  # alternating rounds
    assert count == (cores if expected == "cores" else expected) == torch.get_num_threads()
    assert speed(128) == (1500.0 if expected == "cores" else 1000.0)  # the count's best round
    torch.set_num_threads(1)


def test_a_window_is_crowded_only_on_several_threads_far_below_the_planned_speed() -> None:
    from trackstar_pipeline.training.pretrain import CROWDED_SLOWDOWN, crowded

    planned = 0.01
    assert crowded(planned * (CROWDED_SLOWDOWN + 0.1), planned, threads=2)
    assert not crowded(planned * (CROWDED_SLOWDOWN - 0.1), planned, threads=2)  # a slow patch, not a fight
    assert not crowded(planned * 100, planned, threads=1)  # one thread has nothing to give back


def test_the_crowding_watch_speaks_after_two_crowded_windows_and_not_for_paused_time() -> None:
    from trackstar_pipeline.training.pretrain import CrowdingWatch

    watch = CrowdingWatch(planned_seconds_per_step=1e-12, window=5)  # every real step is far slower
    assert [watch.step_done(threads=2) for _ in range(10)] == [False] * 9 + [True]
    assert not any(CrowdingWatch(1e-12).step_done(threads=1) for _ in range(20))
    paused = CrowdingWatch(planned_seconds_per_step=1e-3, window=5)  # time a probe took is not a slow step
    assert not any(paused.step_done(threads=2, paused_s=1.0) for _ in range(20))


@pytest.mark.parametrize("free", [2, 1])
def test_the_watch_goes_back_to_the_cores_the_load_average_frees_less_often_each_time(
        free: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import trackstar_pipeline.training.pretrain as pretrain_module

    monkeypatch.setattr(pretrain_module, "idle_cores", lambda own_threads=0: free)
    watch = pretrain_module.CrowdingWatch(planned_seconds_per_step=1e-12, window=5, return_after=10)
    threads, changes = 2, []
    for step in range(1, 61):
        count = watch.thread_count(step, threads)
        if count != threads:
            changes.append((step, count))
            threads = count
    if free > 1:  # free again 10 steps after the first drop, 20 after the second
        assert changes == [(10, 1), (20, 2), (30, 1), (50, 2), (60, 1)]
    else:  # the neighbour stays: one thread to the end
        assert changes == [(10, 1)]


def test_threads_that_crawl_after_the_plan_drop_to_one_and_a_resume_starts_on_one(
        corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """num_threads 0 timed every core faster, but then two 5-step windows in a row run far below that speed
    (another process took the cores): training goes on with one thread, and its checkpoint and a resume start on
    it; once the load average frees the cores the run, resumed or not, goes back to them. A thread count the user
    configured is never changed."""
    import os

    cores = os.cpu_count() or 1
    if cores < 2:
        pytest.skip("one core: there is no other thread count to fall back to")
    module = "trackstar_pipeline.training.pretrain"
    # A plan measured as if every step took almost no time: each real window looks crowded.
    def measure(*args, **kwargs):
        speed = 1e12 if torch.get_num_threads() > 1 else 1e11  # every core timed faster
        return lambda width: speed

    monkeypatch.setattr(f"{module}.measured_tokens_per_s", measure)
    lines: list[str] = []

    def stop(line: str) -> None:
        lines.append(line)
        if line.startswith("step 40/"):
            raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            pretrain(corpus, replace(TINY, num_threads=0), tmp_path / "auto", progress=stop)
        assert any(f"on {cores} threads" in line for line in lines if line.startswith("pretraining"))
        dropped = [line for line in lines if "going on with 1 thread" in line]
        assert len(dropped) == 1 and dropped[0].startswith("step 10:")  # after two slow 5-step windows, once
        assert torch.load(tmp_path / "auto" / "checkpoint.pt", weights_only=False)["plan"]["threads"] == 1
        monkeypatch.setattr(f"{module}.RETURN_CHECK_STEPS", 10)
        monkeypatch.setattr(f"{module}.idle_cores", lambda own_threads=0: cores)  # the neighbour has gone
        lines.clear()
        pretrain(corpus, replace(TINY, num_threads=0), tmp_path / "auto", progress=lines.append)
        assert any(line.startswith("resuming from step 30") for line in lines)
        assert any("on 1 threads" in line for line in lines if line.startswith("pretraining"))
        changes = [line for line in lines if "going on with 1 thread" in line or "cores are free again" in line]
        assert [line.split(":")[0] for line in changes] == ["step 40", "step 50"]  # back to the planned count

        lines.clear()
        pretrain(corpus, replace(TINY, num_threads=0), tmp_path / "returning", progress=lines.append)
        changes = [line for line in lines if "going on with 1 thread" in line or "cores are free again" in line]
        assert [line.split(":")[0] for line in changes] == ["step 10", "step 20", "step 30", "step 50"]
        assert changes[1].endswith(f"back to {cores} threads")

        lines.clear()
        pretrain(corpus, replace(TINY, num_threads=cores), tmp_path / "configured", progress=lines.append)
        assert any(line.startswith("step 50/") for line in lines)  # slow windows all the way
        assert not any("going on with 1 thread" in line for line in lines) and torch.get_num_threads() == cores
    finally:
        torch.set_num_threads(1)


def test_measuring_the_speed_changes_nothing_in_the_model_and_a_resume_keeps_its_plan(
        corpus, finished, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nominal_tokens_per_s auto times throwaway steps first; the trained weights are those of a fixed-speed plan,
    and a run resumed on a machine that now measures another speed finishes the model it started."""
    result, lines = finished
    assert TINY.nominal_tokens_per_s == "auto" and any("measuring this machine's training speed" in line for line in lines)
    assert "at the measured" in result.plan
    fixed = pretrain(corpus, replace(TINY, nominal_tokens_per_s=1000.0), tmp_path / "fixed", progress=lambda _: None)
    assert "at the nominal" in fixed.plan
    reference, _ = load_model(str(result.model_dir))
    same, _ = load_model(str(fixed.model_dir))
    for (name, expected), got in zip(reference.state_dict().items(), same.state_dict().values()):
        assert torch.equal(expected, got), name

    settings = replace(TINY, epochs="auto", time_budget_s=1.0, min_epochs=2, max_epochs=6)
    monkeypatch.setattr("trackstar_pipeline.training.pretrain.measured_tokens_per_s",
                        lambda *args, **kwargs: lambda width: 1e9)  # a fast machine: max_epochs

    def stop(line: str) -> None:
        if line.startswith("step 20/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(corpus, settings, tmp_path / "resumed", progress=stop)
    monkeypatch.setattr("trackstar_pipeline.training.pretrain.measured_tokens_per_s",
                        lambda *args, **kwargs: lambda width: 1.0)  # now a slow one: it would plan min_epochs
    resumed = pretrain(corpus, settings, tmp_path / "resumed", progress=lambda _: None)
    assert json.loads(resumed.training_state_path.read_text())["epochs_planned"] == 6
    assert resumed.steps == 6 * 13


def test_measured_speed_is_positive_and_a_narrower_model_is_faster(corpus) -> None:
    from trackstar_pipeline.data.tokenizer import train_bpe_tokenizer
    from trackstar_pipeline.training.pretrain import encode_texts, measured_tokens_per_s

    settings = replace(TINY, hidden_size=128, intermediate_size=512, num_heads=4, batch_size=32)
    tokenizer = train_bpe_tokenizer(corpus["text"].to_list(), settings.vocab_size)
    rows = encode_texts(corpus["text"].to_list(), tokenizer)
    before = torch.get_rng_state()
    speed = measured_tokens_per_s(settings, tokenizer, rows, [len(row) for row in rows], None)
    assert torch.equal(torch.get_rng_state(), before)
    assert 0 < speed(128) < speed(32)
    assert speed(128) == speed(128)  # measured once, then remembered


def test_float32_that_overruns_max_time_plans_again_in_bfloat16_and_a_resume_keeps_it(
        corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """training.bfloat16_over_time: only a float32 plan over max_time_s, on a CPU with fast bfloat16, switches."""
    module = "trackstar_pipeline.training.pretrain"
    asked: list[object] = []

    def speeds(settings, tokenizer, rows, lengths, dtype, *args, **kwargs):
        asked.append(dtype)
        return lambda width: 1e9 if dtype is torch.bfloat16 else 1.0  # float32 far too slow for max_time_s

    monkeypatch.setattr(f"{module}.measured_tokens_per_s", speeds)
    monkeypatch.setattr(f"{module}.has_fast_bfloat16", lambda device: True)
    settings = replace(TINY, epochs="auto", time_budget_s=1.0, max_time_s=1.0, min_epochs=1, max_epochs=2)

    def stop(line: str) -> None:
        lines.append(line)
        if line.startswith("step 20/"):  # after the checkpoint at step 10
            raise KeyboardInterrupt

    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        pretrain(corpus, settings, tmp_path / "switched", progress=stop)
    assert asked == [None, torch.bfloat16]
    assert any("measuring bfloat16" in line for line in lines)
    assert any("threads, bfloat16 autocast;" in line and "as float32 overran" in line for line in lines)
    monkeypatch.setattr(f"{module}.has_fast_bfloat16", lambda device: False)  # the resume keeps the plan's autocast
    resumed_lines: list[str] = []
    resumed = pretrain(corpus, settings, tmp_path / "switched", progress=resumed_lines.append)
    assert json.loads(resumed.training_state_path.read_text())["precision"] == "bfloat16"
    assert any("threads, bfloat16 autocast;" in line for line in resumed_lines)  # the dtype it trains in
    assert asked == [None, torch.bfloat16]  # nothing measured again

    # no fast bfloat16, or the option off: float32 stays, over the limit, with its warning
    for name, patch in (("slow_bf16", {"has_fast": False}), ("off", {"has_fast": True, "option": False})):
        asked.clear()
        monkeypatch.setattr(f"{module}.has_fast_bfloat16", lambda device, fast=patch["has_fast"]: fast)
        kept = pretrain(corpus, replace(settings, bfloat16_over_time=patch.get("option", True)), tmp_path / name,
                        progress=lambda _: None)
        assert asked == [None], name
        assert json.loads(kept.training_state_path.read_text())["precision"] == "float32"
        assert "WARNING: over training.max_time_s" in kept.plan and "as float32 overran" not in kept.plan


BOS, EOS = 1, 2
PACK_ROWS = [[BOS, *range(10, 10 + n), EOS] for n in (3, 1, 4, 2, 7, 2)]  # BOS + text + EOS, as encode_texts writes


def test_none_keeps_one_row_per_sequence() -> None:
    from trackstar_pipeline.training.pretrain import packed_sequences

    assert packed_sequences(PACK_ROWS, 10, "none") == PACK_ROWS


@pytest.mark.parametrize("packing", ["text", "eos"])
def test_packing_keeps_every_token_in_order_within_max_length(packing: str) -> None:
    from trackstar_pipeline.training.pretrain import packed_sequences

    sequences = packed_sequences(PACK_ROWS, 10, packing)
    assert all(len(sequence) <= 10 and sequence[0] == BOS and sequence[-1] == EOS for sequence in sequences)
    texts = [row[1:-1] for row in PACK_ROWS]
    if packing == "text":  # BOS, rows back to back, EOS
        assert [token for sequence in sequences for token in sequence[1:-1]] == [t for text in texts for t in text]
        assert sequences[0] == [BOS, *texts[0], *texts[1], *texts[2], EOS]  # greedy: 1 + 3 + 1 + 4 + 1 = 10
    else:  # BOS, then each row's text and EOS
        assert [token for sequence in sequences for token in sequence[1:]] == [t for text in texts for t in text + [EOS]]
        assert sequences[0] == [BOS, *texts[0], EOS, *texts[1], EOS]  # a third row would make 12
    assert len(sequences) < len(PACK_ROWS)


def test_mixed_alternates_unpacked_and_packed_steps() -> None:
    from trackstar_pipeline.training.pretrain import step_packing

    assert [step_packing("mixed", step) for step in range(4)] == ["none", "text", "none", "text"]
    assert {step_packing("eos", step) for step in range(4)} == {"eos"}


@pytest.mark.parametrize("packing, step", [("text", 0), ("mixed", 1)])
def test_a_packed_step_trains_on_the_packed_sequences(packing: str, step: int) -> None:
    from trackstar_pipeline.training.pretrain import packed_sequences, training_step

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, max_position_embeddings=16))
    sequences = packed_sequences(PACK_ROWS, 10, "text")
    width = max(len(sequence) for sequence in sequences)
    ids = torch.tensor([sequence + [0] * (width - len(sequence)) for sequence in sequences])  # (S, T)
    labels = torch.tensor([sequence + [-100] * (width - len(sequence)) for sequence in sequences])  # (S, T)
    attention = (labels != -100).long()  # (S, T)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=attention, labels=labels).loss.item()
    settings = replace(TINY, max_length=10, packing=packing, max_grad_norm=0.0)
    loss = training_step(model, torch.optim.SGD(model.parameters(), lr=0.0), PACK_ROWS, 0, None, settings, step)
    assert loss == pytest.approx(expected, rel=1e-6)
    # pack_length (the model's context with split_sentences) decides the packing instead of max_length
    shorter = replace(settings, max_length=5)
    assert training_step(model, torch.optim.SGD(model.parameters(), lr=0.0), PACK_ROWS, 0, None, shorter, step,
                         pack_length=10) == pytest.approx(expected, rel=1e-6)
    assert training_step(model, torch.optim.SGD(model.parameters(), lr=0.0), PACK_ROWS, 0, None, shorter,
                         step) != pytest.approx(expected, rel=1e-6)


def test_model_context_fits_the_longest_row_up_to_max_context() -> None:
    from trackstar_pipeline.training.pretrain import model_context

    settings = replace(TINY, max_length=48, max_context=100)
    assert model_context([10, 20], settings) == 48  # short rows: the packing length
    assert model_context([10, 70], settings) == 70  # a longer row is read whole
    assert model_context([10, 300], settings) == 100  # up to max_context
    assert model_context([], settings) == 48


def _long_row_corpus(corpus, words: int):
    """The tiny corpus with its first row made into a paragraph: four of its facts, then filler words."""
    import polars as pl

    texts = corpus["text"].to_list()
    paragraph = " ".join(texts[:4] + ["and so on"] * words)
    return corpus.with_columns(pl.Series("text", [paragraph] + texts[1:]))


def test_a_row_longer_than_max_length_is_trained_and_attributed_whole(corpus, tmp_path: Path) -> None:
    """Cut at max_length, a fact late in a long row would never be trained on; the context grows to hold it."""
    from trackstar_pipeline.attribution.examples import context_length, encode_corpus

    long_corpus = _long_row_corpus(corpus, 12)
    settings = replace(TINY, epochs=1, split_sentences=0)  # trained whole (split rows: the test after next)
    lines: list[str] = []
    result = pretrain(long_corpus, settings, tmp_path / "long", progress=lines.append)
    model, tokenizer = load_model(str(result.model_dir))
    row_tokens = len(tokenizer(long_corpus["text"][0], add_special_tokens=False)["input_ids"]) + 2  # BOS, EOS
    assert row_tokens > settings.max_length
    assert model.config.max_position_embeddings == result.context_length == row_tokens
    assert result.rows_cut == 0 and not any("WARNING" in line for line in lines)
    state = json.loads(result.training_state_path.read_text())
    assert state["context_length"] == row_tokens and state["rows_cut"] == 0
    encoded = encode_corpus(long_corpus["id"].to_list(), long_corpus["text"].to_list(), tokenizer,
                            context_length(model, None), "truncate")
    assert encoded.truncated_ids == []  # attribution reads it whole too


def test_split_sentences_sizes_the_context_to_the_longest_row_and_packs_steps_up_to_it(corpus, tmp_path: Path) -> None:
    """Trained on sentences, the model must still read a paragraph row whole in attribution, and packed steps
    reach every position of that row."""
    from trackstar_pipeline.training.pretrain import encode_texts, pack_length_for

    long_corpus = _long_row_corpus(corpus, 12)
    settings = replace(TINY, epochs=1, split_sentences=2)
    lines: list[str] = []
    result = pretrain(long_corpus, settings, tmp_path / "split", progress=lines.append)
    model, tokenizer = load_model(str(result.model_dir))
    row_tokens = len(tokenizer(long_corpus["text"][0], add_special_tokens=False)["input_ids"]) + 2  # BOS, EOS
    assert row_tokens > settings.max_length
    assert model.config.max_position_embeddings == result.context_length == row_tokens and result.rows_cut == 0
    trained = [len(row) for row in encode_texts(training_texts(long_corpus, settings).texts, tokenizer)]
    assert max(trained) < row_tokens and pack_length_for(result.context_length, trained, settings) == row_tokens
    unsplit = [len(row) for row in encode_texts(long_corpus["text"].to_list(), tokenizer)]
    assert pack_length_for(result.context_length, unsplit, settings) == settings.max_length  # the long row is trained
    assert len(trained) > long_corpus.height
    assert any(f"{len(trained)} texts from 200 rows (1 rows of 2+ sentences" in line for line in lines)


def test_a_row_longer_than_max_context_is_cut_with_a_warning(corpus, tmp_path: Path) -> None:
    long_corpus = _long_row_corpus(corpus, 40)
    settings = replace(TINY, epochs=1, max_context=60, split_sentences=0)
    lines: list[str] = []
    result = pretrain(long_corpus, settings, tmp_path / "cut", progress=lines.append)
    model, tokenizer = load_model(str(result.model_dir))
    assert model.config.max_position_embeddings == result.context_length == 60
    lengths = [len(ids) + 2 for ids in tokenizer(long_corpus["text"].to_list(), add_special_tokens=False)["input_ids"]]
    assert result.rows_cut == sum(length > 60 for length in lengths) >= 1 and lengths[0] > 60
    warning = f"WARNING: {result.rows_cut} of the 200 rows trained are longer than training.max_context (60 tokens"
    assert any(line.startswith(warning) for line in lines)
    finished = pretrain(long_corpus, settings, tmp_path / "cut", progress=lambda _: None)  # read back, not retrained
    assert (finished.context_length, finished.rows_cut) == (60, result.rows_cut)
