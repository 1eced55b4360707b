"""The corpus-trained byte-level BPE: round-trips any text, has bos/eos/pad, survives save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from trackstar_pipeline.data.tokenizer import train_bpe_tokenizer

TEXTS = ["Ann was born in Rome.", "Bo lives in Oslo.", "Ann lives in Rome."] * 20


def test_round_trip_special_tokens_and_no_automatic_bos(tmp_path: Path) -> None:
    tokenizer = train_bpe_tokenizer(TEXTS, 300)
    assert len(tokenizer) <= 300
    assert {tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token} == {"<pad>", "<s>", "</s>"}
    unseen = "Zoë's café — naïve ü 東京"
    ids = tokenizer(unseen)["input_ids"]
    assert tokenizer.bos_token_id not in ids  # callers prepend BOS themselves
    assert tokenizer.decode(ids) == " " + unseen  # byte-level: nothing is unknown; the prefix space comes back
    assert len(tokenizer(" Rome")["input_ids"]) == 1  # frequent corpus words become one token
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert reloaded(unseen)["input_ids"] == ids and reloaded.pad_token_id == tokenizer.pad_token_id


def test_a_word_has_the_same_tokens_at_the_start_and_behind_a_lead_in() -> None:
    """The fact's subject must look the same to the model in a corpus row that opens with it and in a query
    that puts a lead-in first; without the prefix space 'Ann' and ' Ann' were different tokens."""
    tokenizer = train_bpe_tokenizer(TEXTS, 300)
    row = tokenizer("Ann was born in", add_special_tokens=False)["input_ids"]
    query = tokenizer("Records show that Ann was born in", add_special_tokens=False)["input_ids"]
    assert query[-len(row):] == row
    assert tokenizer("Ann")["input_ids"] == tokenizer(" Ann")["input_ids"]


def test_deterministic_and_rejects_tiny_vocab() -> None:
    assert train_bpe_tokenizer(TEXTS, 300).get_vocab() == train_bpe_tokenizer(TEXTS, 300).get_vocab()
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_bpe_tokenizer(TEXTS, 100)
