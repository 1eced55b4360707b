"""Generated worlds: seeded, varied in what the embedded world fixes, and their ground truth is true."""

from __future__ import annotations

from collections import Counter

from trackstar_pipeline.data.records import ground_truth
from trackstar_pipeline.data.world_generator import RELATION_POOL, draw_world_spec, generate_world, relation_templates


def test_same_seed_same_world_other_seed_other_world() -> None:
    first, again, other = generate_world(5, 600, 40), generate_world(5, 600, 40), generate_world(6, 600, 40)
    assert first[0].equals(again[0]) and first[1].equals(again[1])
    assert not first[0].equals(other[0])


def test_seeds_vary_names_relations_mentions_and_lead_ins() -> None:
    specs = [draw_world_spec(seed) for seed in range(12)]
    assert len({spec.name_shape for spec in specs}) >= 3
    assert len({spec.relations for spec in specs}) >= 6
    assert len({spec.max_mentions for spec in specs}) >= 3
    assert len({spec.lead_in for spec in specs}) >= 3
    assert all(len(spec.relations) >= 6 for spec in specs)


def test_queries_are_the_lead_in_and_the_first_paraphrase_cut_before_the_object() -> None:
    spec = draw_world_spec(2)
    corpus, queries = generate_world(2, 3000, 200)
    for prompt, (subject, relation, obj), completion in zip(queries["prompt"], queries["fact"], queries["completion"]):
        first = RELATION_POOL[relation].paraphrases[0]
        assert prompt == spec.lead_in + first[: first.index("{o}")].rstrip().format(s=subject)
        assert completion == " " + obj
    if spec.lead_in:
        assert not corpus["text"].str.starts_with(spec.lead_in).any()


def test_ground_truth_rows_state_the_queried_fact_in_a_corpus_paraphrase() -> None:
    seed = 1
    templates = relation_templates(draw_world_spec(seed))
    corpus, queries = generate_world(seed, 3000, 200)
    texts = dict(zip(corpus["id"].to_list(), corpus["text"].to_list()))
    truth = ground_truth(corpus, queries)
    for query_id, (subject, relation, obj) in zip(queries["id"], queries["fact"]):
        assert truth[query_id], query_id
        for row in truth[query_id]:
            assert any(t.format(s=subject, o=obj).lower() in texts[row].lower() for t in templates[relation].corpus)


def test_mention_counts_stay_within_the_spec_and_are_skewed() -> None:
    seed = 3
    spec = draw_world_spec(seed)
    corpus, _ = generate_world(seed, 5000, 100)
    counts = Counter(tuple(fact) for facts in corpus["facts"].to_list() for fact in facts)
    assert min(counts.values()) == 1 and max(counts.values()) <= spec.max_mentions
    assert sum(c == 1 for c in counts.values()) > sum(c == max(counts.values()) for c in counts.values())
    assert corpus.height == 5000
