"""A byte-level BPE tokenizer trained on the corpus, for when the user brings no model.

Byte-level BPE (as GPT-2 and Llama-3 use) never meets an unknown character, so invented names
and real Wikidata labels alike tokenize. Every text gets a prefix space (as Llama's SentencePiece
adds a dummy one), so a word has one token sequence wherever it stands: without it a row's first
word ("Dri Quouldbrax works for ...") and the same word after a query's lead-in ("Records show that
Dri Quouldbrax works for") are different tokens, and a model that read every fact with its subject
first could not recall it behind any lead-in (foreign world A: 0.46 of the queries recalled, 0.92
with the lead-in removed; docs/quality_results.md, session 10). Decoding returns that space.
The result is a transformers PreTrainedTokenizerFast with bos/eos/pad tokens; it adds no special
tokens by itself (callers prepend BOS explicitly, as attribution/examples.py does), and it is saved
next to the model with save_pretrained.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"


TOKENIZER_RECIPE = "byte-level BPE, prefix space"
"""Part of pretraining's fingerprint: a model cached under an older recipe is trained again."""


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of at most vocab_size tokens on the texts (deterministic for the same texts)."""
    if vocab_size < 260:
        raise ValueError(f"vocab_size={vocab_size} is below the 256 byte tokens plus specials; use at least 260")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD_TOKEN, BOS_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN
    )
