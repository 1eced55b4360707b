"""One typed configuration for the whole pipeline.

Every knob a user can turn lives here, with a default that runs end to end on a laptop CPU.
`load_settings` reads a YAML or JSON file whose keys mirror these dataclasses; unknown keys are an
error (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

OverlengthPolicy = Literal["truncate", "reject"]
BadRecordPolicy = Literal["reject", "skip"]
OptimizerCorrection = Literal["factored", "exact", "none"]
ProjectionKind = Literal["rademacher", "gaussian"]
CurvatureBlocks = Literal["module", "dense"]
Precision = Literal["auto", "float32", "bfloat16"]
WikidataQueryWording = Literal["seen_elsewhere", "unseen"]


@dataclass(frozen=True)
class AttributionSettings:
    """How gradients are taken, corrected, projected and compared (the TrackStar formula)."""

    projection_dim: int = 16384
    """Total projected dimension d, split across hooked modules; 0 keeps exact full gradients. 16384 (was
    4096): on four worlds MRR 0.289 against 0.191 and tail-patch@10 1.6x (docs/quality_results.md); the
    random projection's noise on a cosine is about 1/sqrt(d), against query-proponent cosines of a few
    hundredths. The paper uses 65536."""
    projection_seed: int = 0
    projection_kind: ProjectionKind = "rademacher"
    target_modules: tuple[str, ...] = ("*",)
    """fnmatch globs over module names; a Linear (or GPT-2 Conv1D) is hooked when one matches."""
    include_embedding: bool = False
    include_lm_head: bool = False
    optimizer_correction: OptimizerCorrection = "factored"
    """factored: Adafactor-style row/column 1/sqrt(V) folded into the projection; exact: elementwise."""
    optimizer_epsilon: float = 1e-30
    """Added to V before the square root, as Adafactor adds eps1 to grad**2."""
    curvature: bool = True
    lambda_mix: Union[float, Literal["auto"]] = "auto"
    """R = lambda * R_eval + (1 - lambda) * R_train; 'auto' (the paper's rule, the default) makes the sorted
    eigenvalue curves cross at lambda_auto_component. It had the highest MRR of 0, 0.5, 0.9, 0.99 and auto on
    every world measured, at d 4096 and 16384, with tail-patch within noise of the others
    (docs/quality_results.md); the old fixed 0.99 left R's low-rank R_eval dominant."""
    lambda_auto_component: int | None = None
    """Where 'auto' makes the curves cross; None scales the paper's 1000 of d = 65536 to this d."""
    damping: float = 1.0
    """Relative damping: R + damping * mean(eigenvalue) * I before the inverse square root. 1.0 (was 1e-3)
    on two generated worlds: tail-patch@10 +43% and +35%, MRR -0.007 and -0.036 (docs/quality_results.md)."""
    curvature_train_samples: int = 2000
    """Training examples sampled for R_train (all when the corpus is smaller)."""
    unit_normalize: bool = True
    batch_size: int = 16
    max_length: int | None = None
    """Token limit per example; None means the model's context length."""
    overlength: OverlengthPolicy = "truncate"
    device: str = "auto"
    """auto picks cuda when present; cpu and cuda[:n] force a device."""
    curvature_blocks: CurvatureBlocks = "module"
    """module: R is block-diagonal, one block per hooked module's slice of d (memory O(sum d_m^2), the paper's
    and bergson's choice; d = 65536 fits); dense: one d x d block (d <= 16384), cross-module terms kept."""
    precision: Precision = "float32"
    """Forward autocast dtype of gradient collection. float32 (default): the same proponents on every machine.
    bfloat16 (or auto: bfloat16 on GPUs and CPUs with fast bfloat16, attribution/precision.py) is several
    times faster there and kept MRR / recall@10 on the embedded model, but moved 2.6 of each query's top-10
    proponents (benchmarks/README.md, precision_quality.py), so it is opt-in. Under bfloat16 the hooks project
    in bfloat16 and the vectors are summed and stored in float32; exact paths (projection_dim 0, exact
    correction) always run in float32."""


@dataclass(frozen=True)
class DataSettings:
    """Where the corpus and queries come from, and how they are split into shards."""

    corpus_uri: str | None = None
    """JSONL or Parquet in the canonical schema; None generates the embedded fact world."""
    queries_uri: str | None = None
    world: Literal["embedded", "wikidata", "generated"] = "embedded"
    """generated: a world drawn from world_seed (data/world_generator.py), unlike the embedded one."""
    wikidata_path: str | None = None
    """Folder with the S-TEST/LAMA files (P*.jsonl, relations.jsonl) for world='wikidata'."""
    wikidata_query_wording: WikidataQueryWording = "seen_elsewhere"
    """seen_elsewhere: facts nobody queries are also stated in the queries' LAMA wording, a queried fact never
    is; unseen: the corpus never contains that wording (the model cannot know what 'X was born in' asks)."""
    world_seed: int = 0
    n_corpus: int = 5000
    n_queries: int = 500
    bad_records: BadRecordPolicy = "reject"
    shard_size: int = 1000
    """Corpus rows per shard; shard membership is a stable hash of the example id."""


@dataclass(frozen=True)
class TrainingSettings:
    """The small Llama-style model pretrained when the user brings none."""

    model_uri: str | None = None
    """A save_pretrained directory (local or s3://); None pretrains one on the corpus."""
    optimizer_state_uri: str | None = None
    hidden_size: int = 256
    intermediate_size: int = 1024
    num_layers: int = 4
    num_heads: int = 4
    vocab_size: int = 4096
    max_length: int = 64
    """Tokens per packed training sequence (training.packing), and the least context the model gets. The
    model's context is the corpus's longest row (BOS + text + EOS) when that is longer, up to max_context, so a
    row of several facts is trained and attributed whole: cut at 64, a fact late in a long row was never
    trained on."""
    max_context: int = 512
    """The longest context pretraining gives the model; a longer row is cut to its first max_context tokens
    for pretraining and attribution, with a warning. Split long documents into passages (the attribution unit)
    rather than raising this far: attention cost grows with the square of the length."""
    optimizer: Literal["adafactor", "adamw"] = "adafactor"
    learning_rate: float = 3e-3
    """Peak lr. Adafactor (scale_parameter off) moves every weight by about lr per step, so 1e-2 (the old
    default) swamps 0.02-scale weights and the model only memorises late in the cosine decay: on generated
    world 1 (5k rows, 24 epochs) 3e-3 completes 90% of the queries where 1e-2 completed 31%."""
    epochs: Union[int, Literal["auto"]] = "auto"
    """auto: as many epochs as time_budget_s buys for this corpus (training/adaptive.py), clamped to
    min_epochs..max_epochs, stopping early once the corpus facts are learned; an int fixes the count."""
    time_budget_s: float = 285.0
    """Pretraining time the epoch plan aims at, in seconds of this machine (nominal_tokens_per_s auto):
    the epochs are the tokens it buys over the corpus tokens, clamped to min_epochs..max_epochs."""
    nominal_tokens_per_s: Union[float, Literal["auto"]] = "auto"
    """auto: the plan's training speed is measured on this machine before training (0.8 of the fastest
    of 8 steps on one median-size batch of the corpus, at each width considered, a few seconds), so time_budget_s
    and max_time_s are seconds here. Machines differ by more than the budget's margin: the default
    model trained at 5,600 tokens/s on one core of an AMD EPYC (bfloat16) and 2,900 on one of an
    Intel Xeon (float32). A number fixes the speed of the default model (256 wide, 4 layers, vocab
    4096; other sizes scale it by their cost per token, adaptive.token_cost) so the plan is a pure
    function of the corpus and the settings, the same model on every machine, only its wall time
    differing. A resumed run keeps the plan it started with."""
    width: Literal["auto", "fixed"] = "auto"
    """auto: train a narrower model (hidden, intermediate and heads scaled together, head size kept)
    when hidden_size would not get target_epochs in time_budget_s (epochs auto), or when a fixed epoch
    count at hidden_size would take longer than max_time_s.
    At equal time a narrower model that sees every fact ten times recalls more than the full width that
    sees it five times (generated world 3, 20k rows: 128 wide, 10 epochs 70.0% in 254 s; 256 wide,
    5 epochs 42.6%; docs/quality_results.md). fixed: always hidden_size."""
    max_time_s: float = 600.0
    """The most pretraining may take (at the plan's speed) before the width shrinks (width: auto)."""
    min_hidden_size: int = 128
    """The narrowest width auto may choose; a corpus too large even for it trains past max_time_s, with a
    warning. 64 wide (0.79M parameters) recalled 0.450 of a 40k-row world in 10 epochs, 128 wide 0.548."""
    target_epochs: int = 30
    """width auto with epochs auto: the widest width at which time_budget_s buys this many epochs, else
    the narrowest. Passes matter more than width: generated world 7 (5k rows) recalled 0.324 at 256 wide
    in the 10 epochs the budget bought on an Intel Xeon, and 0.850 at 128 wide in 20 epochs, in less
    time (169 s against 265 s). 30 since training took both cores (session 10): at 20, 5k-row worlds went
    wider for fewer passes and recalled less (Wikidata 192 wide, 25 epochs: 0.680 of 500 against 0.742 at 128
    wide, 42 epochs; generated world 13 256 wide, 21 epochs: 0.898 against 0.964 at 192 wide, 34 epochs)."""
    token_overhead_macs: float = 2.0e6
    """Per-token cost besides the matmuls, in multiply-adds, for the plan's speed model (norms,
    attention, optimizer, Python): with it, 128 wide predicts 2.0x the tokens/s of 256 wide, as measured."""
    min_epochs: int = 10
    """The plan's floor (a large corpus gets at least this many passes even past the time budget, up to
    max_time_s, then at a narrower width) and the first epoch the probe runs after. A fact mentioned once
    is learned only after about ten passes: generated world 3 at 20k rows recalled 42.6% in 5 epochs and
    71.4% in 10 (docs/quality_results.md)."""
    max_epochs: int = 60
    learned_recall: float = 0.0
    """Stop once greedy completion of held-in corpus statements (a probe cut before the object, never
    the evaluation queries) reaches this share; 0 (the default) disables the probe. Off by default: the
    probe measures the corpus's own wording, and recall in other wording keeps rising after it is learned
    (Wikidata: a stop at 0.95 after epoch 12 recalled 48.6%, all 21 epochs 50.6%; embedded 80.8% / 83.8%).
    Set it (e.g. 0.95) to trade that for time on corpora that are learned early."""
    probe_size: int = 256
    """Facts in the held-in probe, checked after each epoch from min_epochs on."""
    batch_size: int = 64
    """Corpus rows per optimizer step (fewer where they would pass batch_tokens)."""
    batch_tokens: int = 512
    """The most tokens (BOS and EOS included) a step's rows may hold, so a step of long rows, each stating several
    facts, holds fewer of them and a fact keeps its share of the step; on sentence corpora it splits the
    64-row batches in about two, and the time budget buys more, smaller steps, which learn more facts than
    fewer, larger ones. Session 13, pretrain-only recall of all 500 queries at 1024 / 512 (docs/quality_results.md):
    rows of 1-8 sentences 0.514 / 0.662 (training seed 1: 0.362 / 0.582), of 1-4 sentences 0.626 / 0.666;
    Wikidata 0.856 / 0.928, generated world 2 0.812 / 0.892 (seed 1: 0.856 / 0.842), generated worlds 1 and 3
    0.956 / 0.956 and 0.926 / 0.922, foreign world E 0.776 / 0.772 (seed 1: 0.926 / 0.888), the embedded world
    0.994 / 0.982. 256 buys still more steps but too few epochs (Wikidata 12 epochs, 0.898; 1-8 sentences 10
    epochs, 0.604). Where the corpus is large enough for the min_epochs floor to bind, smaller steps cost time
    instead: a 20k-row world took 409 s (recall 0.598) against 295 s (0.552) at 1024. 1024 (session 12) had
    fixed the batches of 64 long rows (0.246)."""
    max_repeats: int = 4
    """The most times an epoch trains one text that several rows repeat exactly (its first rows in corpus order);
    0: every row. Attribution still scores every row (repeats get the same score). Boilerplate repeated hundreds of
    times then stops taking the time budget from the facts, while a fact stated in the same words a few times keeps
    its weight (in the benchmark worlds one statement repeats at most 5-9 times, a filler row up to 579).
    Session 14 (docs/quality_results.md), a 20k-row foreign world whose 12,448 filler-only rows are 30 texts (69% of
    its words): every row, 10 epochs in 409 s, recalled 0.598 of 500 (seed 1: 0.556); at 4, 7,490 rows, 22 epochs in
    272 s, 0.926; at 1, 31 epochs in 317 s, 0.918 (seed 1: 0.874). Generated world 3 at 20k rows (its repeats
    mostly fact statements): every row 0.818 in 414 s, at 4 0.820 in 383 s, at 1 0.720 in 326 s (repeated
    statements go too, and at the min_epochs floor the epochs are shorter)."""
    split_sentences: int = 3
    """A row of at least this many sentences (training/sentences.py's rule) is pretrained as its sentences, each
    its own text, before max_repeats; 0: never. A passage of several facts then teaches each fact on its own,
    not only behind the sentences it happens to follow (packed steps still put it behind other text), while a
    row of a lead sentence and a statement keeps that shape, as a query's lead-in has it. Attribution still
    reads whole rows, and the model's context fits the longest row. Session 15 (docs/quality_results.md), recall
    of 500 queries with rows whole / at 3: a 6k-row world of 1-6-fact passages 0.360 / 0.872, the session-12
    passage world 0.55-0.68 / 0.932, an 8k-row one 0.712 / 0.876. Splitting every multi-sentence row (1 or 2)
    cost a sentence world whose facts follow a filler sentence 0.15 (0.922 / 0.768); rows of one or two
    sentences, every earlier benchmark world's, train exactly as before. A sentence with a third-person pronoun
    is trained after the row's first and last sentences before it that name someone (training/sentences.py),
    or the fact it states would be about nobody. Session 17, worlds of one-person biographies: a 4k-row one
    recalled 0.484 with bare sentences, 0.700 with pronoun sentences kept in their runs, 0.892 anchored; a
    5k-row one 0.488 kept in runs, 0.758-0.822 anchored (two training seeds), in the same time budget. Session
    18, asides naming a place or a rival between a biography's sentences: the facts the last naming sentence
    alone left without their subject recalled 0.087, and 0.391 after the first and last."""
    packing: Literal["mixed", "text", "eos", "none"] = "mixed"
    """How a step's rows are laid out for the model. none: one row per sequence (BOS, row, EOS); text: back to
    back in sequences of up to max_length tokens (BOS, row row row, EOS), as LM pretraining packs documents;
    eos: the same with EOS after each row; mixed: unpacked and text-packed steps in turn. Unpacked, every fact
    is read with its subject right after BOS and the model recalls it poorly behind a query's lead-in
    ("Records show that ..."); packed only, it learns more slowly and transfers less to a wording its facts are
    never stated in. Measured at fixed 128-wide plans (session 10, docs/quality_results.md), recall of all 500
    queries none / text / eos / mixed: foreign world A (16 epochs) 0.560 / 0.736 / 0.634 / 0.794, foreign D
    (15 epochs) 0.554 / 0.590 / 0.684 / 0.866, Wikidata (20 epochs) 0.842 / 0.710 / 0.738 / 0.830, foreign B
    (15k rows, 10 epochs) 0.572 / 0.484 / 0.424 / 0.516 (at 17 epochs none 0.600, text 0.774)."""
    seed: int = 0
    checkpoint_every: int = 200
    warmup_fraction: float = 0.05
    """Share of all steps spent warming the learning rate up linearly from zero."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at learning_rate * min_lr_ratio (the final learning rate is recorded)."""
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    num_threads: int = 0
    """torch CPU threads while pretraining. 0: with a measured speed (nominal_tokens_per_s auto), one thread or
    every core, whichever trains faster when the plan is made (two threads trained 1.7x as fast as one on an idle
    2-core EPYC, so the time budget buys that many more epochs; a busy neighbour makes them slower and one
    thread wins); with a nominal speed, the idle cores (cores minus the load average, at least 1). The plan
    records the count and a resumed run keeps it: runs are bit-identical only at one thread count. When 0 chose
    several threads and two 5-step windows in a row then run under a third of the planned speed (another
    process took the cores, and oversubscribed threads crawl), training goes on with one thread, and goes back to
    the cores the load average leaves free once the other process has gone (asked every 200 steps, then less
    often)."""
    log_every: int = 20
    """Steps between progress lines (step, loss, examples/s, ETA)."""
    precision: Precision = "float32"
    """Autocast dtype of the forward pass; auto picks bfloat16 where it measures faster than float32
    (attribution/precision.py). Weights and optimizer state stay float32 either way. float32 by default
    for the plan it leads to: on an AMD EPYC bfloat16 ran only 1.3x faster at 128 wide, enough for the
    epochs-first rule to pick 192 wide with fewer epochs on 5k-row worlds, and those plans recalled least
    (Wikidata 0.642, world 7 0.786, against 0.824 and 0.898 at float32's 128-wide plans). At one plan
    the seed moved recall more than precision did (embedded, 128 wide, 34 epochs: seed 0 0.668 in
    float32, 0.838 in bfloat16; seed 1 0.834 in float32; docs/quality_results.md, session 7)."""
    bfloat16_over_time: bool = True
    """With precision float32 and a measured speed: when even the narrowest width's epoch floor overruns
    max_time_s in float32 and this CPU runs bfloat16 faster, pretrain in bfloat16 autocast instead (the
    plan is made again at bfloat16's measured speed). A 40k-row world (generated 8, 128 wide, 10 epochs)
    took 964 s in float32 and recalled 0.494; with this rule, 609 s in bfloat16 and 0.548 (session 8).
    5k-20k-row worlds never overrun, so they stay in float32."""


@dataclass(frozen=True)
class EvaluationSettings:
    """What the evaluation report measures."""

    top_k: int = 100
    """Proponents kept per query and method."""
    tailpatch_k: tuple[int, ...] = (1, 3, 10)
    max_eval_queries: int = 200
    """Queries used for the costly parts (tail-patch, ablation sweep); all when fewer."""
    projection_dim_sweep: tuple[int, ...] = (1024, 4096, 16384)
    lambda_sweep: tuple[Union[float, Literal["auto"]], ...] = ()
    """Extra trackstar variants at these lambda_mix values (the table's damping; no new gradient pass):
    'trackstar_lambda<value>'. Empty by default; benchmarks/quality.py sets it to compare curvature recipes."""
    damping_sweep: tuple[float, ...] = ()
    """Extra trackstar variants at these relative dampings (the table's lambda): 'trackstar_damping<value>'."""
    embed_layer: int = -1
    bm25_split_sentences: int = 2
    """BM25 scores a row of at least this many sentences (training/sentences.py's rule) by its best-matching
    sentence, each sentence a document in the statistics ("MaxP"); 0: every row whole, plain BM25. Over a whole
    row the query's words match across its sentences, and BM25's first row was a passage naming the subject in
    another fact for 27-37% of passage-world queries. Session 16 (docs/quality_results.md), BM25 MRR against the
    fact ground truth, whole rows / at 3 / at 2: passage worlds 0.77-0.85 / 0.985-0.996 / 1.000; rows of one or
    two sentences with one or two facts 0.934 / 0.954 / 1.000; foreign sentence worlds (a filler sentence, then
    the fact) 0.982-0.986 / the same / 1.000. trackstar+bm25, which leads with BM25's first row, follows it.
    Rows of one sentence (the embedded, generated and Wikidata worlds') score exactly as before. Lower than
    training.split_sentences (3), which keeps a lead sentence and a statement together for the model; retrieval
    has no such reason. A sentence with a pronoun ('She grew up in Rome.') is scored after the row's first and
    last sentences naming someone, as pretraining reads it (training/sentences.py): session 17, three biography
    worlds (one person a row, later sentences by pronoun), whole rows 0.845-0.882, bare sentences at 2
    0.844-0.869, after the last naming sentence 0.964-0.968; every other foreign world within 0.001 of bare
    sentences. Session 18, after the first and last: a world with asides 0.960 -> 0.963, the others unchanged."""
    closed_set_bm25: int = 100
    closed_set_same_completion: int = 100
    closed_set_random: int = 100
    seed: int = 0
    tailpatch_queries: int = 100
    """Queries whose top proponents are tail-patched (one optimizer step per distinct proponent). A
    query's tail-patch varies a lot (a paired 95% interval of about ±2.5e-3 at 80 queries on 5k-row
    worlds), so 50 left the comparison of two methods a coin flip where they differ by 1e-3; 100
    costs about a minute more on the embedded world."""
    rrf_k: int = 60
    """Reciprocal rank fusion constant for trackstar+bm25: score = sum w / (rrf_k + rank)."""
    fusion_bm25_head: int = 1
    """trackstar+bm25 opens with BM25's top fusion_bm25_head proponents, then the weighted RRF of both (at the
    default BM25 weight 0, TrackStar's exactly re-ranked order). BM25
    ranks a fact-stating row first for most fact lookups, so the fusion's MRR loses at most half of the
    queries BM25 misses at rank 1, while the RRF fills the rest of the top 10 with proponents both methods
    rank high (tail-patch above either alone). Chosen offline with benchmarks/fusion_sweep.py on four
    generated-world models (docs/quality_results.md)."""
    fusion_bm25_head_pool: int = 1
    """The head is picked from BM25's top fusion_bm25_head_pool rows, in TrackStar's order (at least
    fusion_bm25_head; equal to it, BM25's own top leads). 2 or 3 raised tail-patch@10 by up to 1e-3
    on the session-6 models but cost up to 0.015 MRR (Wikidata, world 2), so the default stays 1."""
    fusion_bm25_head_ratio: float = 0.0
    """With a pool above the head, a pool row beyond BM25's first counts only if BM25 scores it at least
    this share of its first row (0: every pool row counts). Rows that state the fact in the query's
    words score nearly alike, so the head can be picked from them by TrackStar at little cost in MRR.
    Session 7 (six models, fusion_sweep.py): pool 5 at 0.9 with weight 0.5 gained 0.3e-3 tail-patch@10
    on average but came within 0.001 of the MRR bound (world 2), so it stays off."""
    fusion_bm25_weight: float = 0.0
    """BM25's weight in the RRF after the head (TrackStar's is 1). 0: after BM25's head (and near tie) the fused
    page is TrackStar's ranking alone, its top fusion_rerank rows re-ranked exactly; BM25's next rows follow
    the page (fusion_bm25_follow). BM25's weight made up for the projected order's noise: rows both methods
    rank high were likelier to move the model. With the exact re-rank it only takes places from rows that
    move the model more. Session 19, seven saved runs replayed with the re-rank (study of 80 tail-patched
    queries each, one-step effects measured for every new row): fusion - TrackStar tail-patch@10 at weight
    0 / 0.25 / 0.5, in 1e-3: generated 29 +0.2 / -0.6 / -2.2, Wikidata +4.1 / +4.1 / +3.3, fp13 +7.1 /
    +7.0 / +6.1, four biography worlds +11.6 to +16.6 / +12.1 to +17.3 / +10.3 to +14.1; MRR@10 the same.
    Sessions 6-7 had chosen 0.25, then 0.5, for the projected order."""
    fusion_bm25_follow: int = 5
    """BM25's top fusion_bm25_follow rows that the fusion's first fusion_page rows left out come right after
    that page (0: off). The page is unchanged, so is tail-patch@page; where BM25's first row missed the
    fact and TrackStar does not know it, BM25's next rows, which often state it, rank 11-15 instead of
    about 70. Session 8, fourteen saved models (fusion_sweep.py, open set): MRR +0.000 to +0.004, never
    lower; world 1's 0.871 became 0.875 (bound 0.873). 5 gained as much as 10 everywhere but one world.
    The closed set's fusion (BM25 top 100 and other candidates) follows the same rule."""
    fusion_bm25_near_tie: float = 0.9
    """BM25's best row after its head leads too, right after it, when BM25 scores it at least this share of its
    first (0: off). Where BM25 cannot tell its first two rows apart, the fact is as likely in the second: on
    biography worlds BM25's first row was a short row naming the subject in another fact for 4-6% of the
    queries, the stating row second, and the fusion's MRR came within 0.001-0.008 of BM25's bound on 7 of 8
    runs. Replayed on 24 saved benchmark runs (session 18, fusion_sweep.py): MRR margin at least +0.015
    (was +0.001), the same 20 runs pass both fusion targets, mean fusion - TrackStar tail-patch@10 +1.5e-3
    (was +2.0e-3); 0.8 to 0.98 gave 19-20 passing runs with margins of at least +0.007."""
    fusion_page: int | None = None
    """The fused rows taken as the page that BM25's follow rows come after; None: the largest of
    tailpatch_k (10), so the follow rows never change a tail-patch figure."""
    fusion_trackstar_lambda: Union[float, Literal["auto"], None] = 0.0
    """lambda_mix of the TrackStar ranking that trackstar+bm25 fuses: 0.0, R_train only (the
    'trackstar_r_train_only' row, the default); another lambda or 'auto' (streamed as 'trackstar_lambda<value>');
    None: the table's own ('trackstar'). In the fusion BM25 supplies the row that states the fact, so
    TrackStar's part is there for the rows that move the model. R_eval sharpens TrackStar towards the query's
    own fact (its MRR) but moved the model less: over 15 saved benchmark runs (sessions 11-14) R_train only's
    tail-patch@10 beat the table's lambda 'auto' on 12, at 0.01-0.05 lower MRR, which the fusion takes from
    BM25. Replayed on those runs, the fusion's tail-patch target held on 11 of 12 sentence-world runs with
    R_train only and on 7 with the table's ranking; on six sentence worlds run after the choice, 3 of 6 (the
    embedded world, Wikidata and generated world 19 miss inside noise) against 1 or 2 (docs/quality_results.md, session 15).
    Without curvature every lambda is 'trackstar'."""
    fusion_rerank: int = 100
    """The fused TrackStar ranking's first this many rows are re-ordered by the exact one-step alignment
    cos(g_q, V^{-1/2} g_m) before they are fused (attribution/exact_rerank.py); 0: the projected order.
    Within a projected top 100 the order is mostly the projection's noise: on three saved runs (session
    19) the projected cosine ranked those rows by their measured tail-patch effect with Spearman 0.19-0.36,
    the exact alignment with 0.89-0.90, and BM25's first row plus the re-ranked top 9 moved the model more
    than TrackStar's top 10 on all three. Needs the model; costs one exact gradient per distinct pooled
    row (about 13 ms each with the text fetch on this CPU: 122 s of the embedded trackstar run's 666 s)."""
    rerank_memory_mb: int = 1024
    """Memory for the re-rank's exact gradients (a chunk of queries and one of candidates at once).
    A model whose exact gradient does not fit three times (a query's, a candidate's, a backward's) is fused in
    the projected order, with a message saying so."""

    @property
    def fusion_page_size(self) -> int:
        """fusion_page, or the largest tail-patch k (10 when none is measured)."""
        return self.fusion_page if self.fusion_page is not None else max(self.tailpatch_k, default=10)


@dataclass(frozen=True)
class StorageSettings:
    """One URI for everything the pipeline writes; S3 credentials come from here or the env."""

    uri: str = "file://./.trackstar"
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str = "us-east-1"


@dataclass(frozen=True)
class ExecutionSettings:
    """Where Dagster runs the steps: in one process, a process per step, or a Kubernetes Job per step.

    Only the executor changes; the assets and resources are the same everywhere.
    """

    executor: Literal["in_process", "multiprocess", "k8s"] = "multiprocess"
    """k8s needs the extra: pip install -e ".[k8s]" (dagster-k8s pinned to the Dagster release)."""
    max_concurrent: int | None = None
    """Steps (processes or pods) running at once within one run; None leaves the executor's default."""
    k8s_namespace: str | None = None
    """Namespace of the step Jobs; None uses the run launcher's."""
    k8s_image: str | None = None
    """Image of the step pods; None uses the code location's (the user deployment image)."""
    k8s_env_config_maps: tuple[str, ...] = ()
    """ConfigMaps exposed as env to every step pod (e.g. TRACKSTAR_CONFIG, AWS_ENDPOINT_URL)."""
    k8s_env_secrets: tuple[str, ...] = ()
    """Secrets exposed as env to every step pod (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)."""
    k8s_gpus_per_step: int = 1
    """GPU limit of the pods of the GPU assets (pool 'gpu'); 0 requests none."""
    k8s_gpu_resource: str = "nvidia.com/gpu"
    """The extended resource name the cluster's device plugin exposes GPUs as."""


@dataclass(frozen=True)
class SearchSettings:
    """How proponents are found in the gradient table: exact batched search, or an IVF index on large tables."""

    batch_rows: int = 4096
    """Table rows per streamed Arrow record batch; search memory is about batch_rows x d x 6 bytes plus the queries
    (400 MB at the default d = 16384)."""
    query_block: int = 1024
    """Queries scored together in one pass over the table (more queries make more passes)."""
    ann_min_rows: int = 10_000_000
    """gradient_index builds an IVF index (and searches use it) only from this many rows. benchmarks/scale.py
    found no crossover up to 1M x 4096: on near-isotropic (whitened) vectors IVF needs most partitions for
    recall@10 >= 0.95, so its per-query cost grows with the table like exact batched search, and was ~20x
    slower per query at 100k. Lower it when single interactive queries matter more than batches."""
    ann_index: Literal["ivf_flat", "ivf_pq"] = "ivf_flat"
    ann_partitions: int = 0
    """IVF partitions; 0 picks one per ann_partition_rows rows. K-means training costs ~ partitions^2 x d, so
    sqrt(rows) partitions (about 1000 at 1M rows) do not finish on a CPU at d = 4096."""
    ann_partition_rows: int = 4096
    ann_refine_factor: int = 4
    """The index fetches refine_factor * k candidates and re-ranks them by their stored vectors."""
    ann_recall_target: float = 0.95
    """gradient_index raises nprobes until recall@ann_recall_k against exact search reaches this."""
    ann_recall_k: int = 10
    ann_recall_queries: int = 50
    """Query vectors sampled (seeded) to measure the index's recall at every materialization."""


@dataclass(frozen=True)
class PipelineSettings:
    attribution: AttributionSettings = field(default_factory=AttributionSettings)
    data: DataSettings = field(default_factory=DataSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    execution: ExecutionSettings = field(default_factory=ExecutionSettings)
    search: SearchSettings = field(default_factory=SearchSettings)


class SettingsError(ValueError):
    """A configuration file or override names an unknown key or a value of the wrong type."""


_SCIENTIFIC = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = get_origin(annotation)
    if is_dataclass(annotation):
        if not isinstance(value, dict):
            raise SettingsError(f"{where}: expected a mapping, got {type(value).__name__}")
        return build_dataclass(annotation, value, where)
    if origin is Literal:
        if value not in get_args(annotation):
            raise SettingsError(f"{where}: {value!r} is not one of {list(get_args(annotation))}")
        return value
    if origin is Union or str(origin) == "types.UnionType":
        if value is None and type(None) in get_args(annotation):
            return None
        errors = []
        for option in get_args(annotation):
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except SettingsError as error:
                errors.append(str(error))
        raise SettingsError("; ".join(errors))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SettingsError(f"{where}: expected a list, got {value!r}")
        item_type = get_args(annotation)[0]
        return tuple(_coerce(item, item_type, f"{where}[{i}]") for i, item in enumerate(value))
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        if math.isfinite(float(value)):
            return float(value)  # YAML 1.1 reads 5e-3 (no dot) as a string; users mean the number
    if annotation is type(None):
        if value is not None:
            raise SettingsError(f"{where}: expected null, got {value!r}")
        return None
    if isinstance(annotation, type):
        if annotation is int and isinstance(value, bool):
            raise SettingsError(f"{where}: expected int, got {value!r}")
        if not isinstance(value, annotation):
            raise SettingsError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def build_dataclass(cls: type, values: dict[str, Any], where: str = "settings") -> Any:
    """Build a settings dataclass from plain data, rejecting unknown keys and wrong types."""
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SettingsError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    kwargs = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in values.items()}
    return cls(**kwargs)


def load_settings(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> PipelineSettings:
    """Read settings from a YAML/JSON file (or defaults), then apply dotted overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text()
        loaded = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError(f"{path}: the top level must be a mapping of sections")
        values = loaded or {}
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        values.setdefault(section, {})[key] = value
    return build_dataclass(PipelineSettings, values, where=str(path or "settings"))


def settings_to_dict(settings: Any) -> dict[str, Any]:
    """Plain-data form for reports and Dagster metadata (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(settings)))
