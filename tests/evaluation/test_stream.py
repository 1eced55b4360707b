"""The streamed evaluation equals a dense reference computed at once with torch, and does not depend on sharding."""

import dataclasses

import numpy as np
import polars as pl
import pytest
import torch

from trackstar_pipeline.attribution.curvature import curvature_inverse_sqrt, curvature_moments
from trackstar_pipeline.data.records import ground_truth as whole_frame_ground_truth
from trackstar_pipeline.evaluation.ablations import GradientSource
from trackstar_pipeline.evaluation.bm25 import bm25_scorer, query_texts
from trackstar_pipeline.evaluation.corpus_shards import (
    frame_shards,
    rows_at_positions,
    rows_with_ids,
    streamed_ground_truth,
)
from trackstar_pipeline.evaluation.evaluate import FUSION_DEPTH, EvaluationInputs, build_methods, evaluate
from trackstar_pipeline.attribution.running_top_k import RunningTopK
from trackstar_pipeline.evaluation.scorers import fusion_scores, random_scorer
from trackstar_pipeline.settings import load_settings

from tests.evaluation.test_report import small_world

D = 6
SETTINGS = load_settings(overrides={
    "attribution.projection_dim": D, "attribution.curvature_blocks": "dense", "attribution.lambda_mix": 0.7,
    "attribution.damping": 1e-3, "attribution.curvature_train_samples": 9,
    "evaluation.closed_set_bm25": 3, "evaluation.closed_set_same_completion": 2, "evaluation.closed_set_random": 4,
    "evaluation.top_k": 5, "evaluation.projection_dim_sweep": []})


def _world():
    corpus, queries, truth = small_world()
    generator = torch.Generator().manual_seed(3)
    corpus_gradients = torch.randn(corpus.height, D, generator=generator)  # (N, d)
    query_gradients = torch.randn(queries.height, D, generator=generator)  # (Q, d)
    r_train, r_eval = curvature_moments(corpus_gradients, query_gradients, SETTINGS.attribution)
    source = GradientSource(queries["id"].to_list(), query_gradients, r_train.to_dense(), r_eval.to_dense())
    return corpus, queries, truth, corpus_gradients, source


def _streamed(n_shards: int):
    corpus, queries, truth, corpus_gradients, source = _world()
    inputs = EvaluationInputs(frame_shards(corpus, n_shards, corpus_gradients), queries, truth, SETTINGS,
                              gradients=source)
    methods, candidates, n_corpus, _ = build_methods(inputs, inputs.corpus, queries, truth, progress=lambda _: None)
    return methods, candidates, n_corpus


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    return vectors / vectors.norm(dim=1, keepdim=True)


def _dense_scores() -> dict[str, np.ndarray]:
    """Every streamed method's (Q, N) scores over the whole corpus at once, written out directly."""
    corpus, queries, _, g, source = _world()
    q = source.queries  # (Q, d)
    inverse = curvature_inverse_sqrt(0.7 * source.r_eval + 0.3 * source.r_train, 1e-3).float()  # (d, d)
    train_only = curvature_inverse_sqrt(source.r_train, 1e-3).float()  # (d, d)
    ids, query_ids = corpus["id"].to_list(), queries["id"].to_list()
    bm25 = bm25_scorer(ids, corpus["text"].to_list(), query_ids,
                       query_texts(queries["prompt"].to_list(), queries["completion"].to_list()))
    random = random_scorer(query_ids, ids, SETTINGS.evaluation.seed)
    return {
        "trackstar": (_unit(q @ inverse) @ _unit(g @ inverse).T).double().numpy(),
        "trackstar_no_curvature": (_unit(q) @ _unit(g).T).double().numpy(),
        "trackstar_no_unit_norm": ((q @ inverse) @ (g @ inverse).T).double().numpy(),
        "trackstar_r_train_only": (_unit(q @ train_only) @ _unit(g @ train_only).T).double().numpy(),
        "bm25": np.stack([bm25.row(query_id) for query_id in query_ids]),
        "random": np.stack([random.row(query_id) for query_id in query_ids]),
    }


@pytest.fixture(scope="module")
def three_shards():
    return _streamed(3)


def test_streamed_methods_equal_the_dense_reference(three_shards):
    methods, candidates, n_corpus = three_shards
    corpus, queries, *_ = _world()
    ids = corpus["id"].to_list()
    assert n_corpus == corpus.height
    for name, dense in _dense_scores().items():
        top = methods[name].top_k(5)
        for row, query_id in enumerate(queries["id"].to_list()):
            order = np.argsort(-dense[row], kind="stable")[:5]  # ties: corpus order, as the stream keeps them
            assert [i for i, _ in top[query_id]] == [ids[j] for j in order], (name, query_id)
            np.testing.assert_allclose([s for _, s in top[query_id]], dense[row, order], rtol=1e-5, atol=1e-6)
            wanted = candidates[query_id]
            np.testing.assert_allclose(methods[name].score_candidates(query_id, wanted),
                                       dense[row, [ids.index(c) for c in wanted]], rtol=1e-5, atol=1e-6)


def test_sharding_does_not_change_rankings_or_candidates(three_shards):
    methods, candidates, _ = three_shards
    one_methods, one_candidates, _ = _streamed(1)
    assert one_candidates == candidates
    for name in ("trackstar", "trackstar_no_curvature", "bm25", "random", "trackstar+bm25"):
        assert [[i for i, _ in r] for r in one_methods[name].top_k(20).values()] == \
            [[i for i, _ in r] for r in methods[name].top_k(20).values()], name


def _fusion_reference(component: str) -> dict[str, list[str]]:
    """The fused top 10 written from the dense reference: BM25's list first (it leads), then `component`'s."""
    evaluation = SETTINGS.evaluation
    dense, (corpus, queries, *_) = _dense_scores(), _world()
    ids, reference = corpus["id"].to_list(), {}
    for row, query_id in enumerate(queries["id"].to_list()):
        orders = [np.argsort(-dense[name][row], kind="stable")[:FUSION_DEPTH] for name in ("bm25", component)]
        lists = [[ids[j] for j in order] for order in orders]
        totals = fusion_scores(lists, [evaluation.fusion_bm25_weight, 1.0], evaluation.rrf_k, evaluation.fusion_bm25_head,
                               evaluation.fusion_bm25_head_pool, list(dense["bm25"][row][orders[0]]), 0.0,
                               evaluation.fusion_bm25_follow, evaluation.fusion_page_size,
                               evaluation.fusion_bm25_near_tie)
        reference[query_id] = [i for i, _ in sorted(totals.items(), key=lambda item: -item[1])[:10]]
    return reference


def test_the_fusion_fuses_bm25_with_r_train_only_trackstar_by_default(three_shards):
    methods, _, _ = three_shards
    assert SETTINGS.evaluation.fusion_trackstar_lambda == 0.0
    assert methods["trackstar+bm25"].names == ["trackstar_r_train_only", "bm25"]
    fused = {q: [i for i, _ in r] for q, r in methods["trackstar+bm25"].top_k(10).items()}
    assert fused == _fusion_reference("trackstar_r_train_only")
    assert fused != _fusion_reference("trackstar")  # the component decides the fused rows here


def test_the_fusion_takes_the_tables_trackstar_or_a_streamed_lambda_when_asked():
    corpus, queries, truth, corpus_gradients, source = _world()
    for value, name in ((None, "trackstar"), (0.7, "trackstar"), (0.4, "trackstar_lambda0.4")):
        settings = dataclasses.replace(SETTINGS, evaluation=dataclasses.replace(SETTINGS.evaluation,
                                                                                fusion_trackstar_lambda=value))
        inputs = EvaluationInputs(frame_shards(corpus, 2, corpus_gradients), queries, truth, settings, gradients=source)
        methods, *_ = build_methods(inputs, inputs.corpus, queries, truth, progress=lambda _: None)
        assert methods["trackstar+bm25"].names == [name, "bm25"]
        assert name in methods


def test_candidates_hold_ground_truth_bm25_top_and_draws_from_the_pool(three_shards):
    _, candidates, _ = three_shards
    corpus, queries, truth, *_ = _world()
    ids, bm25 = corpus["id"].to_list(), _dense_scores()["bm25"]
    objects = {row["id"]: {fact[2] for fact in row["facts"]} for row in corpus.iter_rows(named=True)}
    for row, query in enumerate(queries.iter_rows(named=True)):
        chosen = candidates[query["id"]]
        assert len(chosen) == len(set(chosen))
        head = list(dict.fromkeys(truth[query["id"]] + [ids[j] for j in np.argsort(-bm25[row], kind="stable")[:3]]))
        assert chosen[:len(head)] == head
        pool = ([c for c in ids if query["fact"][2] in objects[c]] if query["fact"] is not None
                else [c for c in ids if query["completion"].strip() in corpus["text"][ids.index(c)]])
        same = [c for c in pool if c not in head]
        drawn = chosen[len(head):]
        assert set(drawn[:min(2, len(same))]) <= set(same)
        assert len(drawn) == min(2, len(same)) + 4  # then four random rows, none repeated


def test_evaluate_report_is_the_same_for_one_or_three_shards(tmp_path):
    corpus, queries, truth, corpus_gradients, source = _world()
    summaries = []
    for n_shards in (1, 3):
        inputs = EvaluationInputs(frame_shards(corpus, n_shards, corpus_gradients), queries, None, SETTINGS,
                                  gradients=source)
        result = evaluate(inputs, tmp_path / str(n_shards), progress=lambda _: None)
        summaries.append({k: v for k, v in result.summary.items() if k != "seconds"})
        assert result.ground_truth == {q: truth[q] for q in queries["id"].to_list()}  # from the fact column
        assert set(result.corpus_text) <= set(corpus["id"].to_list()) and result.corpus_text
    assert summaries[0] == summaries[1]


def test_running_top_k_keeps_corpus_order_on_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(5, 40)).astype(float)  # many ties
    ids = [f"c{i}" for i in range(40)]
    for block in (1, 7, 40):
        best = RunningTopK(5, 6)
        for start in range(0, 40, block):
            best.update(scores[:, start:start + block], ids[start:start + block])
        for row, ranking in enumerate(best.rankings()):
            order = np.argsort(-scores[row], kind="stable")[:6]
            assert ranking == [(ids[j], scores[row, j]) for j in order]


def test_ground_truth_and_row_lookups_read_shard_by_shard():
    corpus, queries, truth = small_world()
    sharded = frame_shards(corpus, 4)
    facts = dict(zip(queries["id"].to_list(), queries["fact"].to_list()))
    assert streamed_ground_truth(sharded, facts) == whole_frame_ground_truth(corpus, queries)
    picked = rows_at_positions(sharded, [20, 0, 7], ["id", "text"])
    assert picked["id"].to_list() == [corpus["id"][20], corpus["id"][0], corpus["id"][7]]
    found = rows_with_ids(sharded, {"c00", "f19", "nope"}, ["text"])
    assert sorted(found["id"].to_list()) == ["c00", "f19"]


def test_a_candidate_missing_from_the_corpus_is_named(three_shards):
    methods, _, _ = three_shards
    with pytest.raises(KeyError, match="not closed-set candidates"):
        methods["bm25"].score_candidates("q0", ["c00", "zz"])


def test_new_pass_r_train_sample_is_the_curvature_assets_sample():
    """A new gradient pass computes R_train from the sample rows alone, fetched by position: the same R as the
    curvature assets' rule over the whole corpus's gradients."""
    from trackstar_pipeline.attribution.curvature import curvature_train_sample, sampled_curvature_moments

    corpus, queries, _, corpus_gradients, source = _world()
    attribution = SETTINGS.attribution
    positions = curvature_train_sample(corpus.height, attribution.curvature_train_samples,
                                       attribution.projection_seed).tolist()
    fetched = rows_at_positions(frame_shards(corpus, 3), positions, ["id"])["id"].to_list()
    rows = [corpus["id"].to_list().index(i) for i in fetched]
    assert rows == positions
    r_train, r_eval = sampled_curvature_moments(corpus_gradients[rows], source.queries, attribution)
    torch.testing.assert_close(r_train.to_dense(), source.r_train)
    torch.testing.assert_close(r_eval.to_dense(), source.r_eval)
