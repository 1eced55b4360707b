"""Fact recall: does the model complete each query's prompt with its object, greedily?

Attribution explains predictions, so the evaluation needs to know which facts the model
actually learned. A query counts as recalled when the greedy continuation of BOS + prompt, as
many tokens long as the tokenized completion, decodes to the completion (whitespace stripped).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import polars as pl
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trackstar_pipeline.data.fact_corpus import frequency_bucket
from trackstar_pipeline.data.records import ground_truth


@dataclass(frozen=True)
class BucketRecall:
    queries: int
    recalled: int

    @property
    def accuracy(self) -> float:
        return self.recalled / self.queries if self.queries else 0.0


@dataclass(frozen=True)
class FactRecall:
    accuracy: float
    correct: dict[str, bool]
    """Query id -> recalled."""
    predictions: dict[str, str]
    """Query id -> the greedy continuation, decoded."""
    by_bucket: dict[str, BucketRecall] = field(default_factory=dict)
    """Mention-count bucket ('1', '2-3', ...) -> recall; empty when no corpus was given."""


@torch.no_grad()
def greedy_continuations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    n_new: int,
    device: torch.device,
) -> list[list[int]]:
    """n_new greedy tokens after each prompt (token ids), batched with left padding."""
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)  # (B, T)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, T)
    for i, prompt in enumerate(prompts):
        input_ids[i, width - len(prompt) :] = torch.tensor(prompt)
        attention[i, width - len(prompt) :] = 1
    input_ids, attention = input_ids.to(device), attention.to(device)
    generated = []
    for _ in range(n_new):
        positions = (attention.cumsum(dim=1) - 1).clamp(min=0)  # (B, T)
        logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions).logits  # (B, T, V)
        next_token = logits[:, -1, :].argmax(dim=-1, keepdim=True)  # (B, 1)
        generated.append(next_token)
        input_ids = torch.cat([input_ids, next_token], dim=1)
        attention = torch.cat([attention, torch.ones_like(next_token)], dim=1)
    return torch.cat(generated, dim=1).cpu().tolist()  # (B, n_new)


def fact_recall(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    queries: pl.DataFrame,
    corpus: pl.DataFrame | None = None,
    batch_size: int = 64,
    device: torch.device | None = None,
) -> FactRecall:
    """Greedy completion accuracy of the queries, per query and (given the corpus) per frequency bucket."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    ids = queries["id"].to_list()
    completions = queries["completion"].to_list()
    prefix = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    prompts = [prefix + p for p in tokenizer(queries["prompt"].to_list(), add_special_tokens=False)["input_ids"]]
    lengths = [len(c) for c in tokenizer(completions, add_special_tokens=False)["input_ids"]]
    groups: dict[int, list[int]] = defaultdict(list)
    for index, length in enumerate(lengths):
        groups[length].append(index)
    predictions: dict[str, str] = {}
    for length, members in sorted(groups.items()):
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            outputs = greedy_continuations(model, tokenizer, [prompts[i] for i in chunk], length, device)
            for index, tokens in zip(chunk, outputs):
                predictions[ids[index]] = tokenizer.decode(tokens)
    model.train(was_training)
    correct = {qid: predictions[qid].strip() == completion.strip() for qid, completion in zip(ids, completions)}
    by_bucket: dict[str, BucketRecall] = {}
    if corpus is not None:
        proponents = ground_truth(corpus, queries)
        tallies: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for qid in ids:
            tally = tallies[frequency_bucket(len(proponents.get(qid, [])))]
            tally[0] += 1
            tally[1] += int(correct[qid])
        by_bucket = {bucket: BucketRecall(n, hits) for bucket, (n, hits) in sorted(tallies.items(), key=_bucket_order)}
    accuracy = sum(correct.values()) / len(correct) if correct else 0.0
    return FactRecall(accuracy=accuracy, correct=correct, predictions=predictions, by_bucket=by_bucket)


def _bucket_order(item: tuple[str, object]) -> int:
    return int(item[0].split("-")[0].rstrip("+"))
