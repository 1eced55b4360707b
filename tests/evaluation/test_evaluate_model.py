"""evaluate() with a tiny trained Llama: every method incl. ablations, sweep, embed and tail-patch."""

import json
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.optimization import Adafactor

from tests.evaluation.test_report import small_world
from trackstar_pipeline.attribution.optimizer_state import load_second_moments
from trackstar_pipeline.data.tokenizer import train_bpe_tokenizer
from trackstar_pipeline.evaluation.evaluate import EvaluationInputs, evaluate
from trackstar_pipeline.evaluation.report import headline_table
from trackstar_pipeline.evaluation.tailpatch import TailPatchSetup, paired_tailpatch_difference
from trackstar_pipeline.settings import load_settings

METHODS = {"trackstar", "trackstar_no_optimizer", "trackstar_r_train_only", "trackstar_no_curvature",
           "trackstar_no_unit_norm", "bm25", "embed", "random", "trackstar+bm25", "trackstar_d32", "trackstar_d64"}


def _trained(corpus, tmp_path):
    tokenizer = train_bpe_tokenizer(corpus["text"].to_list(), vocab_size=300, min_frequency=1)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    optimizer = Adafactor(model.parameters(), lr=1e-2, scale_parameter=False, relative_step=False,
                          warmup_init=False)
    rows = [[tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
            for text in corpus["text"].to_list()]
    width = max(map(len, rows))
    ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in rows])  # (N, T)
    mask = (torch.arange(width)[None] < torch.tensor([len(r) for r in rows])[:, None]).long()  # (N, T)
    for _ in range(15):
        model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")
    return model.eval(), tokenizer, TailPatchSetup("adafactor", optimizer.state_dict(), 1e-3, max_grad_norm=1.0)


def test_evaluate_with_a_model_reports_every_method(tmp_path):
    corpus, queries, truth = small_world()
    model, tokenizer, setup = _trained(corpus, tmp_path)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    settings = load_settings(overrides={
        "attribution.projection_dim": 64, "attribution.batch_size": 8, "attribution.lambda_mix": 0.9,
        "evaluation.projection_dim_sweep": [32, 64], "evaluation.closed_set_bm25": 3,
        "evaluation.closed_set_same_completion": 2, "evaluation.closed_set_random": 4,
        "evaluation.tailpatch_queries": 3, "evaluation.top_k": 10, "evaluation.fusion_page": 3})
    inputs = EvaluationInputs(corpus, queries, truth, settings, model=model, tokenizer=tokenizer,
                              second_moments=load_second_moments(tmp_path / "optimizer.pt", model), tailpatch=setup)
    seen: list[str] = []
    result = evaluate(inputs, tmp_path / "report", progress=seen.append)
    summary = json.loads(result.files["json"].read_text())
    assert set(summary["open_set"]) == METHODS and set(summary["closed_set"]) == METHODS
    assert summary["settings"]["lambda"] == 0.9
    assert any(line.startswith("exact re-rank: ") and "(query, row) pairs, " in line for line in seen)
    assert any(line.startswith("exact re-rank: ") and f"rows pooled by {queries.height} queries" in line
               for line in seen)
    assert summary["model"]["architecture"] == "LlamaForCausalLM"
    for method in METHODS:
        for k in (1, 3, 10):
            assert summary["open_set"][method][f"tailpatch@{k}"] is not None, (method, k)
    # the d sweep entry at the main d is the main method itself
    assert summary["open_set"]["trackstar_d64"] == summary["open_set"]["trackstar"]
    # tail-patch measured only for the first 3 evaluated queries; every pair has a finite, nonzero effect
    assert {query_id for _, query_id in result.effects} <= {"q0", "q1", "q2"}
    assert result.effects and all(math.isfinite(effect.delta_prob) for effect in result.effects.values())
    assert any(effect.delta_prob != 0.0 for effect in result.effects.values())
    # trackstar+bm25 fuses BM25 with TrackStar at R_train only (evaluation.fusion_trackstar_lambda 0), its top
    # fusion_rerank (100) re-ranked by the exact alignment
    fused_name = "trackstar_r_train_only (its top 100 re-ranked exactly)"
    assert summary["fusion_methods"] == [fused_name, "bm25"]
    assert f"trackstar+bm25 fuses {fused_name} with bm25." in result.files["markdown"].read_text()
    # trackstar+bm25 opens with BM25's top fusion_bm25_head (1) proponent, in both settings
    assert settings.evaluation.fusion_bm25_head == 1
    for setting in ("open_set", "closed_set"):
        fused, bm25 = result.rankings[setting]["trackstar+bm25"], result.rankings[setting]["bm25"]
        assert all(fused[q][0][0] == bm25[q][0][0] for q in fused), setting
    # and BM25's top fusion_bm25_follow (5) that its first fusion_page (3) rows left out come next
    fused, bm25 = result.rankings["open_set"]["trackstar+bm25"], result.rankings["open_set"]["bm25"]
    followed = 0
    for q in fused:
        page = [corpus_id for corpus_id, _ in fused[q][:3]]
        left_out = [corpus_id for corpus_id, _ in bm25[q][:5] if corpus_id not in page]
        assert [corpus_id for corpus_id, _ in fused[q][3:3 + len(left_out)]] == left_out, q
        followed += len(left_out)
    assert followed > 0
    # every other method's tail-patch against trackstar's, paired, as the engine computes it from these rankings
    for setting in ("open_set", "closed_set"):
        paired = summary["paired_tailpatch"][setting]
        assert set(paired) == METHODS - {"trackstar", "trackstar_d64"}  # d64 is the main d: trackstar itself
        for method, per_k in paired.items():
            for k in (1, 3, 10):
                direct = paired_tailpatch_difference(result.rankings[setting][method], result.rankings[setting]["trackstar"],
                                                     result.effects, k)
                assert per_k[f"tailpatch@{k}"]["queries"] == direct.queries == 3, (setting, method, k)
                assert per_k[f"tailpatch@{k}"]["mean"] == pytest.approx(direct.mean), (setting, method, k)
    fused_at_10 = summary["paired_tailpatch"]["open_set"]["trackstar+bm25"]["tailpatch@10"]
    assert "| trackstar+bm25 | " in result.files["markdown"].read_text().split("tail-patch against trackstar (paired)")[1]
    assert f"{fused_at_10['mean']:+.1e} ± {fused_at_10['half_width']:.1e}" in result.files["markdown"].read_text()
    assert f"{fused_at_10['mean']:+.1e} ± {fused_at_10['half_width']:.1e}" in headline_table(summary).split(
        "Tail-patch against trackstar, paired")[1].split("Queries the model gets right")[0]
    # the model is left exactly as it was
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert "tail-patch" in result.files["markdown"].read_text()


def test_a_bad_fusion_setting_fails_before_any_corpus_pass(tmp_path):
    corpus, queries, truth = small_world()
    for override, message in (({"evaluation.fusion_page": 0}, "page 0 >= 1"),
                              ({"evaluation.fusion_bm25_follow": -2}, "follow -2 must be >= 0"),
                              ({"evaluation.fusion_bm25_head_pool": 0}, "head_pool 0 is smaller than head 1"),
                              ({"evaluation.fusion_bm25_near_tie": 1.5}, "near_tie 1.5 is not between 0 and 1"),
                              ({"evaluation.fusion_rerank": -1}, "fusion_rerank -1 is negative"),
                              ({"evaluation.rerank_memory_mb": 0}, "rerank_memory_mb 0 must be positive")):
        seen: list[str] = []
        settings = load_settings(overrides=override)
        with pytest.raises(ValueError, match=message):
            evaluate(EvaluationInputs(corpus, queries, truth, settings), tmp_path / "report", progress=seen.append)
        assert not [line for line in seen if "pass" in line], override  # no corpus pass was started
        assert not (tmp_path / "report" / "evaluation.json").exists()


def test_the_fusion_follows_the_exact_alignment_after_the_head(tmp_path):
    """BM25 weight 0, no follow or near tie: the fused list is BM25's first row, then the re-ranked TrackStar,
    whose order is update_alignments' over its projected top fusion_rerank rows."""
    from trackstar_pipeline.attribution.examples import encode_corpus, encode_queries
    from trackstar_pipeline.attribution.exact_rerank import update_alignments

    corpus, queries, truth = small_world()
    model, tokenizer, setup = _trained(corpus, tmp_path)
    moments = load_second_moments(tmp_path / "optimizer.pt", model)
    pool = 6
    settings = load_settings(overrides={
        "attribution.projection_dim": 64, "attribution.batch_size": 8, "evaluation.projection_dim_sweep": [],
        "evaluation.tailpatch_k": [], "evaluation.top_k": 10, "evaluation.fusion_bm25_weight": 0.0,
        "evaluation.fusion_bm25_follow": 0, "evaluation.fusion_bm25_near_tie": 0.0, "evaluation.fusion_rerank": pool})
    result = evaluate(EvaluationInputs(corpus, queries, truth, settings, model=model, tokenizer=tokenizer,
                                       second_moments=moments, tailpatch=setup), tmp_path / "report",
                      progress=lambda message: None)
    projected = result.rankings["open_set"]["trackstar_r_train_only"]
    pools = {q: [c for c, _ in ranking[:pool]] for q, ranking in projected.items()}
    texts = dict(zip(corpus["id"].to_list(), corpus["text"].to_list()))
    rows = encode_corpus(list(texts), list(texts.values()), tokenizer, 64, "reject").examples
    by_id = {example.example_id: example for example in rows}
    encoded = encode_queries(queries["id"].to_list(), queries["prompt"].to_list(), queries["completion"].to_list(),
                             tokenizer, 64, "reject").examples
    aligned = update_alignments(model, {e.example_id: e for e in encoded}, pools, lambda ids: [by_id[i] for i in ids],
                                settings.attribution, moments, 2**26)
    reordered = 0
    for q, fused in result.rankings["open_set"]["trackstar+bm25"].items():
        head = result.rankings["open_set"]["bm25"][q][0][0]
        expected = sorted(pools[q], key=lambda c: -aligned[q][c])
        assert fused[0][0] == head
        assert [c for c, _ in fused[1:pool]] == [c for c in expected if c != head][:pool - 1], q
        reordered += expected != pools[q]
    assert reordered > 0  # the exact order is not the projected one on these queries


def test_a_model_too_large_for_the_rerank_budget_is_fused_in_projected_order():
    from trackstar_pipeline.evaluation.evaluate import _rerank_pool

    corpus, queries, truth = small_world()
    wide = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=512, intermediate_size=1024, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64))
    seen: list[str] = []
    tight = load_settings(overrides={"evaluation.rerank_memory_mb": 29})  # one exact gradient takes 10 MiB
    assert _rerank_pool(EvaluationInputs(corpus, queries, truth, tight, model=wide), seen.append) == 0
    assert "no exact re-rank; one exact gradient of this model takes 10 MiB" in seen[0]
    assert "rerank_memory_mb (29) must hold 3" in seen[0]
    roomy = load_settings(overrides={"evaluation.rerank_memory_mb": 32})
    assert _rerank_pool(EvaluationInputs(corpus, queries, truth, roomy, model=wide), seen.append) == 100
    assert _rerank_pool(EvaluationInputs(corpus, queries, truth, roomy), seen.append) == 0  # no model
    assert "needs the model" in seen[-1]
