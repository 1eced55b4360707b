"""load_model: a save_pretrained folder (local or s3://) loads; every incomplete folder gets a clear error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trackstar_pipeline.data.tokenizer import train_bpe_tokenizer
from trackstar_pipeline.models import ModelLoadError, find_optimizer_state, load_model
from trackstar_pipeline.storage import ObjectStore


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, LlamaForCausalLM]:
    directory = tmp_path_factory.mktemp("model")
    tokenizer = train_bpe_tokenizer(["Ann was born in Rome."] * 10, 270)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, model


def _copy(saved_dir: Path, tmp_path: Path, drop: tuple[str, ...] = ()) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(saved_dir, target)
    for name in drop:
        (target / name).unlink()
    return target


def test_loads_the_same_model_and_tokenizer(saved) -> None:
    directory, reference = saved
    model, tokenizer = load_model(str(directory), device="cpu")
    ids = torch.tensor([tokenizer("Ann was born in")["input_ids"]])
    assert torch.allclose(model(ids).logits, reference(ids).logits)
    assert not model.training and tokenizer.pad_token == "<pad>"


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_dir", "does not exist"),
        ("a_file", "is a file, not a model directory"),
        ("no_config", "has no config.json"),
        ("bad_config_json", "config.json is not valid JSON"),
        ("bad_config_values", "cannot load the model"),
        ("no_tokenizer", "has no tokenizer files"),
        ("no_weights", "has no weights"),
        ("corrupt_weights", "cannot load the model"),
    ],
)
def test_each_broken_folder_names_the_path(saved, tmp_path: Path, case: str, message: str) -> None:
    directory, _ = saved
    target = tmp_path / "missing"
    if case == "a_file":
        target = tmp_path / "weights.bin"
        target.write_bytes(b"x")
    elif case != "missing_dir":
        target = _copy(directory, tmp_path)
        if case == "no_config":
            (target / "config.json").unlink()
        elif case == "bad_config_json":
            (target / "config.json").write_text("{not json")
        elif case == "bad_config_values":
            (target / "config.json").write_text('{"model_type": "no-such-architecture"}')
        elif case == "no_tokenizer":
            (target / "tokenizer.json").unlink()
        elif case == "no_weights":
            (target / "model.safetensors").unlink()
        elif case == "corrupt_weights":
            (target / "model.safetensors").write_bytes(b"this is not a safetensors file")
    with pytest.raises(ModelLoadError, match=message) as caught:
        load_model(str(target))
    assert str(target) in str(caught.value)


def test_find_optimizer_state(saved, tmp_path: Path) -> None:
    directory, _ = saved
    assert find_optimizer_state(str(directory)) is None
    copy = _copy(directory, tmp_path)
    (copy / "optimizer.pt").write_bytes(b"x")
    assert find_optimizer_state(str(copy)) == copy / "optimizer.pt"
    assert find_optimizer_state(str(copy), str(copy / "optimizer.pt")) == copy / "optimizer.pt"
    with pytest.raises(ModelLoadError, match="optimizer state .*nowhere.pt does not exist"):
        find_optimizer_state(str(copy), str(tmp_path / "nowhere.pt"))


@pytest.mark.s3
def test_loads_from_s3(saved, s3_server, tmp_path: Path, monkeypatch) -> None:
    directory, reference = saved
    storage = s3_server.storage()
    store = ObjectStore(storage)
    store.upload_dir(directory, "models/tiny")
    monkeypatch.setenv("TRACKSTAR_CACHE", str(tmp_path / "cache"))
    model, tokenizer = load_model(store.uri_for("models/tiny"), storage=storage)
    ids = torch.tensor([tokenizer("Ann")["input_ids"]])
    assert torch.allclose(model(ids).logits, reference(ids).logits)
