"""Quality control: a montage of short-axis slices and long-axis cuts with the segmentation
overlaid and the landmarks marked, and automatic per-subject flags (:func:`qc_flags`).

The montage shows, on the working grid: up to 8 short-axis slices evenly spread over the heart
and two long-axis cuts through the LV centre, in the orientation of the grid the volume was segmented
in (:mod:`ssll.orientation`; ``ssll segment`` turns each volume the way the network knows, so every
subject appears the same way round, base to apex as ACDC stores a stack); the panel titles give the
stored grid's slice and plane indices.
Colours: LV cavity red, LV wall green, RV cavity yellow, RV wall blue; landmarks as numbered
white crosses on the short-axis slices within 2 mm of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ssll.errors import SsllError
from ssll.labels import Label
from ssll.landmarks import landmark_problems, lv_ends
from ssll.measures import has_rv_wall
from ssll.orientation import STORED, Orientation, orientation_by_name
from ssll.types import Array, PathLike, voxel_size

__all__ = [
    "COLOURS",
    "EDGE_BAND_MM",
    "MIN_APICAL_CAVITY_FRACTION",
    "MIN_CUT_ML",
    "MIN_EXPECTED_DICE",
    "RANGES",
    "FieldOfView",
    "coverage_problems",
    "landmark_problems",
    "montage",
    "open_wall_fraction",
    "overlay_rgb",
    "qc_flags",
    "run_qc",
    "run_qc_flags",
]

COLOURS = {Label.LV_CAVITY: (1.0, 0.15, 0.15), Label.LV_WALL: (0.15, 0.9, 0.15),
           Label.RV_CAVITY: (1.0, 0.9, 0.1), Label.RV_WALL: (0.2, 0.45, 1.0)}


def overlay_rgb(image2d: Array, labels2d: Array, *, alpha: float = 0.4) -> Array:
    """RGB ``(H, W, 3)`` of a [0, 1] image with labels blended in (arrays indexed ``[i, j]``, shown transposed)."""
    g = np.clip(np.asarray(image2d, np.float32), 0, 1).T
    rgb = np.stack([g, g, g], -1)
    lab = np.asarray(labels2d).T
    for k, c in COLOURS.items():
        m = lab == k
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(c)
    return rgb


def montage(image: Array, labels: Array, spacing: tuple[float, float, float], out_png: PathLike, *,
            landmarks_vox: Array | None = None, title: str = "", refined: Array | None = None,
            orientation: Orientation = STORED) -> None:
    """Write the QC montage PNG (see module docstring). Arrays ``(I, J, K)`` on one grid, spacing in mm.

    One row for ``labels`` (the SSLLN segmentation, with landmarks) and, when given, a second row
    with the ``refined`` model on the same slices and cuts. ``orientation``: show the volume in that
    orientation of its grid (:mod:`ssll.orientation`; the one ``ssll segment`` used, so that every
    subject's montage shows the heart the way the network saw it); slice titles keep the stored ``k``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssll.io import atomic_path

    stored_shape, n_k = image.shape, image.shape[2]
    if orientation != STORED:
        if orientation.swaps_in_plane:
            spacing = (spacing[1], spacing[0], spacing[2])
        if landmarks_vox is not None:
            landmarks_vox = orientation.points(landmarks_vox, image.shape)
        image, labels = orientation.apply(image), orientation.apply(labels)
        refined = orientation.apply(refined) if refined is not None else None

    def stored_k(k: int) -> int:
        return n_k - 1 - k if orientation.reverse_slices else k

    # the stored i and j of each shown (i, j)
    shown_ij = [orientation.apply(np.broadcast_to(g[..., None], stored_shape))[..., 0]
                for g in np.indices(stored_shape[:2])]

    def stored_plane(axis: int, index: int) -> str:
        """``i=..`` or ``j=..``: the stored grid's plane that is the shown grid's plane ``index`` along ``axis``."""
        for name, g in zip("ij", shown_ij):
            line = g[index, :] if axis == 0 else g[:, index]
            if np.all(line == line[0]):
                return f"{name}={int(line[0])}"
        raise AssertionError("an orientation maps in-plane axes to in-plane axes")

    heart = np.nonzero((labels > 0).any(axis=(0, 1)))[0]
    ks = np.linspace(heart[0], heart[-1], min(8, heart.size)).round().astype(int) if heart.size else \
        np.linspace(0, image.shape[2] - 1, 8).round().astype(int)
    lv = np.argwhere(labels == Label.LV_CAVITY)
    ci, cj = (lv[:, 0].mean(), lv[:, 1].mean()) if lv.size else (image.shape[0] / 2, image.shape[1] / 2)
    ci, cj = int(round(ci)), int(round(cj))
    cut_names = (f"LA {stored_plane(1, cj)}", f"LA {stored_plane(0, ci)}")  # the same for every row
    rows = [("SSLLN", labels)] + ([("refined", refined)] if refined is not None else [])
    n_col = len(ks) + 2
    fig, axes = plt.subplots(len(rows), n_col, figsize=(1.9 * n_col, 2.2 * len(rows) + 0.4), squeeze=False)
    asp = spacing[2] / spacing[0]
    for r, (name, lab) in enumerate(rows):
        for n, k in enumerate(ks):
            ax = axes[r, n]
            ax.imshow(overlay_rgb(image[:, :, k], lab[:, :, k]))
            ax.set_title(f"{name} SA k={stored_k(k)}", fontsize=7)
            if landmarks_vox is not None and r == 0:
                for idx, p in enumerate(landmarks_vox, start=1):
                    if np.all(np.isfinite(p)) and abs(p[2] - k) * spacing[2] <= 2.0:
                        ax.plot(p[0], p[1], "w+", ms=8, mew=1.5)
                        ax.text(p[0] + 3, p[1] - 3, str(idx), color="w", fontsize=8)
        for c, (cut_img, cut_lab, cut) in enumerate(((image[:, cj, :], lab[:, cj, :], cut_names[0]),
                                                      (image[ci, :, :], lab[ci, :, :], cut_names[1]))):
            ax = axes[r, len(ks) + c]
            ax.imshow(overlay_rgb(cut_img, cut_lab), aspect=asp)
            ax.set_title(f"{name} {cut}", fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(title + (f" (shown {orientation.name}, as segmented)" if orientation != STORED else ""), fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=70)
    plt.close(fig)


def run_qc(*, image: str, labels: str, out_png: str, landmarks_json: str | None = None, title: str = "",
           refined: str | None = None, orientation_json: str | None = None) -> None:
    """I/O layer of ``ssll qc``: working-grid image, labels, optional landmarks JSON, refined model and
    ``ssll segment``'s orientation record (the montage is shown in that orientation) -> PNG."""
    from ssll.io import load_image, load_labels
    from ssll.landmarks import read_landmarks, world_to_voxel

    img, lab = load_image(image), load_labels(labels)
    pts = world_to_voxel(read_landmarks(landmarks_json), lab.affine) if landmarks_json else None
    ref = load_labels(refined).array if refined else None
    try:
        turned = orientation_by_name(_read_orientation(orientation_json)) if orientation_json else STORED
    except ValueError as exc:
        raise SsllError(f"{orientation_json}: {exc}") from None
    montage(img.array, lab.array, lab.spacing, out_png, landmarks_vox=pts, title=title, refined=ref,
            orientation=turned)


#: physiological ranges of adult measures, broad on purpose: outside them the segmentation is suspect
RANGES = {
    "ed_lv_cavity_ml": (40.0, 400.0),
    "es_lv_cavity_ml": (10.0, 350.0),
    "ed_lv_mass_g": (40.0, 350.0),
    "ed_rv_cavity_ml": (40.0, 450.0),
    "lv_ef_pct": (10.0, 85.0),
    "rv_ef_pct": (10.0, 85.0),
}

#: below this expected Dice (``ssll.nn.confidence.expected_dice``) of the LV cavity, LV wall or RV cavity
#: a segmentation is flagged: the Dice under which a segmentation is commonly called failed, not a value
#: tuned here (on the 20 held-out ACDC patients the flag caught the two worst volumes; README, QC section)
MIN_EXPECTED_DICE = 0.7

#: how many frames (cyclically) the ED or ES used may lie from the volume curve's before ``phase_off_curve``:
#: near ED and ES the curve is flat (Sunnybrook: the LV cavity within 2 ml over frames 6-8), so a neighbour is
#: no disagreement
MAX_FRAMES_OFF_CURVE = 1


def _components(mask: Array) -> list[int]:
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    return sorted(np.bincount(lab.ravel())[1:].tolist(), reverse=True) if n else []


def open_wall_fraction(labels: Array) -> float:
    """Fraction of the LV cavity's in-plane boundary that touches neither LV wall nor LV cavity,
    over the mid-ventricular slices (the middle half of the cavity's slices; the base is open
    at the valve by anatomy). 0 when the wall encloses the cavity."""
    cav = labels == Label.LV_CAVITY
    ks = np.nonzero(cav.any(axis=(0, 1)))[0]
    if ks.size < 2:
        return 0.0
    lo, hi = ks[0] + ks.size // 4, ks[-1] - ks.size // 4
    touch = total = 0
    for k in range(lo, hi + 1):
        c = cav[:, :, k]
        if not c.any():
            continue
        ok = np.isin(labels[:, :, k], (Label.LV_CAVITY, Label.LV_WALL))
        for shift in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            nb = np.roll(ok, shift, axis=(0, 1))
            edge = c & ~np.roll(c, shift, axis=(0, 1))
            total += int(edge.sum())
            touch += int((edge & ~nb).sum())
    return touch / total if total else 0.0


#: the LV cavity on the stack's apical slice, as a fraction of its largest slice's, from which the stack is taken to
#: stop short of the apex. On the ACDC experts' labels (200 volumes) 2 % of the stacks as stored reach it, 27 % with
#: their apical slice taken off and 69 % with two (``bench/coverage_qc.py``, which measures it with the network's too)
MIN_APICAL_CAVITY_FRACTION = 0.4

#: the band along the edge of what the network saw (the scan's in-plane field of view, or the working grid) in which
#: heart is taken to reach the edge (mm): the network rounds a heart off towards an edge that cuts it (ACDC scans cut
#: 10 mm into the heart: its labels thin out over the last 5 mm and are gone on the edge itself)
EDGE_BAND_MM = 5.0

#: from this much heart (ml) in :data:`EDGE_BAND_MM` of the edge the heart is taken to be cut there
MIN_CUT_ML = 0.5


@dataclass(frozen=True)
class FieldOfView:
    """What the network saw of one phase's scan.

    Attributes:
        mask: ``(I, J, K)`` bool, the scan's field of view on the working grid
            (:func:`ssll.preprocess.input_fov_mask`).
        spacing_mm: the working grid's voxel size along ``(I, J, K)`` (mm).
    """

    mask: Array
    spacing_mm: tuple[float, float, float]

    @classmethod
    def of_record(cls, record: Any) -> FieldOfView:
        """The field of view of a :class:`ssll.preprocess.GridRecord`: its input's extent on its working grid
        (:func:`ssll.preprocess.input_fov_mask`) and the working grid's voxel size."""
        from ssll.preprocess import input_fov_mask

        spacing = voxel_size(record.working_affine)
        return cls(input_fov_mask(record), (float(spacing[0]), float(spacing[1]), float(spacing[2])))


def coverage_problems(labels: Array, fov: FieldOfView, *, acquired: Array | None = None) -> list[tuple[str, str]]:
    """Where the heart is not all in the scan, as ``(flag, reason)`` pairs (empty when it is).

    * ``heart_at_edge``: at least :data:`MIN_CUT_ML` of heart (LV cavity, LV wall, RV cavity, RV wall) lies within
      :data:`EDGE_BAND_MM` of the in-plane edge of the scan's field of view, or of a face of the working grid
      (192x192x80 voxels of 1.25x1.25x2 mm, centred on the scan: a larger scan with the heart off-centre, or a
      stack longer than 160 mm, is cut there). The heart probably goes on beyond the edge: its volumes and masses
      are too small.
    * ``apex_not_covered``: the LV reaches the stack's last slice at its apical end (:func:`ssll.landmarks.lv_ends`)
      with an LV cavity there of at least :data:`MIN_APICAL_CAVITY_FRACTION` of its largest slice's: the stack
      probably stops short of the apex, so the segmentation's LV volumes are too small (the refined model may go
      on past the stack at the apex: ``atlases: beyond_stack``).

    No basal rule: a stack that starts at the base holds LV on its first slice (the experts labelled LV there in
    169 of ACDC's 200 volumes), and labels alone cannot tell that slice from one below the base.

    Args:
        labels: ``(I, J, K)`` canonical labels on the working grid (axis 2 = slice axis).
        fov: the scan's field of view on the same grid (:class:`FieldOfView`).
        acquired: working-grid slice indices of the acquired slices (:func:`ssll.motion.acquired_slices`);
            None: every working slice inside the field of view.
    """
    from scipy import ndimage

    lab = np.asarray(labels)
    mask = np.asarray(fov.mask, bool)
    if mask.shape != lab.shape:
        raise ValueError(f"coverage_problems: labels {lab.shape} and field of view {mask.shape} differ")
    out: list[tuple[str, str]] = []
    heart = (lab > 0) & mask
    voxel_ml = float(np.prod(fov.spacing_mm)) / 1000.0
    band = [max(1, int(np.ceil(EDGE_BAND_MM / float(s)))) for s in fov.spacing_mm]
    # the band along the scan's in-plane edge (the grid's faces are not the scan's edge: border_value=1) ...
    in_plane = np.zeros((3, 3, 1), bool)
    in_plane[:, 1, 0] = in_plane[1, :, 0] = True
    inner = ndimage.binary_erosion(mask, structure=in_plane, iterations=band[0], border_value=1)
    # ... and along the grid's faces, the slice axis's included
    grid_edge = np.zeros(lab.shape, bool)
    for ax, n in enumerate(band):
        faces = np.moveaxis(grid_edge, ax, 0)  # a view: writes reach grid_edge
        faces[:n] = True
        faces[-n:] = True
    cut = [(where, float((heart & edge).sum()) * voxel_ml)
           for where, edge in (("the scan's in-plane field of view", mask & ~inner), ("the working grid", grid_edge))]
    cut = [(where, ml) for where, ml in cut if ml >= MIN_CUT_ML]
    if cut:
        out.append(("heart_at_edge", " and ".join(f"{ml:.1f} ml of heart within {EDGE_BAND_MM:g} mm of the edge of "
                                                  f"{where}" for where, ml in cut)
                    + ": the heart probably goes on beyond it, so its volumes and masses are too small"))
    ks = np.asarray(acquired, int) if acquired is not None else np.arange(lab.shape[2])
    ks = np.sort(ks[mask[:, :, ks].any(axis=(0, 1))]) if ks.size else ks
    if ks.size >= 2:
        lv_area = np.isin(lab[:, :, ks], (Label.LV_CAVITY, Label.LV_WALL)).sum(axis=(0, 1))
        cav_area = (lab[:, :, ks] == Label.LV_CAVITY).sum(axis=(0, 1))
        if np.count_nonzero(lv_area) >= 2 and cav_area.max() > 0:
            _, apex = lv_ends(lv_area)
            frac = cav_area[apex] / cav_area.max()
            if apex in (0, ks.size - 1) and frac >= MIN_APICAL_CAVITY_FRACTION:
                out.append(("apex_not_covered", f"the LV cavity on the stack's last slice at the apical end (working "
                            f"slice {int(ks[apex])}) is {100 * frac:.0f}% of its largest: the stack probably stops "
                            "short of the apex, so the LV volumes are too small"))
    return out


def qc_flags(
    *,
    segmentations: dict[str, Array],
    refined: dict[str, Array] | None,
    landmarks_mm: dict[str, Array],
    measures: dict[str, float],
    refine_records: dict[str, dict] | None = None,
    acquired: dict[str, Array | None] | None = None,
    expected_dice: dict[str, dict[str, float | None]] | None = None,
    orientations: dict[str, str] | None = None,
    min_expected_dice: float = MIN_EXPECTED_DICE,
    phases: dict[str, Any] | None = None,
    cycle: dict[str, Any] | None = None,
    swapped_inserts: dict[str, str | None] | None = None,
    fields_of_view: dict[str, FieldOfView] | None = None,
) -> list[dict[str, str]]:
    """Automatic QC flags of one subject.

    Args:
        segmentations: phase -> SSLLN labels ``(I, J, K)`` on the working grid.
        refined: phase -> refined labels on the same grid, or None. Where the refinement fitted
            slice shifts, pass the model as acquired (:func:`ssll.motion.labels_as_acquired`),
            so that it is compared with each slice where that slice was imaged.
        landmarks_mm: phase -> ``(6, 3)`` world mm.
        measures: the subject's measures row (``ssll measures``).
        refine_records: phase -> the ``ssll refine`` record (registration convergence; ``init_fallback``, the
            segmentation's own landmarks (``init`` ``landmarks_from_labels``) or a label-only start where the given
            landmarks were asked for and no atlas accepted them; ``mirrored``, which ED and ES must agree on where both
            started from landmarks).
        acquired: phase -> working-grid indices of the acquired slices (None: all).
        expected_dice: phase -> the network's expected Dice per structure (``ssll segment``'s
            ``<phase>_expected_dice.json``); flagged below ``min_expected_dice`` for the LV
            cavity, LV wall and RV cavity (the thin RV wall scores low even when right).
        orientations: phase -> the voxel-grid orientation ``ssll segment`` segmented it in
            (``<phase>_orientation.json``, :mod:`ssll.nn.orientation`). ED and ES come from one stack,
            so they lie the same way round: different orientations are flagged (one is wrong).
        min_expected_dice: the line for ``expected_dice`` (default :data:`MIN_EXPECTED_DICE`; higher flags more
            subjects and catches more poor segmentations: ``bench/results/qc_expected_dice/summary.json``
            tabulates both against the line).
        phases: ``ssll ingest``'s ``frames.json`` (``ed``, ``es``, ``ed_method``, ``es_method``, ``n_frames``) and
        cycle: ``ssll cycle``'s ``cycle.json`` of the same cine (``ed_frame``, ``es_frame``, ``n_frames``): a frame
            more than :data:`MAX_FRAMES_OFF_CURVE` frames (cyclically) from the volume curve's is flagged
            ``phase_off_curve`` (the measures were taken at another point of the cycle than its volumes say).
        swapped_inserts: phase -> ``ssll landmarks``' ``rv_inserts_swapped`` (why the RV insert points were swapped
            back, or None): flagged ``rv_inserts_swapped``.
        fields_of_view: phase -> the scan's field of view on the working grid (:class:`FieldOfView`): a heart cut
            by it or by the working grid, and a stack that stops short of the apex, are flagged
            (:func:`coverage_problems`, with ``acquired``).

    Returns:
        One ``{"flag", "phase", "reason"}`` per problem; empty when none fired.
    """
    flags: list[dict[str, str]] = []

    def add(flag: str, phase: str, reason: str) -> None:
        flags.append({"flag": flag, "phase": phase, "reason": reason})

    for phase, lab in segmentations.items():
        for c in (Label.LV_CAVITY, Label.LV_WALL, Label.RV_CAVITY):
            sizes = _components(lab == c)
            if not sizes:
                add("structure_missing", phase, f"no {c.name.lower()} in the segmentation")
            elif len(sizes) > 1 and sizes[1] > 0.05 * sizes[0]:
                add("structure_in_pieces", phase, f"{c.name.lower()} in {len(sizes)} pieces "
                    f"(second largest {100 * sizes[1] / sizes[0]:.0f}% of the largest)")
        frac = open_wall_fraction(lab)
        if frac > 0.1:
            add("lv_wall_open", phase, f"{100 * frac:.0f}% of the mid-ventricular LV cavity border has no LV wall")
        for reason in landmark_problems(landmarks_mm.get(phase, np.full((6, 3), np.nan))):
            add("landmarks_implausible", phase, reason)
        if fields_of_view and phase in fields_of_view:
            for flag, reason in coverage_problems(lab, fields_of_view[phase], acquired=(acquired or {}).get(phase)):
                add(flag, phase, reason)
        if refined is not None and phase in refined:
            ks = (acquired or {}).get(phase)
            a = lab if ks is None else lab[:, :, ks]
            b = refined[phase] if ks is None else refined[phase][:, :, ks]
            fa, fb = a > 0, b > 0
            d = 2 * float((fa & fb).sum()) / max(float(fa.sum() + fb.sum()), 1.0)
            if d < 0.8:
                add("refined_disagrees", phase, f"heart Dice {d:.2f} between the segmentation and the refined "
                    "model on the acquired slices (< 0.80)")
            # the RV wall only where the segmentation has one: from a target without it (SSLLN-LR on real scans)
            # the refined RV wall is no better, and gives no RV mass (ssll.measures.rv_wall_coverage)
            for c in (Label.LV_CAVITY, Label.LV_WALL, Label.RV_CAVITY, *([Label.RV_WALL] if has_rv_wall(lab) else [])):
                sizes = _components(refined[phase] == c)
                if len(sizes) > 1 and sizes[1] > 0.05 * sizes[0]:
                    add("refined_in_pieces", phase, f"refined {c.name.lower()} in {len(sizes)} pieces")
        scores = (expected_dice or {}).get(phase) or {}
        low = {name: v for name in ("lv_cavity", "lv_wall", "rv_cavity")
               if (v := scores.get(name)) is not None and v < min_expected_dice}
        if low:
            add("low_expected_dice", phase, "the network expects Dice " + ", ".join(
                f"{name} {v:.3f}" for name, v in low.items()) + f" (< {min_expected_dice:.2f})")
        rec = (refine_records or {}).get(phase)
        if rec:
            ends = [s["levels"][-1]["consistency_end"] for s in rec.get("selected", [])]
            if ends and min(ends) < 0.75:
                add("registration_not_converged", phase, f"label consistency {min(ends):.2f} after the FFD (< 0.75)")
            if rec.get("init_fallback") and rec.get("init") == "landmarks_from_labels":
                add("landmarks_rejected", phase, f"the refinement did not start from the network's landmarks: "
                    f"{rec['init_fallback']}")
            elif rec.get("init_fallback") and rec.get("init") == "labels":
                add("refined_from_labels", phase, "no atlas accepted the landmarks, so the refinement started from the "
                    "labels alone (the paper's Fig. 12 ablation; it cannot turn a mirrored frame round)")
    for phase, why in (swapped_inserts or {}).items():
        if why:
            add("rv_inserts_swapped", phase, why)
    mirrored = {ph: bool(r["mirrored"]) for ph, r in (refine_records or {}).items()
                if r and r.get("init") in ("landmarks", "landmarks_from_labels") and "mirrored" in r}
    if len(set(mirrored.values())) > 1:
        into = ", ".join(ph for ph, m in mirrored.items() if m)
        not_into = ", ".join(ph for ph, m in mirrored.items() if not m)
        add("mirror_differs", "ED+ES", f"the refinement mirrored the atlases into {into} but not {not_into}: the two "
            "come from one stack, so one phase's landmarks are probably in the wrong order")
    turned = {ph: o for ph, o in (orientations or {}).items() if o}
    if len(set(turned.values())) > 1:
        add("orientation_differs", "ED+ES", "segmented in different orientations of the voxel grid ("
            + ", ".join(f"{ph} {o}" for ph, o in turned.items()) + "): one of them is probably wrong")
    if phases and cycle and int(phases.get("n_frames", -1)) == int(cycle["n_frames"]):
        n = int(cycle["n_frames"])
        for ph, curve_key, what in (("ED", "ed_frame", "largest"), ("ES", "es_frame", "smallest")):
            got, want = int(phases[ph.lower()]), int(cycle[curve_key])
            if min(abs(got - want), n - abs(got - want)) > MAX_FRAMES_OFF_CURVE:
                add("phase_off_curve", ph, f"{ph} is frame {got} ({phases.get(f'{ph.lower()}_method', '?')}), the "
                    f"volume curve's {what} LV cavity is frame {want} of {n} (ssll cycle): measures may be off")
    for key, (lo, hi) in RANGES.items():
        v = measures.get(key)
        if v is not None and np.isfinite(v) and not lo <= v <= hi:
            add("measure_out_of_range", "ED" if key.startswith("ed_") else "ES" if key.startswith("es_") else "ED+ES",
                f"{key} = {v:.1f} outside {lo:g}-{hi:g}")
    return flags


def _read_cycle_pair(frames_path: str, cycle_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``ssll ingest``'s ``frames.json`` and ``ssll cycle``'s ``cycle.json`` (:func:`ssll.ingest.read_cycle_record`),
    checked for the fields the flag reads."""
    from ssll.ingest import read_cycle_record
    from ssll.io import read_json

    frames = read_json(frames_path)
    if not isinstance(frames, dict) or not all(isinstance(frames.get(k), int) and not isinstance(frames.get(k), bool)
                                               for k in ("ed", "es")):
        raise SsllError(f"{frames_path}: not a frames record (integer ed, es)")
    return frames, read_cycle_record(cycle_path)


def _read_expected_dice(path: str) -> dict[str, float | None]:
    """``ssll segment``'s ``<phase>_expected_dice.json``: structure -> number in [0, 1] or null."""
    from ssll.io import read_json

    d = read_json(path)
    if not isinstance(d, dict) or not all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool) and 0.0 <= v <= 1.0)
            for v in d.values()):
        raise SsllError(f"{path}: not an expected-Dice record (structure -> number in [0, 1] or null)")
    return {str(k): (None if v is None else float(v)) for k, v in d.items()}


def _read_orientation(path: str) -> str:
    """``ssll segment``'s ``<phase>_orientation.json``: the orientation's name (``rot0`` = as stored)."""
    from ssll.io import read_json

    d = read_json(path)
    if not isinstance(d, dict) or not isinstance(d.get("orientation"), str):
        raise SsllError(f"{path}: not an orientation record (no 'orientation' name)")
    return d["orientation"]


def run_qc_flags(*, subject: str, segmentations: dict[str, str], refined: dict[str, str], landmarks: dict[str, str],
                 measures_tsv: str, refine_records: dict[str, str], records: dict[str, str], out_json: str,
                 expected_dice: dict[str, str] | None = None, orientations: dict[str, str] | None = None,
                 min_expected_dice: float = MIN_EXPECTED_DICE, frames: str | None = None,
                 cycle: str | None = None) -> list:
    """I/O layer of ``ssll qc-flags``: read one subject's outputs, write ``{"subject", "flags": [...]}``
    and, with ``expected_dice`` (phase -> ``ssll segment``'s JSON), ``"expected_dice": {phase: {...}}``
    and the line it was flagged below (``"min_expected_dice"``), with ``orientations`` (phase ->
    ``ssll segment``'s ``<phase>_orientation.json``), ``"orientation": {phase: name}``; with ``frames``
    (``ssll ingest``'s ``frames.json``) and ``cycle`` (``ssll cycle``'s JSON), the ``phase_off_curve`` check.

    Raises:
        ValueError: ``min_expected_dice`` outside [0, 1].
    """
    if not 0.0 <= min_expected_dice <= 1.0:
        raise ValueError(f"min_expected_dice {min_expected_dice}: must be in [0, 1]")
    import pandas as pd

    from ssll.io import load_labels, read_json, write_json
    from ssll.landmarks import landmarks_of_record
    from ssll.motion import acquired_slices, labels_as_acquired
    from ssll.preprocess import GridRecord

    row = pd.read_csv(measures_tsv, sep="\t").iloc[0].to_dict()
    scores = {ph: _read_expected_dice(p) for ph, p in (expected_dice or {}).items()}
    turned = {ph: _read_orientation(p) for ph, p in (orientations or {}).items()}
    if (frames is None) != (cycle is None):
        raise SsllError("qc-flags: give the frames record and the cycle record together")
    pair = _read_cycle_pair(frames, cycle) if frames and cycle else (None, None)
    ref_records = {ph: read_json(p) for ph, p in refine_records.items()}
    landmark_records = {ph: read_json(p) for ph, p in landmarks.items()}
    models = {ph: load_labels(p) for ph, p in refined.items()}
    grids = {ph: GridRecord.from_dict(read_json(p)) for ph, p in records.items()}
    flags = qc_flags(
        segmentations={ph: load_labels(p).array for ph, p in segmentations.items()},
        refined={ph: labels_as_acquired(v.array, v.affine, ref_records.get(ph, {})) for ph, v in models.items()} or None,
        landmarks_mm={ph: landmarks_of_record(r, source=landmarks[ph]) for ph, r in landmark_records.items()},
        measures={k: float(v) for k, v in row.items() if k != "subject"},
        refine_records=ref_records,
        acquired={ph: acquired_slices(g) for ph, g in grids.items()},
        expected_dice=scores,
        orientations=turned,
        min_expected_dice=min_expected_dice,
        phases=pair[0],
        cycle=pair[1],
        swapped_inserts={ph: r.get("rv_inserts_swapped") for ph, r in landmark_records.items()},
        fields_of_view={ph: FieldOfView.of_record(g) for ph, g in grids.items()},
    )
    write_json(out_json, {"subject": subject, "flags": flags,
                          **({"expected_dice": scores, "min_expected_dice": min_expected_dice} if scores else {}),
                          **({"orientation": turned} if turned else {})})
    return flags
