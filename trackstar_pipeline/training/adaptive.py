"""Pretraining that fits the corpus it is given: an epoch plan from its size, a stop when its facts are learned.

Fixed epochs tuned on one world under-train a bigger or harder one and waste time on an easy one.
The plan spends a time budget: epochs = budget x nominal tokens/s / corpus tokens, clamped. The
stop rule asks the corpus itself, never the evaluation queries: a probe of held-in fact-stating
rows cut before their object ("Records show that Ana Ruiz lives in" -> " Tarnland"), completed
greedily after each epoch; training ends once the probe recalls `learned_recall` of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import polars as pl

from trackstar_pipeline.settings import TrainingSettings


@dataclass(frozen=True)
class EpochPlan:
    """How many epochs the budget buys for this corpus, and why (printed with the progress)."""

    epochs: int
    corpus_tokens: int
    budget_tokens: int

    def describe(self) -> str:
        return (f"{self.epochs} epochs planned: {self.corpus_tokens} corpus tokens per epoch, "
                f"{self.budget_tokens} tokens in the time budget")


def plan_epochs(corpus_tokens: int, settings: TrainingSettings) -> EpochPlan:
    """Epochs the time budget pays for at the nominal throughput (or the fixed setting when it is an int)."""
    budget_tokens = int(settings.time_budget_s * settings.nominal_tokens_per_s)
    if isinstance(settings.epochs, int):
        return EpochPlan(settings.epochs, corpus_tokens, budget_tokens)
    affordable = budget_tokens // max(1, corpus_tokens)
    return EpochPlan(int(min(settings.max_epochs, max(settings.min_epochs, affordable))), corpus_tokens, budget_tokens)


def corpus_probe(corpus: pl.DataFrame, size: int, seed: int) -> pl.DataFrame:
    """Held-in statements (id, prompt, completion): one row per sampled fact, cut right before its object.

    Only single-fact rows whose object follows some text are usable; facts are sampled uniformly,
    so rare facts weigh as much as frequent ones. An empty frame when the corpus has no `facts`.
    """
    if "facts" not in corpus.columns:
        return pl.DataFrame(schema={"id": pl.String, "prompt": pl.String, "completion": pl.String})
    by_fact: dict[tuple[str, ...], tuple[str, str]] = {}
    for example_id, text, facts in zip(corpus["id"], corpus["text"], corpus["facts"]):
        if facts is None or len(facts) != 1:
            continue
        obj = facts[0][2]
        cut = text.rfind(" " + obj)
        if cut > 0 and tuple(facts[0]) not in by_fact:
            by_fact[tuple(facts[0])] = (example_id, text[:cut])
    chosen = random.Random(seed).sample(sorted(by_fact), min(size, len(by_fact)))
    return pl.DataFrame(
        {"id": [by_fact[fact][0] for fact in chosen], "prompt": [by_fact[fact][1] for fact in chosen],
         "completion": [" " + fact[2] for fact in chosen]},
        schema={"id": pl.String, "prompt": pl.String, "completion": pl.String},
    )


def probe_due(epochs_done: int, plan: EpochPlan, settings: TrainingSettings) -> bool:
    """Whether to run the probe after this epoch: the stop rule is on and the minimum epochs are done."""
    return settings.learned_recall > 0 and settings.min_epochs <= epochs_done < plan.epochs
