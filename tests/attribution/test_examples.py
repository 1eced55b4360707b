"""Tokenization into TokenizedExample: BOS, exact prompt/completion boundary, overlength, empty input."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from attribution_helpers import make_tokenizer
from trackstar_pipeline.attribution.examples import OverlengthError, context_length, encode_corpus, encode_queries


@pytest.mark.parametrize("with_bos", [True, False])
def test_query_boundary_is_exact(with_bos):
    tokenizer = make_tokenizer(with_bos)
    batch = encode_queries(["q"], ["Paris is the"], [" capital of France."], tokenizer, 64, "reject")
    example = batch.examples[0]
    completion = tokenizer(" capital of France.", add_special_tokens=False)["input_ids"]
    assert example.input_ids[example.loss_start:] == tuple(completion)
    assert (example.input_ids[0] == tokenizer.bos_token_id) == with_bos
    assert batch.truncated_ids == []


@pytest.mark.parametrize("with_bos", [True, False])
def test_corpus_prepends_bos_only_when_the_tokenizer_has_one(with_bos):
    tokenizer = make_tokenizer(with_bos)
    example = encode_corpus(["c"], ["Water boils."], tokenizer, 64, "reject").examples[0]
    text_ids = tuple(tokenizer("Water boils.", add_special_tokens=False)["input_ids"])
    assert example.input_ids == ((tokenizer.bos_token_id,) if with_bos else ()) + text_ids
    assert example.loss_start == 1


def test_overlength_truncate_counts_and_keeps_the_completion():
    tokenizer = make_tokenizer(True)
    completion = " is the capital of Japan."
    n_completion = len(tokenizer(completion, add_special_tokens=False)["input_ids"])
    limit = 1 + len(tokenizer("Tokyo", add_special_tokens=False)["input_ids"]) + n_completion  # "short" fits exactly
    batch = encode_queries(["long", "short"], ["The quick brown fox jumps over the lazy dog. Tokyo", "Tokyo"],
                           [completion, completion], tokenizer, limit, "truncate")
    assert batch.truncated_ids == ["long"]
    long = batch.examples[0]
    assert len(long.input_ids) == limit and long.input_ids[0] == tokenizer.bos_token_id
    assert len(long.input_ids) - long.loss_start == n_completion  # completion intact, prompt cut on the left
    corpus = encode_corpus(["a", "b"], ["The quick brown fox jumps over the lazy dog.", "Hi"], tokenizer, 5, "truncate")
    assert corpus.truncated_ids == ["a"] and len(corpus.examples[0].input_ids) == 5


def test_overlength_reject_names_the_example():
    tokenizer = make_tokenizer(False)
    with pytest.raises(OverlengthError, match="'doc-7'"):
        encode_corpus(["doc-7"], ["The quick brown fox jumps over the lazy dog."], tokenizer, 4, "reject")
    with pytest.raises(OverlengthError, match="'q-3'"):
        encode_queries(["q-3"], ["The quick brown fox"], [" jumps"], tokenizer, 3, "reject")


def test_completion_longer_than_max_length_cannot_be_truncated():
    tokenizer = make_tokenizer(True)
    with pytest.raises(OverlengthError, match="'q'.*completion"):
        encode_queries(["q"], ["Paris"], [" is the capital of France."], tokenizer, 3, "truncate")


def test_empty_text_or_completion_is_rejected_by_id():
    tokenizer = make_tokenizer(True)
    with pytest.raises(ValueError, match="'c2'.*'text' is empty"):
        encode_corpus(["c1", "c2"], ["fine", "  "], tokenizer, 64, "reject")
    with pytest.raises(ValueError, match="'q9'.*'completion' is empty"):
        encode_queries(["q9"], ["Paris is"], [""], tokenizer, 64, "reject")


def test_context_length_prefers_the_setting_then_the_model_config():
    assert context_length(SimpleNamespace(config=SimpleNamespace(max_position_embeddings=128)), 32) == 32
    assert context_length(SimpleNamespace(config=SimpleNamespace(max_position_embeddings=128)), None) == 128
    assert context_length(SimpleNamespace(config=SimpleNamespace(n_ctx=256))) == 256
    with pytest.raises(ValueError, match="set attribution.max_length"):
        context_length(SimpleNamespace(config=SimpleNamespace(hidden_size=8)))
