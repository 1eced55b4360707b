"""Does torch.compile lower the activation-only floor that hook-based collection (ours and bergson's) sits on?

Run: python benchmarks/compiled_floor.py [--sizes 5M,63M] [--repeats 3] [--threads 1]

Times the floor of gradient_throughput.py (weights frozen, forward, loss, backward from the embedding
output) eagerly and under torch.compile (inductor), alternating passes over the same 6 batches in one
process, and prints the compile warm-up and eager time / compiled time. Collection can go no faster
than its floor, so a lead over bergson of 1.2x at equal precision on CPU would need the floor itself
to drop that much.
"""

from __future__ import annotations

import argparse
import time

import torch

from gradient_throughput import SIZES, batches, build


def floor_pass(model, input_ids: torch.Tensor) -> None:
    """Forward and activation-only backward of one batch (no weight gradients)."""
    embeddings = model.model.embed_tokens(input_ids).detach().requires_grad_()  # (B, T, H)
    logits = model(inputs_embeds=embeddings, use_cache=False).logits  # (B, T, V)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten(),
                                             reduction="sum")
    loss.backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="5M,63M")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch_sizes = {"5M": 32, "20M": 16, "63M": 16}
    for size in args.sizes.split(","):
        model = build(size)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        data = [torch.tensor([example.input_ids for example in batch]) for batch in batches(6, batch_sizes[size])]
        compiled = torch.compile(model)
        started = time.perf_counter()
        for input_ids in data[:2]:
            floor_pass(compiled, input_ids)
        warmup = time.perf_counter() - started
        seconds: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(args.repeats):
            for name, runner in (("eager", model), ("compiled", compiled)):
                started = time.perf_counter()
                for input_ids in data:
                    floor_pass(runner, input_ids)
                seconds[name].append(time.perf_counter() - started)
        eager, fast = min(seconds["eager"]), min(seconds["compiled"])
        print(f"{size}: floor eager {eager:.2f} s, compiled {fast:.2f} s (warm-up {warmup:.0f} s): "
              f"compile speeds the floor up {eager / fast:.2f}x", flush=True)


if __name__ == "__main__":
    main()
