"""Pretraining that fits the corpus it is given: a width and epoch plan from its size, a stop when its facts are learned.

Fixed epochs tuned on one world under-train a bigger or harder one and waste time on an easy one.
The plan spends a time budget: epochs = budget x tokens/s / corpus tokens, clamped to a floor of
passes a rare fact needs. Passes matter more than width, so when the budget would buy fewer than
target_epochs at the configured width the model gets narrower (fewer heads of the same size), down
to min_hidden_size, rather than the facts fewer passes. The
stop rule asks the corpus itself, never the evaluation queries: a probe of held-in fact-stating
rows cut before their object ("Records show that Ana Ruiz lives in" -> " Tarnland"), completed
greedily after each epoch; training ends once the probe recalls `learned_recall` of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Callable

import polars as pl

from trackstar_pipeline.settings import TrainingSettings


@dataclass(frozen=True)
class TrainingPlan:
    """The width and epochs chosen for this corpus, and why (printed with the progress)."""

    epochs: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    corpus_tokens: int
    budget_tokens: int
    speedup: float
    """Tokens/s at this width over the configured width's."""
    configured_hidden_size: int
    predicted_seconds: float
    """Wall time at this width's speed: measured on this machine (nominal_tokens_per_s auto) or nominal."""
    time_limit_s: float
    """training.max_time_s."""
    over_time_limit: bool
    """Even this (the narrowest allowed) width needs longer than time_limit_s for the epoch floor."""
    tokens_per_s: float = 0.0
    """The speed the plan assumed at this width."""
    speed_measured: bool = False
    """Whether that speed was measured on this machine (else nominal_tokens_per_s scaled by token_cost)."""
    precision: str | None = None
    """The autocast the plan was made for ("float32" or "bfloat16"); None (plans saved before it was
    recorded): training.precision decides. A resumed run keeps it, like the width."""
    switched_from_float32: bool = False
    """training.bfloat16_over_time chose bfloat16 because float32's plan overran max_time_s."""
    threads: int = 0
    """torch CPU threads the plan is trained on now (0: plans saved before it was recorded). A resumed run
    starts on it, so a run's arithmetic does not change halfway unless another process crowds the cores."""
    planned_threads: int = 0
    """The count the plan was made with; threads is fewer while another process crowds the cores, and a
    resumed run goes back to this many once they are free (0: plans saved before it was recorded)."""

    def model_settings(self, settings: TrainingSettings) -> TrainingSettings:
        """The settings with this plan's width, for building the model."""
        return at_width(settings, self.hidden_size)

    def describe(self) -> str:
        width = f"hidden {self.hidden_size}"
        if self.hidden_size != self.configured_hidden_size:
            width += (f" (narrowed from {self.configured_hidden_size}: {self.speedup:.1f}x the tokens/s, "
                      "for more passes over the corpus in the time budget)")
        described = (f"{width}; {self.epochs} epochs planned: {self.corpus_tokens} corpus tokens per epoch, "
                     f"{self.budget_tokens} tokens in the time budget, about {self.predicted_seconds:.0f} s at "
                     f"the {'measured' if self.speed_measured else 'nominal'} {self.tokens_per_s:.0f} tokens/s")
        if self.switched_from_float32:
            described += "; bfloat16 autocast, as float32 overran training.max_time_s"
        if self.over_time_limit:
            described += (f"; WARNING: over training.max_time_s ({self.time_limit_s:.0f} s) even so: for a corpus "
                          "this large, bring a trained model (training.model_uri) or let the width shrink further "
                          "(training.width auto, a lower training.min_hidden_size)")
        return described


def at_width(settings: TrainingSettings, hidden_size: int) -> TrainingSettings:
    """The configured model at another width: intermediate size and head count scaled with it, head size kept."""
    return replace(settings, hidden_size=hidden_size,
                   intermediate_size=round(settings.intermediate_size * hidden_size / settings.hidden_size),
                   num_heads=settings.num_heads * hidden_size // settings.hidden_size)


def token_cost(hidden_size: int, settings: TrainingSettings) -> float:
    """Nominal multiply-adds per training token of the configured model at this width."""
    model = at_width(settings, hidden_size)
    matmuls = model.num_layers * (4 * hidden_size**2 + 3 * hidden_size * model.intermediate_size)
    return matmuls + hidden_size * model.vocab_size + model.token_overhead_macs


REFERENCE_MODEL = TrainingSettings()
"""The architecture nominal_tokens_per_s was measured on (the defaults: 256 wide, 4 layers, vocab 4096)."""


def nominal_tokens_per_s(hidden_size: int, settings: TrainingSettings) -> float:
    """Training tokens/s a fixed nominal_tokens_per_s implies for this width, scaled by the cost per token."""
    if not isinstance(settings.nominal_tokens_per_s, (int, float)):
        raise ValueError("training.nominal_tokens_per_s is 'auto': the speed is measured on this machine "
                         "(pretrain does it); give plan_training the measured tokens_per_s, or set a number")
    reference_model = replace(REFERENCE_MODEL, token_overhead_macs=settings.token_overhead_macs)
    reference = token_cost(reference_model.hidden_size, reference_model)
    return settings.nominal_tokens_per_s * reference / token_cost(hidden_size, settings)


def candidate_widths(settings: TrainingSettings) -> list[int]:
    """Widths auto may choose, widest first: the configured one, then one head fewer at a time."""
    head_size = settings.hidden_size // settings.num_heads
    narrowest = min(settings.hidden_size, max(head_size, settings.min_hidden_size))
    return list(range(settings.hidden_size, narrowest - 1, -head_size))


def plan_training(corpus_tokens: int, settings: TrainingSettings,
                  tokens_per_s: Callable[[int], float] | None = None) -> TrainingPlan:
    """The width, then the epochs the time budget buys there (at least min_epochs, at most max_epochs).

    With epochs auto (width auto) the width is the widest at which time_budget_s buys target_epochs, or
    else the narrowest allowed: passes over the corpus matter more than width. With a fixed epoch count
    it is the widest at which those epochs fit max_time_s. tokens_per_s(width) is this
    machine's measured speed (pretrain measures it when nominal_tokens_per_s is auto); without it the
    plan is a pure function of the corpus token count and the settings, the same on every machine.
    Widths are tried widest first, so a measured speed is asked only for the widths considered.
    """
    corpus_tokens = max(1, corpus_tokens)
    floor_epochs = settings.epochs if isinstance(settings.epochs, int) else settings.min_epochs
    widths = candidate_widths(settings) if settings.width == "auto" else [settings.hidden_size]
    speed = tokens_per_s or (lambda width: nominal_tokens_per_s(width, settings))

    def seconds(epochs: int, width: int) -> float:
        return epochs * corpus_tokens / speed(width)

    if isinstance(settings.epochs, int):  # fixed epochs: the widest width where they fit max_time_s
        hidden = next((width for width in widths if seconds(floor_epochs, width) <= settings.max_time_s), widths[-1])
    else:  # epochs first: the widest width at which the budget buys target_epochs, else the narrowest
        hidden = next((width for width in widths if seconds(settings.target_epochs, width) <= settings.time_budget_s),
                      widths[-1])
    budget_tokens = int(settings.time_budget_s * speed(hidden))
    if isinstance(settings.epochs, int):
        epochs = settings.epochs
    else:
        epochs = int(min(settings.max_epochs, max(settings.min_epochs, budget_tokens // corpus_tokens)))
    model = at_width(settings, hidden)
    return TrainingPlan(
        epochs=epochs, hidden_size=hidden, intermediate_size=model.intermediate_size,
        num_heads=model.num_heads, corpus_tokens=corpus_tokens,
        budget_tokens=budget_tokens, configured_hidden_size=settings.hidden_size,
        speedup=speed(hidden) / speed(settings.hidden_size),
        predicted_seconds=seconds(epochs, hidden), time_limit_s=settings.max_time_s,
        over_time_limit=seconds(floor_epochs, hidden) > settings.max_time_s,
        tokens_per_s=speed(hidden), speed_measured=tokens_per_s is not None,
    )


def corpus_probe(corpus: pl.DataFrame, size: int, seed: int) -> pl.DataFrame:
    """Held-in statements (id, prompt, completion): one row per sampled fact, cut right before its object.

    Only single-fact rows whose object follows some text are usable (the first such row per fact);
    facts are sampled uniformly, so rare facts weigh as much as frequent ones. Columnar up to the
    sample, so a million-row corpus costs no Python loop. An empty frame when the corpus has no `facts`.
    """
    schema = {"id": pl.String, "prompt": pl.String, "completion": pl.String}
    if "facts" not in corpus.columns or size <= 0 or corpus.schema["facts"] != pl.List(pl.List(pl.String)):
        return pl.DataFrame(schema=schema)  # no (subject, relation, object) facts to probe
    marker = pl.lit(" ") + pl.col("object")
    usable = (
        corpus.lazy()
        .filter(pl.col("facts").list.len() == 1)
        .with_columns(fact=pl.col("facts").list.first())
        .with_columns(subject=pl.col("fact").list.get(0, null_on_oob=True),
                      relation=pl.col("fact").list.get(1, null_on_oob=True),
                      object=pl.col("fact").list.get(2, null_on_oob=True))
        .filter(pl.col("text").str.slice(1).str.contains(marker, literal=True))  # the object follows some text
        .unique(subset=["subject", "relation", "object"], keep="first", maintain_order=True)
        .sort(["subject", "relation", "object"])
        .select("id", "text", "object")
        .collect()
    )
    chosen = usable[random.Random(seed).sample(range(usable.height), min(size, usable.height))]
    return pl.DataFrame(
        {"id": chosen["id"], "prompt": [text[: text.rfind(" " + obj)] for text, obj in zip(chosen["text"], chosen["object"])],
         "completion": (" " + chosen["object"]).to_list()},
        schema=schema,
    )


def probe_due(epochs_done: int, plan: TrainingPlan, settings: TrainingSettings) -> bool:
    """Whether to run the probe after this epoch: the stop rule is on and the minimum epochs are done."""
    return settings.learned_recall > 0 and settings.min_epochs <= epochs_done < plan.epochs
