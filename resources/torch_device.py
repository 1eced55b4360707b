"""The torch device and dtype every GPU-capable asset runs on, resolved once per step.

With several GPUs, each step claims its own (`claim_device`) and gives it back at teardown, so
concurrent shard steps spread over cuda:0..n-1 instead of piling onto cuda:0.
"""

from __future__ import annotations

from typing import Literal

import torch
from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from trackstar_pipeline.attribution.device import DeviceClaim, claim_device, resolve_device

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TorchDevice(ConfigurableResource):
    """cuda when present (device='auto'), one GPU per step when there are several, else cpu.

    Fields are frozen, so the claim lives in a PrivateAttr.
    """

    device: str = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    _claim: DeviceClaim | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        progress = context.log.info if context.log is not None else None
        self._claim = claim_device(self.device, progress=progress)
        if progress is not None and self._claim.lock is not None:
            progress(f"this step runs on {self._claim.device}")

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._claim is not None:
            self._claim.release()

    @property
    def torch_device(self) -> torch.device:
        """The resolved device (also usable outside a run, e.g. in tests)."""
        return self._claim.device if self._claim is not None else resolve_device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]
