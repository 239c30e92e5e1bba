"""Compute device, chosen at run time, and the batch size that suits it."""

from __future__ import annotations

import torch

__all__ = ["AUTO_BATCH", "batch_size_for", "select_device"]

#: volumes per forward pass where the caller asks for ``0`` (auto): on a CPU a batch is no faster than one volume
#: at a time and needs memory in proportion (``ssll segment``, 2 cores: 1.4 GB against 2.4-3.1 GB for 4;
#: bench/cpu_allocator.py); on a GPU four of the orientation search's sixteen passes go in one batch
AUTO_BATCH = {"cpu": 1, "cuda": 4}


def select_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def batch_size_for(device: torch.device, requested: int = 0) -> int:
    """``requested`` volumes per forward pass, or where it is 0 (auto) :data:`AUTO_BATCH`'s for ``device``.

    Raises:
        ValueError: ``requested`` is negative.
    """
    if requested < 0:
        raise ValueError(f"batch size {requested}: give a positive number, or 0 for the device's default")
    return int(requested) or AUTO_BATCH.get(device.type, AUTO_BATCH["cuda"])
