"""evaluate() without a model (given scorers + bm25 + random + fusion): the report folder and its keys."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trackstar_pipeline.evaluation.evaluate import EvaluationInputs, evaluate
from trackstar_pipeline.evaluation.report import bm25_sentence, explorer_html, headline_table, paired_table
from trackstar_pipeline.evaluation.scorers import matrix_scorer
from trackstar_pipeline.evaluation.tailpatch import TailPatchEffect
from trackstar_pipeline.settings import PipelineSettings, load_settings

PEOPLE = ["Ada Brill", "Bo Crane", "Cy Dorn", "Di Eck"]
CITIES = ["Parvo", "Romel", "Tarsk", "Ulm"]


def small_world():
    """4 facts stated 1, 2, 3, 5 times, plus fillers; each query asks one fact."""
    rows = []
    for i, (person, city) in enumerate(zip(PEOPLE, CITIES)):
        for j in range((1, 2, 3, 5)[i]):
            rows.append({"id": f"c{i}{j}", "text": f"{person} lives in {city} <b>{j}</b>",
                         "facts": [[person, "lives_in", city]]})
    for j in range(20):
        rows.append({"id": f"f{j:02d}", "text": f"Filler sentence number {j} about {CITIES[j % 4]}.", "facts": []})
    corpus = pl.DataFrame(rows, schema={"id": pl.String, "text": pl.String, "facts": pl.List(pl.List(pl.String))})
    queries = pl.DataFrame(
        {"id": [f"q{i}" for i in range(5)],
         "prompt": [f"According to the archive, {p} lives in" for p in PEOPLE] + ["Nobody lives in"],
         "completion": [f" {c}" for c in CITIES] + [" Nowhere"],
         "fact": [[p, "lives_in", c] for p, c in zip(PEOPLE, CITIES)] + [None]},
        schema={"id": pl.String, "prompt": pl.String, "completion": pl.String, "fact": pl.List(pl.String)})
    truth = {f"q{i}": [r["id"] for r in rows if r["facts"] == [[p, "lives_in", CITIES[i]]]]
             for i, p in enumerate(PEOPLE)}
    truth["q4"] = []
    return corpus, queries, truth


def oracle_scores(corpus, queries, truth):
    """A perfect method: 1 for ground truth, 0 elsewhere."""
    ids = corpus["id"].to_list()
    return np.array([[1.0 if c in truth[q] else 0.0 for c in ids] for q in queries["id"].to_list()])


SETTINGS = load_settings(overrides={"evaluation.closed_set_bm25": 3, "evaluation.closed_set_same_completion": 2,
                                    "evaluation.closed_set_random": 4, "evaluation.top_k": 10,
                                    "evaluation.projection_dim_sweep": []})


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    corpus, queries, truth = small_world()
    oracle = matrix_scorer(queries["id"].to_list(), corpus["id"].to_list(), oracle_scores(corpus, queries, truth))
    out = tmp_path_factory.mktemp("report")
    inputs = EvaluationInputs(corpus, queries, truth, SETTINGS, methods={"trackstar": oracle},
                              fact_correct={"q0": True, "q1": False, "q2": True, "q3": True, "q4": False},
                              fact_recall=0.9, model_info={"name": "none"}, table_version=7)
    return evaluate(inputs, out, progress=lambda message: None)


def test_a_given_method_may_score_more_queries_than_the_evaluated_sample(tmp_path):
    corpus, queries, truth = small_world()
    oracle = matrix_scorer(queries["id"].to_list(), corpus["id"].to_list(), oracle_scores(corpus, queries, truth))
    settings = dataclasses.replace(SETTINGS, evaluation=dataclasses.replace(SETTINGS.evaluation, max_eval_queries=3))
    said: list[str] = []
    sampled = evaluate(EvaluationInputs(corpus, queries, truth, settings, methods={"trackstar": oracle}), tmp_path,
                       progress=said.append)
    assert any("trackstar+bm25 fuses 'trackstar': trackstar_r_train_only" in line for line in said)
    evaluated = sampled.queries["id"].to_list()
    assert len(evaluated) == 3
    for setting in ("open_set", "closed_set"):
        assert set(sampled.rankings[setting]["trackstar+bm25"]) == set(evaluated)
    assert sampled.summary["open_set"]["trackstar"]["mrr"] == 1.0


def test_evaluation_json_has_the_promised_shape(result):
    summary = json.loads(result.files["json"].read_text())
    for key in ("n_queries", "n_corpus", "model", "settings", "fact_recall", "table_version", "open_set", "closed_set"):
        assert key in summary
    assert (summary["n_queries"], summary["n_corpus"], summary["table_version"]) == (5, 31, 7)
    assert isinstance(summary["settings"]["projection_dim"], int)
    # lambda 'auto' with no R built here (trackstar is a given scorer): the setting is reported, no number invented
    assert summary["settings"]["lambda_setting"] == SETTINGS.attribution.lambda_mix == "auto"
    assert summary["settings"]["lambda"] is None
    # fact_recall is over the evaluated queries, as every metric is; the recall given (all queries) is kept beside it
    assert summary["fact_recall"] == pytest.approx(3 / 5) and summary["fact_recall_all_queries"] == 0.9
    assert set(summary["open_set"]) == {"trackstar", "bm25", "random", "trackstar+bm25"}
    # no raw gradients or model here, so no R_train-only ranking: the fusion takes the given trackstar and says so
    assert summary["fusion_methods"] == ["trackstar", "bm25"]
    assert "trackstar+bm25 fuses trackstar with bm25." in result.files["markdown"].read_text()
    # the BM25 variant is recorded and said (evaluation.bm25_split_sentences, 2 by default)
    assert summary["settings"]["evaluation"]["bm25_split_sentences"] == 2
    assert "BM25 scores a row of 2 or more sentences by its best-matching sentence" in result.files["markdown"].read_text()
    assert bm25_sentence({"settings": {"evaluation": {"bm25_split_sentences": 0}}}) == ""
    trackstar = summary["open_set"]["trackstar"]
    assert trackstar["mrr"] == 1.0 and trackstar["recall@10"] == 1.0
    assert trackstar["n_queries_without_ground_truth"] == 1
    assert set(trackstar) >= {"mrr", "recall@10", "tailpatch@10", "tailpatch@1", "tailpatch@3"}
    assert trackstar["tailpatch@10"] is None  # no model: no tail-patch
    assert summary["open_set"]["random"]["mrr"] < 1.0
    assert summary["closed_set"]["trackstar"]["mrr"] == 1.0
    by_frequency = summary["splits"]["open_set"]["by_frequency"]["trackstar"]
    assert {label: group["n_queries"] for label, group in by_frequency.items()} == {
        "1": 1, "2-3": 2, "4-7": 1, "0": 1}
    assert set(summary["splits"]["open_set"]["by_correct"]["bm25"]) == {"correct", "incorrect"}


def test_closed_set_candidates_hold_the_promised_parts(result):
    candidates = result.candidates["q3"]
    assert candidates[:5] == [f"c3{j}" for j in range(5)]
    assert len(candidates) == len(set(candidates)) <= 5 + 3 + 2 + 4
    for method, per_query in result.rankings["closed_set"].items():
        assert {c for c, _ in per_query["q3"]} <= set(candidates), method


def test_report_files_and_markdown(result):
    for path in result.files.values():
        assert path.is_file() and path.stat().st_size > 0, path
    assert result.files["metrics_plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = result.files["markdown"].read_text()
    assert "![metrics by method](metrics_by_method.png)" in markdown
    assert "| trackstar | 1.000 | 1.000 | – | – | – |" in markdown
    table = headline_table(result.summary)
    assert table.startswith("Fact recall: 0.600 (3 of 5 evaluated queries")
    assert table.count("| method | mrr | recall@10 |") == 2
    assert markdown.splitlines()[2].startswith("Fact recall: 0.600")
    assert "paired_tailpatch" not in result.summary  # no tail-patch here, so no paired differences
    assert "_no paired tail-patch (no tail-patch, no trackstar ranking, or every method ranks as trackstar)_" in markdown


def test_paired_table_marks_differences_within_noise():
    summary = {"methods": ["trackstar", "bm25", "trackstar+bm25"], "paired_tailpatch": {"open_set": {
        "bm25": {"tailpatch@10": {"mean": -0.0123, "half_width": 0.004, "queries": 80},
                 "tailpatch@1": {"mean": None, "half_width": None, "queries": 1}},
        "trackstar+bm25": {"tailpatch@10": {"mean": 0.0014, "half_width": 0.0025, "queries": 80},
                           "tailpatch@1": {"mean": 0.002, "half_width": 0.002, "queries": 80}}}}}
    lines = paired_table(summary).splitlines()
    assert lines[0] == "| method | tailpatch@1 − trackstar's | tailpatch@10 − trackstar's |"
    assert lines[2] == "| bm25 | – | -1.2e-02 ± 4.0e-03 |"  # outside noise: no mark
    assert lines[3] == "| trackstar+bm25 | +2.0e-03 ± 2.0e-03 ≈ | +1.4e-03 ± 2.5e-03 ≈ |"
    assert "Tail-patch against trackstar, paired" not in headline_table({"methods": [], "n_queries": 0})


def test_explorer_is_self_contained(result):
    html = result.files["explorer"].read_text()
    assert "http://" not in html and "https://" not in html and "<link" not in html
    assert "<b>" not in html  # corpus text with markup is escaped inside the embedded JSON


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _render(page: Path, fragment: str = "") -> str:
    with tempfile.TemporaryDirectory() as profile:
        completed = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom",
             page.resolve().as_uri() + fragment],
            capture_output=True, text=True, timeout=90, env={**os.environ, "HOME": profile})
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed "
                    "(apt-get install -y chromium); the explorer render test needs a real browser")
def test_explorer_renders_proponents_in_headless_chromium(result):
    dom = _render(result.files["explorer"], "#query=q3&method=trackstar&setting=open_set")
    assert 'id="proponents"' in dom  # the table exists only if the script ran
    for j in range(5):  # the oracle's top proponents of q3, marked as ground truth, with their text
        assert f'<tr class="gt" data-id="c3{j}">' in dom
        assert f"Di Eck lives in Ulm &lt;b&gt;{j}&lt;/b&gt;" in dom
    assert "top 10 proponents by trackstar" in dom
    assert re.search(r'data-id="c30">(<td[^>]*>[^<]*</td>){4}<td class="">\u2013</td>', dom)  # no model: no Δp


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed "
                    "(apt-get install -y chromium); the explorer render test needs a real browser")
def test_explorer_shows_tail_patch_effects_and_switches_method(result, tmp_path):
    result = dataclasses.replace(result, effects={("c30", "q3"): TailPatchEffect(0.0123, 0.5),
                                                  ("c31", "q3"): TailPatchEffect(-0.0045, -0.1)})
    page = tmp_path / "explorer.html"
    page.write_text(explorer_html(result))
    dom = _render(page, "#query=q3&method=trackstar&setting=open_set")
    assert re.search(r'data-id="c30">.*?<td class="up">\+0\.0123</td>', dom)
    assert re.search(r'data-id="c31">.*?<td class="down">-0\.0045</td>', dom)
    bm25_dom = _render(result.files["explorer"], "#query=q0&method=bm25&setting=closed_set")
    assert '<tr class="gt" data-id="c00">' in bm25_dom and "top " in bm25_dom
    assert "According to the archive, Ada Brill lives in" in bm25_dom
