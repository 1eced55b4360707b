"""Tiny models, tokenizers and the slow exact per-example gradient reference for the engine tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig,
                          LlamaForCausalLM, PreTrainedTokenizerFast)

from trackstar_pipeline.attribution.gradients import HookedModule

TEXTS = [
    "Paris is the capital of France.",
    "Berlin is the capital of Germany.",
    "The cat sat on the mat and looked at the dog.",
    "Rome is the capital of Italy, a country in Europe.",
    "Water boils at one hundred degrees.",
    "Madrid is the capital of Spain.",
    "The quick brown fox jumps over the lazy dog.",
    "Tokyo is the capital of Japan.",
]


def make_tokenizer(with_bos: bool, vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on TEXTS: Llama-style (BOS) or GPT-2-style (no BOS)."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<unk>", "<pad>"] + (["<s>"] if with_bos else [])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXTS, trainer)
    tokenizer.decoder = decoders.ByteLevel()
    kwargs = {"bos_token": "<s>"} if with_bos else {}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", **kwargs)


def tiny_llama(vocab_size: int, seed: int = 0, hidden: int = 32, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=1)
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(vocab_size: int, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=64, pad_token_id=1,
                        bos_token_id=None, eos_token_id=None)
    return GPT2LMHeadModel(config).eval()


def tiny_neox(vocab_size: int, seed: int = 0) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    config = GPTNeoXConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, max_position_embeddings=64, pad_token_id=1)
    return GPTNeoXForCausalLM(config).eval()


def exact_gradients(model, examples, specs: list[HookedModule]) -> list[list[torch.Tensor]]:
    """Per example (one unpadded backward each), each hooked weight's gradient in (out, in) layout."""
    weights = [spec.module.weight for spec in specs]
    result = []
    for example in examples:
        ids = torch.tensor([example.input_ids])
        logits = model(input_ids=ids).logits[0]  # (T, V)
        targets = ids[0, example.loss_start:]
        loss = torch.nn.functional.cross_entropy(logits[example.loss_start - 1:-1], targets, reduction="sum")
        grads = torch.autograd.grad(loss, weights, allow_unused=False)
        result.append([g.T if spec.transposed else g for g, spec in zip(grads, specs)])
    return result


def reference_second_moment(state_dict: dict, model, spec) -> torch.Tensor:
    """V of a hooked weight straight from the raw optimizer state, in module (out, in) layout."""
    index = [id(p) for p in model.parameters()].index(id(spec.module.weight))
    state = state_dict["state"][index]
    if "exp_avg_sq_row" in state:  # transformers Adafactor: V = row col^T / mean(row)
        row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
        v = row[:, None] * col[None, :] / row.mean()
    else:  # AdamW with bias correction
        beta2 = state_dict["param_groups"][0]["betas"][1]
        v = state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))
    return v.T if spec.transposed else v


QUERY_IDS = ["q-short", "q-long", "q-mid", "q-one", "q-two"]
PROMPTS = ["Paris is the", "The quick brown fox jumps over the lazy", "Rome is the capital of", "Tokyo", ""]
COMPLETIONS = [" capital of France.", " dog.", " Italy, a country in Europe.", " is the capital of Japan.",
               "Water boils at one hundred degrees."]


def query_examples(tokenizer):
    """Queries of mixed lengths (one with an empty prompt): padded batches, completion-only loss."""
    from trackstar_pipeline.attribution.examples import encode_queries

    return encode_queries(QUERY_IDS, PROMPTS, COMPLETIONS, tokenizer, 64, "reject").examples


def corpus_examples(tokenizer):
    from trackstar_pipeline.attribution.examples import encode_corpus

    return encode_corpus([f"c{i}" for i in range(len(TEXTS))], TEXTS, tokenizer, 64, "reject").examples


def train_steps(model, tokenizer, optimizer, steps: int = 3) -> None:
    """A few real optimizer steps on TEXTS, so the optimizer state is the real thing."""
    model.train()
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    for _ in range(steps):
        optimizer.zero_grad()
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss.backward()
        optimizer.step()
    model.eval()


def saved_optimizer_state(model, tokenizer, make, directory, steps: int = 3):
    """Train a few steps with a fresh optimizer and save its state_dict as the HF Trainer does: (optimizer, path)."""
    optimizer = make(model)
    train_steps(model, tokenizer, optimizer, steps)
    path = directory / "optimizer.pt"
    torch.save(optimizer.state_dict(), path)
    return optimizer, path


def adafactor(model):
    from transformers.optimization import Adafactor

    return Adafactor(model.parameters(), lr=1e-3, scale_parameter=False, relative_step=False, warmup_init=False)


def adamw(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).norm() / expected.norm())


def write_score_inputs(directory: Path, n_queries: int) -> None:
    """corpus.jsonl (TEXTS as c0..c7) and queries.jsonl (the first n_queries queries) for `score_files`."""
    with open(directory / "corpus.jsonl", "w") as handle:
        for i, text in enumerate(TEXTS):
            handle.write(json.dumps({"id": f"c{i}", "text": text}) + "\n")
    with open(directory / "queries.jsonl", "w") as handle:
        for query_id, prompt, completion in list(zip(QUERY_IDS, PROMPTS, COMPLETIONS))[:n_queries]:
            handle.write(json.dumps({"id": query_id, "prompt": prompt, "completion": completion}) + "\n")
