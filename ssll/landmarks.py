"""The six landmarks: derived from a segmentation, rasterised into maps, read back as points.

Geometric rules of :func:`landmarks_from_labels` (canonical labels, axis 2 = slice axis, which
for a short-axis stack is close to the LV long axis):

* LV slices are those holding LV cavity or LV wall; the *basal* end is the half of them with the
  larger total LV (cavity + wall) area, the other end is apical.
* Mitral valve centre (6): the LV cavity centroid on the most basal slice whose cavity area is at
  least half the largest (slices through the valve plane hold only a sliver), placed half a
  slice basal of it: the valve plane lies between that slice and the next one out (with 10 mm
  slices this removes a 5 mm apical bias).
* Apex (5): the LV wall centroid on the most apical LV slice; along the slice axis, where the LV
  (cavity + wall) area of the most apical slices, fitted by a parabola (an ellipsoid cap),
  reaches zero: at most one slice out when the next slice is in the stack and empty, at most two
  when the stack stops short of the apex.
* Mid-ventricular plane: normal to the mitral valve -> apex axis, half-way between them, sampled
  from the labels at 1 mm (nearest neighbour); the acquired slice half-way is the fallback.
* RV insert points (2, 3): on that plane, the RV cavity pixels within 1.5 mm of the LV wall (RV
  cavity or wall where the cavity does not touch it) form the septal contact arc around the LV
  centre; its two angular ends are the insert points, the more anterior (larger RAS y) is 2.
* LV lateral wall mid-point (1): the LV wall pixels within 10 degrees of the ray from the RV
  centre through the LV centre, beyond the LV centre; their centre.
* RV lateral wall turning point (4): the RV pixel farthest from the LV centre.

These rules hold for 5-10 mm slices (they use whole slices) and for a missing RV wall (the RV
is cavity or wall). Points are returned in voxel coordinates of the input grid; convert with
the affine for world mm.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ssll.errors import LandmarkError
from ssll.labels import LANDMARK_NAMES, Label, Landmark
from ssll.types import Array, PathLike, voxel_size

__all__ = [
    "handedness",
    "landmark_map",
    "landmark_problems",
    "landmarks_from_labels",
    "landmarks_of_record",
    "lv_ends",
    "odd_handed",
    "points_from_landmark_map",
    "read_landmarks",
    "run_landmarks",
    "run_landmarks_from_labels",
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


def handedness(points_mm: Array) -> int:
    """The handedness of a heart's six landmarks in its image's world frame: +1, -1, or 0 (degenerate, or a
    landmark missing as NaN).

    The sign of ``((RV insert anterior - RV insert inferior) x (apex - mitral valve centre)) . (LV lateral wall -
    RV lateral turning point)``, rows in :class:`~ssll.labels.Landmark` order, world mm. Every heart drawn in a true
    patient frame gives one sign (+1: the phantom atlases, DICOM studies); a header that mirrors the patient
    flips it (ACDC's files: -1, ``bench/frame_handedness.py``), and so do landmarks whose RV inserts are swapped.
    """
    p = np.asarray(points_mm, float)
    v = float(np.dot(np.cross(p[Landmark.RV_INSERT_ANTERIOR - 1] - p[Landmark.RV_INSERT_INFERIOR - 1],
                              p[Landmark.APEX - 1] - p[Landmark.MITRAL_VALVE_CENTRE - 1]),
                     p[Landmark.LV_LATERAL_WALL - 1] - p[Landmark.RV_LATERAL_TURNING - 1]))
    return int(np.sign(v)) if np.isfinite(v) else 0


def odd_handed(given: list[Array], own: list[Array | None]) -> list[int]:
    """The phases of one stack whose given landmarks have the other handedness than the stack's.

    ED and ES of one stack share one world frame, so their landmarks share one :func:`handedness`. Where the
    given landmarks (the network's landmark head: a volume segmented in a mirrored orientation of its voxel grid
    gets its RV inserts swapped) disagree, the stack's handedness is the one on which a phase's given landmarks and
    the landmarks the rules derive from its own segmentation (:func:`landmarks_from_labels`, which read
    "anterior" from the header) agree; a phase whose given landmarks have the other one while its own rules have
    the stack's is odd. Nothing is odd where the given landmarks agree, or where the agreeing phases do not name
    one handedness.

    Args:
        given: per phase, ``(6, 3)`` landmarks, world mm.
        own: per phase, ``(6, 3)`` landmarks derived from its segmentation (world mm), or None where the rules
            failed.

    Returns:
        Indices into ``given`` of the odd phases (empty for most stacks).
    """
    h = [handedness(p) for p in given]
    r = [0 if p is None else handedness(p) for p in own]
    if len({x for x in h if x}) < 2:
        return []
    agreed = {a for a, b in zip(h, r) if a and a == b}
    if len(agreed) != 1:
        return []
    stack = agreed.pop()
    return [i for i, (a, b) in enumerate(zip(h, r)) if a == -stack and b == stack]


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
    lv_area = lv.sum(axis=(0, 1))
    lv_slices = np.nonzero(lv_area)[0]
    if lv_slices.size < 2:
        raise LandmarkError(f"{what}: the LV spans {lv_slices.size} slice(s); need at least 2")
    base, apex = lv_ends(lv_area)
    cav_slices = np.nonzero(lv_cav.sum(axis=(0, 1)))[0]
    if cav_slices.size == 0:
        raise LandmarkError(f"{what}: no LV cavity")
    mv_k = _mitral_slice(lab, cav_slices, from_first=base == int(lv_slices[0]))
    apex_k = _apex_position(lv_area, lv_cav.sum(axis=(0, 1)), apex, base)
    # mid slice: nearest to half-way between mitral valve and apex that holds LV cavity and RV
    lo_k, hi_k = sorted((mv_k, apex))
    ok = [k for k in range(lo_k, hi_k + 1) if lv_cav[..., k].any() and rv[..., k].any()]
    if not ok:
        ok = [k for k in range(min(base, apex), max(base, apex) + 1) if lv_cav[..., k].any() and rv[..., k].any()]
    if not ok:
        raise LandmarkError(f"{what}: no slice holds both an LV cavity and an RV")
    mid_target = (mv_k + apex_k) / 2.0
    mid = min(ok, key=lambda k: (abs(k - mid_target), k))
    pts = np.zeros((6, 3))
    # --- apex and mitral valve
    a = _apical_axis_point(lv, lv_slices, apex, base, apex_k)
    pts[Landmark.APEX - 1] = [a[0], a[1], apex_k]
    m = _centroid2(lv_cav[..., mv_k])
    # the valve plane lies between that slice and the next one out: half a slice basal
    pts[Landmark.MITRAL_VALVE_CENTRE - 1] = [m[0], m[1], mv_k - 0.5 * np.sign(apex - base)]
    # --- mid-ventricular landmarks on the plane normal to the mitral valve -> apex axis, half-way
    mv_w, apex_w = voxel_to_world(pts[[Landmark.MITRAL_VALVE_CENTRE - 1, Landmark.APEX - 1]], affine)
    try:
        pts[:4] = _mid_plane_points(lab, affine, (mv_w + apex_w) / 2.0, apex_w - mv_w, what)
    except LandmarkError:
        # fall back to the acquired mid slice (e.g. when the oblique plane misses the RV)
        centre = voxel_to_world(np.array([[lab.shape[0] / 2, lab.shape[1] / 2, mid]]), affine)[0]
        pts[:4] = _mid_plane_points(lab, affine, centre, affine[:3, 2], what)
    return pts


def lv_ends(lv_area: Array) -> tuple[int, int]:
    """The LV's basal and apical end slices ``(base, apex)`` from its area per slice.

    ``lv_area`` ``(K,)``: LV (cavity + wall) area of each slice along the slice axis, any unit; at least two
    slices must hold LV. The basal end is the end of the half of the LV slices with the larger total area
    (the rule of :func:`landmarks_from_labels`); the apical end is the other.
    """
    area = np.asarray(lv_area, float)
    slices = np.nonzero(area)[0]
    if slices.size < 2:
        raise ValueError(f"lv_ends: the LV spans {slices.size} slice(s); need at least 2")
    half = slices.size // 2
    first, last = int(slices[0]), int(slices[-1])
    return (first, last) if area[slices[:half]].sum() >= area[slices[slices.size - half :]].sum() else (last, first)


def _mid_plane_points(lab: Array, affine: Array, centre: Array, normal: Array, what: str) -> Array:
    """Landmarks 1-4 (voxel coordinates, rows 0..3) on the plane through ``centre`` (world mm)
    normal to ``normal``, sampled from the labels at 1 mm by nearest neighbour."""
    n = normal / max(float(np.linalg.norm(normal)), 1e-9)
    gi = affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    u = gi - (gi @ n) * n
    if np.linalg.norm(u) < 1e-6:
        u = np.cross(n, [0.0, 0.0, 1.0])
    u /= np.linalg.norm(u)
    v = np.cross(n, u)
    half = int(np.ceil(0.5 * np.linalg.norm(affine[:3, :3] @ np.asarray(lab.shape, float))))
    c = np.arange(-half, half + 1, dtype=np.float64)
    aa, bb = np.meshgrid(c, c, indexing="ij")
    world = centre + aa[..., None] * u + bb[..., None] * v
    vox = world_to_voxel(world.reshape(-1, 3), affine)
    idx = np.floor(vox + 0.5).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < np.asarray(lab.shape)), axis=1)
    plane = np.zeros(idx.shape[0], np.uint8)
    plane[inside] = lab[idx[inside, 0], idx[inside, 1], idx[inside, 2]]
    plane = plane.reshape(aa.shape)
    p2 = _plane_rules(plane, what)

    def to_vox(q: Array) -> Array:
        return world_to_voxel((centre + (q[:, :1] - half) * u + (q[:, 1:2] - half) * v), affine)

    out = to_vox(p2)
    # anterior (larger RAS y) insert point first
    if voxel_to_world(out[2:3], affine)[0, 1] > voxel_to_world(out[1:2], affine)[0, 1]:
        out[[1, 2]] = out[[2, 1]]
    return out


def _plane_rules(plane: Array, what: str) -> Array:
    """Landmarks 1-4 on a 2D label image with 1 mm pixels: rows lateral wall, insert a, insert b, RV turning."""
    lv = (plane == Label.LV_CAVITY) | (plane == Label.LV_WALL)
    rv = (plane == Label.RV_CAVITY) | (plane == Label.RV_WALL)
    lv_wall = plane == Label.LV_WALL
    if not lv.any() or not rv.any() or not lv_wall.any():
        raise LandmarkError(f"{what}: the mid-ventricular plane lacks the LV wall or the RV")
    lvc = _centroid2(lv)
    rvc = _centroid2(rv)
    near_wall = ndimage.distance_transform_edt(~lv_wall) <= 1.5
    # the RV cavity meets the septum up to the insertions; the RV wall wraps further round
    contact = (plane == Label.RV_CAVITY) & near_wall
    if contact.sum() < 2:
        contact = rv & near_wall
    if contact.sum() < 2:
        raise LandmarkError(f"{what}: the RV does not touch the LV wall on the mid-ventricular plane")
    cpts = np.argwhere(contact).astype(np.float64)
    vec = cpts - lvc
    ref = rvc - lvc
    ang = np.arctan2(vec[:, 1], vec[:, 0]) - np.arctan2(ref[1], ref[0])
    ang = (ang + np.pi) % (2 * np.pi) - np.pi  # angle relative to the LV->RV direction
    ins_a, ins_b = cpts[np.argmin(ang)], cpts[np.argmax(ang)]
    wpts = np.argwhere(lv_wall).astype(np.float64)
    wvec = wpts - lvc
    away = -ref / max(np.linalg.norm(ref), 1e-9)
    cosang = (wvec @ away) / np.maximum(np.linalg.norm(wvec, axis=1), 1e-9)
    sel = cosang >= np.cos(np.deg2rad(10.0))
    if not sel.any():
        sel = cosang >= cosang.max() - 1e-6
    lat = wpts[sel].mean(axis=0)
    rpts = np.argwhere(rv).astype(np.float64)
    far = rpts[np.argmax(np.linalg.norm(rpts - lvc, axis=1))]
    return np.stack([lat, ins_a, ins_b, far])


def _mitral_slice(lab: Array, cav_slices: Array, *, from_first: bool) -> int:
    """Most basal slice whose LV cavity area is at least half the largest cavity area.

    Slices cut through the valve plane hold only a sliver of cavity (leaflets, outflow tract);
    they are skipped.
    """
    area = (lab == Label.LV_CAVITY).sum(axis=(0, 1))
    order = list(cav_slices) if from_first else list(cav_slices[::-1])
    big = 0.5 * float(area[cav_slices].max())
    return int(next(k for k in order if area[k] >= big))


def _apical_axis_point(lv: Array, lv_slices: Array, apex: int, base: int, apex_k: float) -> Array:
    """In-plane ``(i, j)`` of the apex: the LV (cavity + wall) centroids of the apical half of the LV
    slices (at least two) fitted by a line in the slice index and evaluated at ``apex_k``.

    The line follows the apical LV axis beyond the last slice. It is a Theil-Sen fit (median of
    the pairwise slopes, median intercept): one slice shifted in-plane (breath-hold
    misregistration) does not drag it.
    """
    n = max(2, lv_slices.size // 2)
    ks = (lv_slices[-n:] if apex > base else lv_slices[:n]).astype(np.float64)
    cents = np.array([_centroid2(lv[..., int(k)]) for k in ks])
    i, j = np.triu_indices(ks.size, 1)
    slope = np.median((cents[j] - cents[i]) / (ks[j] - ks[i])[:, None], axis=0)
    intercept = np.median(cents - ks[:, None] * slope, axis=0)
    return intercept + slope * apex_k


def _apex_position(lv_area: Array, cav_area: Array, apex: int, base: int) -> float:
    """Apex position along the slice axis (fractional slice index).

    The LV (cavity + wall) cross-section area falls to zero at the tip: an ellipsoid cap has an
    area quadratic in the axial position (linear close to the tip). The area of the three most
    apical LV slices is fitted by a parabola and its zero beyond the most apical slice is the
    apex (two slices: linear extrapolation). When the next slice out is in the stack and holds no
    LV the tip lies before it (offset at most one slice); otherwise the stack stops short of the
    apex and up to two slices are allowed.
    """
    step = 1 if apex > base else -1
    nxt = apex + step
    covered = 0 <= nxt < lv_area.size and lv_area[nxt] == 0 and cav_area[apex] == 0
    ks = [apex - step * i for i in range(3) if 0 <= apex - step * i < lv_area.size and lv_area[apex - step * i] > 0]
    a = np.array([float(lv_area[k]) for k in ks])  # a[0] the most apical slice
    off = 0.5
    if len(a) >= 2 and a[1] > a[0]:
        off = a[0] / (a[1] - a[0])
        if len(a) == 3 and a[2] >= a[1]:
            # area(t) at t = 0, -1, -2 slices from the most apical one: c0 + c1 t + c2 t^2
            c2 = (a[0] - 2 * a[1] + a[2]) / 2.0
            c1 = (3 * a[0] - 4 * a[1] + a[2]) / 2.0
            if c2 < 0:
                disc = c1 * c1 - 4 * c2 * a[0]
                root = (-c1 - np.sqrt(disc)) / (2 * c2)
                if root > 0:
                    off = float(root)
    off = min(max(off, 0.0), 1.0 if covered else 2.0)
    return float(apex + step * off)


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
    sp = voxel_size(affine)
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


def restrict_landmark_map(lmap: Array, keep: Array) -> Array:
    """A landmark map ``(I, J, K)`` with each landmark's voxels outside ``keep`` (bool, same shape;
    e.g. the acquired field of view) removed — unless none of that landmark's voxels is inside, in
    which case it is left as it is (a landmark is never lost)."""
    out = np.asarray(lmap).copy()
    inside = np.asarray(keep, bool)
    for n in range(1, 7):
        mask = out == n
        if (mask & inside).any():
            out[mask & ~inside] = 0
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


def _write_landmarks(pts: Array, affine: Array, shape: tuple[int, int, int], *, out_json: str, out_csv: str,
                     out_map: str, confidence: dict[str, float], radius_mm: float,
                     extra: dict[str, Any] | None = None) -> Array:
    """Write six landmarks (voxel coordinates on a grid) as JSON (with ``extra``'s keys), CSV and a NIfTI ball map;
    return world mm."""
    import pandas as pd

    from ssll.io import atomic_path, save_nifti, write_json
    from ssll.types import Volume

    world = voxel_to_world(pts, affine)
    rows = [{"landmark": n + 1, "name": name, "x_mm": world[n, 0], "y_mm": world[n, 1], "z_mm": world[n, 2],
             "i": pts[n, 0], "j": pts[n, 1], "k": pts[n, 2], "confidence": confidence.get(name)}
            for n, name in enumerate(LANDMARK_NAMES)]
    write_json(out_json, {"space": "world RAS+ mm", "landmarks": rows, **(extra or {})})
    with atomic_path(out_csv) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.3f")
    save_nifti(out_map, Volume(landmark_map(pts, shape, affine, radius_mm=radius_mm), affine), dtype=np.uint8)
    return world


def landmark_problems(pts_mm: Array) -> list[str]:
    """Implausible landmark configurations, as reasons (empty when none): a landmark missing, the apex
    less than 40 or more than 150 mm from the mitral valve centre, the RV insert points less than 10 or more
    than 90 mm apart, or the RV lateral turning point on the LV lateral wall's side of the inserts. The QC
    flag ``landmarks_implausible`` reports them; :mod:`ssll.refine` does not start from such landmarks where the
    segmentation's own are plausible.

    Args:
        pts_mm: ``(6, 3)`` world mm, rows = landmarks 1..6 (LV lateral wall, RV insert anterior,
            RV insert inferior, RV lateral turning point, apex, mitral valve centre).
    """
    p = np.asarray(pts_mm, float)
    out = []
    if not np.isfinite(p).all():
        return ["landmarks missing: " + ", ".join(str(i + 1) for i in np.nonzero(~np.isfinite(p).all(1))[0])]
    axis = np.linalg.norm(p[4] - p[5])
    if not 40.0 <= axis <= 150.0:
        out.append(f"apex to mitral centre {axis:.0f} mm (expected 40-150)")
    inserts = np.linalg.norm(p[1] - p[2])
    if not 10.0 <= inserts <= 90.0:
        out.append(f"RV insert points {inserts:.0f} mm apart (expected 10-90)")
    # the RV lateral turning point and the LV lateral wall lie on opposite sides of the inserts' midpoint
    mid = (p[1] + p[2]) / 2
    if np.dot(p[3] - mid, p[0] - mid) > 0:
        out.append("RV lateral turning point on the LV lateral side of the RV inserts")
    return out


def read_landmarks(path: PathLike) -> Array:
    """The six landmarks of a landmarks JSON (``ssll landmarks``, ``ssll phantom``): ``(6, 3)`` world mm.

    Raises:
        LandmarkError: the file does not list landmarks 1..6 with x_mm, y_mm, z_mm.
    """
    from ssll.io import read_json

    return landmarks_of_record(read_json(path), source=str(path))


def landmarks_of_record(record: Any, *, source: str) -> Array:
    """The six landmarks of a parsed landmarks JSON (a dict with ``landmarks``: rows of ``landmark`` 1..6 and
    ``x_mm``, ``y_mm``, ``z_mm``): ``(6, 3)`` world mm, row ``n - 1`` landmark ``n``.

    Raises:
        LandmarkError: naming ``source``, when the record does not list landmarks 1..6 in world mm.
    """
    try:
        rows = {int(r["landmark"]): (float(r["x_mm"]), float(r["y_mm"]), float(r["z_mm"]))
                for r in record["landmarks"]}
        return np.array([rows[n] for n in range(1, 7)], float)
    except (KeyError, TypeError, ValueError) as exc:
        raise LandmarkError(f"{source}: not a landmarks file with landmarks 1..6 in world mm ({exc!r})") from exc


def run_landmarks(
    *,
    landmark_map_path: str,
    out_json: str,
    out_csv: str,
    out_map: str,
    confidence_path: str | None = None,
    radius_mm: float = 3.0,
    stack_maps: list[str] | None = None,
    stack_labels: list[str] | None = None,
    subject: str = "subject",
) -> Array:
    """I/O layer of the ``landmarks`` stage: landmark map -> 6 points in world mm.

    Writes a JSON (per landmark: name, world ``x, y, z`` in RAS+ mm, voxel ``i, j, k`` and the
    network's peak probability when given; ``rv_inserts_swapped``), the same as CSV, and a NIfTI map with a ball
    of ``radius_mm`` at each point.

    ``stack_maps`` and ``stack_labels`` (same order) list the landmark maps and working-grid segmentations of every
    phase of the stack this one comes from, this one included (the workflow: the subject's ED and ES). One stack
    has one frame, so its phases' landmarks have one :func:`handedness`; where this phase's have the other
    (:func:`odd_handed`), its two RV insert points are swapped back, and ``rv_inserts_swapped`` in the JSON says
    why (None otherwise). It happens where ``ssll segment`` segmented one phase in a mirrored orientation of the
    voxel grid: the network then labels the anterior insert where the inferior one is.

    Raises:
        LandmarkError: a landmark is absent from the map.
        ValueError: the stack lists differ in length or do not hold ``landmark_map_path``.
    """
    from ssll.io import read_json

    pts, affine, shape = _map_points(*_stamped(landmark_map_path))
    pts = pts.copy()  # the cached points stay as read
    missing = [name for n, name in enumerate(LANDMARK_NAMES) if not np.all(np.isfinite(pts[n]))]
    if missing:
        raise LandmarkError(f"{landmark_map_path}: landmarks absent from the map: {', '.join(missing)}")
    conf = dict(read_json(confidence_path)) if confidence_path else {}
    swapped = None
    if stack_maps:
        swapped = _odd_in_stack(landmark_map_path, list(stack_maps), list(stack_labels or []), subject)
        if swapped:
            a, b = Landmark.RV_INSERT_ANTERIOR - 1, Landmark.RV_INSERT_INFERIOR - 1
            pts[[a, b]] = pts[[b, a]]
            na, nb = LANDMARK_NAMES[a], LANDMARK_NAMES[b]
            if na in conf or nb in conf:
                conf[na], conf[nb] = conf.get(nb), conf.get(na)
    return _write_landmarks(pts, affine, shape, out_json=out_json, out_csv=out_csv, out_map=out_map,
                            confidence=conf, radius_mm=radius_mm, extra={"rv_inserts_swapped": swapped})


def _stamped(path: str) -> tuple[str, int]:
    """``(resolved path, modification time in ns)``: a cache key under which a file written again is read again."""
    p = Path(path).resolve()
    return str(p), p.stat().st_mtime_ns if p.exists() else -1


@functools.lru_cache(maxsize=4)
def _map_points(path: str, mtime_ns: int) -> tuple[Array, Array, tuple[int, int, int]]:
    """A landmark map's :func:`points_from_landmark_map` (voxels), affine and shape (cached: in one
    ``ssll landmarks --and`` run each phase's map is read for its own landmarks and for the stack check)."""
    from ssll.io import load_nifti

    vol = load_nifti(path, dtype=np.uint8)
    return points_from_landmark_map(vol.array), vol.affine, vol.shape3


@functools.lru_cache(maxsize=4)
def _stack_odd(maps: tuple[tuple[str, int], ...], labels: tuple[tuple[str, int], ...], subject: str) -> tuple[int, ...]:
    """:func:`odd_handed` of a stack's landmark maps, judged by the rules on its segmentations; files given as
    (path, modification time in ns), so a file written again is read again (cached: the phases of one
    ``ssll landmarks --and`` run ask the same)."""
    from ssll.io import load_labels

    given, own = [], []
    for m in maps:
        pts, affine, _ = _map_points(*m)
        given.append(voxel_to_world(pts, affine))
    if len({h for p in given if (h := handedness(p))}) < 2:  # one handedness: nothing to judge, no rules run
        return ()
    for f, _ in labels:
        v = load_labels(f)
        try:
            own.append(voxel_to_world(landmarks_from_labels(v.array, v.affine, what=f"{subject}: {f}"), v.affine))
        except LandmarkError:
            own.append(None)
    return tuple(odd_handed(given, own))


def _odd_in_stack(landmark_map: str, stack_maps: list[str], stack_labels: list[str], subject: str) -> str | None:
    """Why this phase's RV inserts are swapped back (the other handedness than its stack's), or None."""
    keys = [_stamped(f) for f in stack_maps]
    if len(stack_labels) != len(keys):
        raise ValueError(f"{subject}: {len(keys)} stack landmark maps but {len(stack_labels)} stack segmentations")
    this = _stamped(landmark_map)
    if this not in keys:
        raise ValueError(f"{subject}: {landmark_map} is not among the stack's landmark maps")
    odd = _stack_odd(tuple(keys), tuple(_stamped(f) for f in stack_labels), subject)
    if keys.index(this) not in odd:
        return None
    return ("the network's landmarks had the other handedness than the rest of the stack's, whose own segmentations "
            "agree with theirs (one stack has one frame; a volume segmented in a mirrored orientation of its voxel "
            "grid gets its RV inserts swapped): the two RV insert points were swapped back")


def run_landmarks_from_labels(*, labels: str, convention: str, out_json: str, out_csv: str, out_map: str,
                              radius_mm: float = 3.0) -> Array:
    """I/O layer of ``landmarks-from-labels``: a label map -> the six derived landmarks, written as
    :func:`run_landmarks` writes them (sub-voxel coordinates; an apex extrapolated beyond the grid is kept)."""
    from ssll.io import load_labels

    lab = load_labels(labels, convention)
    pts = landmarks_from_labels(lab.array, lab.affine, what=labels)
    return _write_landmarks(pts, lab.affine, lab.shape3, out_json=out_json, out_csv=out_csv, out_map=out_map,
                            confidence={}, radius_mm=radius_mm)
