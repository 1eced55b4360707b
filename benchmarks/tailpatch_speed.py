"""Tail-patch time per proponent: grouped (vmapped) gradients against one step_on per proponent.

Run: python benchmarks/tailpatch_speed.py [--proponents 64] [--repeats 2]

A random ~5M-parameter Llama (the embedded default's shape: hidden 256, 4 layers, intermediate 688,
vocab 4096) with a real Adafactor state after one step; proponents of 20-40 tokens, three 12-token
queries each. After a warm-up on two proponents, alternates `tailpatch_effects` (what evaluation runs) with the definition it is
tested against (per proponent: step_on, measure, restore) and prints seconds per proponent of each,
wall and CPU, the ratio, and the largest difference in Δlog p between the two.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.optimization import Adafactor

from trackstar_pipeline.attribution.examples import TokenizedExample
from trackstar_pipeline.evaluation.tailpatch import (TailPatcher, TailPatchSetup, one_step_each_logprob_deltas,
                                                     tailpatch_effects)


def build(n_proponents: int):
    """Model, tail-patch setup, proponents, queries and the work list (proponent -> query ids)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=4, max_position_embeddings=64, pad_token_id=0)
    model = LlamaForCausalLM(config)
    optimizer = Adafactor(model.parameters(), lr=1e-3, scale_parameter=False, relative_step=False, warmup_init=False)
    ids = torch.randint(3, 4096, (8, 32))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    model.eval()
    generator = torch.Generator().manual_seed(0)

    def example(name: str, length: int, loss_start: int) -> TokenizedExample:
        return TokenizedExample(name, tuple(torch.randint(3, 4096, (length,), generator=generator).tolist()), loss_start)

    proponents = {f"p{i}": example(f"p{i}", int(torch.randint(20, 41, (1,), generator=generator)), 1)
                  for i in range(n_proponents)}
    queries = {f"q{i}": example(f"q{i}", 12, 8) for i in range(20)}
    work = {pid: [f"q{(i * 7 + j) % 20}" for j in range(3)] for i, pid in enumerate(proponents)}
    return model, TailPatchSetup("adafactor", optimizer.state_dict(), 1e-3, 1.0), proponents, queries, work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proponents", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    model, setup, proponents, queries, work = build(args.proponents)
    modes = {"grouped (tailpatch_effects)": lambda: {pair: effect.delta_logprob for pair, effect in
                                                     tailpatch_effects(model, setup, proponents, work, queries).items()},
             "one step_on per proponent": lambda: one_step_each_logprob_deltas(TailPatcher(model, setup), proponents,
                                                                               work, queries)}
    warm_up = dict(list(work.items())[:2])
    tailpatch_effects(model, setup, proponents, warm_up, queries)
    one_step_each_logprob_deltas(TailPatcher(model, setup), proponents, warm_up, queries)
    wall = {mode: [] for mode in modes}
    cpu = {mode: [] for mode in modes}
    results = {}
    for _ in range(args.repeats):  # alternating, so background load hits both alike
        for mode, run in modes.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            results[mode] = run()
            wall[mode].append((time.perf_counter() - start) / args.proponents)
            cpu[mode].append((time.process_time() - cpu_start) / args.proponents)
    print(f"{args.proponents} proponents x 3 queries, 5M Llama, Adafactor, {torch.get_num_threads()} threads")
    for mode in modes:
        print(f"  {mode:28s} {min(wall[mode]) * 1000:7.1f} ms/proponent wall (best of {args.repeats}), "
              f"{min(cpu[mode]) * 1000:7.1f} ms CPU")
    grouped, single = modes
    gap = max(abs(results[grouped][pair] - results[single][pair]) for pair in results[single])
    print(f"ratio one-step-each / grouped: wall {min(wall[single]) / min(wall[grouped]):.2f}, "
          f"CPU {min(cpu[single]) / min(cpu[grouped]):.2f}; max |Δlog p gap| = {gap:.1e}")


if __name__ == "__main__":
    main()
