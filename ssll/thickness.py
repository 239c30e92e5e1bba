"""LV wall thickness per AHA segment (mm) and its systolic thickening (%).

Regional wall thickness is what cohort studies read from a bi-ventricular model beyond volumes and mass
(hypertrophy patterns, thinning after infarction). It is measured on each short-axis slice (axis 2 of the
label map, as everywhere in ssll) the way the slices are read: at every LV-wall voxel the in-plane distance to
the LV cavity plus the distance to whatever lies outside the LV, less one voxel (both distances run between
voxel centres, so a wall ``n`` voxels thick gives ``n + 1`` voxels at every voxel across it). A wall of constant
thickness ``t`` gives ``t`` at every one of its voxels, so a segment's thickness is the mean over its voxels.

The wall is divided into the 16 segments of the American Heart Association's model (Cerqueira et al.,
Circulation 2002; the apical cap, segment 17, has no in-plane thickness): the slices that hold LV cavity,
ordered from the base (the mitral-valve centre's end) to the apex, make three equal levels, basal (1-6),
mid-ventricular (7-12) and apical (13-16). Around each slice's LV-cavity centroid, the anterior RV insertion
point starts the septum: basal and mid segments are 60 degree sectors from it towards the inferior insertion
point (anteroseptal, inferoseptal, inferior, inferolateral, anterolateral, anterior), apical segments
90 degree sectors with the septal one centred between the two insertion points (septal, inferior, lateral,
anterior). The direction of travel is the one whose arc from the anterior to the inferior insertion point
passes the RV, so a mirrored or turned image gets the same segments.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ssll.labels import LANDMARK_NAMES, Label, check_canonical
from ssll.landmarks import voxel_to_world, world_to_voxel
from ssll.types import Array, voxel_size

__all__ = ["AHA_SEGMENTS", "aha_segments", "mean_thickness", "segment_thickness", "thickness_measures",
           "wall_thickness_map"]

#: AHA segment number -> name (1-16; the apical cap 17 has no in-plane thickness)
AHA_SEGMENTS = {1: "basal anterior", 2: "basal anteroseptal", 3: "basal inferoseptal", 4: "basal inferior",
                5: "basal inferolateral", 6: "basal anterolateral", 7: "mid anterior", 8: "mid anteroseptal",
                9: "mid inferoseptal", 10: "mid inferior", 11: "mid inferolateral", 12: "mid anterolateral",
                13: "apical anterior", 14: "apical septal", 15: "apical inferior", 16: "apical lateral"}

_BASAL_MID = (2, 3, 4, 5, 6, 1)  # 60 degree sectors from the anterior insertion point, towards the septum
_APICAL = (14, 15, 16, 13)  # 90 degree sectors from 45 degrees before the septum's centre
_ANTERIOR, _INFERIOR = LANDMARK_NAMES.index("rv_insert_anterior"), LANDMARK_NAMES.index("rv_insert_inferior")
_APEX, _MITRAL = LANDMARK_NAMES.index("apex"), LANDMARK_NAMES.index("mitral_valve_centre")


def wall_thickness_map(labels: Array, spacing_mm: tuple[float, float, float]) -> Array:
    """Local LV wall thickness (mm) at every LV-wall voxel, measured in plane on each slice.

    Args:
        labels: ``(I, J, K)`` canonical labels, axis 2 the short-axis slice axis.
        spacing_mm: voxel size (mm); the in-plane pair is used.

    Returns:
        ``(I, J, K)`` float32: at an LV-wall voxel of a slice that also holds LV cavity, the distance to the
        nearest LV-cavity voxel plus the distance to the nearest voxel outside the LV, less the mean in-plane
        voxel size; NaN elsewhere.
    """
    lab = check_canonical(labels)
    sampling = (float(spacing_mm[0]), float(spacing_mm[1]))
    voxel = 0.5 * (sampling[0] + sampling[1])
    out = np.full(lab.shape, np.nan, np.float32)
    for k in range(lab.shape[2]):
        wall, cav = lab[:, :, k] == Label.LV_WALL, lab[:, :, k] == Label.LV_CAVITY
        if not wall.any() or not cav.any():
            continue
        to_cavity = ndimage.distance_transform_edt(~cav, sampling=sampling)
        to_outside = ndimage.distance_transform_edt(wall | cav, sampling=sampling)
        out[:, :, k][wall] = (to_cavity + to_outside - voxel)[wall]
    return out


def _in_plane_basis(affine: Array) -> tuple[Array, Array]:
    """Two orthonormal world directions (mm) spanning the slice plane (voxel axes 0 and 1)."""
    a = np.asarray(affine, float)[:3, :3]
    e1 = a[:, 0] / np.linalg.norm(a[:, 0])
    e2 = a[:, 1] - (a[:, 1] @ e1) * e1
    return e1, e2 / np.linalg.norm(e2)


def aha_segments(labels: Array, affine: Array, landmarks_mm: Array) -> Array:
    """The AHA segment (1-16) of every LV-wall voxel on a slice with LV cavity; 0 elsewhere.

    Args:
        labels: ``(I, J, K)`` canonical labels, axis 2 the short-axis slice axis.
        affine: 4x4 voxel -> world (mm).
        landmarks_mm: ``(6, 3)`` world mm (:data:`ssll.labels.LANDMARK_NAMES` order): the RV insertion points
            place the septum, the apex and mitral-valve centre tell base from apex.

    Returns:
        ``(I, J, K)`` uint8 segment numbers. All 0 when the slices hold no LV cavity or no RV cavity (the side
        of the septum is then unknown).
    """
    lab = check_canonical(labels)
    aff = np.asarray(affine, float)
    pts = np.asarray(landmarks_mm, float)
    out = np.zeros(lab.shape, np.uint8)
    cav_k = np.nonzero((lab == Label.LV_CAVITY).any(axis=(0, 1)))[0]
    rv = lab == Label.RV_CAVITY
    if cav_k.size == 0 or not rv.any() or not np.isfinite(pts).all():
        return out
    e1, e2 = _in_plane_basis(aff)
    pts_k = world_to_voxel(pts, aff)[:, 2]

    def angle(p_mm: Array, centre_mm: Array) -> Array:
        d = np.atleast_2d(p_mm) - centre_mm
        return np.arctan2(d @ e2, d @ e1)

    def centre(k: int) -> Array:
        ij = np.argwhere(lab[:, :, k] == Label.LV_CAVITY).mean(axis=0)
        return voxel_to_world(np.array([[ij[0], ij[1], k]]), aff)[0]

    def nearest_slice(k: float) -> int:
        return int(cav_k[np.argmin(np.abs(cav_k - k))])

    theta_a = float(angle(pts[_ANTERIOR], centre(nearest_slice(pts_k[_ANTERIOR])))[0])
    theta_i = float(angle(pts[_INFERIOR], centre(nearest_slice(pts_k[_INFERIOR])))[0])
    rv_ijk = np.argwhere(rv).mean(axis=0)
    theta_rv = float(angle(voxel_to_world(rv_ijk[None], aff)[0], centre(nearest_slice(rv_ijk[2])))[0])
    two_pi = 2 * math.pi
    # travel from the anterior insertion point the way that meets the RV before the inferior insertion point
    sign = 1.0 if (theta_rv - theta_a) % two_pi < (theta_i - theta_a) % two_pi else -1.0
    septum_centre = (sign * (theta_i - theta_a) % two_pi) / 2
    k_base, k_apex = pts_k[_MITRAL], pts_k[_APEX]
    ordered = cav_k if k_base <= k_apex else cav_k[::-1]
    for level, ks in enumerate(np.array_split(ordered, 3)):
        for k in ks:
            ij = np.argwhere(lab[:, :, k] == Label.LV_WALL)
            if ij.size == 0:
                continue
            mm = voxel_to_world(np.column_stack([ij, np.full(len(ij), k)]), aff)
            phi = (sign * (angle(mm, centre(int(k))) - theta_a)) % two_pi
            if level < 2:
                seg = np.array(_BASAL_MID)[np.minimum((phi // (two_pi / 6)).astype(int), 5)] + 6 * level
            else:
                psi = (phi - septum_centre + two_pi / 8) % two_pi
                seg = np.array(_APICAL)[np.minimum((psi // (two_pi / 4)).astype(int), 3)]
            out[ij[:, 0], ij[:, 1], k] = seg
    return out


def segment_thickness(labels: Array, affine: Array, landmarks_mm: Array) -> dict[int, float]:
    """Mean LV wall thickness (mm) of each AHA segment 1-16 (:func:`wall_thickness_map` over
    :func:`aha_segments`); NaN for a segment with no voxel."""
    spacing = tuple(float(s) for s in voxel_size(affine))
    t = wall_thickness_map(labels, spacing)  # type: ignore[arg-type]
    seg = aha_segments(labels, affine, landmarks_mm)
    ok = (seg > 0) & np.isfinite(t)
    sums = np.bincount(seg[ok], weights=t[ok], minlength=17)
    counts = np.bincount(seg[ok], minlength=17)
    return {n: float(sums[n] / counts[n]) if counts[n] else math.nan for n in AHA_SEGMENTS}


def mean_thickness(per: dict[int, float]) -> float:
    """The mean of :func:`segment_thickness`'s segments that have a value (mm); NaN when none has."""
    vals = [v for v in per.values() if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def thickness_measures(ed: dict[int, float], es: dict[int, float]) -> dict[str, float]:
    """One row from :func:`segment_thickness` at ED and ES: ``ed_wall_thickness_aha01_mm`` ...,
    ``es_wall_thickness_aha01_mm`` ..., ``wall_thickening_aha01_pct`` ... (100 (ES - ED) / ED), and the
    mean over the segments present at each phase (``ed_wall_thickness_mean_mm``, ``es_...``)."""
    row: dict[str, float] = {}
    for phase, per in (("ed", ed), ("es", es)):
        row.update({f"{phase}_wall_thickness_aha{n:02d}_mm": per[n] for n in AHA_SEGMENTS})
        row[f"{phase}_wall_thickness_mean_mm"] = mean_thickness(per)
    for n in AHA_SEGMENTS:
        a, b = ed[n], es[n]
        row[f"wall_thickening_aha{n:02d}_pct"] = 100.0 * (b - a) / a if a > 0 and not math.isnan(b) else math.nan
    return row
