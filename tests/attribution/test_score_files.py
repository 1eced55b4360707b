"""`score_files` end to end on a tiny save_pretrained directory and plain JSONL files."""

from __future__ import annotations

import json

import pytest
import torch

from attribution_helpers import (QUERY_IDS, adafactor, corpus_examples, exact_gradients, write_score_inputs,
                                 make_tokenizer, query_examples, saved_optimizer_state, tiny_llama)
from trackstar_pipeline.attribution.gradients import hooked_modules
from trackstar_pipeline.attribution.score_files import score_files
from trackstar_pipeline.settings import AttributionSettings


N_QUERIES = 4  # the fifth has an empty prompt, which the canonical loaders reject


@pytest.fixture
def files(tmp_path):
    tokenizer = make_tokenizer(True)
    model = tiny_llama(len(tokenizer))
    saved_optimizer_state(model, tokenizer, adafactor, tmp_path)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    write_score_inputs(tmp_path, N_QUERIES)
    return tmp_path, model, tokenizer


def _read(path):
    return [json.loads(line) for line in open(path)]


def test_writes_one_line_per_query_in_descending_order(files):
    tmp_path, _, _ = files
    messages = []
    settings = AttributionSettings(projection_dim=256, lambda_mix="auto", lambda_auto_component=3)
    summary = score_files(tmp_path / "model", tmp_path / "corpus.jsonl", tmp_path / "queries.jsonl",
                          tmp_path / "out" / "scores.jsonl", settings, top_k=3,
                          optimizer_state_path=tmp_path / "optimizer.pt", progress=messages.append)
    lines = _read(tmp_path / "out" / "scores.jsonl")
    assert [line["query_id"] for line in lines] == QUERY_IDS[:N_QUERIES]
    for line in lines:
        scores = [p["score"] for p in line["proponents"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert all(p["id"].startswith("c") and -1.0001 <= p["score"] <= 1.0001 for p in line["proponents"])
    assert summary["queries"] == N_QUERIES and summary["corpus"] == 8 and 0.0 < summary["lambda"] < 1.0
    assert any("lambda=" in message for message in messages)


def test_exact_scores_are_cosines_of_exact_gradients(files):
    tmp_path, model, tokenizer = files
    settings = AttributionSettings(projection_dim=0, curvature=False)
    score_files(tmp_path / "model", tmp_path / "corpus.jsonl", tmp_path / "queries.jsonl", tmp_path / "scores.jsonl",
                settings, top_k=8, progress=lambda message: None)
    specs = hooked_modules(model, settings)

    def flat(examples):
        vectors = torch.stack([torch.cat([g.flatten() for g in grads]) for grads in exact_gradients(model, examples, specs)])
        return torch.nn.functional.normalize(vectors, dim=1)

    cosines = flat(query_examples(tokenizer)[:N_QUERIES]) @ flat(corpus_examples(tokenizer)).T  # (Q, N)
    for q, line in enumerate(_read(tmp_path / "scores.jsonl")):
        for proponent in line["proponents"]:
            assert proponent["score"] == pytest.approx(float(cosines[q, int(proponent["id"][1:])]), abs=1e-5)


def test_refuses_exact_gradients_with_dense_curvature(files):
    tmp_path, _, _ = files
    big = AttributionSettings(projection_dim=0, include_embedding=True, curvature_blocks="dense")  # > 16384 in all
    with pytest.raises(ValueError, match="--no-curvature"):
        score_files(tmp_path / "model", tmp_path / "corpus.jsonl", tmp_path / "queries.jsonl", tmp_path / "s.jsonl",
                    big, top_k=2, progress=lambda message: None)


def test_model_directory_without_tokenizer_is_named(files):
    tmp_path, model, _ = files
    model.save_pretrained(tmp_path / "bare")
    with pytest.raises((OSError, ValueError), match="tokenizer"):
        score_files(tmp_path / "bare", tmp_path / "corpus.jsonl", tmp_path / "queries.jsonl", tmp_path / "s.jsonl",
                    AttributionSettings(), top_k=2, progress=lambda message: None)
