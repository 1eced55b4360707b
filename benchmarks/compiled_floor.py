"""Does torch.compile lower the activation-only floor that hook-based collection (ours and bergson's) sits on?

Run: python benchmarks/compiled_floor.py [--sizes 5M,63M] [--repeats 3] [--threads 1]

Times gradient_throughput.py's activation_only_step (weights frozen, forward, loss, backward from the
embedding output) eagerly and under torch.compile (inductor), alternating passes over the same 6
batches in one process, and prints the compile warm-up and eager time / compiled time. Collection can go no faster
than its floor, so a lead over bergson of 1.2x at equal precision on CPU would need the floor itself
to drop that much.
"""

from __future__ import annotations

import argparse
import time

import torch

from gradient_throughput import activation_only_step, batches, build, throughput_batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="5M,63M")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for size in args.sizes.split(","):
        model = build(size)
        data = batches(6, throughput_batch_size(size))
        compiled = torch.compile(model)
        started = time.perf_counter()
        for batch in data[:2]:
            activation_only_step(compiled, batch)
        warmup = time.perf_counter() - started
        seconds: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(args.repeats):
            for name, runner in (("eager", model), ("compiled", compiled)):
                started = time.perf_counter()
                for batch in data:
                    activation_only_step(runner, batch)
                seconds[name].append(time.perf_counter() - started)
        eager, fast = min(seconds["eager"]), min(seconds["compiled"])
        print(f"{size}: floor eager {eager:.2f} s, compiled {fast:.2f} s (warm-up {warmup:.0f} s): "
              f"compile speeds the floor up {eager / fast:.2f}x", flush=True)


if __name__ == "__main__":
    main()
