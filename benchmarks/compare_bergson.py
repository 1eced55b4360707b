"""Time our gradient collection against bergson's on the same model, data and projection size.

bergson (EleutherAI) runs in its own virtual environment as subprocesses (`--bergson-python`);
this script builds random Llamas (5M and 63M parameters), a tokenizer and a corpus in `--workdir`,
and times four passes on the same token ids, interleaved: bergson at its default precision (fp32)
and at precision "bf16" (its model weights in bfloat16), ours at precision float32 and at auto
(bfloat16 autocast on hardware with fast bfloat16, float32 elsewhere). It prints examples/s, the
ratios ours bf16 / bergson bf16, ours auto / bergson fp32 and last the defaults ratio (both tools
default to float32): ours float32 / bergson fp32, and checks that the two tools agree: element by element
without projection on a small subset (float32), and in structure (Spearman of pairwise cosines)
when projected.

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
from trackstar_pipeline.attribution.precision import autocast_dtype, has_fast_bfloat16
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
        run_path=run_path, overwrite=True, model=spec["model_dir"], precision=spec["precision"],
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

    def __init__(self, python: str, workdir: Path, spec: dict, threads: int, precision: str):
        if not Path(python).exists():
            raise BergsonUnavailable(f"{python} does not exist; pass --bergson-python")
        self.out_dir = workdir / f"bergson-{precision}"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"bergson-{precision}.log"
        spec_path, runner_path = workdir / f"bergson_spec-{precision}.json", workdir / "bergson_runner.py"
        spec_path.write_text(json.dumps(dict(spec, out_dir=str(self.out_dir), threads=threads, precision=precision,
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


OURS_FP32, OURS_AUTO, BERGSON_FP32, BERGSON_BF16 = "ours float32", "ours auto", "bergson fp32", "bergson bf16"
BERGSON_PRECISION = {BERGSON_FP32: "fp32", BERGSON_BF16: "bf16"}
OURS_PRECISION = {OURS_FP32: "float32", OURS_AUTO: "auto"}


@dataclasses.dataclass
class Timings:
    """Wall and CPU seconds of each timed pass per mode (ours float32/auto, bergson fp32/bf16), our last
    vectors per mode, and why a bergson mode did not run."""

    seconds: dict[str, list[float]] = dataclasses.field(default_factory=lambda: {mode: [] for mode in MODES})
    cpu: dict[str, list[float]] = dataclasses.field(default_factory=lambda: {mode: [] for mode in MODES})
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    bergson_info: dict = dataclasses.field(default_factory=dict)
    exact_error: str = ""
    ours: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)  # mode -> (N, d), last timed pass

    def add(self, mode: str, seconds: float, cpu_seconds: float) -> None:
        self.seconds[mode].append(seconds)
        self.cpu[mode].append(cpu_seconds)

    def add_ours(self, mode: str, model, examples: list[TokenizedExample], settings: AttributionSettings) -> None:
        seconds, cpu_seconds, self.ours[mode] = our_pass(model, examples, settings)
        self.add(mode, seconds, cpu_seconds)

    def best_rate(self, mode: str, n_examples: int) -> float | None:
        """Examples/s of the mode's fastest pass, None when it did not run."""
        return n_examples / min(self.seconds[mode]) if self.seconds[mode] and mode not in self.errors else None


MODES = (BERGSON_FP32, OURS_FP32, BERGSON_BF16, OURS_AUTO)


def start_bergson(args: argparse.Namespace, workdir: Path, spec: dict, timings: Timings) -> dict:
    """One bergson runner per precision (a failing bf16 path must not take the fp32 one down), warmed up."""
    workers = {}
    for mode, precision in BERGSON_PRECISION.items():
        try:
            workers[mode] = BergsonWorker(args.bergson_python, workdir, spec, args.threads, precision)
            workers[mode].run({"name": "warmup", "split": f"train[:{args.batch_size}]", "k": args.k})
        except BergsonUnavailable as error:
            timings.errors[mode] = str(error)
            workers.pop(mode, None)
    return workers


def time_all(args: argparse.Namespace, workdir: Path, spec: dict, model, examples: list[TokenizedExample],
             settings: dict[str, AttributionSettings], exact_n: int) -> Timings:
    """Warm up every mode, then alternate timed passes (ours float32/auto, bergson fp32/bf16) so background
    load hits all of them alike."""
    timings = Timings()
    workers = start_bergson(args, workdir, spec, timings)
    for mode in OURS_PRECISION:
        our_pass(model, examples[: args.batch_size], settings[mode])
    for repeat in range(args.repeats):
        for mode in MODES:
            done = len(timings.seconds[mode])
            if mode in OURS_PRECISION:
                timings.add_ours(mode, model, examples, settings[mode])
            elif mode in workers and mode not in timings.errors:
                save_as = "projected.npy" if repeat == args.repeats - 1 else None
                try:
                    reply = workers[mode].run({"name": f"timed{repeat}", "split": "train", "k": args.k,
                                               "save_as": save_as})
                except BergsonUnavailable as error:
                    timings.errors[mode] = str(error)
                    continue
                timings.add(mode, reply["seconds"], reply["cpu_seconds"])
                timings.bergson_info = reply
            if len(timings.seconds[mode]) > done:  # progress: a killed run still leaves its passes in the log
                print(f"  pass {repeat + 1}/{args.repeats} {mode}: {timings.seconds[mode][-1]:.2f} s wall, "
                      f"{timings.cpu[mode][-1]:.2f} s CPU, load average {os.getloadavg()[0]:.1f}", flush=True)
    if BERGSON_FP32 in workers and BERGSON_FP32 not in timings.errors and exact_n:
        try:
            workers[BERGSON_FP32].run({"name": "exact", "split": f"train[:{exact_n}]", "k": 0, "save_as": "exact.npy"})
        except BergsonUnavailable as error:
            timings.exact_error = str(error)
    for worker in workers.values():
        worker.close()
    return timings


EXACT_WEIGHT_BUDGET = 2**28  # floats per tool in the unprojected check (1 GiB): 16 examples at 5M, 4 at 63M


def run(args: argparse.Namespace, workdir: Path) -> int:
    """Each model size in turn, then every size's ratios, the defaults ratio (both float32) last."""
    all_figures = {}
    for size in args.sizes:
        n_examples = args.n_examples or SIZES[size][1]
        all_figures[size] = run_size(args, workdir / size, size, n_examples)
        print()
    print("summary (examples/s of the best pass of each mode, same run, alternating passes):")
    for size, figures in all_figures.items():
        rates = ", ".join(f"{mode} {figures['examples_per_s'][mode]:.1f}" if figures["examples_per_s"].get(mode)
                          else f"{mode} did not run" for mode in MODES)
        print(f"  {size:>4}: {rates} examples/s")
    for label, key in (("bfloat16, like for like: ours auto / bergson bf16", "ratio_bf16"),
                       ("ours opt-in bfloat16 (auto) / bergson default (fp32)", "ratio_defaults"),
                       ("defaults, both float32: ours float32 / bergson fp32", "ratio_fp32")):
        ratios = ", ".join(f"{size} {figures[key]:.2f}" if figures.get(key) else f"{size} n/a"
                           for size, figures in all_figures.items())
        print(f"ratio {label}: {ratios}")
    write_json(args.json, all_figures)
    return 0


def run_size(args: argparse.Namespace, workdir: Path, size: str, n_examples: int) -> dict:
    """Prepare one model size and its data, time every mode, check agreement, print everything."""
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
    settings = {mode: dataclasses.replace(base, projection_dim=n_modules * args.k * args.k, precision=precision)
                for mode, precision in OURS_PRECISION.items()}
    auto_dtype = autocast_dtype("auto", torch.device("cpu"))
    shape = ", ".join(f"{key} {value}" for key, value in SIZES[size][0].items())
    print(f"model: random Llama, {n_params / 1e6:.2f}M parameters ({shape}"
          + f", vocab {model.config.vocab_size}); {n_modules} hooked Linear modules (lm_head and embedding excluded "
          "in both tools)")
    print(f"projection: bergson k={args.k} per module ({args.k}x{args.k} = {args.k ** 2} per module, "
          f"{n_modules * args.k ** 2} in all); ours projection_dim={n_modules * args.k ** 2} split evenly "
          f"= {args.k ** 2} per module ({args.k}x{args.k}); same totals. "
          "No optimizer normalizer, no preconditioner, no unit norm, summed token loss.")
    print(f"precision: bergson fp32 (its default) and bf16 (model weights in bfloat16); ours float32 and auto, "
          f"which is {'bfloat16 autocast' if auto_dtype else 'float32'} on this CPU "
          f"(fast bfloat16: {has_fast_bfloat16(torch.device('cpu'))})")
    figures: dict = {"size": size, "date": time.strftime("%Y-%m-%d"), "n_examples": n_examples, "seq_len": args.seq_len,
                     "batch_size": args.batch_size, "threads": args.threads, "k": args.k,
                     "projection_dim": n_modules * args.k ** 2, "parameters": n_params,
                     "ours_auto_dtype": str(auto_dtype or torch.float32), "load_average_start": os.getloadavg()[0]}
    if figures["load_average_start"] > args.threads:
        print(f"warning: 1-minute load average is {figures['load_average_start']:.1f} before starting; "
              "other work on this machine will slow every mode")

    hooked_weights = sum(spec.out_features * spec.in_features for spec in hooked_modules(model, base))
    exact_n = min(args.exact_examples, n_examples, EXACT_WEIGHT_BUDGET // hooked_weights)
    spec = {"model_dir": str(model_dir), "data_path": str(data_path), "seed": args.seed,
            "batch_size": args.batch_size, "seq_len": args.seq_len}
    timings = time_all(args, workdir, spec, model, examples, settings, exact_n)

    print()
    rates = {mode: timings.best_rate(mode, n_examples) for mode in MODES}
    figures.update(seconds=timings.seconds, cpu_seconds=timings.cpu, examples_per_s=rates, errors=timings.errors)
    for mode in MODES:
        if mode in timings.errors:
            print(f"{mode:13s}: could not run, so no ratio with it is printed. Reason: {timings.errors[mode]}")
            continue
        print(f"{mode:13s} collect_gradients: {rates[mode]:8.1f} examples/s  (best of {len(timings.seconds[mode])}: "
              + ", ".join(f"{s:.2f}s" for s in timings.seconds[mode]) + f" for {n_examples} examples; CPU seconds "
              f"best {min(timings.cpu[mode]):.2f})")
    if timings.bergson_info:
        print(f"  bergson's venv: torch {timings.bergson_info['torch']}, {timings.bergson_info['threads']} threads")
    for key, ours, theirs in (("ratio_fp32", OURS_FP32, BERGSON_FP32), ("ratio_bf16", OURS_AUTO, BERGSON_BF16),
                              ("ratio_defaults", OURS_AUTO, BERGSON_FP32)):
        if rates[ours] and rates[theirs]:
            figures[key] = rates[ours] / rates[theirs]
            figures[f"cpu_{key}"] = min(timings.cpu[theirs]) / min(timings.cpu[ours])
            print(f"ratio {ours} / {theirs} (examples/s): {figures[key]:.2f}; CPU-time ratio {figures[f'cpu_{key}']:.2f}")
    print("  timed: only the gradient pass, after one warm-up batch each, passes alternating between the modes "
          "(bergson.collection.collect_gradients, which also writes its small on-disk index, vs our "
          "collect_gradients, which returns a tensor); model loading, data loading and imports excluded.")
    print()
    if OURS_AUTO in timings.ours:
        cosines = torch.nn.functional.cosine_similarity(timings.ours[OURS_AUTO], timings.ours[OURS_FP32], dim=1)
        figures["ours_auto_vs_float32_min_cosine"] = float(cosines.min())
        print(f"ours auto vs ours float32 (same projection): per-example cosine min {cosines.min():.5f}, "
              f"mean {cosines.mean():.5f}")
    if BERGSON_FP32 in timings.errors:
        return figures
    if BERGSON_BF16 not in timings.errors:
        half = upper(cosine_matrix(np.load(workdir / "bergson-bf16" / "projected.npy")))
        full = upper(cosine_matrix(np.load(workdir / "bergson-fp32" / "projected.npy")))
        figures["bergson_bf16_vs_fp32_pearson_cosines"] = pearson(half, full)
        print(f"bergson bf16 vs bergson fp32 (same projection): Pearson of pairwise cosines {pearson(half, full):.4f}")
    if timings.exact_error:
        print(f"agreement, exact: skipped, bergson's unprojected pass failed: {timings.exact_error}")
        exact_n = 0
    figures.update(agreement(workdir / "bergson-fp32", timings.ours[OURS_FP32].numpy(), model, examples,
                             settings[OURS_FP32], exact_n))
    figures["load_average_end"] = os.getloadavg()[0]
    print(f"\n1-minute load average: {figures['load_average_start']:.2f} at start, "
          f"{figures['load_average_end']:.2f} at end (other work on the machine slows every mode's timings)")
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
