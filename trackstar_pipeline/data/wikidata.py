"""A fact-tracing world from real Wikidata facts (S-TEST/LAMA files the user points us to).

Real entity names and a real skew of objects (Paris recurs, most places are rare) make a harder,
more realistic task than the invented world. The files carry no evidence sentences, so corpus
sentences use paraphrases of our own per relation, while queries use the LAMA template (prompt
= template text before [Y] with [X] filled), so a query never copies its proponents' wording.

Whether the LAMA wording occurs in the corpus at all is `query_wording`:
- "seen_elsewhere" (default): the corpus states facts nobody asks about in the LAMA wording too
  ("Ada Lovelace was born in London."), as real text does; a queried fact's own rows never use it. The
  model can learn what "was born in" asks for, and attributing a query still means bridging wording.
- "unseen": no corpus row contains the LAMA wording. Then "X was born in" is a phrase the model has
  never read: a model trained on this corpus recalled 7% of the P19 and 13% of the P106 queries against
  82-90% for relations whose query words also occur in their paraphrases (docs/quality_results.md),
  whatever the pretraining settings. It measures attribution of facts the model cannot express.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import get_args

import polars as pl

from trackstar_pipeline.data.fact_corpus import Fact, RelationTemplates, plan_mentions, render_corpus, sample_queries
from trackstar_pipeline.settings import WikidataQueryWording

PARAPHRASES: dict[str, tuple[str, ...]] = {
    "P19": ("{s} is a native of {o}", "the birthplace of {s} is {o}", "{s} came into the world in {o}"),
    "P106": ("{s} works as {a} {o}", "{s} has a career as {a} {o}", "{s} earns a living as {a} {o}"),
    "P131": ("{s} lies in {o}", "{s} is situated in {o}", "{s} belongs to the territory of {o}"),
    "P279": ("{s} is a kind of {o}", "{s} is a type of {o}", "{s} is a specific form of {o}"),
    "P361": ("{s} forms part of {o}", "{s} is one component of {o}", "{s} belongs to {o}"),
}
"""Corpus wording per relation; deliberately different from the LAMA templates the queries use."""

DISTRACTORS = (
    "{s} was mentioned in an old newspaper article.",
    "Little else is written about {s} in this collection.",
    "The entry on {s} was last edited some years ago.",
    "A photograph labelled {s} hangs in the reading room.",
)


class WikidataFilesError(FileNotFoundError):
    """The folder lacks the S-TEST/LAMA files; the message names what is missing."""


def lama_templates(path: Path) -> dict[str, str]:
    """Relation id -> LAMA template ('[X] was born in [Y].') from relations.jsonl."""
    relations_file = path / "relations.jsonl"
    if not relations_file.is_file():
        raise WikidataFilesError(f"{relations_file} is missing; point wikidata_path at the S-TEST/LAMA folder")
    templates = {}
    for line in relations_file.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            templates[row["relation"]] = row["template"]
    return templates


def lama_clause(lama: str, relation: str) -> str:
    """The LAMA template as a corpus clause ('[X] was born in [Y].' -> '{s} was born in {o}')."""
    query_template(lama, relation)  # the same shape checks
    clause = lama.strip().rstrip(".").replace("{", "{{").replace("}", "}}")
    return clause.replace("[X]", "{s}").replace("[Y]", "{o}")


def query_template(lama: str, relation: str) -> str:
    """The prompt part of a LAMA template: text before [Y], with [X] as the {s} slot."""
    if "[X]" not in lama or "[Y]" not in lama or lama.index("[X]") > lama.index("[Y]"):
        raise ValueError(f"LAMA template {lama!r} for {relation} needs [X] before [Y]")
    before = lama[: lama.index("[Y]")].rstrip()
    return before.replace("{", "{{").replace("}", "}}").replace("[X]", "{s}")


def read_facts(path: Path) -> list[Fact]:
    """Distinct facts (one object per subject and relation) from P*.jsonl for the relations we paraphrase."""
    facts: list[Fact] = []
    seen: set[tuple[str, str]] = set()
    for relation in sorted(PARAPHRASES):
        relation_file = path / f"{relation}.jsonl"
        if not relation_file.is_file():
            raise WikidataFilesError(f"{relation_file} is missing; point wikidata_path at the S-TEST/LAMA folder")
        for line in relation_file.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            subject, obj = row["sub_label"].strip(), row["obj_label"].strip()
            if subject and obj and (subject, relation) not in seen:
                seen.add((subject, relation))
                facts.append(Fact(subject, relation, obj))
    return facts


def build_wikidata_world(
    path: str | Path, n_corpus: int = 5000, n_queries: int = 500, seed: int = 0,
    query_wording: WikidataQueryWording = "seen_elsewhere",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(corpus, queries) over real Wikidata facts, read at run time from the folder at path (see the
    module docstring for `query_wording`)."""
    if query_wording not in get_args(WikidataQueryWording):
        raise ValueError(f"query_wording={query_wording!r}: use one of {get_args(WikidataQueryWording)}")
    path = Path(path)
    if not path.is_dir():
        raise WikidataFilesError(f"wikidata folder {path} does not exist; set data.wikidata_path")
    lama = lama_templates(path)
    templates = {
        relation: RelationTemplates(corpus=corpus, query=query_template(lama[relation], relation))
        for relation, corpus in PARAPHRASES.items()
    }
    rng = random.Random(seed)
    plan = plan_mentions(n_corpus, rng)
    pool = read_facts(path)
    if len(plan.counts) > len(pool):
        raise ValueError(f"n_corpus={n_corpus} needs {len(plan.counts)} facts but {path} holds {len(pool)}")
    facts = rng.sample(pool, len(plan.counts))
    subjects = sorted({fact.subject for fact in facts})
    distractors = [rng.choice(DISTRACTORS).format(s=rng.choice(subjects)) for _ in range(plan.n_distractors)]
    queries = sample_queries(facts, plan.counts, templates, n_queries, rng)
    unqueried = None
    if query_wording == "seen_elsewhere":
        unqueried = {relation: RelationTemplates(corpus=(*wording.corpus, lama_clause(lama[relation], relation)),
                                                 query=wording.query)
                     for relation, wording in templates.items()}
    index_of = {tuple(fact.as_list()): index for index, fact in enumerate(facts)}
    queried = frozenset(index_of[tuple(fact)] for fact in queries["fact"].to_list())
    corpus = render_corpus(facts, plan.counts, templates, distractors, plan.n_two_fact, rng, unqueried, queried)
    return corpus, queries
