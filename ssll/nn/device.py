"""Compute device, chosen at run time."""

from __future__ import annotations

import torch

__all__ = ["select_device"]


def select_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
