"""Label upsampling baselines of Duan et al. 2019, Table III: nearest neighbour and shape-based
(signed-distance) interpolation of a thick-slice segmentation (Raya & Udupa 1990).

Shape-based interpolation: each structure's signed distance (mm, negative inside) is computed in
every acquired slice in 2D, interpolated linearly onto the target grid, and each target voxel
takes the structure with the most negative distance (background where none is negative).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ssll.labels import Label
from ssll.preprocess import resample
from ssll.types import Array, voxel_size

__all__ = ["nearest_upsample", "shape_based_upsample", "signed_distance_2d"]

#: distance (mm) given to a structure absent from a slice, and outside the stack
FAR_MM = 100.0


def signed_distance_2d(mask: Array, spacing: tuple[float, float]) -> Array:
    """Per-slice signed distance of a ``(I, J, K)`` mask (mm, negative inside, ~0 on the boundary).

    Slices without the structure get ``+FAR_MM``.
    """
    out = np.full(mask.shape, FAR_MM, np.float32)
    for k in range(mask.shape[2]):
        m = mask[:, :, k]
        if not m.any():
            continue
        if m.all():
            out[:, :, k] = -FAR_MM
            continue
        outside = ndimage.distance_transform_edt(~m, sampling=spacing)
        inside = ndimage.distance_transform_edt(m, sampling=spacing)
        out[:, :, k] = np.where(m, -(inside - 0.5 * min(spacing)), outside - 0.5 * min(spacing))
    return out


def nearest_upsample(labels: Array, affine: Array, shape: tuple[int, int, int], target_affine: Array) -> Array:
    """Labels ``(I, J, K)`` on ``affine`` resampled by nearest neighbour onto ``target_affine``/``shape``."""
    return resample(np.asarray(labels, np.uint8), affine, target_affine, shape, order=0)


def shape_based_upsample(labels: Array, affine: Array, shape: tuple[int, int, int], target_affine: Array) -> Array:
    """Shape-based interpolation of a thick-slice segmentation onto a finer grid.

    Args:
        labels: ``(I, J, K)`` canonical labels on the LR grid (axis 2 = slice axis).
        affine: 4x4 LR voxel -> world mm.
        shape: target grid shape; target_affine: its 4x4 voxel -> world mm.

    Returns:
        ``(I', J', K')`` uint8 canonical labels.
    """
    lab = np.asarray(labels)
    sp = voxel_size(affine)
    best = np.full(tuple(shape), 0.0, np.float32)
    out = np.zeros(tuple(shape), np.uint8)
    for c in range(1, len(Label)):
        if not (lab == c).any():
            continue
        sd = signed_distance_2d(lab == c, (float(sp[0]), float(sp[1])))
        up = resample(sd, affine, target_affine, shape, order=1, cval=FAR_MM)
        win = up < best
        out[win] = c
        best[win] = up[win]
    return out
