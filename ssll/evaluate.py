"""Evaluation against ground truth: Dice, Hausdorff distance (mm), landmark distances (mm).

Distances use the physical voxel size, so anisotropic grids (10 mm slices) are measured in mm.
Surfaces are the mask voxels with a 6-connected neighbour outside the mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ssll.types import Array

__all__ = [
    "dice",
    "dice_shift_compensated",
    "hausdorff",
    "hausdorff_slicewise",
    "landmark_distances",
    "overlap_metrics",
    "run_evaluate",
    "slicewise_distances",
    "surface_distances",
]


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


def slicewise_distances(a: Array, b: Array, spacing: tuple[float, ...], *, axis: int = 2) -> Array:
    """Per slice holding both masks, the largest 2D distance (mm) from ``a``'s surface to ``b``'s and back.

    Along ``axis`` (the slice axis), each slice where both masks are present is measured with the
    in-plane spacing; the others are skipped (as in :func:`hausdorff_slicewise`).

    Returns:
        ``(n_slices, 2)``: column 0 the directed distance a -> b, column 1 b -> a (mm); their row-wise
        maximum is the slice's 2D Hausdorff distance. ``(0, 2)`` when no slice holds both.
    """
    a = np.moveaxis(np.asarray(a, bool), axis, -1)
    b = np.moveaxis(np.asarray(b, bool), axis, -1)
    sp = tuple(float(v) for i, v in enumerate(spacing) if i != axis % 3)
    rows = []
    for k in range(a.shape[-1]):
        if a[..., k].any() and b[..., k].any():
            dab, dba = surface_distances(a[..., k], b[..., k], sp)
            rows.append((float(dab.max()), float(dba.max())))
    return np.asarray(rows, float).reshape(-1, 2)


def hausdorff_slicewise(a: Array, b: Array, spacing: tuple[float, ...], *, axis: int = 2) -> float:
    """Mean over slices of the 2D Hausdorff distance (mm) between two masks.

    The convention of the paper's group for cardiac short-axis stacks (manual contours are drawn
    per slice): along ``axis`` (the slice axis), each slice where *both* masks are present gives
    the 2D Hausdorff distance with the in-plane spacing; slices where one mask is absent (base
    and apex coverage) are not counted — the 3D :func:`hausdorff` sees those. The two directions
    apart: :func:`slicewise_distances`.

    Returns:
        The mean (mm), NaN when no slice holds both masks.
    """
    d = slicewise_distances(a, b, spacing, axis=axis)
    return float(d.max(1).mean()) if len(d) else float("nan")


def _shifted(a: Array, di: int, dj: int) -> Array:
    """``a`` (2D) moved by whole voxels (di, dj), zero-filled (as :mod:`ssll.simulate` shifts slices)."""
    return ndimage.shift(np.asarray(a, np.uint8), (di, dj), order=0, mode="constant", cval=0).astype(np.asarray(a).dtype)


def dice_shift_compensated(pred: Array, truth: Array, labels: tuple[int, ...], spacing: tuple[float, ...], *,
                           max_shift_mm: float = 6.0) -> tuple[dict[int, float], Array]:
    """Dice per label after moving each slice of ``pred`` in-plane onto ``truth``.

    A short-axis stack is acquired one breath-hold per slice, so each slice of the expert's
    contours carries its own in-plane shift; a smooth 3D model that removes those shifts disagrees
    with the slices where a model that copies them does not. This separates the two: for each
    slice (axis 2) where ``truth`` holds a label, ``pred``'s slice is translated by the whole-voxel
    in-plane shift within ``max_shift_mm`` that best overlaps the two hearts (all ``labels``
    together), then intersections and sizes are summed over the slices per label.

    Args:
        pred, truth: label volumes ``(i, j, k)`` on one grid, axis 2 the slice axis.
        labels: the labels scored (and that make up the heart).
        spacing: voxel size (mm) along i, j, k.
        max_shift_mm: largest in-plane shift tried per slice (mm).

    Returns:
        ``({label: Dice}, shifts)`` with ``shifts`` ``(k, 2)`` the (i, j) voxel shift per slice
        (0 where the slice was not scored). Dice is NaN for a label absent from both.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape or pred.ndim != 3:
        raise ValueError(f"pred {pred.shape} and truth {truth.shape}: expected two 3D volumes on one grid")
    ri, rj = (int(max_shift_mm // float(spacing[a])) for a in (0, 1))
    inter = dict.fromkeys(labels, 0)
    total = dict.fromkeys(labels, 0)
    shifts = np.zeros((pred.shape[2], 2), int)
    heart_lab = np.isin(truth, labels)
    for k in range(pred.shape[2]):
        p, t = pred[..., k], truth[..., k]
        if heart_lab[..., k].any():
            hp, ht = np.isin(p, labels), heart_lab[..., k]
            best = (-1, 0, 0)
            for di in range(-ri, ri + 1):
                for dj in range(-rj, rj + 1):
                    # ties go to the smallest shift: the loop visits every shift, keep the first best
                    ov = int(np.logical_and(_shifted(hp, di, dj), ht).sum())
                    if ov > best[0] or (ov == best[0] and di * di + dj * dj < best[1] ** 2 + best[2] ** 2):
                        best = (ov, di, dj)
            shifts[k] = best[1:]
            p = _shifted(p, best[1], best[2])
        for c in labels:
            pc, tc = p == c, t == c
            inter[c] += int(np.logical_and(pc, tc).sum())
            total[c] += int(pc.sum()) + int(tc.sum())
    return {c: (2.0 * inter[c] / total[c] if total[c] else float("nan")) for c in labels}, shifts


def landmark_distances(pred_mm: Array, true_mm: Array) -> Array:
    """Point-to-point distances (mm) between ``(N, 3)`` world points; NaN rows propagate."""
    return np.linalg.norm(np.asarray(pred_mm, float) - np.asarray(true_mm, float), axis=1)


def overlap_metrics(pred: Array, truth: Array, spacing: tuple[float, ...], *, directed: bool = False) -> dict[str, float]:
    """Dice, Hausdorff distance, its 95th percentile and the slice-wise 2D Hausdorff distance
    (:func:`hausdorff_slicewise`, axis 2) in mm per canonical structure 1..4.

    Keys ``dice_<structure>``, ``hd_<structure>_mm``, ``hd95_<structure>_mm``, ``hd2d_<structure>_mm``;
    NaN where a structure is absent from both (Dice) or from either (distances). With ``directed``, also the
    slice-wise distance's two directions (:func:`slicewise_distances`, each a mean over the slices holding both):
    ``hd2d_<structure>_pred_to_truth_mm`` (how far the prediction strays from the truth) and
    ``hd2d_<structure>_truth_to_pred_mm`` (how far the truth reaches beyond the prediction).
    """
    from ssll.labels import Label

    pred, truth = np.asarray(pred), np.asarray(truth)
    nz = np.argwhere((pred > 0) | (truth > 0))
    if nz.size:
        # the box around both (1-voxel margin: no mask touches its border) gives the same surfaces, faster
        lo, hi = np.maximum(nz.min(0) - 1, 0), nz.max(0) + 2
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        pred, truth = pred[box], truth[box]
    out: dict[str, float] = {}
    nan = float("nan")
    for c in range(1, len(Label)):
        name = Label(c).name.lower()
        a, b = pred == c, truth == c
        out[f"dice_{name}"] = dice(a, b)
        hd2d = to_truth = to_pred = nan
        if a.any() and b.any():
            dab, dba = surface_distances(a, b, spacing)
            out[f"hd_{name}_mm"] = float(max(dab.max(), dba.max()))
            out[f"hd95_{name}_mm"] = float(max(np.percentile(dab, 95.0), np.percentile(dba, 95.0)))
            d = slicewise_distances(a, b, spacing)
            if len(d):
                hd2d = float(d.max(1).mean())
                to_truth, to_pred = (float(v) for v in d.mean(0))
        else:
            out[f"hd_{name}_mm"] = out[f"hd95_{name}_mm"] = nan
        out[f"hd2d_{name}_mm"] = hd2d
        if directed:
            out[f"hd2d_{name}_pred_to_truth_mm"] = to_truth
            out[f"hd2d_{name}_truth_to_pred_mm"] = to_pred
    return out


def _truth_thickness(gt: dict[str, Any], paths: dict[str, str]) -> dict[str, float]:
    """:func:`ssll.thickness.thickness_measures` of the ground truth at ED and ES with its rule-derived landmarks;
    empty (and a warning) where the rules cannot run on it."""
    import logging

    from ssll.errors import LandmarkError
    from ssll.landmarks import landmarks_from_labels, voxel_to_world
    from ssll.thickness import segment_thickness, thickness_measures

    per = {}
    for ph in ("ED", "ES"):
        v = gt[ph]
        try:
            pts = voxel_to_world(landmarks_from_labels(v.array, v.affine, what=str(paths[ph])), v.affine)
        except LandmarkError as exc:
            logging.getLogger("ssll.evaluate").warning("no wall thickness of the ground truth: %s", exc)
            return {}
        per[ph] = segment_thickness(v.array, v.affine, pts)
    return thickness_measures(per["ED"], per["ES"])


def run_evaluate(*, subject: str, predictions: dict[str, dict[str, str]], truth: dict[str, str], convention: str,
                 out_json: str) -> dict:
    """I/O layer of ``ssll evaluate``: compare a subject's segmentations with its ground truth.

    Args:
        predictions: method (``sslln``, ``refined``) -> phase -> labels on the ground truth's grid.
        truth: phase -> ground-truth labels; convention: their label convention.

    Returns and writes (JSON): ``{"subject", "overlap": [{method, phase, dice_*, hd_*_mm, hd95_*_mm}],
    "measures_truth": {ed_lv_cavity_ml, ..., lv_ef_pct, ed_wall_thickness_aha01_mm, ...}}``: the ground truth's
    measures as ``ssll measures`` takes them, the LV wall thickness per AHA segment with the landmarks the
    training rules derive from the ground truth (:func:`ssll.landmarks.landmarks_from_labels`; left out, with a
    warning, where the rules cannot run on it).

    Raises:
        InputImageError: a prediction's grid differs from the truth's.
    """
    from ssll.errors import InputImageError
    from ssll.io import load_labels, write_json
    from ssll.measures import cardiac_measures, phase_measures

    gt = {ph: load_labels(p, convention) for ph, p in truth.items()}
    rows = []
    for method, phases in predictions.items():
        for ph, path in phases.items():
            pred = load_labels(path)
            if pred.array.shape != gt[ph].array.shape or not np.allclose(pred.affine, gt[ph].affine, atol=1e-3):
                raise InputImageError(f"{path}: grid {pred.array.shape} differs from the ground truth's "
                                      f"{gt[ph].array.shape} ({truth[ph]})")
            rows.append({"method": method, "phase": ph, **overlap_metrics(pred.array, gt[ph].array, gt[ph].spacing)})
    result = {"subject": subject, "overlap": rows}
    if {"ED", "ES"} <= set(gt):
        result["measures_truth"] = cardiac_measures(phase_measures(gt["ED"].array, gt["ED"].spacing),
                                                    phase_measures(gt["ES"].array, gt["ES"].spacing))
        result["measures_truth"].update(_truth_thickness(gt, truth))
    write_json(out_json, result)
    return result
