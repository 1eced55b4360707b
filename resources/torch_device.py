"""The torch device and dtype every GPU-capable asset runs on, resolved once per run."""

from __future__ import annotations

from typing import Literal

import torch
from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from trackstar_pipeline.attribution.device import resolve_device

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
