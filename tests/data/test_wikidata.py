"""The Wikidata world, built from the real S-TEST/LAMA files in ../shared/data (never copied in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trackstar_pipeline.data.records import ground_truth
from trackstar_pipeline.data.wikidata import (
    WikidataFilesError,
    build_wikidata_world,
    lama_clause,
    lama_templates,
    query_template,
)

WIKIDATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "wikidata_facts"
needs_files = pytest.mark.skipif(
    not (WIKIDATA / "relations.jsonl").is_file(), reason=f"real Wikidata facts not found at {WIKIDATA}"
)


@pytest.fixture(scope="module")
def world():
    return build_wikidata_world(WIKIDATA, n_corpus=2000, n_queries=200, seed=1)


def test_lama_clause_is_the_template_as_a_corpus_clause() -> None:
    assert lama_clause("[X] was born in [Y].", "P19").format(s="Ada", o="London") == "Ada was born in London"
    assert lama_clause("[X] is a [Y] by profession.", "P106").format(s="Ada", o="poet") == "Ada is a poet by profession"


def test_query_template_is_lama_text_before_y() -> None:
    assert query_template("[X] was born in [Y].", "P19") == "{s} was born in"
    assert query_template("[X] is a [Y] by profession.", "P106").format(s="Ada") == "Ada is a"
    with pytest.raises(ValueError, match="needs \\[X\\] before \\[Y\\]"):
        query_template("[Y] is where [X] lives.", "P1")


@needs_files
def test_queries_follow_lama_and_proponents_state_the_fact(world) -> None:
    corpus, queries = world
    lama = lama_templates(WIKIDATA)
    assert corpus.height == 2000 and queries.height == 200
    truth = ground_truth(corpus, queries)
    texts = dict(zip(corpus["id"].to_list(), corpus["text"].to_list()))
    for query in queries.iter_rows(named=True):
        subject, relation, obj = query["fact"]
        template = lama[relation]
        assert query["prompt"] == template[: template.index("[Y]")].rstrip().replace("[X]", subject)
        assert query["completion"] == " " + obj
        assert truth[query["id"]], f"{query['id']} has no proponent"
        for example_id in truth[query["id"]]:
            assert subject in texts[example_id] and obj in texts[example_id]
            assert query["prompt"] not in texts[example_id]  # our own wording, not the LAMA template


@needs_files
def test_deterministic_and_objects_recur(world) -> None:
    corpus, queries = build_wikidata_world(WIKIDATA, n_corpus=2000, n_queries=200, seed=1)
    assert corpus.equals(world[0]) and queries.equals(world[1])
    objects = [fact[2] for facts in corpus["facts"].to_list() for fact in facts]
    assert len(set(objects)) < len(objects) / 3


def test_missing_folder_or_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(WikidataFilesError, match="does not exist"):
        build_wikidata_world(tmp_path / "nowhere")
    with pytest.raises(WikidataFilesError, match="relations.jsonl is missing"):
        build_wikidata_world(tmp_path)


@needs_files
@pytest.mark.parametrize("wording", ["seen_elsewhere", "unseen"])
def test_lama_wording_states_only_unqueried_facts(wording) -> None:
    corpus, queries = build_wikidata_world(WIKIDATA, n_corpus=2000, n_queries=200, seed=1, query_wording=wording)
    lama = lama_templates(WIKIDATA)
    queried = {tuple(fact) for fact in queries["fact"].to_list()}
    in_lama_wording = {"queried": set(), "other": set()}  # relations seen in LAMA wording
    for text, facts in zip(corpus["text"].to_list(), corpus["facts"].to_list()):
        for subject, relation, obj in facts or []:
            if lama_clause(lama[relation], relation).format(s=subject, o=obj) in text:
                in_lama_wording["queried" if (subject, relation, obj) in queried else "other"].add(relation)
    assert not in_lama_wording["queried"]  # a query never copies its own proponents' wording
    queried_relations = {fact[1] for fact in queried}
    assert in_lama_wording["other"] == (set() if wording == "unseen" else queried_relations)


def test_unknown_query_wording_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="query_wording='lama'"):
        build_wikidata_world(WIKIDATA, n_corpus=2000, n_queries=200, query_wording="lama")
