"""A corpus row's sentences, for pretraining on each sentence as its own text (training.split_sentences)
and for BM25's scoring by a row's best sentence (evaluation.bm25_split_sentences).

Rule-based, no model: a sentence ends at '.', '!' or '?' (and any closing quote or bracket) followed by
whitespace and a capital letter or digit, except after an abbreviation such as 'Dr.', 'St.' or an
initial ('J.'), whose period is followed by a name. Text without such a boundary is one sentence, so a
row of one sentence trains exactly as before.

A row is cut into self-contained pieces, not bare sentences: a sentence with a third-person pronoun
('She grew up in Rome.') comes after its anchors, the sentences before it that name someone ('Ann Lee plays
the lute. She grew up in Rome.'). Cut alone, it states a fact about nobody: the model cannot learn whose it
is, and BM25 cannot match it to the subject's name. Kept inside the whole row instead, it sits up to several
sentences from the name. The anchors are the row's first such sentence, its topic (an article names its
subject first, and an aside such as 'Rome lies by a river.' does not change whom 'She' means), and the last,
the nearest name (a page of records about several people), one sentence when they are the same.

Session 17 (docs/quality_results.md), worlds of one-person biographies: bare sentences left 29-42% of the
queried facts stated only without their subject; a 5k-row world recalled 0.488 with pronoun sentences kept
in their runs and 0.758-0.822 anchored (the last naming sentence), in the same time budget, and BM25 MRR
rose from 0.844-0.869 (bare) to 0.964-0.968 (anchored), every other world unchanged. Session 18: with
asides naming a place or a rival between a biography's sentences, the last naming sentence alone left 4.6%
of a world's queried facts in no piece that names their subject; first and last leave none.
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


_SENTENCE_STARTERS = frozenset(
    "a an the this that these those it he she they we i you his her its their our my your in on at by for from "
    "with of to into after before during since as and but or so yet then there here many few some most all no "
    "nobody none one when while if although though however because".split())
"""Capitalised first words that name no one: a sentence's first word counts as a name unless it is one of these."""


def names_someone(sentence: str) -> bool:
    """Whether the sentence has a capitalised word or a number (a name, a place, a year), its first word
    counting unless it is a common sentence starter ('The', 'In', 'Many')."""
    words = [word.lstrip("\"'([") for word in sentence.split()]
    if words and words[0][:1].isupper() and words[0].rstrip(".,;:!?").lower() not in _SENTENCE_STARTERS:
        return True
    return any(word[:1].isupper() or word[:1].isdigit() for word in words[1:])


def self_contained_pieces(sentences: list[str]) -> list[str]:
    """The sentences in order, each one that refers back by pronoun prefixed with its anchors: the first and the
    last sentence before it that name someone and refer to no one ('Ann Lee plays the lute. Rome lies by a
    river. She grew up in Rome.' gives 'Ann Lee plays the lute.', 'Rome lies by a river.' and 'Ann Lee plays
    the lute. Rome lies by a river. She grew up in Rome.'; with one anchor, it alone). A sentence that refers
    back with no anchor before it stays as it is."""
    pieces: list[str] = []
    first: str | None = None
    last: str | None = None
    for sentence in sentences:
        refers_back = _REFERS_BACK.search(sentence) is not None
        if first is not None and refers_back:
            pieces.append(f"{first} {sentence}" if last == first else f"{first} {last} {sentence}")
            continue
        pieces.append(sentence)
        if not refers_back and names_someone(sentence):
            first = first if first is not None else sentence
            last = sentence
    return pieces


def passage_texts(text: str, split_from: int) -> list[str]:
    """The text's self-contained pieces when it has at least split_from sentences (and at least 2), else the text
    itself: the rule pretraining (training.split_sentences) and BM25 (evaluation.bm25_split_sentences) cut rows by."""
    sentences = split_sentences(text)
    return self_contained_pieces(sentences) if len(sentences) >= max(split_from, 2) else [text]
