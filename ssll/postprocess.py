"""Clean-up of network segmentations: keep the largest connected component of each structure."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ssll.labels import Label
from ssll.types import Array

__all__ = ["keep_largest_components"]


def keep_largest_components(labels: Array) -> Array:
    """Keep, for each canonical structure 1..4, only its largest 26-connected component.

    Spurious islands (a blob of "LV cavity" in the liver, say) become background.

    Args:
        labels: ``(I, J, K)`` canonical labels.

    Returns:
        A cleaned copy (uint8).
    """
    out = np.asarray(labels, dtype=np.uint8).copy()
    structure = np.ones((3, 3, 3), bool)
    for k in (Label.LV_CAVITY, Label.LV_WALL, Label.RV_CAVITY, Label.RV_WALL):
        mask = out == k
        if not mask.any():
            continue
        comp, n = ndimage.label(mask, structure=structure)
        if n > 1:
            sizes = np.bincount(comp.ravel())[1:]
            out[mask & (comp != 1 + int(np.argmax(sizes)))] = Label.BACKGROUND
    return out
