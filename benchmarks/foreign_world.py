"""Write a fact world as a new user would bring one, independently of data/world_generator.py.

    python benchmarks/foreign_world.py OUT_DIR [--seed 1] [--rows 8500] [--queries 500] [--paragraphs 8 | --biographies 4]
    python benchmarks/quality.py --world OUT_DIR --seed 0     # or: trackstar run --corpus OUT_DIR/corpus.jsonl ...

The benchmark worlds all come from one generator; defaults chosen on them could fit its habits (name
shapes, how paraphrases and mentions are drawn) rather than fact worlds in general. This script shares
no code or vocabulary with it on purpose: its own syllables, relations with different objects, among
them years and other people's names, Pareto-distributed mentions capped at 16 (about 55% of the facts
stated once), filler sentences, and filler-only rows when the facts' mentions are fewer than the rows.
Queries are a lead-in plus the relation's first template cut before the object; a fact stated once is
usually stated in another paraphrase. With --paragraphs N, each row joins 1 to N such sentences (about
different people, as a page of records would), so rows are several facts and often longer than the
64 tokens of a single-sentence world. With --biographies N, each row is instead 1 to N sentences about
one person in running prose, as an encyclopedia's article would be: the first names them, the rest say
"He" or "She" (or "him", "her"), so most sentences state a fact without the subject's name. With
--asides P as well, a sentence after the first is followed, with probability P, by an aside about its object
that names it and no one else ("Port Kela lies by a slow river.", "Bo Vale lives nearby."), as prose does:
the next pronoun still means the row's person, not the last name read. The output is corpus.jsonl and
queries.jsonl in the README's schema.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Callable

ONSETS = ["br", "k", "v", "th", "gl", "m", "s", "dr", "z", "qu", "l", "n", "p", "t", "h", "f"]
NUCLEI = ["a", "o", "e", "i", "u", "ae", "ou", "ie", "y"]
CODAS = ["n", "r", "s", "th", "x", "ld", "m", "nd", "", "", "sk", "rt"]
FILLERS = ["The weather that season was unremarkable.", "Many letters from that time survive.",
           "Few visitors came by in winter.", "The roads were muddy after the rains.",
           "Nobody wrote down the rest.", "It was a quiet decade."]
LEAD_IN = "Records show that "
ASIDES = {  # relation -> sentences about a fact's object that name it (no pronoun, no fact of the schema)
    "employer": ["{o} was founded long ago.", "{o} keeps its books in order."],
    "hometown": ["{o} lies by a slow river.", "{o} is known for its bridges."],
    "tongue": ["{o} has many dialects.", "{o} is written in an old script."],
    "birth_year": ["{o} was a hard year.", "Harvests failed in {o}."],
    "rival": ["{o} lives nearby.", "{o} is well liked in town."],
}
MAX_MENTIONS = 16
SUBJECTS = 900


def write_world(out: Path, seed: int, n_rows: int, n_queries: int, paragraphs: int = 1,
                biographies: int = 0, asides: float = 0.0) -> tuple[int, int, int]:
    """Write out/corpus.jsonl and out/queries.jsonl; returns (rows, facts, queries)."""
    if paragraphs > 1 and biographies:
        raise ValueError("--paragraphs and --biographies are two ways to build rows; give one")
    if asides and not biographies:
        raise ValueError("--asides interrupts biographies; give --biographies N as well")
    if not 0.0 <= asides <= 1.0:
        raise ValueError(f"--asides is a probability, got {asides}")
    rng = random.Random(seed)

    def word(syllables: int) -> str:
        return "".join(rng.choice(ONSETS) + rng.choice(NUCLEI) + rng.choice(CODAS) for _ in range(syllables)).capitalize()

    def unique(make: Callable[[], str], count: int) -> list[str]:
        seen: set[str] = set()
        while len(seen) < count:
            seen.add(make())
        return sorted(seen)

    people = unique(lambda: f"{word(rng.choice([1, 2]))} {word(2)}", 1400)
    relations: dict[str, tuple[list[str], list[str]]] = {  # relation -> (objects, templates; the first is the query's)
        "employer": (unique(lambda: f"{word(2)} {rng.choice(['Guild', 'Works', 'Company', 'Institute', 'Collective'])}", 60),
                     ["{s} works for {o}", "{s} is employed by {o}", "{s} draws a salary from {o}",
                      "{s} has a position at {o}"]),
        "hometown": (unique(lambda: rng.choice(["Port ", "New ", "", "", "Upper "]) + word(2), 50),
                     ["{s} was raised in {o}", "{s} grew up in {o}", "{s} spent childhood in {o}"]),
        "tongue": (unique(lambda: word(2) + rng.choice(["ese", "ish", "ic", "i"]), 14),
                   ["{s} speaks {o}", "{s} is fluent in {o}", "the mother tongue of {s} is {o}"]),
        "instrument": (["the cello", "the lute", "the oboe", "the harp", "the drums", "the flute", "the viola", "the horn"],
                       ["{s} plays {o}", "{s} performs on {o}", "{s} practises {o} daily", "{s} is known for playing {o}"]),
        "birth_year": ([str(year) for year in range(1820, 1990, 7)],
                       ["{s} was born in {o}", "the birth year of {s} is {o}", "{s} came into the world in {o}"]),
        "rival": (people, ["{s} competes with {o}", "{s} has a rivalry with {o}", "{s} is a rival of {o}"]),
    }
    facts: list[tuple[str, str, str, int]] = []
    for subject in people[:SUBJECTS]:
        for relation in rng.sample(sorted(relations), rng.choice([2, 3, 4])):
            objects = relations[relation][0]
            obj = rng.choice([candidate for candidate in objects if candidate != subject])
            facts.append((subject, relation, obj, min(MAX_MENTIONS, max(1, int(rng.paretovariate(1.2))))))

    def statement(template: str, subject: str, obj: str) -> str:
        sentence = template.format(s=subject, o=obj)
        text = sentence[0].upper() + sentence[1:] + "."
        if rng.random() < 0.3:
            before = rng.random() < 0.5
            filler = rng.choice(FILLERS)
            text = f"{filler} {text}" if before else f"{text} {filler}"
        return text

    if biographies:
        rows = biography_rows(facts, relations, biographies, statement, rng, asides)
    else:
        rows = [{"text": statement(rng.choice(relations[relation][1]), subject, obj), "facts": [[subject, relation, obj]]}
                for subject, relation, obj, mentions in facts for _ in range(mentions)]
    rng.shuffle(rows)
    if paragraphs > 1:
        rows = join_sentences(rows, paragraphs, rng)
    rows = rows[:n_rows]
    while len(rows) < n_rows:
        rows.append({"text": " ".join(rng.sample(FILLERS, 2)), "facts": []})
    stated = {tuple(fact) for row in rows for fact in row["facts"]}

    queries = []
    for subject, relation, obj, _ in rng.sample(facts, len(facts)):
        if (subject, relation, obj) not in stated:
            continue
        prompt = relations[relation][1][0].split("{o}")[0].format(s=subject).rstrip()
        queries.append({"id": f"q-{len(queries):04d}", "prompt": LEAD_IN + prompt, "completion": " " + obj,
                        "fact": [subject, relation, obj]})
        if len(queries) == n_queries:
            break
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w") as corpus:
        for number, row in enumerate(rows):
            corpus.write(json.dumps({"id": f"row-{number:06d}", "text": row["text"], "facts": row["facts"]}) + "\n")
    with open(out / "queries.jsonl", "w") as query_file:
        for query in queries:
            query_file.write(json.dumps(query) + "\n")
    return len(rows), len(stated), len(queries)


def biography_rows(facts: list[tuple[str, str, str, int]], relations: dict[str, tuple[list[str], list[str]]],
                   most: int, statement: Callable[[str, str, str], str], rng: random.Random,
                   asides: float = 0.0) -> list[dict]:
    """Each person's fact mentions, shuffled and cut into rows of 1 to `most` sentences: the first names
    the person, the rest refer to them by pronoun ("He ..." at a sentence's start, "him" elsewhere). With
    `asides`, a later sentence is followed with that probability by an aside naming its object (ASIDES)."""
    by_subject: dict[str, list[tuple[str, str, str]]] = {}
    for subject, relation, obj, mentions in facts:
        by_subject.setdefault(subject, []).extend([(subject, relation, obj)] * mentions)
    rows = []
    for subject, mentions in by_subject.items():
        he, him = rng.choice([("He", "him"), ("She", "her")])
        rng.shuffle(mentions)
        start = 0
        while start < len(mentions):
            group = mentions[start:start + rng.randint(1, most)]
            sentences = []
            for position, (_, relation, obj) in enumerate(group):
                template = rng.choice(relations[relation][1])
                if position == 0:
                    sentences.append(statement(template, subject, obj))
                else:
                    pronoun = he if template.startswith("{s}") else him
                    sentences.append(statement(template, "{s}", obj).replace("{s}", pronoun))
                    if asides and relation in ASIDES and rng.random() < asides:
                        sentences.append(rng.choice(ASIDES[relation]).format(o=obj))  # opens with a name
            rows.append({"text": " ".join(sentences), "facts": [list(fact) for fact in dict.fromkeys(group)]})
            start += len(group)
    return rows


def join_sentences(rows: list[dict], most: int, rng: random.Random) -> list[dict]:
    """Consecutive rows joined 1 to `most` at a time into one row stating all their facts."""
    joined: list[dict] = []
    start = 0
    while start < len(rows):
        group = rows[start:start + rng.randint(1, most)]
        joined.append({"text": " ".join(row["text"] for row in group),
                       "facts": [fact for row in group for fact in row["facts"]]})
        start += len(group)
    return joined


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for corpus.jsonl and queries.jsonl")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rows", type=int, default=8500)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--paragraphs", type=int, default=1, help="most sentences joined into one row (default 1)")
    parser.add_argument("--biographies", type=int, default=0,
                        help="rows of 1 to N sentences about one person, later ones by pronoun (default 0: off)")
    parser.add_argument("--asides", type=float, default=0.0,
                        help="with --biographies: probability that a later sentence is followed by an aside "
                             "naming its object (default 0: none)")
    args = parser.parse_args(argv)
    try:
        rows, facts, queries = write_world(args.out, args.seed, args.rows, args.queries, args.paragraphs,
                                           args.biographies, args.asides)
    except ValueError as error:  # write_world checks its arguments before writing anything
        parser.error(str(error))
    print(f"{args.out}: {rows} rows stating {facts} facts, {queries} queries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
