"""The torch device and dtype every GPU-capable asset runs on, resolved once per run."""

from __future__ import annotations

from typing import Literal

import torch
from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TorchDevice(ConfigurableResource):
    """cuda when present (device='auto'), else cpu; fields are frozen, so the choice lives in a PrivateAttr."""

    device: str = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    _device: torch.device = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._device = resolve_device(self.device)

    @property
    def torch_device(self) -> torch.device:
        """The resolved device (also usable outside a run, e.g. in tests)."""
        return self._device if self._device is not None else resolve_device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available else cpu; anything else must be a device torch knows."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"TorchDevice.device={name!r} is not a torch device; use auto, cpu or cuda[:n]") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"TorchDevice.device={name!r} but no CUDA device is visible; use device='auto' or 'cpu'")
    return device
