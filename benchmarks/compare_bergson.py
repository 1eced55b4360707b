"""Time our gradient collection against bergson's on the same model, data and projection size.

bergson (EleutherAI) runs in its own virtual environment as a subprocess (`--bergson-python`);
this script builds a ~5M-parameter random Llama, a tokenizer and a corpus in `--workdir`, times
bergson's gradient pass and ours on the same token ids, prints examples/s and the ratio
ours/bergson, and checks that the two tools agree: element by element without projection on a
small subset, and in structure (Spearman of pairwise cosines) when projected.

    python benchmarks/compare_bergson.py                       # defaults: 512 examples, k=16
    python benchmarks/compare_bergson.py --n-examples 128 --workdir /tmp/cmp --keep-workdir

Nothing is downloaded: both tools read the local model directory and a local JSONL file with
HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as transformers_logging

from trackstar_pipeline.attribution.examples import TokenizedExample, encode_corpus
from trackstar_pipeline.attribution.gradients import collect_gradients, hooked_modules
from trackstar_pipeline.settings import AttributionSettings

VOCAB_SIZE = 4096
TOKENIZER_TEXTS = 4000  # enough generated text for the BPE trainer to fill VOCAB_SIZE
REPLY_TAG = "@@bergson-pass@@ "
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

# Executed by bergson's own interpreter: it calls bergson's public API (the pieces `bergson build`
# runs: setup_data_pipeline, setup_model_and_peft, create_processor, collect_gradients) so that
# only the gradient pass is timed, with our batches in input order.
BERGSON_RUNNER = r'''
import json, shutil, sys, time
from pathlib import Path
# Replies go to the real stdout; everything bergson and its imports print goes to stderr.
protocol, sys.stdout = sys.stdout, sys.stderr
# The venv's torchvision/torchaudio wheels do not match its torch; transformers only imports them
# when they are importable, and bergson needs neither.
sys.modules["torchvision"] = None
sys.modules["torchaudio"] = None
import numpy as np
import torch

spec = json.loads(Path(sys.argv[1]).read_text())
REPLY_TAG = spec["reply_tag"]
torch.set_num_threads(spec["threads"])
from bergson.collection import collect_gradients
from bergson.config.config import DataConfig, DistributedConfig, IndexConfig, PreprocessConfig
from bergson.data import load_gradients
from bergson.utils.worker_utils import create_processor, setup_data_pipeline, setup_model_and_peft


def index_config(run_path, split, k):
    return IndexConfig(
        run_path=run_path, overwrite=True, model=spec["model_dir"], precision="fp32",
        data=DataConfig(dataset=spec["data_path"], split=split),
        projection_dim=k, projection_seed=spec["seed"], projection_type="rademacher",
        token_batch_size=spec["batch_size"] * spec["seq_len"], max_batch_size=spec["batch_size"],
        loss_reduction="sum", distributed=DistributedConfig(nproc_per_node=1),
    )


def gradient_pass(run_path, split, k):
    cfg = index_config(run_path, split, k)
    cfg.partial_run_path.mkdir(parents=True, exist_ok=True)
    ds, _ = setup_data_pipeline(cfg)
    model, target_modules = setup_model_and_peft(cfg)
    processor = create_processor(model, cfg, target_modules)
    n, b = len(ds), spec["batch_size"]
    batches = [list(range(i, min(i + b, n))) for i in range(0, n, b)]
    start, cpu_start = time.perf_counter(), time.process_time()
    collect_gradients(model=model, data=ds, processor=processor, cfg=cfg, batches=batches,
                      target_modules=target_modules, preprocess_cfg=PreprocessConfig())
    return time.perf_counter() - start, time.process_time() - cpu_start, n, cfg.partial_run_path


# One JSON job per stdin line, one tagged JSON reply per stdout line, so the caller can alternate
# our passes with bergson's.
out = Path(spec["out_dir"])
for number, line in enumerate(sys.stdin):
    job = json.loads(line)
    seconds, cpu_seconds, n, index_path = gradient_pass(str(out / f"pass{number}"), job["split"], job["k"])
    reply = dict(job, seconds=seconds, cpu_seconds=cpu_seconds, n=n, torch=torch.__version__,
                 threads=torch.get_num_threads())
    if job.get("save_as"):
        grads = np.asarray(load_gradients(index_path), dtype=np.float32)  # (n, dim), dataset order
        np.save(out / job["save_as"], grads)
        reply["dim"] = int(grads.shape[1])
    shutil.rmtree(index_path)  # an unprojected index is large; what we need was saved above
    protocol.write(REPLY_TAG + json.dumps(reply) + "\n")
    protocol.flush()
'''


def generate_texts(n: int, seed: int, words_per_text: int = 90) -> list[str]:
    """Seeded pseudo-English documents, long enough to fill every sequence."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    lexicon = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(3000)})
    weights = [1.0 / (rank + 1) for rank in range(len(lexicon))]  # Zipf-like word frequencies
    texts = []
    for _ in range(n):
        words = rng.choices(lexicon, weights=weights, k=words_per_text)
        sentences = [" ".join(words[i : i + 9]).capitalize() + "." for i in range(0, len(words), 9)]
        texts.append(" ".join(sentences))
    return texts


def train_tokenizer(texts: list[str], vocab_size: int, context: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the generated corpus, with a BOS token."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    special = ["<unk>", "<s>", "</s>", "<pad>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        pad_token="<pad>", model_max_length=context,
    )


# Two sizes: the 5M Llama of issue 2, where per-op overhead shows, and a 63M one built from a config,
# where matmuls dominate as on real models. (config, default number of examples)
SIZES = {
    "5M": (dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4), 512),
    "63M": (dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=12), 128),
}


def build_model(size: str, vocab_size: int, context: int, seed: int) -> LlamaForCausalLM:
    """A random Llama of one of SIZES (no download)."""
    torch.manual_seed(seed)
    shape = SIZES[size][0]
    config = LlamaConfig(
        vocab_size=vocab_size, num_key_value_heads=shape["num_attention_heads"], max_position_embeddings=context,
        bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False, **shape,
    )
    return LlamaForCausalLM(config).eval()


def prepare(workdir: Path, size: str, n_examples: int, seq_len: int,
            seed: int) -> tuple[Path, Path, list[TokenizedExample]]:
    """Save the model and tokenizer, encode the corpus with our encoder, write it for bergson."""
    texts = generate_texts(max(n_examples, TOKENIZER_TEXTS), seed)
    context = 2048  # RoPE has no position parameters; bergson wants token_batch_size <= context
    tokenizer = train_tokenizer(texts, VOCAB_SIZE, context)
    texts = texts[:n_examples]
    model_dir = workdir / "model"
    build_model(size, VOCAB_SIZE, context, seed).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    ids = [f"doc-{i:05d}" for i in range(n_examples)]
    examples = encode_corpus(ids, texts, tokenizer, max_length=seq_len, overlength="truncate").examples
    short = [e.example_id for e in examples if len(e.input_ids) != seq_len]
    if short:
        raise RuntimeError(f"examples {short[:5]} have fewer than {seq_len} tokens; raise words_per_text")
    # bergson skips its own tokenizer when the rows carry input_ids, so both tools see the same
    # tokens: BOS + text, loss on every position after the first (its labels default to the ids).
    data_path = workdir / "corpus_tokens.jsonl"
    with data_path.open("w") as handle:
        for example in examples:
            handle.write(json.dumps({"id": example.example_id, "input_ids": list(example.input_ids)}) + "\n")
    return model_dir, data_path, examples


class BergsonUnavailable(RuntimeError):
    """bergson could not be started or a pass failed; the message says why."""


class BergsonWorker:
    """BERGSON_RUNNER in bergson's interpreter, fed one pass at a time so passes can alternate."""

    def __init__(self, python: str, workdir: Path, spec: dict, threads: int):
        if not Path(python).exists():
            raise BergsonUnavailable(f"{python} does not exist; pass --bergson-python")
        self.out_dir = workdir / "bergson"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "bergson.log"
        spec_path, runner_path = workdir / "bergson_spec.json", workdir / "bergson_runner.py"
        spec_path.write_text(json.dumps(dict(spec, out_dir=str(self.out_dir), threads=threads,
                                             reply_tag=REPLY_TAG)))
        runner_path.write_text(BERGSON_RUNNER)
        env = dict(os.environ, **OFFLINE_ENV, HF_HOME=str(workdir / "hf_home"), OMP_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1",
                   CUDA_VISIBLE_DEVICES="")
        env.pop("PYTHONPATH", None)  # keep our package out of bergson's interpreter
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen([python, str(runner_path), str(spec_path)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.log, text=True, env=env, cwd=workdir)

    def run(self, job: dict) -> dict:
        """Send one pass ({name, split, k, save_as}) and wait for its timing."""
        try:
            self.process.stdin.write(json.dumps(job) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass
        reply = self.process.stdout.readline()
        while reply and not reply.startswith(REPLY_TAG):  # a stray print from a C extension
            self.log.write(reply)
            reply = self.process.stdout.readline()
        if not reply:
            self.process.wait()
            self.log.flush()
            tail = "\n".join(self.log_path.read_text().splitlines()[-15:])
            raise BergsonUnavailable(f"bergson exited with status {self.process.returncode} during pass "
                                     f"{job['name']!r} (log {self.log_path}, kept with --workdir):\n{tail}")
        return json.loads(reply[len(REPLY_TAG):])

    def close(self) -> None:
        """End the runner (closing stdin ends its loop)."""
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)
        self.log.close()


def our_pass(model, examples: list[TokenizedExample],
             settings: AttributionSettings) -> tuple[float, float, torch.Tensor]:
    """Wall and CPU seconds of one collect_gradients pass, and its vectors (N, d)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    vectors = collect_gradients(model, examples, settings, device=torch.device("cpu"))  # (N, d)
    return time.perf_counter() - start, time.process_time() - cpu_start, vectors


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarities (N, N) in float64."""
    unit = vectors.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)  # (N, d)
    return unit @ unit.T


def upper(matrix: np.ndarray) -> np.ndarray:
    """The strictly upper-triangular entries: one value per unordered pair."""
    return matrix[np.triu_indices(matrix.shape[0], k=1)]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (continuous data, so ties are negligible)."""
    ranks_a = np.argsort(np.argsort(a)).astype(np.float64)
    ranks_b = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation."""
    return float(np.corrcoef(a, b)[0, 1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are the run reported in benchmarks/README.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the model, corpus and bergson output go (default: a temp dir, removed)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep a temp workdir after the run")
    parser.add_argument("--bergson-python", default="/tmp/bergson-venv/bin/python",
                        help="interpreter of the virtual environment where bergson is installed")
    parser.add_argument("--sizes", default="5M,63M", help=f"comma-separated model sizes among {', '.join(SIZES)}")
    parser.add_argument("--n-examples", type=int, default=None,
                        help="corpus size for every model size (default: " + ", ".join(
                            f"{size} {n}" for size, (_, n) in SIZES.items()) + ")")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="examples per forward/backward, both tools")
    parser.add_argument("--k", type=int, default=16,
                        help="bergson's per-module projection k (k x k per module); ours gets d = modules * k^2")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per tool; the best is compared")
    parser.add_argument("--exact-examples", type=int, default=16,
                        help="examples for the unprojected agreement check (0 skips it)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or (args.n_examples is not None and args.n_examples < 2) or args.k < 1:
        parser.error("--repeats and --k must be at least 1 and --n-examples at least 2")
    args.sizes = [size.strip() for size in args.sizes.split(",") if size.strip()]
    unknown = [size for size in args.sizes if size not in SIZES]
    if unknown or not args.sizes:
        parser.error(f"--sizes {unknown or args.sizes}: choose among {', '.join(SIZES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the comparison in --workdir (or a temporary one) and print the figures."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.update(OFFLINE_ENV)
    transformers_logging.disable_progress_bar()
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="compare_bergson_")) if temporary else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, workdir)
    finally:
        if temporary and not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        elif temporary:
            print(f"workdir kept: {workdir}")


@dataclasses.dataclass
class Timings:
    """Wall and CPU seconds of each timed pass, per tool, and our last vectors."""

    ours_seconds: list[float] = dataclasses.field(default_factory=list)
    ours_cpu: list[float] = dataclasses.field(default_factory=list)
    bergson_seconds: list[float] = dataclasses.field(default_factory=list)
    bergson_cpu: list[float] = dataclasses.field(default_factory=list)
    bergson_info: dict = dataclasses.field(default_factory=dict)
    bergson_error: str = ""
    exact_error: str = ""
    ours: torch.Tensor | None = None  # (N, d) from the last timed pass

    def add_ours(self, model, examples: list[TokenizedExample], settings: AttributionSettings) -> None:
        seconds, cpu_seconds, self.ours = our_pass(model, examples, settings)
        self.ours_seconds.append(seconds)
        self.ours_cpu.append(cpu_seconds)


def time_both(args: argparse.Namespace, workdir: Path, spec: dict, model, examples: list[TokenizedExample],
              settings: AttributionSettings, exact_n: int) -> Timings:
    """Warm up both tools, then alternate timed passes so background load hits both alike."""
    timings = Timings()
    try:
        bergson = BergsonWorker(args.bergson_python, workdir, spec, args.threads)
    except BergsonUnavailable as error:
        bergson, timings.bergson_error = None, str(error)
    try:
        our_pass(model, examples[: args.batch_size], settings)
        if bergson is not None:
            bergson.run({"name": "warmup", "split": f"train[:{args.batch_size}]", "k": args.k})
        for repeat in range(args.repeats):
            if bergson is not None:
                save_as = "projected.npy" if repeat == args.repeats - 1 else None
                reply = bergson.run({"name": f"timed{repeat}", "split": "train", "k": args.k, "save_as": save_as})
                timings.bergson_seconds.append(reply["seconds"])
                timings.bergson_cpu.append(reply["cpu_seconds"])
                timings.bergson_info = reply
            timings.add_ours(model, examples, settings)
    except BergsonUnavailable as error:
        timings.bergson_error = str(error)
    if bergson is not None and not timings.bergson_error and exact_n:
        try:
            bergson.run({"name": "exact", "split": f"train[:{exact_n}]", "k": 0, "save_as": "exact.npy"})
        except BergsonUnavailable as error:
            timings.exact_error = str(error)
    if bergson is not None:
        bergson.close()
    while len(timings.ours_seconds) < args.repeats:  # bergson failed part-way: finish ours alone
        timings.add_ours(model, examples, settings)
    return timings


EXACT_WEIGHT_BUDGET = 2**28  # floats per tool in the unprojected check (1 GiB): 16 examples at 5M, 4 at 63M


def run(args: argparse.Namespace, workdir: Path) -> int:
    """Each model size in turn, then every size's ratio ours/bergson, last."""
    all_figures = {}
    for size in args.sizes:
        n_examples = args.n_examples or SIZES[size][1]
        all_figures[size] = run_size(args, workdir / size, size, n_examples)
        print()
    print("summary (examples/s of the best pass of each tool, same run, alternating passes):")
    for size, figures in all_figures.items():
        if "ratio_ours_over_bergson" in figures:
            print(f"  {size:>4}: ours {figures['ours_examples_per_s']:7.1f}, bergson "
                  f"{figures['bergson_examples_per_s']:7.1f} examples/s; CPU-time ratio bergson/ours "
                  f"{figures['cpu_time_ratio_bergson_over_ours']:.2f}; ratio ours/bergson "
                  f"{figures['ratio_ours_over_bergson']:.2f}")
        else:
            print(f"  {size:>4}: ours {figures['ours_examples_per_s']:7.1f} examples/s; bergson did not run")
    write_json(args.json, all_figures)
    return 0


def run_size(args: argparse.Namespace, workdir: Path, size: str, n_examples: int) -> dict:
    """Prepare one model size and its data, time both tools, check agreement, print everything."""
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"compare_bergson {size}: {n_examples} examples x {args.seq_len} tokens, batch {args.batch_size}, "
          f"{args.threads} threads, CPU, workdir {workdir}")
    model_dir, data_path, examples = prepare(workdir, size, n_examples, args.seq_len, args.seed)
    model = LlamaForCausalLM.from_pretrained(model_dir).eval()
    n_params = sum(p.numel() for p in model.parameters())
    base = AttributionSettings(projection_dim=1, projection_seed=args.seed, optimizer_correction="none",
                               curvature=False, batch_size=args.batch_size, max_length=args.seq_len,
                               device="cpu")
    n_modules = len(hooked_modules(model, base))
    settings = dataclasses.replace(base, projection_dim=n_modules * args.k * args.k)
    shape = ", ".join(f"{key} {value}" for key, value in SIZES[size][0].items())
    print(f"model: random Llama, {n_params / 1e6:.2f}M parameters ({shape}"
          + f", vocab {model.config.vocab_size}); {n_modules} hooked Linear modules (lm_head and embedding excluded "
          "in both tools)")
    print(f"projection: bergson k={args.k} per module ({args.k}x{args.k} = {args.k ** 2} per module, "
          f"{n_modules * args.k ** 2} in all); ours projection_dim={settings.projection_dim} split evenly "
          f"= {settings.projection_dim // n_modules} per module ({args.k}x{args.k}); same totals. "
          "No optimizer normalizer, no preconditioner, no unit norm, summed token loss, fp32.")
    figures: dict = {"size": size, "date": time.strftime("%Y-%m-%d"), "n_examples": n_examples, "seq_len": args.seq_len,
                     "batch_size": args.batch_size, "threads": args.threads, "k": args.k,
                     "projection_dim": settings.projection_dim, "parameters": n_params,
                     "load_average_start": os.getloadavg()[0]}
    if figures["load_average_start"] > args.threads:
        print(f"warning: 1-minute load average is {figures['load_average_start']:.1f} before starting; "
              "other work on this machine will slow both tools")

    hooked_weights = sum(spec.out_features * spec.in_features for spec in hooked_modules(model, base))
    exact_n = min(args.exact_examples, n_examples, EXACT_WEIGHT_BUDGET // hooked_weights)
    spec = {"model_dir": str(model_dir), "data_path": str(data_path), "seed": args.seed,
            "batch_size": args.batch_size, "seq_len": args.seq_len}
    timings = time_both(args, workdir, spec, model, examples, settings, exact_n)

    our_rate = n_examples / min(timings.ours_seconds)
    figures.update(ours_seconds=timings.ours_seconds, ours_cpu_seconds=timings.ours_cpu,
                   ours_examples_per_s=our_rate)
    print()
    print(f"ours    collect_gradients: {our_rate:8.1f} examples/s  (best of {args.repeats}: "
          + ", ".join(f"{s:.2f}s" for s in timings.ours_seconds) + f" for {n_examples} examples)")
    if timings.bergson_error:
        print(f"bergson: could not run, so no ratio is printed. Reason: {timings.bergson_error}")
        figures["bergson_error"] = timings.bergson_error
        return figures

    bergson_rate = n_examples / min(timings.bergson_seconds)
    ratio = our_rate / bergson_rate
    cpu_ratio = min(timings.bergson_cpu) / min(timings.ours_cpu)
    figures.update(bergson_seconds=timings.bergson_seconds, bergson_cpu_seconds=timings.bergson_cpu,
                   bergson_examples_per_s=bergson_rate, ratio_ours_over_bergson=ratio,
                   cpu_time_ratio_bergson_over_ours=cpu_ratio)
    print(f"bergson collect_gradients: {bergson_rate:8.1f} examples/s  (best of {args.repeats}: "
          + ", ".join(f"{s:.2f}s" for s in timings.bergson_seconds)
          + f"; bergson's venv: torch {timings.bergson_info['torch']}, {timings.bergson_info['threads']} threads)")
    print(f"ratio ours/bergson (examples/s): {ratio:.2f}")
    print(f"  CPU seconds per pass (best): ours {min(timings.ours_cpu):.2f}, bergson {min(timings.bergson_cpu):.2f}; "
          f"bergson/ours = {cpu_ratio:.2f} (less sensitive to other load than wall time)")
    print("  timed: only the gradient pass, after one warm-up batch each, passes alternating between the tools "
          "(bergson.collection.collect_gradients, which also writes its small on-disk index, vs our "
          "collect_gradients, which returns a tensor); model loading, data loading and imports excluded.")
    print()
    if timings.exact_error:
        print(f"agreement, exact: skipped, bergson's unprojected pass failed: {timings.exact_error}")
        exact_n = 0
    figures.update(agreement(workdir / "bergson", timings.ours.numpy(), model, examples, settings, exact_n))
    figures["load_average_end"] = os.getloadavg()[0]
    print(f"\n1-minute load average: {figures['load_average_start']:.2f} at start, "
          f"{figures['load_average_end']:.2f} at end (other work on the machine slows both tools' timings)")
    return figures


def agreement(out_dir: Path, projected_ours: np.ndarray, model, examples: list[TokenizedExample],
              settings: AttributionSettings, exact_n: int) -> dict:
    """Exact agreement without projection, structural agreement (Spearman of cosines) with it."""
    found: dict = {}
    projected_bergson = np.load(out_dir / "projected.npy")  # (N, d)
    if projected_bergson.shape != projected_ours.shape:
        print(f"agreement skipped: vector shapes differ, bergson {projected_bergson.shape} vs ours "
              f"{projected_ours.shape}")
        return found
    cos_ours, cos_bergson = upper(cosine_matrix(projected_ours)), upper(cosine_matrix(projected_bergson))
    rho, r = spearman(cos_ours, cos_bergson), pearson(cos_ours, cos_bergson)
    found.update(spearman_projected_cosines=rho, pearson_projected_cosines=r)
    n = len(examples)
    print(f"agreement, projected (d={projected_ours.shape[1]}, different random matrices in each tool): over the "
          f"{n * (n - 1) // 2} pairwise cosines, ours vs bergson Spearman = {rho:.3f}, Pearson = {r:.3f}")
    if not exact_n:
        print("agreement, exact: not run")
        return found
    exact_bergson = np.load(out_dir / "exact.npy")  # (n, D)
    exact_ours = collect_gradients(model, examples[:exact_n], dataclasses.replace(settings, projection_dim=0),
                                   device=torch.device("cpu")).numpy()  # (n, D)
    if exact_bergson.shape != exact_ours.shape:
        print(f"agreement, exact: skipped, shapes differ (bergson {exact_bergson.shape}, ours {exact_ours.shape})")
        return found
    # Both lay modules out in model order, each as a flattened (out, in) weight gradient.
    relative = float(np.linalg.norm(exact_ours - exact_bergson) / np.linalg.norm(exact_bergson))
    exact_cos = upper(cosine_matrix(exact_bergson))
    cos_gap = float(np.abs(upper(cosine_matrix(exact_ours)) - exact_cos).max())
    fidelity_ours = pearson(upper(cosine_matrix(projected_ours[:exact_n])), exact_cos)
    fidelity_bergson = pearson(upper(cosine_matrix(projected_bergson[:exact_n])), exact_cos)
    found.update(exact_relative_error=relative, exact_max_cosine_gap=cos_gap,
                 projected_vs_exact_pearson_ours=fidelity_ours, projected_vs_exact_pearson_bergson=fidelity_bergson)
    print(f"agreement, exact (no projection, first {exact_n} examples, {exact_ours.shape[1]} weights each): "
          f"relative error ||ours - bergson|| / ||bergson|| = {relative:.2e}; max |cosine gap| = {cos_gap:.2e}")
    print(f"projection fidelity on those {exact_n} examples ({exact_n * (exact_n - 1) // 2} pairs): Pearson of "
          f"projected vs exact cosines = {fidelity_ours:.3f} (ours), {fidelity_bergson:.3f} (bergson). Two "
          "independent projections of the same gradients should agree with each other about as well as the "
          f"product, {fidelity_ours * fidelity_bergson:.2f}; a projected agreement far below it would mean the tools "
          "compute different gradients.")
    return found


def write_json(path: Path | None, figures: dict) -> None:
    """Save the figures for the README or a later comparison."""
    if path is not None:
        path.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {path}")


if __name__ == "__main__":
    sys.exit(main())
