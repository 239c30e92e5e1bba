"""Breath-hold slice motion: an in-plane shift of each acquired short-axis slice.

Each slice of a thick-slice cine stack is acquired in its own breath-hold, so slices sit shifted
in-plane against each other. :func:`shift_slices` moves the slices of a working-grid volume by given
per-slice shifts (mm). :mod:`ssll.simulate` uses it to put the shifts into simulated stacks, and
:mod:`ssll.refine` uses it to take fitted shifts out before fusion and to put them back on the
refined model (:func:`labels_as_acquired`); :func:`acquired_slices` names the working-grid slices
nearest the acquired ones. :func:`estimate_slice_shifts` measures each acquired slice's shift from the
image itself, against a motion-free model of the heart (:func:`ssll.refine.breath_hold_shifts` makes
the model and corrects the stack). The module is pure numpy/scipy, so the simulator and the QC do not
import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ssll.preprocess import GridRecord
from ssll.types import Array, config_kwargs, voxel_size

__all__ = ["MotionConfig", "acquired_slices", "estimate_slice_shifts", "labels_as_acquired", "shift_slices"]


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


@dataclass(frozen=True)
class MotionConfig:
    """Settings of the image-based breath-hold shift estimate (config section ``motion``).

    Attributes:
        estimate: measure each acquired slice's in-plane shift from the image and take it out of
            the stack before segmentation and refinement. Defaults to False.
        max_shift_mm: largest shift searched per axis (mm). Defaults to 6.
        min_heart_mm2: a slice is measured only where the model's heart (labels 1-4) covers at
            least this area (mm^2) on it; smaller (apical) slices carry too little structure and take
            their neighbours' shift. Defaults to 1250 (800 voxels of 1.25 x 1.25 mm).
        margin_mm: the fit compares image and model within this distance (mm) of the model's heart.
            Defaults to 10.
        control_spacing_mm: in-plane FFD control spacing per level (mm) of the motion-free model;
            a stiff model absorbs less of the shifts. Defaults to (80, 60).
        through_plane_mm: through-plane control spacing per level (mm). Defaults to (160, 120).
        detrend: also take a linear trend along the slices out of the measured shifts, as their mean
            is: a shift growing steadily from slice to slice is a tilt of the whole heart, which the
            model's landmark affine and FFD represent, so the estimate cannot tell it from the model's
            own misfit. Defaults to True (measured: bench/README, "Breath-hold shifts measured from the
            image"; it acts only with ``estimate``).
    """

    estimate: bool = False
    max_shift_mm: float = 6.0
    min_heart_mm2: float = 1250.0
    margin_mm: float = 10.0
    control_spacing_mm: tuple[float, ...] = (80.0, 60.0)
    through_plane_mm: tuple[float, ...] = (160.0, 120.0)
    detrend: bool = True

    @classmethod
    def from_mapping(cls, m: dict[str, Any] | None) -> MotionConfig:
        """Build from a config mapping; unknown keys raise ``ValueError``."""
        cfg = cls(**config_kwargs(cls, m, tuples=("control_spacing_mm", "through_plane_mm")))
        if cfg.max_shift_mm <= 0 or cfg.min_heart_mm2 < 0 or cfg.margin_mm < 0:
            raise ValueError("MotionConfig: max_shift_mm must be > 0, min_heart_mm2 and margin_mm >= 0")
        return cfg


def estimate_slice_shifts(image: Array, model: Array, slices: Array, spacing_mm: Array, slice_thickness_mm: float,
                          cfg: MotionConfig | None = None, *, n_labels: int = 5) -> tuple[Array, Array]:
    """Each acquired slice's in-plane breath-hold shift, measured from the image against a motion-free model.

    For acquired slice ``k`` the model's class fractions over the slice's thickness (working slices
    within ``slice_thickness_mm / 2`` of ``k``: the partial-volume image a thick slice records) are
    moved in-plane by each whole-voxel candidate ``s`` within ``cfg.max_shift_mm``; one intensity per
    class is fitted by least squares, and the candidate with the smallest mean squared residual within
    ``cfg.margin_mm`` of the model's heart wins, refined to sub-voxel precision by a parabola through
    its neighbours on each axis.

    Args:
        image: ``(I, J, K)`` working-grid image (the preprocessed stack, any intensity scale).
        model: ``(I, J, K)`` canonical labels of a motion-free model on the same grid (a stiff
            refinement, :func:`ssll.refine.breath_hold_shifts`).
        slices: ``(n,)`` working-grid indices (axis 2) of the acquired slices.
        spacing_mm: ``(3,)`` working voxel size (mm).
        slice_thickness_mm: thickness of an acquired slice (mm).
        cfg: settings. Defaults to :class:`MotionConfig`.
        n_labels: number of canonical classes (background included).

    Returns:
        ``(measured, shifts_mm)``: ``(m,)`` the slices measured (those where the model's heart covers
        ``cfg.min_heart_mm2``), and ``(m, 2)`` their shifts (mm, axes 0 and 1), centred (mean zero; with
        ``cfg.detrend`` and more than two slices also without a linear trend in the slice index), in
        :attr:`ssll.register.FFDResult.slice_shifts`' convention: voxel ``v`` of slice ``k`` shows the
        model at ``v + shift_k / spacing``, so ``shift_slices(image, measured, shifts_mm, spacing_mm)``
        moves the slices onto the model.
    """
    cfg = cfg or MotionConfig()
    image = np.asarray(image, np.float64)
    model = np.asarray(model)
    if image.shape != model.shape or image.ndim != 3:
        raise ValueError(f"estimate_slice_shifts: image {image.shape} and model {model.shape} must be one 3D grid")
    sp = np.asarray(spacing_mm, float)
    ni, nj, nk = model.shape
    r = [int(np.floor(cfg.max_shift_mm / sp[a])) for a in range(2)]
    half = int(np.floor(slice_thickness_mm / 2 / sp[2] + 1e-6))
    min_px = cfg.min_heart_mm2 / (sp[0] * sp[1])
    grow = int(round(cfg.margin_mm / min(sp[0], sp[1])))
    measured, shifts = [], []
    for k in np.asarray(slices, int):
        if not 0 <= k < nk or (model[:, :, k] > 0).sum() < min_px:
            continue
        sub = model[:, :, max(0, k - half): min(nk, k + half + 1)]
        frac = np.stack([(sub == c).mean(2) for c in range(n_labels)], -1)  # (ni, nj, C)
        roi = frac[..., 1:].sum(-1) > 0
        roi = ndimage.binary_dilation(roi, iterations=grow) if grow else roi
        ii, jj = np.nonzero(roi)
        i0, i1 = max(0, ii.min() - r[0]), min(ni, ii.max() + r[0] + 1)
        j0, j1 = max(0, jj.min() - r[1]), min(nj, jj.max() + r[1] + 1)
        y = image[i0:i1, j0:j1, k]
        cost = np.full((2 * r[0] + 1, 2 * r[1] + 1), np.inf)
        for a, di in enumerate(range(-r[0], r[0] + 1)):
            src_i = np.arange(i0, i1) + di
            vi = (src_i >= 0) & (src_i < ni)
            for b, dj in enumerate(range(-r[1], r[1] + 1)):
                src_j = np.arange(j0, j1) + dj
                vj = (src_j >= 0) & (src_j < nj)
                f = np.zeros((i1 - i0, j1 - j0, n_labels))
                f[..., 0] = 1.0  # beyond the grid: background
                f[np.ix_(vi, vj)] = frac[np.ix_(src_i[vi], src_j[vj])]
                inside = np.zeros((i1 - i0, j1 - j0), bool)
                inside[np.ix_(vi, vj)] = roi[np.ix_(src_i[vi], src_j[vj])]
                A, yy = f[inside], y[inside]
                mu = np.linalg.lstsq(A, yy, rcond=None)[0]
                cost[a, b] = np.mean((A @ mu - yy) ** 2)
        a, b = np.unravel_index(np.argmin(cost), cost.shape)
        s = np.array([a - r[0], b - r[1]], float)
        for ax, (lo, hi) in enumerate((((a - 1, b), (a + 1, b)), ((a, b - 1), (a, b + 1)))):
            if min(lo) >= 0 and hi[0] < cost.shape[0] and hi[1] < cost.shape[1]:
                den = cost[lo] - 2 * cost[a, b] + cost[hi]
                if den > 0:
                    s[ax] += 0.5 * (cost[lo] - cost[hi]) / den
        measured.append(int(k))
        shifts.append(s * sp[:2])
    out = np.asarray(shifts, float).reshape(-1, 2)
    ks = np.asarray(measured, int)
    if cfg.detrend and len(out) > 2:
        x = np.c_[np.ones(len(ks)), ks - ks.mean()]
        return ks, out - x @ np.linalg.lstsq(x, out, rcond=None)[0]
    return ks, out - out.mean(0) if len(out) else out
