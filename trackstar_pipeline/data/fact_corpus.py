"""Turn (subject, relation, object) facts into a corpus and a query set with known ground truth.

Both fact worlds (the embedded invented one and the real Wikidata one) share this renderer:
each fact gets a skewed mention count, every mention becomes a corpus sentence in one of the
relation's paraphrases (some sentences state two facts), distractor sentences state none, and
queries use a query-only template whose prompt ends right before the object.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import polars as pl

BUCKET_EDGES: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
"""Lower edges of the mention-count buckets results are split by: 1, 2-3, 4-7, 8-15, 16-31, 32+."""

DISTRACTOR_FRACTION = 0.1
"""Share of corpus rows that state no fact at all."""
TWO_FACT_FRACTION = 0.2
"""Share of fact-stating rows that state two facts."""
MAX_MENTIONS = 40
ZIPF_EXPONENT = 1.1

CORPUS_FRAMINGS: tuple[str, ...] = ("", "", "", "", "Records show that ", "It is well known that ", "By all accounts, ")
"""Optional lead-ins for corpus sentences; queries use their own framing, never one of these."""


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    object: str

    def as_list(self) -> list[str]:
        return [self.subject, self.relation, self.object]


@dataclass(frozen=True)
class RelationTemplates:
    """Paraphrases of one relation: corpus clauses use {s} and {o}; the query prompt uses {s} only."""

    corpus: tuple[str, ...]
    query: str


def frequency_bucket(count: int) -> str:
    """Label of the mention-count bucket a fact with `count` corpus mentions falls in."""
    if count < 1:
        return "0"
    label = ""
    for low, high in zip(BUCKET_EDGES, BUCKET_EDGES[1:] + (None,)):
        if count >= low:
            label = f"{low}+" if high is None else (f"{low}" if high - 1 == low else f"{low}-{high - 1}")
    return label


def zipf_counts(n_mentions: int, max_count: int, exponent: float, rng: random.Random) -> list[int]:
    """Mention counts per fact, Zipf-like over 1..max_count, summing exactly to n_mentions."""
    weights = [k ** -exponent for k in range(1, max_count + 1)]
    values = list(range(1, max_count + 1))
    counts: list[int] = []
    # Guarantee the spread the evaluation splits by: one fact at the top of the range first.
    if n_mentions >= 2 * max_count:
        counts.append(max_count)
    total = sum(counts)
    while total < n_mentions:
        count = min(rng.choices(values, weights)[0], n_mentions - total)
        counts.append(count)
        total += count
    rng.shuffle(counts)
    return counts


@dataclass(frozen=True)
class MentionPlan:
    """How a corpus of n rows divides into distractors, two-fact rows and per-fact mention counts."""

    n_distractors: int
    n_two_fact: int
    counts: list[int]


def plan_mentions(
    n_corpus: int,
    rng: random.Random,
    max_mentions: int = MAX_MENTIONS,
    exponent: float = ZIPF_EXPONENT,
    distractor_fraction: float = DISTRACTOR_FRACTION,
) -> MentionPlan:
    """Skewed mention counts whose rendering (with distractors and two-fact rows) is n_corpus rows."""
    if n_corpus < 20:
        raise ValueError(f"n_corpus={n_corpus} is too small for a fact world; use at least 20 rows")
    n_distractors = int(round(distractor_fraction * n_corpus))
    fact_rows = n_corpus - n_distractors
    n_two_fact = int(round(TWO_FACT_FRACTION * fact_rows))
    n_mentions = fact_rows + n_two_fact
    # Small test worlds cap the top count so they still hold enough distinct facts to query.
    max_count = max(4, min(max_mentions, n_mentions // 60))
    counts = zipf_counts(n_mentions, max_count, exponent, rng)
    return MentionPlan(n_distractors=n_distractors, n_two_fact=n_two_fact, counts=counts)


def article(word: str) -> str:
    """'an' before a vowel sound (roughly), else 'a', so templates can say '{a} {o}'."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _render_clause(fact: Fact, templates: dict[str, RelationTemplates], rng: random.Random, lead: str = "") -> str:
    """One clause stating the fact after `lead`; a sentence-initial template word is capitalized."""
    template = rng.choice(templates[fact.relation].corpus)
    if not lead:
        template = template[:1].upper() + template[1:]
    return lead + template.format(s=fact.subject, o=fact.object, a=article(fact.object))


def render_corpus(
    facts: Sequence[Fact],
    counts: Sequence[int],
    templates: dict[str, RelationTemplates],
    distractors: Sequence[str],
    n_two_fact: int,
    rng: random.Random,
    unqueried_templates: dict[str, RelationTemplates] | None = None,
    queried: frozenset[int] = frozenset(),
) -> pl.DataFrame:
    """Corpus rows (id, text, facts): each fact stated in exactly counts[i] rows, plus distractors.

    With `unqueried_templates`, the facts not in `queried` (indices into `facts`) are worded from those
    instead: a wording can then appear in the corpus without ever stating a queried fact.
    """
    def wording(index: int) -> dict[str, RelationTemplates]:
        return templates if unqueried_templates is None or index in queried else unqueried_templates

    mentions = [index for index, count in enumerate(counts) for _ in range(count)]
    rng.shuffle(mentions)
    rows: list[tuple[str, list[list[str]]]] = []
    position = 0
    while position < len(mentions):
        first = mentions[position]
        partner = next((j for j in range(position + 1, len(mentions)) if mentions[j] != first), None)
        if len(rows) < n_two_fact and partner is not None:
            mentions[position + 1], mentions[partner] = mentions[partner], mentions[position + 1]
            second = mentions[position + 1]
            joiner = rng.choice((", and ", "; meanwhile, ", ", while "))
            text = (
                _render_clause(facts[first], wording(first), rng, rng.choice(CORPUS_FRAMINGS))
                + _render_clause(facts[second], wording(second), rng, joiner)
                + "."
            )
            rows.append((text, [facts[first].as_list(), facts[second].as_list()]))
            position += 2
            continue
        text = _render_clause(facts[first], wording(first), rng, rng.choice(CORPUS_FRAMINGS)) + "."
        rows.append((text, [facts[first].as_list()]))
        position += 1
    rows.extend((text, []) for text in distractors)
    rng.shuffle(rows)
    return pl.DataFrame(
        {
            "id": [f"c{index:06d}" for index in range(len(rows))],
            "text": [text for text, _ in rows],
            "facts": [row_facts for _, row_facts in rows],
        },
        schema={"id": pl.String, "text": pl.String, "facts": pl.List(pl.List(pl.String))},
    )


def sample_queries(
    facts: Sequence[Fact],
    counts: Sequence[int],
    templates: dict[str, RelationTemplates],
    n_queries: int,
    rng: random.Random,
) -> pl.DataFrame:
    """Queries stratified over mention-count buckets, so rare and frequent facts are both measured."""
    if n_queries > len(facts):
        raise ValueError(f"n_queries={n_queries} exceeds the {len(facts)} facts in the world; ask for fewer queries")
    by_bucket: dict[str, list[int]] = {}
    for index, count in enumerate(counts):
        by_bucket.setdefault(frequency_bucket(count), []).append(index)
    quota = {bucket: 0 for bucket in by_bucket}
    remaining = n_queries
    while remaining > 0:  # equal shares, capped by what each bucket holds
        open_buckets = [b for b in sorted(by_bucket) if quota[b] < len(by_bucket[b])]
        share = max(1, remaining // len(open_buckets))
        for bucket in open_buckets:
            take = min(share, len(by_bucket[bucket]) - quota[bucket], remaining)
            quota[bucket] += take
            remaining -= take
    chosen = sorted(index for bucket in sorted(by_bucket) for index in rng.sample(by_bucket[bucket], quota[bucket]))
    rng.shuffle(chosen)
    return pl.DataFrame(
        {
            "id": [f"q{index:05d}" for index in range(len(chosen))],
            "prompt": [templates[facts[i].relation].query.format(s=facts[i].subject) for i in chosen],
            "completion": [" " + facts[i].object for i in chosen],
            "fact": [facts[i].as_list() for i in chosen],
        },
        schema={"id": pl.String, "prompt": pl.String, "completion": pl.String, "fact": pl.List(pl.String)},
    )
