"""Turn corpus texts and (prompt, completion) queries into token ids with a loss boundary.

The boundary `loss_start` is what makes a query's loss cover its completion only: tokens at
positions >= loss_start are predicted targets, earlier ones are context. Position 0 is never a
target (nothing precedes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from trackstar_pipeline.settings import OverlengthPolicy


class OverlengthError(ValueError):
    """An example is longer than max_length and the overlength policy is 'reject'."""


@dataclass(frozen=True)
class TokenizedExample:
    """One example's token ids and the first position whose token is a loss target."""

    example_id: str
    input_ids: tuple[int, ...]
    loss_start: int


@dataclass
class EncodedBatch:
    """Encoded examples plus the ids that were shortened to fit max_length."""

    examples: list[TokenizedExample]
    truncated_ids: list[str] = field(default_factory=list)


CONTEXT_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "n_ctx")
"""Config attributes that name a model's context length, in the order they are tried."""


def context_length(model, configured: int | None = None) -> int:
    """The token limit per example: `configured` (attribution.max_length) when set, else the model's context length."""
    if configured:
        return int(configured)
    config = getattr(model, "config", None)
    for key in CONTEXT_LENGTH_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(f"the model config names no context length (none of {', '.join(CONTEXT_LENGTH_KEYS)}); "
                     "set attribution.max_length")


def _tokens(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _bos(tokenizer) -> list[int]:
    bos = getattr(tokenizer, "bos_token_id", None)
    return [] if bos is None else [int(bos)]


def _check_lengths(ids: Sequence[str], *columns: Sequence[str]) -> None:
    for column in columns:
        if len(column) != len(ids):
            raise ValueError(f"got {len(ids)} ids but {len(column)} texts; every example needs exactly one id")


def _reject_or_note(example_id: str, length: int, max_length: int, overlength: OverlengthPolicy,
                    truncated: list[str]) -> None:
    if overlength == "reject":
        raise OverlengthError(
            f"example '{example_id}' has {length} tokens, more than max_length={max_length}; "
            "shorten it or set overlength='truncate'"
        )
    truncated.append(example_id)


def encode_corpus(ids: Sequence[str], texts: Sequence[str], tokenizer, max_length: int,
                  overlength: OverlengthPolicy) -> EncodedBatch:
    """Tokenize training texts (BOS first when the tokenizer has one); loss on every text token."""
    _check_lengths(ids, texts)
    examples, truncated = [], []
    for example_id, text in zip(ids, texts):
        tokens = _tokens(tokenizer, text) if text and text.strip() else []
        if not tokens:
            raise ValueError(f"corpus example '{example_id}': 'text' is empty; every corpus row needs text")
        input_ids = _bos(tokenizer) + tokens
        if len(input_ids) > max_length:
            _reject_or_note(example_id, len(input_ids), max_length, overlength, truncated)
            input_ids = input_ids[:max_length]  # keep the start of a document
        if len(input_ids) < 2:
            raise ValueError(
                f"corpus example '{example_id}' has a single token and no BOS, so no token can be predicted; "
                "use a longer text"
            )
        examples.append(TokenizedExample(str(example_id), tuple(input_ids), loss_start=1))
    return EncodedBatch(examples, truncated)


def encode_queries(ids: Sequence[str], prompts: Sequence[str], completions: Sequence[str], tokenizer,
                   max_length: int, overlength: OverlengthPolicy) -> EncodedBatch:
    """Tokenize prompt and completion separately and join them, so the loss boundary is exact."""
    _check_lengths(ids, prompts, completions)
    examples, truncated = [], []
    for example_id, prompt, completion in zip(ids, prompts, completions):
        completion_ids = _tokens(tokenizer, completion) if completion and completion.strip() else []
        if not completion_ids:
            raise ValueError(f"query '{example_id}': 'completion' is empty; every query needs a non-empty completion")
        bos = _bos(tokenizer)
        prompt_ids = _tokens(tokenizer, prompt) if prompt else []
        length = len(bos) + len(prompt_ids) + len(completion_ids)
        if length > max_length:
            _reject_or_note(example_id, length, max_length, overlength, truncated)
            keep = max_length - len(bos) - len(completion_ids)  # prompt tokens that still fit
            if keep < 0 or (keep == 0 and not bos):
                raise OverlengthError(
                    f"query '{example_id}': the completion alone has {len(completion_ids)} tokens and cannot fit "
                    f"max_length={max_length} with any context; shorten the completion"
                )
            prompt_ids = prompt_ids[len(prompt_ids) - keep:]  # cut the prompt's left side
        context = bos + prompt_ids
        if not context and len(completion_ids) < 2:
            raise ValueError(
                f"query '{example_id}' has an empty prompt, no BOS and a one-token completion, so nothing can be "
                "predicted; give it a prompt"
            )
        examples.append(TokenizedExample(str(example_id), tuple(context + completion_ids),
                                         loss_start=max(len(context), 1)))
    return EncodedBatch(examples, truncated)
