"""Evaluation against ground truth: Dice, Hausdorff distance (mm), landmark distances (mm).

Distances use the physical voxel size, so anisotropic grids (10 mm slices) are measured in mm.
Surfaces are the mask voxels with a 6-connected neighbour outside the mask.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ssll.types import Array

__all__ = ["dice", "hausdorff", "surface_distances", "landmark_distances"]


def dice(a: Array, b: Array) -> float:
    """Dice of two boolean masks; NaN when both are empty."""
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    s = int(a.sum()) + int(b.sum())
    return float("nan") if s == 0 else 2.0 * float(np.logical_and(a, b).sum()) / s


def _surface(mask: Array) -> Array:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1),
                                          border_value=0)


def surface_distances(a: Array, b: Array, spacing: tuple[float, ...]) -> tuple[Array, Array]:
    """Distances (mm) from each surface voxel of ``a`` to the surface of ``b``, and back.

    Raises:
        ValueError: either mask is empty.
    """
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    if not a.any() or not b.any():
        raise ValueError("surface_distances: a mask is empty")
    sa, sb = _surface(a), _surface(b)
    db = ndimage.distance_transform_edt(~sb, sampling=spacing)
    da = ndimage.distance_transform_edt(~sa, sampling=spacing)
    return db[sa], da[sb]


def hausdorff(a: Array, b: Array, spacing: tuple[float, ...], *, percentile: float = 100.0) -> float:
    """Symmetric Hausdorff distance (mm) between two masks; ``percentile=95`` gives HD95.

    Returns NaN when both masks are empty and inf when exactly one is.
    """
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    if not a.any() and not b.any():
        return float("nan")
    if not a.any() or not b.any():
        return float("inf")
    dab, dba = surface_distances(a, b, spacing)
    if percentile >= 100.0:
        return float(max(dab.max(), dba.max()))
    return float(max(np.percentile(dab, percentile), np.percentile(dba, percentile)))


def landmark_distances(pred_mm: Array, true_mm: Array) -> Array:
    """Point-to-point distances (mm) between ``(N, 3)`` world points; NaN rows propagate."""
    return np.linalg.norm(np.asarray(pred_mm, float) - np.asarray(true_mm, float), axis=1)
