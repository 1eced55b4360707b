"""The embedded fact world: deterministic, sized as asked, and its ground truth is really true."""

from __future__ import annotations

from collections import Counter

import polars as pl
import pytest

from trackstar_pipeline.data.fact_corpus import frequency_bucket, zipf_counts
from trackstar_pipeline.data.records import ground_truth
from trackstar_pipeline.data.world import QUERY_FRAMING, RELATIONS, generate_fact_world


@pytest.fixture(scope="module")
def world() -> tuple[pl.DataFrame, pl.DataFrame]:
    return generate_fact_world(5000, 500, seed=0)


def test_same_seed_same_world_other_seed_other_world() -> None:
    first = generate_fact_world(300, 40, seed=3)
    again = generate_fact_world(300, 40, seed=3)
    other = generate_fact_world(300, 40, seed=4)
    assert first[0].equals(again[0]) and first[1].equals(again[1])
    assert not first[0].equals(other[0])


def test_default_sizes_and_unique_ids(world) -> None:
    corpus, queries = world
    assert corpus.height == 5000 and queries.height == 500
    assert corpus["id"].n_unique() == 5000 and queries["id"].n_unique() == 500


def test_every_query_has_proponents_that_state_its_fact(world) -> None:
    corpus, queries = world
    truth = ground_truth(corpus, queries)
    texts = dict(zip(corpus["id"].to_list(), corpus["text"].to_list()))
    for query in queries.iter_rows(named=True):
        subject, relation, obj = query["fact"]
        proponents = truth[query["id"]]
        assert proponents, f"query {query['id']} has no proponent"
        for example_id in proponents:
            text = texts[example_id]
            assert subject in text and obj in text, (query, text)
            # The object follows the subject in one of the relation's corpus wordings.
            assert any(
                template.format(s=subject, o=obj).lower() in text.lower() for template in RELATIONS[relation].corpus
            ), (query, text)


def test_queries_use_their_own_template_and_end_before_the_object(world) -> None:
    corpus, queries = world
    for query in queries.iter_rows(named=True):
        subject, relation, obj = query["fact"]
        assert query["prompt"] == RELATIONS[relation].query.format(s=subject)
        assert query["completion"] == " " + obj
    assert not corpus["text"].str.contains(QUERY_FRAMING.strip(), literal=True).any()


def test_mentions_are_skewed_and_cover_every_bucket(world) -> None:
    corpus, queries = world
    counts = Counter(tuple(fact) for facts in corpus["facts"].to_list() for fact in facts)
    assert min(counts.values()) == 1 and max(counts.values()) >= 30
    assert sum(1 for c in counts.values() if c <= 3) > sum(1 for c in counts.values() if c >= 16)  # skewed
    truth = ground_truth(corpus, queries)
    buckets = Counter(frequency_bucket(len(rows)) for rows in truth.values())
    assert set(buckets) == {"1", "2-3", "4-7", "8-15", "16-31", "32+"}


def test_two_fact_rows_distractors_and_recurring_objects(world) -> None:
    corpus, _ = world
    sizes = Counter(len(facts) for facts in corpus["facts"].to_list())
    assert sizes[0] == 500 and sizes[2] > 500 and set(sizes) == {0, 1, 2}
    objects = Counter(fact[2] for facts in corpus["facts"].to_list() for fact in facts)
    assert objects.most_common(1)[0][1] > 100  # popular objects recur across many subjects
    assert len({fact[1] for facts in corpus["facts"].to_list() for fact in facts}) >= 6


def test_zipf_counts_sum_exactly_and_stay_in_range() -> None:
    import random

    counts = zipf_counts(1234, 40, 1.1, random.Random(0))
    assert sum(counts) == 1234 and max(counts) <= 40 and min(counts) >= 1 and 40 in counts


def test_bucket_labels() -> None:
    assert [frequency_bucket(c) for c in (1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 99)] == [
        "1", "2-3", "2-3", "4-7", "4-7", "8-15", "8-15", "16-31", "16-31", "32+", "32+"
    ]


def test_too_many_queries_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="exceeds the .* facts"):
        generate_fact_world(40, 400, seed=0)
