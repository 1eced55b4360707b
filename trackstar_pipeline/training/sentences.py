"""A corpus row's sentences, for pretraining on each sentence as its own text (training.split_sentences).

Rule-based, no model: a sentence ends at '.', '!' or '?' (and any closing quote or bracket) followed by
whitespace and a capital letter or digit, except after an abbreviation such as 'Dr.', 'St.' or an
initial ('J.'), whose period is followed by a name. Text without such a boundary is one sentence, so a
row of one sentence trains exactly as before.
"""

from __future__ import annotations

import re

_BOUNDARY = re.compile(r"[.!?][\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREVIATION = re.compile(r"(?:^|[\s(\"'])[A-Z][a-z]{0,2}\.$")
"""A capitalised word of at most three letters ('Dr', 'Mrs', 'St', 'Inc') or an initial ('J'), then the period."""


def split_sentences(text: str) -> list[str]:
    """The sentences of `text` in order, stripped; empty pieces dropped (an empty text gives [])."""
    pieces, start = [], 0
    for boundary in _BOUNDARY.finditer(text):
        if text[boundary.start()] == "." and _ABBREVIATION.search(text[start:boundary.start() + 1]):
            continue
        pieces.append(text[start:boundary.end()].strip())
        start = boundary.end()
    pieces.append(text[start:].strip())
    return [piece for piece in pieces if piece]


def passage_texts(text: str, split_from: int) -> list[str]:
    """The text's sentences when it has at least split_from of them (and at least 2), else the text itself: the
    rule pretraining (training.split_sentences) and BM25 (evaluation.bm25_split_sentences) cut rows by."""
    sentences = split_sentences(text)
    return sentences if len(sentences) >= max(split_from, 2) else [text]
