"""Gradient-collection throughput and memory against a plain forward+backward of the same batches.

Run: python benchmarks/gradient_throughput.py [--quick] [--sizes 5M,63M] [--no-memory]

1. Throughput, per size: a ~5M-parameter Llama (hidden 256, 4 layers, intermediate 688, batch 32) and
   a 63M one built from a config (hidden 768, 8 layers, intermediate 2048, batch 16), vocab 4096,
   sequence length 64, on CPU. For each batch, alternately time (a) a plain forward + loss.backward()
   with parameter gradients, (b) the activation-only floor (weights frozen, backward from the
   embedding output) and (c) `collect_gradients` at d = 4096 and 16384 (factored optimizer
   correction folded in), each in float32 and under bfloat16 autocast (`precision` bfloat16 for
   collection). Prints examples/s and ratio = plain float32 time / mode time, in wall and CPU time
   (target: collection >= 1.3x plain on the 63M model); bfloat16 rows also print their ratio to the
   plain forward+backward under bfloat16 autocast (the like-for-like floor of that precision).
2. Memory: each (model size, batch size, mode) runs in a fresh subprocess; after a warm-up batch we
   reset the kernel's peak-RSS mark (write 5 to /proc/self/clear_refs, Linux) and report VmHWM minus
   the RSS at the reset, i.e. the peak extra resident memory of the measured work.
   tracemalloc does not see torch's allocations and ru_maxrss cannot be reset, so neither is used. Beside it
   we print what materialised per-example gradients would need (B x hooked params x 4 bytes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trackstar_pipeline.attribution.examples import TokenizedExample
from trackstar_pipeline.attribution.gradients import frozen_parameters, collect_gradients, hooked_modules
from trackstar_pipeline.attribution.optimizer_state import ParameterMoments, SecondMoments
from trackstar_pipeline.attribution.precision import autocast
from trackstar_pipeline.settings import AttributionSettings

SIZES = {"5M": dict(hidden_size=256, num_hidden_layers=4, intermediate_size=688, num_attention_heads=4),
         "20M": dict(hidden_size=512, num_hidden_layers=5, intermediate_size=1376, num_attention_heads=8),
         "63M": dict(hidden_size=768, num_hidden_layers=8, intermediate_size=2048, num_attention_heads=12)}
MEMORY_SIZES = ("5M", "20M")
VOCAB, SEQ = 4096, 64


def build(size: str) -> LlamaForCausalLM:
    """A randomly initialised Llama of the named size (no download)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=SEQ, **SIZES[size])
    return LlamaForCausalLM(config).eval()


def batches(n_batches: int, batch_size: int) -> list[list[TokenizedExample]]:
    """Random full-length sequences, loss on every token."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (n_batches, batch_size, SEQ), generator=generator)
    return [[TokenizedExample(f"{b}-{i}", tuple(row.tolist()), 1) for i, row in enumerate(batch)]
            for b, batch in enumerate(ids)]


def random_moments(model, settings: AttributionSettings) -> SecondMoments:
    """Positive Adafactor-style factors for every hooked weight, so the folded correction is timed too."""
    moments = {}
    for spec in hooked_modules(model, settings):
        rows, cols = spec.module.weight.shape
        moments[spec.parameter_name] = ParameterMoments(torch.rand(rows) + 0.5, torch.rand(cols) + 0.5)
    return SecondMoments(moments)


CPU = torch.device("cpu")
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}


def plain_step(model, batch: list[TokenizedExample], dtype: torch.dtype | None = None) -> None:
    """The baseline: one forward (under autocast in `dtype`, if given) and backward with parameter gradients."""
    ids = torch.tensor([example.input_ids for example in batch])
    model.zero_grad(set_to_none=True)
    with autocast(CPU, dtype):
        logits = model(input_ids=ids, use_cache=False).logits  # (B, T, V)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="sum")
    loss.backward()


def activation_only_step(model, batch: list[TokenizedExample], dtype: torch.dtype | None = None) -> None:
    """The floor of hook-based collection: weights frozen, backward from the embedding output only."""
    ids = torch.tensor([example.input_ids for example in batch])
    with frozen_parameters(model):
        embeddings = model.get_input_embeddings()(ids).requires_grad_(True)  # (B, T, hidden)
        with autocast(CPU, dtype):
            logits = model(inputs_embeds=embeddings, use_cache=False).logits  # (B, T, V)
        torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(),
                                          reduction="sum").backward()


def throughput_batch_size(size: str) -> int:
    """Examples per timed batch: 32 for the 5M model, 16 for the larger ones."""
    return 32 if size == "5M" else 16


def throughput(quick: bool, size: str) -> None:
    model = build(size)
    n_params = sum(p.numel() for p in model.parameters())
    batch_size = throughput_batch_size(size)
    data = batches(3 if quick else 6, batch_size)
    dims = (4096, 16384)
    settings = {(d, name): AttributionSettings(projection_dim=d, batch_size=batch_size, precision=name)
                for name in PRECISIONS for d in dims}
    moments = random_moments(model, settings[dims[0], "float32"])
    modes = {}
    for name, dtype in PRECISIONS.items():
        modes[f"plain forward+backward {name}"] = lambda batch, dtype=dtype: plain_step(model, batch, dtype)
        modes[f"activation-only f+b {name}"] = lambda batch, dtype=dtype: activation_only_step(model, batch, dtype)
        for d in dims:
            modes[f"collect_gradients d={d} {name}"] = (
                lambda batch, key=(d, name): collect_gradients(model, batch, settings[key], moments))
    for step in modes.values():  # warm-up
        step(data[0])
    seconds = {mode: 0.0 for mode in modes}
    cpu = {mode: 0.0 for mode in modes}
    for batch in data:  # interleaved, so drift in machine speed hits every mode alike
        for mode, step in modes.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            step(batch)
            seconds[mode] += time.perf_counter() - start
            cpu[mode] += time.process_time() - cpu_start
    examples = sum(len(batch) for batch in data)
    print(f"model: Llama {n_params / 1e6:.2f}M params, seq {SEQ}, batch {batch_size}, {examples} examples, "
          f"{torch.get_num_threads()} torch threads")
    plain, plain_bf16 = "plain forward+backward float32", "plain forward+backward bfloat16"
    for mode in modes:
        line = (f"  {mode:40s} {examples / seconds[mode]:8.1f} examples/s   ratio {seconds[plain] / seconds[mode]:.2f}"
                f"   CPU-time ratio {cpu[plain] / cpu[mode]:.2f}")
        if mode.endswith("bfloat16"):
            line += f"   vs plain bf16 {seconds[plain_bf16] / seconds[mode]:.2f}"
        print(line)


def _status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss_kib() -> int:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS and return that RSS (Linux)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _status_kib("VmRSS")


def child(size: str, batch_size: int, mode: str) -> None:
    """Measure one configuration's peak-RSS growth in this fresh process and print it as JSON."""
    model = build(size)
    data = batches(2, batch_size)
    settings = AttributionSettings(projection_dim=4096, batch_size=batch_size)
    moments = random_moments(model, settings)
    plain_step(model, data[0]) if mode == "plain" else collect_gradients(model, data[0], settings, moments)
    before = _reset_peak_rss_kib()  # after a warm-up, so one-off allocator growth is not counted
    for batch in data:
        if mode == "plain":
            plain_step(model, batch)
        else:
            collect_gradients(model, batch, settings, moments)
    after = _status_kib("VmHWM")
    hooked = sum(s.out_features * s.in_features for s in hooked_modules(model, settings))
    print(json.dumps({"size": size, "params": sum(p.numel() for p in model.parameters()), "batch": batch_size,
                      "mode": mode, "peak_growth_mib": (after - before) / 1024,
                      "per_example_grads_mib": batch_size * hooked * 4 / 2**20}))


def memory() -> None:
    print("peak extra RSS of the measured work (VmHWM after a clear_refs reset, fresh process each), d=4096:")
    print(f"  {'model':>5} {'batch':>5} {'plain f+b MiB':>14} {'collect MiB':>12} {'materialised per-example grads MiB':>36}")
    for size in MEMORY_SIZES:
        for batch_size in (8, 32):
            rows = {}
            for mode in ("plain", "collect"):
                output = subprocess.run([sys.executable, __file__, "--child", size, str(batch_size), mode],
                                        check=True, capture_output=True, text=True).stdout
                rows[mode] = json.loads(output.strip().splitlines()[-1])
            print(f"  {size:>5} {batch_size:>5} {rows['plain']['peak_growth_mib']:14.1f} "
                  f"{rows['collect']['peak_growth_mib']:12.1f} {rows['collect']['per_example_grads_mib']:36.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches")
    parser.add_argument("--sizes", default="5M,63M", help=f"comma-separated model sizes for the throughput table, "
                                                         f"among {', '.join(SIZES)}")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--child", nargs=3, metavar=("SIZE", "BATCH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return
    for size in args.sizes.split(","):
        throughput(args.quick, size.strip())
    if not args.no_memory:
        memory()


if __name__ == "__main__":
    main()
