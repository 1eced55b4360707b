"""A corpus row's sentences, for pretraining on each sentence as its own text (training.split_sentences)
and for BM25's scoring by a row's best sentence (evaluation.bm25_split_sentences).

Rule-based, no model: a sentence ends at '.', '!' or '?' (and any closing quote or bracket) followed by
whitespace and a capital letter or digit, except after an abbreviation such as 'Dr.', 'St.' or an
initial ('J.'), whose period is followed by a name. Text without such a boundary is one sentence, so a
row of one sentence trains exactly as before.

Pretraining cuts a row into self-contained pieces, not bare sentences: a sentence with a third-person
pronoun ('He grew up in Nibrax.') stays with the sentence before it, which usually names whom it means
(and with the one before that while that one names no one). Cut alone, such a sentence states a fact
about nobody, which the model cannot learn. Session 17 (docs/quality_results.md): in worlds of
one-person biographies, bare sentences left 29-42% of the queried facts stated only without their subject.
"""

from __future__ import annotations

import re

_BOUNDARY = re.compile(r"[.!?][\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREVIATION = re.compile(r"(?:^|[\s(\"'])[A-Z][a-z]{0,2}\.$")
"""A capitalised word of at most three letters ('Dr', 'Mrs', 'St', 'Inc') or an initial ('J'), then the period."""
_REFERS_BACK = re.compile(r"\b(?:he|she|him|her|his|hers|himself|herself|it|its|itself|they|them|their|theirs|"
                          r"themselves)\b", re.IGNORECASE)
"""A third-person pronoun: its sentence means someone or something an earlier sentence named."""


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


def names_someone(sentence: str) -> bool:
    """Whether a word after the sentence's first is capitalised or a number: a name, a place, a year."""
    return any(word.lstrip("\"'([")[:1].isupper() or word.lstrip("\"'([")[:1].isdigit() for word in sentence.split()[1:])


def self_contained_pieces(sentences: list[str]) -> list[str]:
    """The sentences in order, each one that refers back by pronoun joined to the piece before it, and that piece
    to the one before it while it names no one ('The roads were muddy. He left.' follows whoever came before)."""
    pieces: list[list[str]] = []
    for sentence in sentences:
        if not pieces or not _REFERS_BACK.search(sentence):
            pieces.append([sentence])
            continue
        pieces[-1].append(sentence)
        while len(pieces) > 1 and not any(names_someone(part) for part in pieces[-1][:-1]):
            last = pieces.pop()
            pieces[-1].extend(last)
    return [" ".join(piece) for piece in pieces]


def passage_texts(text: str, split_from: int, self_contained: bool = False) -> list[str]:
    """The text's sentences (self_contained: its self-contained pieces) when it has at least split_from sentences
    (and at least 2) and they make 2 pieces or more, else the text itself: the rule pretraining
    (training.split_sentences, self-contained) and BM25 (evaluation.bm25_split_sentences, bare sentences) cut
    rows by. BM25 keeps bare sentences: the query brings the subject's name and the object, so a row scored by
    its best sentence still finds 'He grew up in Nibrax.' by its object; pieces there cost BM25 MRR on the
    biography worlds (0.786 against 0.844 on one, docs/quality_results.md, session 17)."""
    sentences = split_sentences(text)
    if len(sentences) < max(split_from, 2):
        return [text]
    pieces = self_contained_pieces(sentences) if self_contained else sentences
    return pieces if len(pieces) >= 2 else [text]
