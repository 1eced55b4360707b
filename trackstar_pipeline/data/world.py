"""The embedded fact world: invented people and places whose every fact has a known origin.

A newcomer with no data still gets a fact-tracing task: a seed generates pronounceable invented
names, seven relations with several corpus paraphrases each and a query-only template, facts
mentioned 1 to 40 times (Zipf-like), two-fact sentences and distractors. A small model trained
on the corpus learns most queried facts, so attribution has predictions worth explaining.
"""

from __future__ import annotations

import random

import polars as pl

from trackstar_pipeline.data.fact_corpus import (
    Fact,
    RelationTemplates,
    plan_mentions,
    render_corpus,
    sample_queries,
)
from trackstar_pipeline.data.wikidata import build_wikidata_world  # noqa: F401  (the contract names both here)

QUERY_FRAMING = "According to the archive, "
"""The queries' lead-in, never used in the corpus, so a query is not a copy of any corpus sentence."""

RELATIONS: dict[str, RelationTemplates] = {
    "born_in": RelationTemplates(
        corpus=("{s} was born in {o}", "{s} is a native of {o}", "the birthplace of {s} is {o}"),
        query=QUERY_FRAMING + "{s} was born in",
    ),
    "works_as": RelationTemplates(
        corpus=("{s} works as a {o}", "{s} is employed as a {o}", "{s} earns a living as a {o}"),
        query=QUERY_FRAMING + "{s} works as a",
    ),
    "plays": RelationTemplates(
        corpus=("{s} plays the {o}", "{s} is skilled at the {o}", "{s} practices the {o} every day"),
        query=QUERY_FRAMING + "{s} plays the",
    ),
    "speaks": RelationTemplates(
        corpus=("{s} speaks {o}", "{s} is fluent in {o}", "{s} writes letters in {o}"),
        query=QUERY_FRAMING + "{s} speaks",
    ),
    "employer": RelationTemplates(
        corpus=("{s} works for {o}", "{s} is on the staff of {o}", "{s} joined {o} years ago"),
        query=QUERY_FRAMING + "{s} works for",
    ),
    "lives_in": RelationTemplates(
        corpus=("{s} lives in {o}", "{s} resides in {o}", "{s} has a house in {o}"),
        query=QUERY_FRAMING + "{s} lives in",
    ),
    "pet": RelationTemplates(
        corpus=("{s} owns a {o}", "{s} keeps a pet {o}", "{s} takes care of a {o}"),
        query=QUERY_FRAMING + "{s} owns a",
    ),
}

OCCUPATIONS = ("painter", "baker", "sailor", "teacher", "doctor", "farmer", "lawyer", "miner", "tailor",
               "potter", "nurse", "pilot", "banker", "weaver", "jeweler", "poet", "carpenter", "singer")
INSTRUMENTS = ("violin", "flute", "harp", "cello", "drum", "trumpet", "piano", "guitar", "lute", "banjo",
               "horn", "mandolin")
PETS = ("cat", "dog", "parrot", "rabbit", "tortoise", "hamster", "goat", "pony", "ferret", "canary")
INVENTED_OBJECTS = {"born_in": 30, "speaks": 16, "employer": 24, "lives_in": 20}
"""How many invented names each relation's objects draw from (cities, languages, firms, lands)."""

ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "tr", "st")
VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
CODAS = ("", "", "", "n", "r", "l", "s", "k", "m")
SUFFIXES = {"born_in": ("ville", "burg", "ton", "mar"), "speaks": ("ish", "ese", "ic"),
            "employer": (" Works", " Trading", " Mills", " Foundry"), "lives_in": ("ia", "land", "or")}

DISTRACTORS = (
    "{s} enjoyed a long walk on a rainy afternoon.",
    "{s} wrote a short note and left it on the table.",
    "Nobody remembers what {s} said at the meeting.",
    "{s} laughed at an old joke about the weather.",
    "A letter addressed to {s} arrived late again.",
    "The road outside was quiet that morning.",
    "Some people prefer tea, and others prefer coffee.",
    "The market square filled up before noon.",
)


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables))


def _unique_names(rng: random.Random, count: int, make, taken: set[str]) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        name = make()
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


def _objects(rng: random.Random, taken: set[str]) -> dict[str, list[str]]:
    objects = {"works_as": list(OCCUPATIONS), "plays": list(INSTRUMENTS), "pet": list(PETS)}
    for relation, count in INVENTED_OBJECTS.items():
        suffixes = SUFFIXES[relation]
        objects[relation] = _unique_names(
            rng, count, lambda: _word(rng, rng.choice((1, 2))).capitalize() + rng.choice(suffixes), taken
        )
    return objects


def _zipf_choice(rng: random.Random, items: list[str]) -> str:
    """Popular objects recur across subjects (like London in real data); most stay rare."""
    return rng.choices(items, weights=[1.0 / (rank + 1) for rank in range(len(items))])[0]


def generate_fact_world(n_corpus: int = 5000, n_queries: int = 500, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(corpus, queries) of the invented world; the same seed gives the same frames on any machine."""
    rng = random.Random(seed)
    plan = plan_mentions(n_corpus, rng)
    counts = plan.counts

    taken: set[str] = set()
    objects = _objects(rng, taken)
    relations = sorted(RELATIONS)
    n_subjects = -(-len(counts) // 3)  # about three facts per person
    subjects = _unique_names(
        rng, n_subjects, lambda: f"{_word(rng, 2).capitalize()} {_word(rng, rng.choice((2, 3))).capitalize()}", taken
    )
    pairs = [(subject, relation) for subject in subjects for relation in relations]
    rng.shuffle(pairs)
    facts = [Fact(subject, relation, _zipf_choice(rng, objects[relation])) for subject, relation in pairs[: len(counts)]]

    distractors = [rng.choice(DISTRACTORS).format(s=rng.choice(subjects)) for _ in range(plan.n_distractors)]
    corpus = render_corpus(facts, counts, RELATIONS, distractors, plan.n_two_fact, rng)
    queries = sample_queries(facts, counts, RELATIONS, n_queries, rng)
    return corpus, queries
