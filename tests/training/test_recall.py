"""fact_recall against an exact reference: a fake LM whose greedy next token is (last token + 1)."""

from __future__ import annotations

from types import SimpleNamespace

import polars as pl
import torch

from trackstar_pipeline.data.tokenizer import train_bpe_tokenizer
from trackstar_pipeline.training.recall import fact_recall


class SuccessorLM(torch.nn.Module):
    """Predicts token t+1 after token t; checks that padding is on the left and positions skip it."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, position_ids):
        for row, mask, positions in zip(input_ids, attention_mask, position_ids):
            real = mask.bool()
            assert real[-1] and torch.equal(positions[real], torch.arange(int(real.sum())))
        logits = torch.zeros(*input_ids.shape, self.vocab)  # (B, T, V)
        logits.scatter_(2, ((input_ids + 1) % self.vocab).unsqueeze(-1), 1.0)
        return SimpleNamespace(logits=logits)


def test_recall_matches_the_successor_reference() -> None:
    texts = ["ab cd ef gh", "the quick brown fox", "one two three"] * 10
    tokenizer = train_bpe_tokenizer(texts, 300)
    vocab = len(tokenizer)
    prompts = ["ab cd", "the quick", "one", "ab", "the"]
    rows = []
    for index, prompt in enumerate(prompts):
        last = tokenizer(prompt, add_special_tokens=False)["input_ids"][-1]
        n_new = 1 + index % 3
        truth = tokenizer.decode([(last + k) % vocab for k in range(1, n_new + 1)])
        # even rows: the completion is exactly what the successor model generates
        completion = truth if index % 2 == 0 else " zz"
        rows.append({"id": f"q{index}", "prompt": prompt, "completion": completion})
    queries = pl.DataFrame(rows).with_columns(pl.lit(None, dtype=pl.List(pl.String)).alias("fact"))
    result = fact_recall(SuccessorLM(vocab), tokenizer, queries, batch_size=2)
    assert result.correct == {"q0": True, "q1": False, "q2": True, "q3": False, "q4": True}
    assert result.accuracy == 3 / 5
    assert result.by_bucket == {}


def test_recall_splits_by_mention_bucket() -> None:
    texts = ["x y z"] * 20
    tokenizer = train_bpe_tokenizer(texts, 270)
    vocab = len(tokenizer)
    last = tokenizer("x", add_special_tokens=False)["input_ids"][-1]
    right = tokenizer.decode([(last + 1) % vocab])
    queries = pl.DataFrame(
        {"id": ["a", "b"], "prompt": ["x", "x"], "completion": [right, " nope"], "fact": [["s", "r", "o"], ["s", "r", "p"]]}
    )
    corpus = pl.DataFrame(
        {"id": ["c1", "c2", "c3"], "text": ["t"] * 3, "facts": [[["s", "r", "o"]], [["s", "r", "o"]], [["s", "r", "p"]]]}
    )
    result = fact_recall(SuccessorLM(vocab), tokenizer, queries, corpus)
    assert {k: (v.queries, v.recalled) for k, v in result.by_bucket.items()} == {"1": (1, 0), "2-3": (1, 1)}
    assert list(result.by_bucket) == ["1", "2-3"]
