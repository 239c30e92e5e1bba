"""The six landmarks: derived from a segmentation, rasterised into maps, read back as points.

Geometric rules of :func:`landmarks_from_labels` (canonical labels, axis 2 = slice axis, which
for a short-axis stack is close to the LV long axis):

* LV slices are those holding LV cavity or LV wall. The *basal* end is the end whose two
  outermost LV slices have the larger LV (cavity + wall) area; the other end is apical.
* Mid-ventricular slice: the slice half-way between the basal and apical LV slices, moved to the
  nearest slice that holds both an LV cavity and an RV (cavity or wall).
* RV insert points (landmarks 2 and 3): on the mid slice, the RV voxels within 1.5 voxels of
  the LV wall form the septal contact arc around the LV centre; its two angular ends are the
  insert points. The more anterior one in world space (larger RAS y) is landmark 2.
* LV lateral wall mid-point (1): on the mid slice, the LV wall voxels along the ray from the
  RV centre through the LV centre, beyond the LV centre; the centre of those voxels.
* RV lateral wall turning point (4): on the mid slice, the RV voxel farthest from the LV centre.
* Apex (5): the LV wall centroid on the most apical LV slice.
* Mitral valve centre (6): the LV cavity centroid on the most basal LV-cavity slice.

These rules hold for 5-10 mm slices (they use whole slices) and for a missing RV wall (the RV
is cavity or wall). Points are returned in voxel coordinates of the input grid; convert with
the affine for world mm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ssll.errors import LandmarkError
from ssll.labels import Label, Landmark
from ssll.types import Array

__all__ = [
    "landmarks_from_labels",
    "landmark_map",
    "points_from_landmark_map",
    "voxel_to_world",
    "world_to_voxel",
]


def voxel_to_world(points: Array, affine: Array) -> Array:
    """``(N, 3)`` voxel coordinates -> ``(N, 3)`` world mm."""
    p = np.asarray(points, dtype=np.float64)
    return p @ affine[:3, :3].T + affine[:3, 3]


def world_to_voxel(points: Array, affine: Array) -> Array:
    """``(N, 3)`` world mm -> ``(N, 3)`` voxel coordinates."""
    inv = np.linalg.inv(affine)
    return np.asarray(points, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3]


def _centroid2(mask: Array) -> Array:
    return np.argwhere(mask).mean(axis=0)


def landmarks_from_labels(labels: Array, affine: Array, *, what: str = "labels") -> Array:
    """Derive the six landmarks from a canonical segmentation.

    Args:
        labels: ``(I, J, K)`` canonical labels; axis 2 is the slice axis.
        affine: 4x4 voxel -> world (mm), used for physical distances and the anterior direction.
        what: name for error messages.

    Returns:
        ``(6, 3)`` voxel coordinates ``(i, j, k)``, row ``n`` is landmark ``n + 1``.

    Raises:
        LandmarkError: no LV, no RV on any LV slice, or no RV-LV contact on the mid slice.
    """
    lab = np.asarray(labels)
    lv = (lab == Label.LV_CAVITY) | (lab == Label.LV_WALL)
    rv = (lab == Label.RV_CAVITY) | (lab == Label.RV_WALL)
    lv_cav = lab == Label.LV_CAVITY
    lv_wall = lab == Label.LV_WALL
    sp = np.linalg.norm(affine[:3, :3], axis=0)
    lv_area = lv.sum(axis=(0, 1))
    lv_slices = np.nonzero(lv_area)[0]
    if lv_slices.size < 2:
        raise LandmarkError(f"{what}: the LV spans {lv_slices.size} slice(s); need at least 2")
    first, last = int(lv_slices[0]), int(lv_slices[-1])
    n_end = max(1, min(2, lv_slices.size // 2))
    area_first = lv_area[lv_slices[:n_end]].mean()
    area_last = lv_area[lv_slices[-n_end:]].mean()
    base, apex = (first, last) if area_first >= area_last else (last, first)
    # mid slice: nearest to half-way that holds LV cavity and RV
    ok = [k for k in range(min(base, apex), max(base, apex) + 1) if lv_cav[..., k].any() and rv[..., k].any()]
    if not ok:
        raise LandmarkError(f"{what}: no slice holds both an LV cavity and an RV")
    mid_target = (base + apex) / 2.0
    mid = min(ok, key=lambda k: (abs(k - mid_target), k))
    pts = np.zeros((6, 3))
    # --- mid-slice landmarks (in-plane geometry in mm)
    lvc = _centroid2(lv[..., mid])
    rvc = _centroid2(rv[..., mid])
    dist_lvwall = ndimage.distance_transform_edt(~lv_wall[..., mid], sampling=sp[:2])
    contact = rv[..., mid] & (dist_lvwall <= 1.5 * float(sp[:2].max()))
    if contact.sum() < 2:
        raise LandmarkError(f"{what}: the RV does not touch the LV wall on mid slice {mid}")
    cpts = np.argwhere(contact).astype(np.float64)
    vec = (cpts - lvc) * sp[:2]
    ref = (rvc - lvc) * sp[:2]
    ang = np.arctan2(vec[:, 1], vec[:, 0]) - np.arctan2(ref[1], ref[0])
    ang = (ang + np.pi) % (2 * np.pi) - np.pi  # angle relative to the LV->RV direction
    ends = [cpts[np.argmin(ang)], cpts[np.argmax(ang)]]
    ends3 = [np.array([e[0], e[1], mid], dtype=np.float64) for e in ends]
    ant = [float((affine[:3, :3] @ e)[1]) for e in ends3]
    order = np.argsort(ant)[::-1]
    pts[Landmark.RV_INSERT_ANTERIOR - 1] = ends3[order[0]]
    pts[Landmark.RV_INSERT_INFERIOR - 1] = ends3[order[1]]
    # LV lateral wall: wall voxels on the far side, within a narrow cone around -ref
    wpts = np.argwhere(lv_wall[..., mid]).astype(np.float64)
    if wpts.size == 0:
        raise LandmarkError(f"{what}: no LV wall on mid slice {mid}")
    wvec = (wpts - lvc) * sp[:2]
    away = -ref / max(np.linalg.norm(ref), 1e-9)
    cosang = (wvec @ away) / np.maximum(np.linalg.norm(wvec, axis=1), 1e-9)
    sel = cosang >= np.cos(np.deg2rad(10.0))
    if not sel.any():
        sel = cosang >= cosang.max() - 1e-6
    lat = wpts[sel].mean(axis=0)
    pts[Landmark.LV_LATERAL_WALL - 1] = [lat[0], lat[1], mid]
    rpts = np.argwhere(rv[..., mid]).astype(np.float64)
    far = rpts[np.argmax(np.linalg.norm((rpts - lvc) * sp[:2], axis=1))]
    pts[Landmark.RV_LATERAL_TURNING - 1] = [far[0], far[1], mid]
    # --- apex and mitral valve
    apex_mask = lv_wall[..., apex] if lv_wall[..., apex].any() else lv[..., apex]
    a = _centroid2(apex_mask)
    pts[Landmark.APEX - 1] = [a[0], a[1], apex]
    cav_slices = np.nonzero(lv_cav.sum(axis=(0, 1)))[0]
    if cav_slices.size == 0:
        raise LandmarkError(f"{what}: no LV cavity")
    mv_k = int(cav_slices[0] if base == first else cav_slices[-1])
    m = _centroid2(lv_cav[..., mv_k])
    pts[Landmark.MITRAL_VALVE_CENTRE - 1] = [m[0], m[1], mv_k]
    return pts


def landmark_map(points: Array, shape: tuple[int, int, int], affine: Array, *, radius_mm: float = 4.0) -> Array:
    """Rasterise landmarks as small balls into a landmark label map.

    Args:
        points: ``(6, 3)`` voxel coordinates on this grid (NaN rows are skipped).
        shape: grid ``(I, J, K)``.
        affine: 4x4 voxel -> world (mm), for the ball's physical radius.
        radius_mm: ball radius in mm. Defaults to 4 (at least the nearest voxel is marked).

    Returns:
        ``uint8`` map, 0 background, ``n`` for landmark ``n``.
    """
    out = np.zeros(shape, np.uint8)
    sp = np.linalg.norm(affine[:3, :3], axis=0)
    for n, p in enumerate(np.asarray(points, dtype=np.float64), start=1):
        if not np.all(np.isfinite(p)):
            continue
        r = np.ceil(radius_mm / sp).astype(int)
        c = np.round(p).astype(int)
        lo = np.maximum(c - r, 0)
        hi = np.minimum(c + r + 1, shape)
        if np.any(hi <= lo):
            continue
        grids = np.meshgrid(*[np.arange(lo[d], hi[d]) for d in range(3)], indexing="ij")
        d2 = sum(((g - p[d]) * sp[d]) ** 2 for d, g in enumerate(grids))
        ball = d2 <= radius_mm**2
        sub = out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        sub[ball & (sub == 0)] = n
        if not ball.any() and np.all((c >= 0) & (c < shape)):
            out[tuple(c)] = n
    return out


def points_from_landmark_map(lmap: Array, *, probabilities: Array | None = None) -> Array:
    """Landmark points from a landmark label map.

    Each landmark is the centroid of its largest connected component (weighted by the
    landmark's probability when ``probabilities`` ``(7, I, J, K)`` is given).

    Returns:
        ``(6, 3)`` voxel coordinates; NaN rows for landmarks absent from the map.
    """
    pts = np.full((6, 3), np.nan)
    for n in range(1, 7):
        mask = lmap == n
        if not mask.any():
            continue
        comp, n_comp = ndimage.label(mask)
        if n_comp > 1:
            sizes = ndimage.sum_labels(mask, comp, index=np.arange(1, n_comp + 1))
            mask = comp == (1 + int(np.argmax(sizes)))
        idx = np.argwhere(mask).astype(np.float64)
        if probabilities is not None:
            w = probabilities[n][mask]
            pts[n - 1] = (idx * w[:, None]).sum(0) / max(float(w.sum()), 1e-12)
        else:
            pts[n - 1] = idx.mean(axis=0)
    return pts


def run_landmarks(
    *,
    landmark_map_path: str,
    out_json: str,
    out_csv: str,
    out_map: str,
    confidence_path: str | None = None,
    radius_mm: float = 3.0,
) -> Array:
    """I/O layer of the ``landmarks`` stage: landmark map -> 6 points in world mm.

    Writes a JSON (per landmark: name, world ``x, y, z`` in RAS+ mm, voxel ``i, j, k`` and the
    network's peak probability when given), the same as CSV, and a NIfTI map with a ball of
    ``radius_mm`` at each point.

    Raises:
        LandmarkError: a landmark is absent from the map.
    """
    import pandas as pd

    from ssll.io import load_nifti, read_json, save_nifti, write_json
    from ssll.types import Volume

    vol = load_nifti(landmark_map_path, dtype=np.uint8)
    pts = points_from_landmark_map(vol.array)
    missing = [Landmark(n + 1).name.lower() for n in range(6) if not np.all(np.isfinite(pts[n]))]
    if missing:
        raise LandmarkError(f"{landmark_map_path}: landmarks absent from the map: {', '.join(missing)}")
    world = voxel_to_world(pts, vol.affine)
    conf = read_json(confidence_path) if confidence_path else {}
    rows = []
    for n in range(6):
        name = Landmark(n + 1).name.lower()
        rows.append({"landmark": n + 1, "name": name, "x_mm": world[n, 0], "y_mm": world[n, 1], "z_mm": world[n, 2],
                     "i": pts[n, 0], "j": pts[n, 1], "k": pts[n, 2], "confidence": conf.get(name)})
    write_json(out_json, {"space": "world RAS+ mm", "landmarks": rows})
    from ssll.io import atomic_path

    with atomic_path(out_csv) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.3f")
    save_nifti(out_map, Volume(landmark_map(pts, vol.shape3, vol.affine, radius_mm=radius_mm), vol.affine), dtype=np.uint8)
    return world
