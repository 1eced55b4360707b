"""benchmarks/foreign_world.py writes a world the pipeline's own loaders accept, with the promised shape."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from trackstar_pipeline.data.records import ground_truth, load_corpus, load_queries
from trackstar_pipeline.training.sentences import split_sentences

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "foreign_world.py"


def _write(out: Path, seed: int, rows: int = 1500, queries: int = 60, *extra: str) -> tuple[bytes, bytes]:
    subprocess.run([sys.executable, str(SCRIPT), str(out), "--seed", str(seed), "--rows", str(rows),
                    "--queries", str(queries), *extra], check=True, capture_output=True)
    return (out / "corpus.jsonl").read_bytes(), (out / "queries.jsonl").read_bytes()


def test_the_foreign_world_loads_and_every_query_has_a_stating_row(tmp_path: Path) -> None:
    first = _write(tmp_path / "a", seed=3)
    corpus = load_corpus(str(tmp_path / "a" / "corpus.jsonl")).frame  # the README schema's validation
    queries = load_queries(str(tmp_path / "a" / "queries.jsonl")).frame
    assert corpus.height == 1500 and queries.height == 60
    truth = ground_truth(corpus, queries)
    assert all(truth[query_id] for query_id in queries["id"].to_list())  # every queried fact is stated
    mentions = Counter(tuple(fact) for facts in corpus["facts"].to_list() for fact in facts)
    assert max(mentions.values()) <= 16 and sum(count == 1 for count in mentions.values()) > len(mentions) / 3
    assert len({fact[1] for fact in mentions}) == 6
    for prompt, completion, fact in zip(queries["prompt"], queries["completion"], queries["fact"].to_list()):
        assert prompt.startswith("Records show that " + fact[0]) and completion == " " + fact[2]
    assert _write(tmp_path / "b", seed=3) == first  # the seed decides the world
    assert _write(tmp_path / "c", seed=4) != first


def test_biographies_name_the_person_once_per_row_and_refer_to_them_by_pronoun_after(tmp_path: Path) -> None:
    _write(tmp_path / "bio", 5, 1500, 60, "--biographies", "4")
    corpus = load_corpus(str(tmp_path / "bio" / "corpus.jsonl")).frame
    queries = load_queries(str(tmp_path / "bio" / "queries.jsonl")).frame
    truth = ground_truth(corpus, queries)
    assert all(truth[query_id] for query_id in queries["id"].to_list())
    pronoun_rows = 0
    for text, facts in zip(corpus["text"].to_list(), corpus["facts"].to_list()):
        if not facts:
            continue
        subjects = {fact[0] for fact in facts}
        assert len(subjects) == 1  # one person per row
        assert text.count(subjects.pop()) == 1  # named once; every other mention is a pronoun
        pronoun_rows += any(f" {word} " in f" {text} " for word in ("He", "She", "him", "her"))
    assert pronoun_rows > corpus.height / 5
    # a repeated fact is kept once in a row's facts
    assert all(len(facts) == len({tuple(fact) for fact in facts}) for facts in corpus["facts"].to_list())


def test_paragraphs_and_biographies_are_refused_together(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "x"), "--paragraphs", "3",
                             "--biographies", "3"], capture_output=True, text=True)
    assert result.returncode != 0 and "give one" in result.stderr


def test_asides_name_a_stated_object_between_a_biographys_sentences_and_need_biographies(tmp_path: Path) -> None:
    plain = _write(tmp_path / "plain", 5, 1500, 60, "--biographies", "4")
    with_asides = _write(tmp_path / "asides", 5, 1500, 60, "--biographies", "4", "--asides", "0.5")
    assert with_asides != plain
    corpus = load_corpus(str(tmp_path / "asides" / "corpus.jsonl")).frame
    asides = 0
    for text, facts in zip(corpus["text"].to_list(), corpus["facts"].to_list()):
        for sentence in split_sentences(text):
            if any(sentence.endswith(ending) for ending in ("lies by a slow river.", "lives nearby.", "has many dialects.")):
                asides += 1
                assert any(sentence.startswith(fact[2]) for fact in facts)  # about an object the row states
                assert not any(fact[0] in sentence for fact in facts)  # not the row's person
    assert asides > 20
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "x"), "--asides", "0.5"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "--biographies" in result.stderr
