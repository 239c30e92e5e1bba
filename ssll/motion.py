"""Breath-hold slice motion: an in-plane shift of each acquired short-axis slice.

Each slice of a thick-slice cine stack is acquired in its own breath-hold, so slices sit shifted
in-plane against each other. :func:`shift_slices` moves the slices of a working-grid volume by given
per-slice shifts (mm). :mod:`ssll.simulate` uses it to put the shifts into simulated stacks, and
:mod:`ssll.refine` uses it to take fitted shifts out before fusion and to put them back on the
refined model (:func:`labels_as_acquired`); :func:`acquired_slices` names the working-grid slices
nearest the acquired ones. The module is pure numpy/scipy, so the simulator and the QC do not import
torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ssll.preprocess import GridRecord
from ssll.types import Array, voxel_size

__all__ = ["acquired_slices", "labels_as_acquired", "shift_slices"]


def shift_slices(volume: Array, slices: Array, shifts_mm: Array, spacing_mm: Array, *, order: int = 1) -> Array:
    """Move each slice of a volume in-plane by the shift of the acquired slices around it.

    With the shifts a registration fitted (:attr:`ssll.register.FFDResult.slice_shifts`: voxel
    ``v`` of acquired slice ``k`` shows the motion-free model at ``v + shift_k / spacing``),
    ``+shifts`` moves the target's slices onto the model (motion correction, before fusion) and
    ``-shifts`` moves the model onto the slices as they were acquired (:func:`labels_as_acquired`).

    Args:
        volume: ``(I, J, K)`` working-grid array (axis 2 the slice axis).
        slices: ``(n,)`` increasing indices (axis 2) of the acquired slices.
        shifts_mm: ``(n, 2)`` shift per acquired slice (mm, along axes 0 and 1).
        spacing_mm: ``(3,)`` voxel size (mm).
        order: 1 (linear, images; edge values outside) or 0 (nearest, labels; background outside).

    Returns:
        ``(I, J, K)`` array, ``out[v] = volume[v - shift_k / spacing]`` per slice ``k``; working
        slices between two acquired ones take the linearly interpolated shift, slices beyond the
        ends the end slice's. Same dtype as ``volume``.
    """
    volume = np.asarray(volume)
    slices = np.asarray(slices, float)
    shifts_mm = np.asarray(shifts_mm, float)
    if shifts_mm.shape != (slices.size, 2) or slices.size == 0:
        raise ValueError(f"shift_slices: shifts {shifts_mm.shape} do not match {slices.size} slices")
    if order not in (0, 1):
        raise ValueError(f"shift_slices: order must be 0 or 1, got {order}")
    ks = np.arange(volume.shape[2])
    per_k = np.stack([np.interp(ks, slices, shifts_mm[:, a]) for a in range(2)], 1) / np.asarray(spacing_mm, float)[:2]
    out = np.empty_like(volume)
    for k in ks:
        out[:, :, k] = ndimage.shift(volume[:, :, k], per_k[k], order=order,
                                     mode="nearest" if order else "constant", cval=0)
    return out


def labels_as_acquired(refined: Array, affine: Array, record: dict[str, Any]) -> Array:
    """The motion-free refined model moved back onto each acquired slice's breath-hold position.

    Args:
        refined: ``(I, J, K)`` refined labels on the working grid (:func:`ssll.refine.refine`).
        affine: 4x4 working voxel -> world mm.
        record: :func:`ssll.refine.refine`'s record; its ``slice_shifts_mm`` (None when no shifts were fitted).

    Returns:
        ``(I, J, K)`` uint8 labels that overlay the input's slices as acquired (``refined`` itself
        when there are no shifts): what ``ssll refine`` resamples to the input grid.
    """
    ss = record.get("slice_shifts_mm")
    if not ss:
        return np.asarray(refined, np.uint8)
    spacing = voxel_size(affine)
    return shift_slices(np.asarray(refined, np.uint8), ss["slices"], -np.asarray(ss["shifts"], float), spacing, order=0)


def acquired_slices(record: GridRecord) -> Array | None:
    """Working-grid slice indices (axis 2) nearest to the input's slice centres, or None when the
    input is not thicker-sliced than the working grid (every working slice is then informative).
    """
    sp_in = voxel_size(record.input_affine)
    sp_w = voxel_size(record.working_affine)
    if sp_in[2] < 1.5 * sp_w[2]:
        return None
    n = record.input_shape[2]
    centre = (np.asarray(record.input_shape[:2], float) - 1) / 2
    vox = np.c_[np.tile(centre, (n, 1)), np.arange(n), np.ones(n)]
    k = (np.linalg.inv(record.working_affine) @ np.asarray(record.input_affine) @ vox.T)[2]
    k = np.rint(k).astype(int)
    return np.unique(k[(k >= 0) & (k < record.working_shape[2])])
