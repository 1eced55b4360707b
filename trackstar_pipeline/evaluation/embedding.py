"""Embedding baseline: cosine similarity of the model's own mean hidden states.

The FTRACE paper's embedding-based influence: represent an example by the mean (over its real,
attention-masked tokens) of one layer's hidden states, and score by cosine. It uses the model but
not its gradients, so it separates "the model represents these alike" from "training on this moves
the prediction".
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from trackstar_pipeline.attribution.examples import TokenizedExample
from trackstar_pipeline.attribution.gradients import model_device, model_pad_id, pad_batch


@torch.no_grad()
def mean_hidden_states(model: nn.Module, examples: Sequence[TokenizedExample], layer: int = -1,
                       batch_size: int = 32, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Unit-norm mean of hidden_states[layer] over each example's tokens: (N, H) float32 on CPU.

    layer indexes `output_hidden_states` (0 = token embeddings, -1 = the last layer's output).
    """
    device, pad_id = model_device(model), model_pad_id(model)
    was_training = model.training
    model.eval()
    chunks: list[torch.Tensor] = []
    try:
        for start in range(0, len(examples), batch_size):
            ids, attention, _ = pad_batch(examples[start:start + batch_size], pad_id, device)  # (B, T), (B, T)
            hidden = model(input_ids=ids, attention_mask=attention, output_hidden_states=True,
                           use_cache=False).hidden_states
            if not -len(hidden) <= layer < len(hidden):
                raise ValueError(f"embed_layer={layer} is out of range: the model has {len(hidden)} hidden-state "
                                 f"layers (0 = embeddings, -1 = last); pick one in [-{len(hidden)}, {len(hidden) - 1}]")
            states = hidden[layer].float()  # (B, T, H)
            mask = attention[:, :, None].float()  # (B, T, 1)
            mean = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)  # (B, H)
            chunks.append(torch.nn.functional.normalize(mean, dim=1).cpu())  # (B, H)
            if progress is not None:
                progress(min(start + batch_size, len(examples)), len(examples))
    finally:
        model.train(was_training)
    if not chunks:
        return torch.zeros((0, getattr(model.config, "hidden_size", 0)))
    return torch.cat(chunks)  # (N, H)
