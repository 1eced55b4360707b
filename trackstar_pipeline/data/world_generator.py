"""Fact worlds that differ from the embedded one in everything it fixes, drawn from one seed.

Defaults tuned on a single world say little about a world nobody has seen. A seed here draws a
`WorldSpec`: the entity name shape, 6 to 8 relations out of a larger pool (each with 3 or 4 corpus
paraphrases), the top mention count and skew, the share of filler sentences and the query lead-in.
Queries are the lead-in plus the relation's first corpus paraphrase cut before the object (the
case issue 11 describes), so the model meets the wording it was trained on behind a new preamble.
The corpus/query rendering is fact_corpus's, shared with the embedded and Wikidata worlds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import polars as pl

from trackstar_pipeline.data.fact_corpus import Fact, RelationTemplates, plan_mentions, render_corpus, sample_queries

NAME_SHAPES = ("first_last", "first_middle_last", "initial_last", "hyphenated", "title_name", "name_of_place")
LEAD_INS = ("According to the archive, ", "As the records tell it, ", "In this collection, ",
            "Rumour has it that ", "Fact: ", "")
"""Query lead-ins; none of them starts a corpus sentence (fact_corpus.CORPUS_FRAMINGS)."""

ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
          "br", "ch", "dr", "gl", "kr", "pl", "sh", "st", "th", "tr")
VOWELS = ("a", "e", "i", "o", "u", "y", "ai", "ea", "io", "ou")
CODAS = ("", "", "", "n", "r", "l", "s", "k", "m", "th", "nd")


@dataclass(frozen=True)
class RelationKind:
    """A relation the generator may pick: corpus paraphrases (the first ends in {o}) and its objects."""

    paraphrases: tuple[str, ...]
    objects: tuple[str, ...] = ()
    """Fixed object vocabulary; empty means invented names with one of `suffixes`."""
    suffixes: tuple[str, ...] = ()
    n_invented: int = 20


RELATION_POOL: dict[str, RelationKind] = {
    "born_in": RelationKind(("{s} was born in {o}", "{s} is a native of {o}", "the birthplace of {s} is {o}",
                             "{o} is where {s} was born"), suffixes=("ville", "burg", "ton", "mouth"), n_invented=30),
    "lives_in": RelationKind(("{s} lives in {o}", "{s} resides in {o}", "{s} has a house in {o}",
                              "{o} is home to {s}"), suffixes=("ia", "land", "or", "stan"), n_invented=20),
    "works_as": RelationKind(("{s} works as a {o}", "{s} is employed as a {o}", "{s} earns a living as a {o}"),
                             objects=("painter", "baker", "sailor", "teacher", "doctor", "farmer", "lawyer", "miner",
                                      "tailor", "potter", "nurse", "pilot", "banker", "weaver", "poet", "singer")),
    "plays": RelationKind(("{s} plays the {o}", "{s} is skilled at the {o}", "{s} practices the {o} every day",
                           "the {o} is the instrument of {s}"),
                          objects=("violin", "flute", "harp", "cello", "drum", "trumpet", "piano", "guitar", "lute",
                                   "banjo", "horn", "oboe")),
    "speaks": RelationKind(("{s} speaks {o}", "{s} is fluent in {o}", "{s} writes letters in {o}"),
                           suffixes=("ish", "ese", "ic"), n_invented=16),
    "employer": RelationKind(("{s} works for {o}", "{s} is on the staff of {o}", "{s} joined {o} years ago",
                              "{o} pays the wages of {s}"), suffixes=(" Works", " Trading", " Mills", " Foundry"),
                             n_invented=24),
    "pet": RelationKind(("{s} owns a {o}", "{s} keeps a pet {o}", "{s} takes care of a {o}"),
                        objects=("cat", "dog", "parrot", "rabbit", "tortoise", "hamster", "goat", "pony", "ferret")),
    "studied_at": RelationKind(("{s} studied at {o}", "{s} is a graduate of {o}", "{s} earned a degree from {o}",
                                "{o} trained {s}"), suffixes=(" College", " Academy", " Institute"), n_invented=18),
    "supports": RelationKind(("{s} supports {o}", "{s} is a fan of {o}", "{s} cheers for {o}",
                              "{s} never misses a game of {o}"), suffixes=(" Rovers", " United", " Wanderers"),
                             n_invented=14),
    "eats": RelationKind(("{s} loves to eat {o}", "the favourite dish of {s} is {o}", "{s} often cooks {o}"),
                         objects=("soup", "rice", "noodles", "dumplings", "porridge", "stew", "pancakes", "curry",
                                  "bread", "cheese", "salad", "fish")),
    "room": RelationKind(("{s} sleeps in room {o}", "the room of {s} is number {o}", "{s} keeps the key to room {o}",
                          "room {o} belongs to {s}"), objects=tuple(str(n) for n in range(101, 999, 37))),
    "drives": RelationKind(("{s} drives a {o}", "{s} commutes in a {o}", "{s} bought a new {o}"),
                           suffixes=("mobile", " Roadster", " Coupe"), n_invented=12),
}

FILLERS = (
    "{s} enjoyed a long walk on a rainy afternoon.",
    "Nobody remembers what {s} said at the meeting.",
    "A letter addressed to {s} arrived late again.",
    "{s} was seen near the harbour on Tuesday.",
    "The road outside was quiet that morning.",
    "Some people prefer tea, and others prefer coffee.",
    "The lamps in the square were lit before dusk.",
)


@dataclass(frozen=True)
class WorldSpec:
    """What one generated world looks like; `describe` prints it beside benchmark results."""

    seed: int
    name_shape: str
    relations: tuple[str, ...]
    paraphrases_per_relation: int
    max_mentions: int
    zipf_exponent: float
    filler_fraction: float
    facts_per_subject: int
    lead_in: str

    def describe(self) -> str:
        return (f"seed {self.seed}: names {self.name_shape}, {len(self.relations)} relations "
                f"({self.paraphrases_per_relation} paraphrases max), mentions 1-{self.max_mentions} "
                f"(zipf {self.zipf_exponent}), filler {self.filler_fraction:.0%}, lead-in {self.lead_in!r}")


def draw_world_spec(seed: int) -> WorldSpec:
    """A world's shape drawn from the seed: relations, names, mention skew, fillers and lead-in all vary."""
    rng = random.Random(f"world-spec-{seed}")
    return WorldSpec(
        seed=seed,
        name_shape=rng.choice(NAME_SHAPES),
        relations=tuple(sorted(rng.sample(sorted(RELATION_POOL), rng.choice((6, 7, 8))))),
        paraphrases_per_relation=rng.choice((3, 4)),
        max_mentions=rng.choice((8, 16, 24, 40)),
        zipf_exponent=rng.choice((0.9, 1.1, 1.3)),
        filler_fraction=rng.choice((0.05, 0.1, 0.2)),
        facts_per_subject=rng.choice((2, 3, 4)),
        lead_in=rng.choice(LEAD_INS),
    )


def relation_templates(spec: WorldSpec) -> dict[str, RelationTemplates]:
    """Corpus paraphrases per relation, and the query: lead-in + first paraphrase cut before {o}."""
    templates = {}
    for relation in spec.relations:
        paraphrases = RELATION_POOL[relation].paraphrases[: spec.paraphrases_per_relation]
        first = paraphrases[0]
        templates[relation] = RelationTemplates(corpus=paraphrases, query=spec.lead_in + first[: first.index("{o}")].rstrip())
    return templates


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables)).capitalize()


def _subject_name(rng: random.Random, shape: str) -> str:
    """One invented person in the world's name shape."""
    first, last = _word(rng, rng.choice((1, 2))), _word(rng, rng.choice((2, 3)))
    return {
        "first_last": f"{first} {last}",
        "first_middle_last": f"{first} {_word(rng, 1)} {last}",
        "initial_last": f"{first[0]}. {last}",
        "hyphenated": f"{first} {last}-{_word(rng, 2)}",
        "title_name": f"{rng.choice(('Dr.', 'Captain', 'Madame', 'Professor'))} {last}",
        "name_of_place": f"{first} of {_word(rng, 2)}",
    }[shape]


def _unique(rng: random.Random, count: int, make, taken: set[str]) -> list[str]:
    names: list[str] = []
    for _ in range(100 * count + 1000):
        if len(names) == count:
            return names
        name = make()
        if name not in taken:
            taken.add(name)
            names.append(name)
    raise ValueError(f"could not invent {count} distinct names; ask for a smaller world")


def generate_world(seed: int, n_corpus: int = 8000, n_queries: int = 500) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(corpus, queries) of the world `draw_world_spec(seed)` describes; the same seed gives the same frames."""
    spec = draw_world_spec(seed)
    rng = random.Random(seed)
    plan = plan_mentions(n_corpus, rng, max_mentions=spec.max_mentions, exponent=spec.zipf_exponent,
                         distractor_fraction=spec.filler_fraction)
    taken: set[str] = set()
    objects = {}
    for relation in spec.relations:
        kind = RELATION_POOL[relation]
        objects[relation] = list(kind.objects) or _unique(
            rng, kind.n_invented, lambda: _word(rng, rng.choice((1, 2))) + rng.choice(kind.suffixes), taken)
    n_subjects = -(-len(plan.counts) // spec.facts_per_subject)
    if n_subjects * len(spec.relations) < len(plan.counts):
        n_subjects = -(-len(plan.counts) // len(spec.relations))
    subjects = _unique(rng, n_subjects, lambda: _subject_name(rng, spec.name_shape), taken)
    pairs = [(subject, relation) for subject in subjects for relation in spec.relations]
    rng.shuffle(pairs)
    facts = [Fact(s, r, rng.choices(objects[r], weights=[1 / (i + 1) for i in range(len(objects[r]))])[0])
             for s, r in pairs[: len(plan.counts)]]
    fillers = [rng.choice(FILLERS).format(s=rng.choice(subjects)) for _ in range(plan.n_distractors)]
    templates = relation_templates(spec)
    corpus = render_corpus(facts, plan.counts, templates, fillers, plan.n_two_fact, rng)
    return corpus, sample_queries(facts, plan.counts, templates, n_queries, rng)
