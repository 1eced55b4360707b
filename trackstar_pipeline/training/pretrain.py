"""Pretrain a small Llama-style LM on the corpus and keep the optimizer state TrackStar needs.

The model is built from a LlamaConfig (no download), trained with Adafactor (factored second
moments, as the TrackStar paper's models) or AdamW, with linear warmup and cosine decay. Every other
step's rows are packed into sequences of up to max_length tokens (training.packing mixed), as LM
pretraining packs documents, so the model reads facts behind other text as well as right after BOS.
A row longer than that is read whole (the model's context fits the corpus's longest row, up to
max_context), and a step of long rows holds fewer of them (batch_tokens), so each fact keeps its share. An
epoch trains a text that many rows repeat exactly at most max_repeats times, so boilerplate leaves the time
budget to the facts. A row of split_sentences sentences or more (a passage of several facts) is trained as its
sentences, so each fact is learned on its own and not only behind the sentences of its one passage; the model's
context still fits the longest row, which attribution reads whole.
Outputs, all under output_dir/model/: the save_pretrained weights and tokenizer, optimizer.pt
(torch.save(optimizer.state_dict()) over model.parameters() in order, the HF Trainer format) and
training_state.json; the loss per step goes to output_dir/train_log.jsonl. A checkpoint every
`checkpoint_every` steps makes an interrupted run resume to the same result.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import polars as pl
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.optimization import Adafactor

from trackstar_pipeline.attribution.precision import autocast, autocast_dtype, has_fast_bfloat16
from trackstar_pipeline.data.tokenizer import TOKENIZER_RECIPE, train_bpe_tokenizer
from trackstar_pipeline.training.adaptive import (TrainingPlan, at_width, candidate_widths, corpus_probe, plan_training,
                                                   probe_due)
from trackstar_pipeline.training.recall import fact_recall
from trackstar_pipeline.training.sentences import passage_texts
from trackstar_pipeline.settings import TrainingSettings

MODEL_SUBDIR = "model"
CHECKPOINT_FILE = "checkpoint.pt"
OPTIMIZER_FILE = "optimizer.pt"
TRAINING_STATE_FILE = "training_state.json"
LOG_FILE = "train_log.jsonl"


@dataclass(frozen=True)
class PretrainResult:
    model_dir: Path
    optimizer_state_path: Path
    training_state_path: Path
    log_path: Path
    final_learning_rate: float
    final_loss: float
    steps: int
    parameters: int
    probe_recall: float | None
    """Share of held-in corpus statements completed greedily at the last probe (None: never probed)."""
    seconds: float
    """Wall time of this call (a resumed run counts only its own part)."""
    plan: str = ""
    """The width and epoch plan and why (adaptive.TrainingPlan.describe)."""
    context_length: int = 0
    """The model's context (max_position_embeddings): training.max_length, or the longest row up to max_context."""
    rows_cut: int = 0
    """Rows longer than that context, read on their first context_length tokens only: of every corpus row when
    some were split into sentences (the model's context is sized to the rows attribution reads), else of the
    rows trained (those training.max_repeats keeps)."""


def build_model(settings: TrainingSettings, tokenizer: PreTrainedTokenizerBase,
                context_length: int | None = None) -> LlamaForCausalLM:
    """A freshly initialised Llama-style causal LM sized by the settings (seeded, no download); its context is
    context_length (model_context of the corpus) or, when None, training.max_length."""
    torch.manual_seed(settings.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.num_layers,
        num_attention_heads=settings.num_heads,
        num_key_value_heads=settings.num_heads,
        max_position_embeddings=context_length or settings.max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def build_optimizer(model: torch.nn.Module, settings: TrainingSettings) -> torch.optim.Optimizer:
    """Adafactor with factored second moments and a fixed external lr schedule, or AdamW."""
    if settings.optimizer == "adafactor":
        return Adafactor(
            model.parameters(),
            lr=settings.learning_rate,
            scale_parameter=False,
            relative_step=False,
            warmup_init=False,
            weight_decay=settings.weight_decay,
        )
    return torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, betas=(0.9, 0.98), weight_decay=settings.weight_decay
    )


def lr_factor(step: int, total_steps: int, settings: TrainingSettings) -> float:
    """Multiplier on the peak lr after `step` steps: linear warmup, then cosine to min_lr_ratio."""
    warmup = max(1, int(settings.warmup_fraction * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def encode_texts(texts: list[str], tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    """BOS + text tokens + EOS per row, whole (pretrain cuts them to model_context, counting the rows it cuts)."""
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [[tokenizer.bos_token_id] + ids + [tokenizer.eos_token_id] for ids in encoded]


class TrainingTexts(NamedTuple):
    """What an epoch trains on, and how many corpus rows split_sentences split to get it."""

    texts: list[str]
    rows_split: int


def row_pieces(corpus: pl.DataFrame, settings: TrainingSettings) -> list[list[str]]:
    """Each row's texts to train, in corpus order: its self-contained pieces where training.split_sentences cuts
    it (training/sentences.py), else the row itself. The fingerprint and the epoch's texts both read them."""
    if settings.split_sentences < 0:
        raise ValueError(f"training.split_sentences is {settings.split_sentences}: give 0 (never) or the least "
                         "number of sentences a row is split at")
    texts = corpus["text"].to_list()
    if not settings.split_sentences:
        return [[text] for text in texts]
    return [passage_texts(text, settings.split_sentences) for text in texts]


def training_texts(corpus: pl.DataFrame, settings: TrainingSettings,
                   pieces: list[list[str]] | None = None) -> TrainingTexts:
    """The texts an epoch trains on, in corpus order: every row's (a row of split_sentences sentences or more as
    its pieces, in order), or each text's first max_repeats occurrences. pieces: row_pieces, when already cut."""
    if settings.max_repeats < 0:
        raise ValueError(f"training.max_repeats is {settings.max_repeats}: give 0 (every row) or a positive cap")
    pieces = row_pieces(corpus, settings) if pieces is None else pieces
    texts = [piece for row in pieces for piece in row]
    rows_split = sum(len(row) > 1 for row in pieces)
    if settings.max_repeats == 0:
        return TrainingTexts(texts, rows_split)
    frame = pl.DataFrame({"text": texts}, schema={"text": pl.String})
    return TrainingTexts(frame.filter(pl.int_range(pl.len()).over("text") < settings.max_repeats)["text"].to_list(),
                         rows_split)


def model_context(lengths: Sequence[int], settings: TrainingSettings) -> int:
    """The context the model is built with: training.max_length, or the longest row (BOS + text + EOS) when that
    is longer, up to training.max_context. Pretraining and attribution then read a row of several facts whole."""
    return max(settings.max_length, min(max(lengths, default=0), settings.max_context))


def pack_length_for(context_length: int, lengths: Sequence[int], settings: TrainingSettings) -> int:
    """The longest packed sequence: training.max_length, or the model's whole context when no trained text
    reaches it (rows split into sentences, split_sentences), so training reaches every position of the longest
    row that attribution reads."""
    return context_length if max(lengths, default=0) < context_length else settings.max_length


def packed_sequences(rows: list[list[int]], max_length: int, packing: str) -> list[list[int]]:
    """A step's rows (each BOS + text + EOS) laid out as the sequences the model trains on (training.packing).

    Packed, rows follow each other greedily up to max_length tokens, so most facts are read behind other text,
    as a query's lead-in puts them, instead of always right after BOS.
    """
    if packing == "none":
        return rows
    sequences: list[list[int]] = []
    closing = 1 if packing == "text" else 0  # text: the sequence's EOS comes after its last row
    for row in rows:
        body = row[1:] if packing == "eos" else row[1:-1]  # (T,) what follows a row already in the sequence
        if sequences and len(sequences[-1]) + len(body) + closing <= max_length:
            sequences[-1].extend(body)
        else:
            if sequences and closing:
                sequences[-1].append(row[-1])
            sequences.append(list(row[:len(row) - closing]))
    if sequences and packing == "text":
        sequences[-1].append(rows[-1][-1])
    return sequences


def _batch(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    attention = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
    labels = input_ids.masked_fill(attention == 0, -100)  # (B, T); padding never contributes
    return input_ids, attention, labels


def step_packing(packing: str, step: int) -> str:
    """The layout of this step's rows: mixed alternates unpacked (even steps) and text-packed (odd) steps."""
    if packing == "mixed":
        return "none" if step % 2 == 0 else "text"
    return packing


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, rows: list[list[int]], pad_id: int,
                  dtype: torch.dtype | None, settings: TrainingSettings, step: int = 0,
                  pack_length: int | None = None) -> float:
    """One optimizer step on these rows (the loop and the speed measurement both take it); the loss.

    pack_length: the longest packed sequence (pack_length_for), training.max_length when None."""
    sequences = packed_sequences(rows, pack_length or settings.max_length, step_packing(settings.packing, step))
    input_ids, attention, labels = _batch(sequences, pad_id)
    with autocast(torch.device("cpu"), dtype):
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
    loss.backward()
    if settings.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


SUSTAINED_FRACTION = 0.8
"""Whole-run training speed over the fastest calibration step: measured 0.81 on the embedded world with the
test suite beside it, 0.72 on generated world 2 (256 wide) with two other jobs on the two cores. 0.8 fits
a machine with at most one busy neighbour; a busier one still overruns the plan."""


def bfloat16_instead(plan: TrainingPlan, settings: TrainingSettings) -> bool:
    """Whether to plan again in bfloat16 (training.bfloat16_over_time): a float32 plan at a measured speed
    that overruns max_time_s even at its floor, on a CPU where bfloat16 measures faster."""
    return (settings.bfloat16_over_time and settings.precision == "float32" and plan.speed_measured
            and plan.over_time_limit and has_fast_bfloat16(torch.device("cpu")))


def measured_tokens_per_s(settings: TrainingSettings, tokenizer: PreTrainedTokenizerBase, rows: list[list[int]],
                          lengths: list[int], dtype: torch.dtype | None, warmup: int = 2,
                          timed: int = 8, context_length: int | None = None) -> Callable[[int], float]:
    """tokens_per_s(width) for plan_training: steps of a throwaway model at that width, timed.

    Every step takes the same batch, epoch 0's batch of median token count (the corpus's own lengths,
    so padding and short rows cost what they will), and the fastest of `timed` steps after `warmup`
    counts, of the even and of the odd steps (mixed packing lays them out differently): a neighbour or a
    page fault only ever slows a step, so the fastest one is what this machine does, repeatable to a few
    percent where a mean over different batches varied by 15% between runs.
    A whole run sustains less than its fastest step (batches of other lengths, logging, checkpoints, a
    neighbour's load), so the plan gets SUSTAINED_FRACTION of it.
    Each width is measured once, when the plan asks. The torch RNG is restored afterwards, so measuring
    changes nothing in the model that is trained.
    """
    batches = training_batches(lengths, settings, 0)
    batch = sorted(batches, key=lambda indices: sum(lengths[i] for i in indices))[len(batches) // 2]
    batch_rows = [rows[i] for i in batch]
    tokens = sum(lengths[i] for i in batch)
    speeds: dict[int, float] = {}
    context = context_length or model_context(lengths, settings)
    pack_length = pack_length_for(context, lengths, settings)

    def tokens_per_s(width: int) -> float:
        if width not in speeds:
            with torch.random.fork_rng():
                model = build_model(at_width(settings, width), tokenizer, context)
                optimizer = build_optimizer(model, settings)
                fastest = [math.inf, math.inf]  # per step parity: mixed packing alternates two layouts
                for number in range(warmup + timed):
                    start = time.perf_counter()
                    training_step(model, optimizer, batch_rows, tokenizer.pad_token_id, dtype, settings, number,
                                  pack_length)
                    if number >= warmup:
                        fastest[number % 2] = min(fastest[number % 2], time.perf_counter() - start)
            speeds[width] = SUSTAINED_FRACTION * 2 * tokens / max(sum(fastest), 1e-9)
        return speeds[width]

    return tokens_per_s


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                  batch_tokens: int | None = None) -> list[list[int]]:
    """One epoch's batches, a pure function of (seed, epoch) so a resumed run sees the same ones.

    Rows are shuffled, then sorted by length within windows of 50 batches so a batch holds rows of
    similar length (little padding to compute on), and the batches are shuffled again. A batch holds
    batch_size rows, or fewer where the next row would take its tokens past batch_tokens (a row longer than
    that is a batch alone), so the number of batches can differ a little between epochs (EpochSchedule).
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = 50 * batch_size
    token_limit = math.inf if batch_tokens is None else batch_tokens
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batch: list[int] = []
        tokens = 0
        for index in chunk:
            if batch and (len(batch) == batch_size or tokens + lengths[index] > token_limit):
                batches.append(batch)
                batch, tokens = [], 0
            batch.append(index)
            tokens += lengths[index]
        batches.append(batch)
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def training_batches(lengths: Sequence[int], settings: TrainingSettings, epoch: int) -> list[list[int]]:
    """epoch_batches at the settings' batch_size, seed and batch_tokens: the speed measurement, the epoch
    schedule and the training loop must all see the same batches."""
    return epoch_batches(lengths, settings.batch_size, settings.seed, epoch, settings.batch_tokens)


@dataclass(frozen=True)
class EpochSchedule:
    """Which step of which epoch a global step is. Epochs can differ in step count (a batch of long rows holds
    fewer of them, epoch_batches), so the lr schedule's length, a resume's position and the epoch ends are
    looked up here rather than computed as epochs x steps per epoch."""

    starts: tuple[int, ...]
    """The step each planned epoch starts at, then the total step count."""

    @classmethod
    def plan(cls, lengths: Sequence[int], settings: TrainingSettings, epochs: int) -> "EpochSchedule":
        counts = [len(training_batches(lengths, settings, epoch)) for epoch in range(epochs)]
        return cls(tuple(itertools.accumulate(counts, initial=0)))

    @property
    def total_steps(self) -> int:
        return self.starts[-1]

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, offset within it) of the step about to run."""
        epoch = bisect.bisect_right(self.starts, step) - 1
        return epoch, step - self.starts[epoch]

    def ends_epoch(self, step: int) -> bool:
        """Whether `step` steps done is the end of an epoch."""
        return step > 0 and step in self.starts

    def epochs_done(self, step: int) -> float:
        if step >= self.total_steps:
            return float(len(self.starts) - 1)
        epoch, offset = self.locate(step)
        return epoch + offset / (self.starts[epoch + 1] - self.starts[epoch])


def fingerprint(corpus: pl.DataFrame, settings: TrainingSettings, pieces: list[list[str]] | None = None) -> str:
    """Hash of the corpus and the training settings; a checkpoint from other inputs is not resumed. A row cut into
    pieces (training.split_sentences) counts by its pieces, the texts it trains: a new cutting rule retrains
    only a corpus whose pieces it changes, and a corpus of short rows keeps its cached model. pieces: row_pieces,
    when already cut."""
    pieces = row_pieces(corpus, settings) if pieces is None else pieces
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(asdict(settings), sort_keys=True, default=str).encode())
    digest.update(TOKENIZER_RECIPE.encode())
    for example_id, text, row in zip(corpus["id"].to_list(), corpus["text"].to_list(), pieces):
        digest.update(f"{example_id}\t{text}\n".encode())
        if len(row) > 1:
            digest.update(("\x1f".join(row) + "\x1e").encode())  # unit and record separators
    return digest.hexdigest()


def _save_atomic(obj: object, path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    torch.save(obj, partial)
    os.replace(partial, path)


def _load_or_train_tokenizer(corpus: pl.DataFrame, settings: TrainingSettings, model_dir: Path) -> PreTrainedTokenizerFast:
    if (model_dir / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(model_dir))
    tokenizer = train_bpe_tokenizer(corpus["text"].to_list(), settings.vocab_size)
    model_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(model_dir))
    return tokenizer


def idle_cores(own_threads: int = 0) -> int | None:
    """Cores the 1-minute load average leaves free (at least 1), counting this process's own_threads running
    threads as free; None where there is no load average."""
    if not hasattr(os, "getloadavg"):
        return None
    cores = os.cpu_count() or 1
    others = max(0.0, os.getloadavg()[0] - own_threads)
    return max(1, min(cores, round(cores - others)))


def training_threads(settings: TrainingSettings) -> int:
    """Threads for torch without a measurement: the setting, or (0) the idle cores, since oversubscribed threads crawl."""
    if settings.num_threads > 0:
        return settings.num_threads
    idle = idle_cores()
    return idle if idle is not None else os.cpu_count() or 1


def faster_thread_count(settings: TrainingSettings, tokenizer: PreTrainedTokenizerBase, rows: list[list[int]],
                        lengths: list[int], dtype: torch.dtype | None,
                        context_length: int | None = None) -> tuple[int, Callable[[int], float]]:
    """One thread or every core, whichever trains faster here now (num_threads 0 with a measured speed).

    On an idle 2-core machine two threads trained the 128-wide model 1.7x as fast as one; on a machine whose
    other core is busy they are slower, and the measurement sees it. Timed at the narrowest width the plan
    may choose, where threads gain least, in THREAD_ROUNDS alternating rounds (1, all, 1, all), each count
    keeping its best round: a neighbour that only ever slows a measurement then has to hit every round of a
    count to tip the choice. Returns the count, set in torch, and its tokens_per_s for the plan.
    """
    width = candidate_widths(settings)[-1] if settings.width == "auto" else settings.hidden_size
    rounds: dict[int, list[Callable[[int], float]]] = {}
    for _ in range(THREAD_ROUNDS):
        for count in sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(count)
            speed = measured_tokens_per_s(settings, tokenizer, rows, lengths, dtype, context_length=context_length)
            speed(width)
            rounds.setdefault(count, []).append(speed)
    best = {count: max(speeds, key=lambda speed: speed(width)) for count, speeds in rounds.items()}
    count = max(best, key=lambda count: (best[count](width), -count))
    torch.set_num_threads(count)
    return count, best[count]


THREAD_ROUNDS = 2
"""Rounds of the thread measurement. Session 16: one round, a 2.5k-row world's plan once measured two threads
slower than one (a passing neighbour) and trained on one at 4,220 tokens/s, 17 epochs, recall 0.548 of 500;
measured again three times on both training seeds, two threads were 1.5-1.6x as fast (the other seed's plan:
24 epochs, recall 0.782)."""


CROWDED_SLOWDOWN = 3.0
"""Steps this many times slower than the plan's measured speed, on several threads, mean another process has
taken cores: oversubscribed torch threads wait on each other at every operation and crawl (a 2-thread training
on 2 cores fell from 600 to under 14 examples/s once a second, 1-thread training started beside it)."""


def crowded(window_seconds_per_step: float, planned_seconds_per_step: float, threads: int) -> bool:
    """Whether a window of training steps ran so far below the measured plan that its threads are fighting."""
    return threads > 1 and window_seconds_per_step > CROWDED_SLOWDOWN * planned_seconds_per_step


RETURN_CHECK_STEPS = 200
"""Steps on one thread, after a crowded drop, before the load average is asked whether the cores are free."""


@dataclass
class CrowdingWatch:
    """Times training steps in short windows: one thread after two crowded windows in a row, every core again
    once the cores are free.

    The windows are a few steps, not the progress lines' log_every, since a crowded step can take seconds:
    two windows of 5 steps then cost under a minute instead of several."""

    planned_seconds_per_step: float
    window: int = 5
    return_after: int = RETURN_CHECK_STEPS
    _dropped_from: int = 0
    _next_return: int = 0
    _started: float = field(default_factory=time.perf_counter)
    _steps: int = 0
    _crowded_windows: int = 0

    def step_done(self, threads: int, paused_s: float = 0.0) -> bool:
        """Count one step (paused_s: time in it that was not training, e.g. a probe); True when threads
        have been fighting for two windows in a row."""
        self._started += paused_s
        self._steps += 1
        if self._steps < self.window:
            return False
        now = time.perf_counter()
        is_crowded = crowded((now - self._started) / self._steps, self.planned_seconds_per_step, threads)
        self._crowded_windows = self._crowded_windows + 1 if is_crowded else 0
        self._started, self._steps = now, 0
        if self._crowded_windows >= 2:
            self._crowded_windows = 0
            return True
        return False

    def dropped(self, from_threads: int, step: int) -> None:
        """Training is on one thread since a crowded drop from from_threads (also one before a resume)."""
        self._dropped_from, self._next_return = from_threads, step + self.return_after

    def thread_count(self, step: int, threads: int, paused_s: float = 0.0) -> int:
        """The threads for the next step: one once crowded; every return_after steps after that, as many of
        the count it dropped from as the load average leaves free, if more than one (return_after doubles with
        each return, so a neighbour that stays costs a few crowded windows, not one every return_after steps)."""
        if self.step_done(threads, paused_s):
            self.dropped(threads, step)
            return 1
        if self._dropped_from and step >= self._next_return:
            count = min(self._dropped_from, idle_cores(own_threads=1) or 1)  # no load average: stay on one
            if count > 1:
                self._dropped_from = 0
                self.return_after *= 2
                return count
            self._next_return = step + self.return_after
        return threads


def rows_described(trained: int, corpus_rows: int, settings: TrainingSettings, rows_split: int = 0) -> str:
    """The progress line's count of texts trained, and how split_sentences and max_repeats got it from the rows."""
    if rows_split:
        return (f"{trained} texts from {corpus_rows} rows ({rows_split} rows of {settings.split_sentences}+ sentences "
                "as their sentences, one that refers back by pronoun after the first and last naming someone: "
                "training.split_sentences; "
                f"an epoch trains a text at most {settings.max_repeats or 'any number of'} times: training.max_repeats)")
    if trained == corpus_rows:
        return f"{corpus_rows} rows"
    return (f"{trained} of {corpus_rows} rows (an epoch trains a text at most {settings.max_repeats}x: "
            "training.max_repeats)")


def _format_eta(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def pretrain(
    corpus: pl.DataFrame,
    settings: TrainingSettings,
    output_dir: Path,
    progress: Callable[[str], None] = print,
) -> PretrainResult:
    """Train the small LM on corpus['text'], resuming from output_dir's checkpoint when one matches."""
    started = time.perf_counter()
    output_dir = Path(output_dir)
    model_dir = output_dir / MODEL_SUBDIR
    checkpoint_path = output_dir / CHECKPOINT_FILE
    log_path = output_dir / LOG_FILE
    torch.set_num_threads(training_threads(settings))
    pieces = row_pieces(corpus, settings)  # cut once: the fingerprint and the epoch's texts read them
    key = fingerprint(corpus, settings, pieces)

    finished = _finished_run(model_dir, log_path, key, started)
    if finished is not None and not checkpoint_path.is_file():
        progress(f"already trained: {model_dir} matches this corpus and these settings")
        return finished
    if not checkpoint_path.is_file() and model_dir.exists():
        # A fresh run never reuses a tokenizer left by some other run.
        for stale in model_dir.iterdir():
            stale.unlink()
    tokenizer = _load_or_train_tokenizer(corpus, settings, model_dir)
    texts, rows_split = training_texts(corpus, settings, pieces)
    rows = encode_texts(texts, tokenizer)
    read = encode_texts(corpus["text"].to_list(), tokenizer) if rows_split else rows
    context_length = model_context([len(row) for row in read], settings)  # attribution reads whole rows
    rows_cut = sum(len(row) > context_length for row in read)
    if rows_cut:
        progress(f"WARNING: {rows_cut} of the {len(read)} rows {'read' if rows_split else 'trained'} "
                 "are longer than training.max_context "
                 f"({settings.max_context} tokens with BOS and EOS); the model reads their first {context_length} "
                 "tokens only, in pretraining and in attribution. Split long documents into passages, or raise "
                 "training.max_context")
        rows = [row[:context_length] for row in rows]
    lengths = [len(row) for row in rows]
    pack_length = pack_length_for(context_length, lengths, settings)
    dtype = autocast_dtype(settings.precision, torch.device("cpu"))
    state = torch.load(checkpoint_path, weights_only=False) if checkpoint_path.is_file() else None
    if state is not None and state["fingerprint"] != key:
        raise ValueError(
            f"{checkpoint_path} comes from another corpus or other training settings; "
            "delete it or choose a fresh output folder"
        )
    if state is not None and "plan" in state:
        plan = TrainingPlan(**state["plan"])  # a measured speed may differ now: resume the same model
        if plan.precision is not None:  # and in the same autocast
            dtype = torch.bfloat16 if plan.precision == "bfloat16" else None
        if plan.threads > 0:  # and on as many threads
            torch.set_num_threads(plan.threads)
    else:
        speed = None  # a fixed nominal_tokens_per_s: the plan is a pure function of corpus and settings
        if settings.nominal_tokens_per_s == "auto":
            progress("measuring this machine's training speed for the plan (training.nominal_tokens_per_s: auto)")
            if settings.num_threads == 0:
                _, speed = faster_thread_count(settings, tokenizer, rows, lengths, dtype, context_length)
            else:
                speed = measured_tokens_per_s(settings, tokenizer, rows, lengths, dtype, context_length=context_length)
        plan = plan_training(sum(lengths), settings, speed)
        if bfloat16_instead(plan, settings):
            progress("float32 overruns training.max_time_s even at the narrowest width; measuring bfloat16 "
                     "(training.bfloat16_over_time)")
            bfloat16_plan = plan_training(sum(lengths), settings, measured_tokens_per_s(
                settings, tokenizer, rows, lengths, torch.bfloat16, context_length=context_length))
            if bfloat16_plan.predicted_seconds < plan.predicted_seconds:
                plan, dtype = replace(bfloat16_plan, switched_from_float32=True), torch.bfloat16
        plan = replace(plan, precision="bfloat16" if dtype is not None else "float32", threads=torch.get_num_threads(),
                       planned_threads=torch.get_num_threads())
    plan_text = plan.describe()
    model = build_model(plan.model_settings(settings), tokenizer, context_length)
    optimizer = build_optimizer(model, settings)
    schedule = EpochSchedule.plan(lengths, settings, plan.epochs)
    total_steps = schedule.total_steps
    probe_size = settings.probe_size if settings.learned_recall > 0 else 0  # 0: the stop rule is off
    probe = corpus_probe(corpus, probe_size, settings.seed)
    probe_recall: float | None = None
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, settings))

    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        step = state["step"]
        progress(f"resuming from step {step} of {total_steps} ({checkpoint_path})")
    _truncate_log(log_path, step)

    start_step = step
    parameters = sum(p.numel() for p in model.parameters())
    progress(
        f"pretraining {parameters / 1e6:.2f}M parameters with {settings.optimizer}: "
        f"{rows_described(len(rows), corpus.height, settings, rows_split)}, {total_steps} steps on {torch.get_num_threads()} threads, "
        f"{'bfloat16 autocast' if dtype is not None else 'float32'}; {plan_text}"
    )
    model.train()
    loss_value = float("nan")
    window_start, window_examples, window_steps = time.perf_counter(), 0, 0
    # Only a thread count this run chose by timing is changed; a configured one is the user's.
    watch_threads = plan.speed_measured and settings.num_threads == 0 and total_steps > 0
    crowding = CrowdingWatch(plan.predicted_seconds / max(total_steps, 1), return_after=RETURN_CHECK_STEPS)
    if plan.planned_threads > plan.threads:  # resumed after a crowded drop: the cores may be free again
        crowding.dropped(plan.planned_threads, step)
    with log_path.open("a") as log:
        while step < total_steps:
            epoch, offset = schedule.locate(step)
            if offset == 0 or step == start_step:
                batches = training_batches(lengths, settings, epoch)
            indices = batches[offset]
            learning_rate = optimizer.param_groups[0]["lr"]
            loss_value = training_step(model, optimizer, [rows[i] for i in indices], tokenizer.pad_token_id, dtype,
                                       settings, step, pack_length)
            scheduler.step()
            step += 1
            window_examples += len(indices)
            window_steps += 1
            probe_s = 0.0
            record = {"step": step, "epoch": epoch, "loss": loss_value, "lr": learning_rate}
            learned = False
            if schedule.ends_epoch(step) and probe.height and probe_due(epoch + 1, plan, settings):
                probe_started = time.perf_counter()
                probe_recall = fact_recall(model, tokenizer, probe).accuracy
                probe_s = time.perf_counter() - probe_started
                window_start += probe_s  # the progress line's speed is the training steps' only
                record["probe_recall"] = probe_recall
                learned = probe_recall >= settings.learned_recall
                progress(f"epoch {epoch + 1}: {probe_recall:.1%} of {probe.height} held-in corpus statements completed"
                         + (f" (target {settings.learned_recall:.0%} reached; stopping)" if learned else ""))
            log.write(json.dumps(record) + "\n")
            if step % settings.log_every == 0 or step == total_steps:
                elapsed = time.perf_counter() - window_start
                rate = window_examples / max(elapsed, 1e-9)
                eta = (total_steps - step) * elapsed / max(window_steps, 1)
                progress(
                    f"step {step}/{total_steps} epoch {epoch + 1} loss {loss_value:.4f} "
                    f"{rate:.0f} examples/s ETA {_format_eta(eta)}"
                )
                window_start, window_examples, window_steps = time.perf_counter(), 0, 0
            threads = crowding.thread_count(step, torch.get_num_threads(), probe_s) if watch_threads else 0
            if threads and threads != torch.get_num_threads():
                progress(f"step {step}: training runs at under 1/{CROWDED_SLOWDOWN:.0f} of the speed measured for the "
                         f"plan on {torch.get_num_threads()} threads: another process is using the cores; going on "
                         "with 1 thread (training.num_threads 0)" if threads == 1 else
                         f"step {step}: the load average says the cores are free again; back to {threads} threads")
                torch.set_num_threads(threads)
                plan = replace(plan, threads=threads)  # the checkpoint records it, and a resume starts on it
            if step % settings.checkpoint_every == 0 and step < total_steps:
                log.flush()
                _save_atomic(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "torch_rng": torch.get_rng_state(),
                        "step": step,
                        "fingerprint": key,
                        "plan": asdict(plan),
                    },
                    checkpoint_path,
                )
            if learned:
                break

    final_learning_rate = settings.learning_rate * lr_factor(step - 1, total_steps, settings)
    model.save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    optimizer_path = model_dir / OPTIMIZER_FILE
    _save_atomic(optimizer.state_dict(), optimizer_path)
    state_path = model_dir / TRAINING_STATE_FILE
    _write_atomic_text(
        json.dumps(
            {
                "final_learning_rate": final_learning_rate,
                "step": step,
                "epochs": settings.epochs,
                "epochs_planned": plan.epochs,
                "hidden_size": plan.hidden_size,
                "precision": plan.precision,
                "plan": plan_text,
                "epochs_done": schedule.epochs_done(step),
                "probe_recall": probe_recall,
                "seed": settings.seed,
                "optimizer": settings.optimizer,
                "final_loss": loss_value,
                "parameters": parameters,
                "fingerprint": key,
                "context_length": context_length,
                "rows_cut": rows_cut,
            },
            indent=2,
        ),
        state_path,
    )
    checkpoint_path.unlink(missing_ok=True)
    return PretrainResult(
        model_dir=model_dir,
        optimizer_state_path=optimizer_path,
        training_state_path=state_path,
        log_path=log_path,
        final_learning_rate=final_learning_rate,
        final_loss=loss_value,
        steps=step,
        parameters=parameters,
        probe_recall=probe_recall,
        seconds=time.perf_counter() - started,
        plan=plan_text,
        context_length=context_length,
        rows_cut=rows_cut,
    )


def _write_atomic_text(text: str, path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def _finished_run(model_dir: Path, log_path: Path, key: str, started: float) -> PretrainResult | None:
    """The result of a completed run with the same fingerprint in model_dir, else None."""
    state_path = model_dir / TRAINING_STATE_FILE
    if not state_path.is_file() or not (model_dir / OPTIMIZER_FILE).is_file():
        return None
    state = json.loads(state_path.read_text())
    if state.get("fingerprint") != key:
        return None
    return PretrainResult(
        model_dir=model_dir,
        optimizer_state_path=model_dir / OPTIMIZER_FILE,
        training_state_path=state_path,
        log_path=log_path,
        final_learning_rate=state["final_learning_rate"],
        final_loss=state["final_loss"],
        steps=state["step"],
        parameters=state["parameters"],
        probe_recall=state.get("probe_recall"),
        seconds=time.perf_counter() - started,
        plan=state.get("plan", ""),
        context_length=state.get("context_length", 0),
        rows_cut=state.get("rows_cut", 0),
    )


def _truncate_log(log_path: Path, step: int) -> None:
    """Keep only log lines up to the resumed step, so the log has one line per step."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if not log_path.is_file():
        return
    kept = [line for line in log_path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    log_path.write_text("".join(line + "\n" for line in kept))
