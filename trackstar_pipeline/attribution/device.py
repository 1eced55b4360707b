"""The torch device a run computes on, from the one string the settings and resources carry.

On a machine with several GPUs, concurrent steps (one process each: Dagster's multiprocess
executor, `trackstar run --parallel-shards`) must not all land on cuda:0. `claim_device` gives
each step its own GPU: it takes an exclusive lock on one of the files cuda-<i>.lock in a shared
folder and keeps it until the step releases it. The `gpu` pool (one slot per GPU) keeps the
number of such steps at the device count, so a free GPU is normally there at once.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, IO

import torch

GPU_LOCK_DIR_ENV = "TRACKSTAR_GPU_LOCK_DIR"
"""Folder of the per-GPU lock files; defaults to <tmp>/trackstar-gpu-locks (one per machine)."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available else cpu; anything else must be a device torch knows and can see."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"device={name!r} is not a torch device; use auto, cpu or cuda[:n]") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but no CUDA device is visible; use device='auto' or 'cpu'")
    return device


@dataclass
class DeviceClaim:
    """A device and, when it is one GPU of several, the held lock that reserves it for this step."""

    device: torch.device
    lock: IO | None = None

    def release(self) -> None:
        """Give the GPU back (closing the file drops the lock; a crashed process drops it too)."""
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def gpu_lock_dir() -> Path:
    """Where the per-GPU lock files live: $TRACKSTAR_GPU_LOCK_DIR, else a folder in the system temp dir."""
    return Path(os.environ.get(GPU_LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "trackstar-gpu-locks")


def physical_gpu_id(index: int) -> str:
    """The machine-wide name of visible GPU `index` (its CUDA_VISIBLE_DEVICES entry), so processes that see
    different subsets of the GPUs still lock the same file for the same card."""
    visible = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
    return visible[index] if index < len(visible) else str(index)


def _try_lock(path: Path) -> IO | None:
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def claim_gpu(device_count: int, lock_dir: Path | None = None, wait_s: float = 3600.0, poll_s: float = 0.5,
              progress: Callable[[str], None] | None = None) -> DeviceClaim:
    """cuda:i for the first of `device_count` GPUs no other step holds; waits (polling) while all are held."""
    folder = lock_dir or gpu_lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    deadline, told = time.monotonic() + wait_s, False
    while True:
        for index in range(device_count):
            lock = _try_lock(folder / f"cuda-{physical_gpu_id(index)}.lock")
            if lock is not None:
                return DeviceClaim(torch.device("cuda", index), lock)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"all {device_count} GPUs stayed claimed by other steps for {wait_s:.0f}s (locks in "
                               f"{folder}); size the Dagster pool 'gpu' to the GPU count, as `trackstar run` does")
        if progress is not None and not told:
            progress(f"all {device_count} GPUs are claimed by other steps; waiting for one")
            told = True
        time.sleep(poll_s)


def claim_device(name: str, lock_dir: Path | None = None, progress: Callable[[str], None] | None = None) -> DeviceClaim:
    """The device for one step: 'auto' or 'cuda' on a machine with several GPUs claims a free one, else `resolve_device`."""
    device = resolve_device(name)
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        return claim_gpu(torch.cuda.device_count(), lock_dir, progress=progress)
    return DeviceClaim(device)
