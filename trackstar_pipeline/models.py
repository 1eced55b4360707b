"""Load a user's (or our pretrained) causal LM and tokenizer from a save_pretrained directory.

The directory may be local or s3:// (copied to a local cache first). Loading never touches the
network (local_files_only), and each way a directory can be incomplete gets its own error that
names the path and says what to save there.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from trackstar_pipeline.settings import StorageSettings
from trackstar_pipeline.storage import StorageError, materialize_local

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
OPTIMIZER_STATE_FILES = ("optimizer.pt", "optimizer_state.safetensors")


class ModelLoadError(ValueError):
    """A model directory is missing, incomplete or unreadable; the message names the path."""


def local_model_dir(uri_or_path: str, storage: StorageSettings | None = None) -> Path:
    """A local folder for a model path or URI, with the files load_model needs present."""
    try:
        path = materialize_local(uri_or_path, storage)
    except StorageError as error:
        raise ModelLoadError(
            f"model directory {uri_or_path} does not exist ({error}); give a save_pretrained folder"
        ) from error
    if not path.is_dir():
        raise ModelLoadError(f"{uri_or_path} is a file, not a model directory; give the save_pretrained folder")
    config = path / "config.json"
    if not config.is_file():
        raise ModelLoadError(f"{uri_or_path} has no config.json; save the model with model.save_pretrained(dir)")
    try:
        json.loads(config.read_text())
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{config} is not valid JSON ({error}); re-save the model") from error
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"{uri_or_path} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); "
            "save the tokenizer with tokenizer.save_pretrained(dir)"
        )
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ModelLoadError(
            f"{uri_or_path} has no weights (one of {', '.join(WEIGHT_FILES)}); save them with model.save_pretrained(dir)"
        )
    return path


def load_model(
    uri_or_path: str, device: torch.device | str | None = None, storage: StorageSettings | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model in eval mode on device, tokenizer) from a local or s3:// save_pretrained directory."""
    path = local_model_dir(uri_or_path, storage)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as error:  # transformers raises many kinds for broken tokenizer files
        raise ModelLoadError(f"cannot load the tokenizer in {uri_or_path}: {error}") from error
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
    except Exception as error:  # bad config values, unknown model_type, corrupt or mismatched weights
        raise ModelLoadError(f"cannot load the model in {uri_or_path}: {error}") from error
    model.eval()
    if device is not None:
        model.to(device)
    return model, tokenizer


def find_optimizer_state(
    model_uri: str, optimizer_state_uri: str | None = None, storage: StorageSettings | None = None
) -> Path | None:
    """Local path of the optimizer state: the explicit URI, else one saved beside the model, else None."""
    if optimizer_state_uri is not None:
        try:
            return materialize_local(optimizer_state_uri, storage)
        except StorageError as error:
            raise ModelLoadError(f"optimizer state {optimizer_state_uri} does not exist ({error})") from error
    path = local_model_dir(model_uri, storage)
    return next((path / name for name in OPTIMIZER_STATE_FILES if (path / name).is_file()), None)
