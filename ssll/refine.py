"""Shape refinement of one segmentation (Duan et al. 2019, Section II-C, Fig. 5): ``ssll refine``.

Steps, all in one process (the atlas bank and torch are loaded once for the L registrations):

1. box: the target segmentation's foreground plus a margin, on the working grid (1.25 x 1.25 x 2 mm);
2. selection: the 12-DOF landmark affine to every atlas, NMI ranking, top L (:mod:`ssll.atlases`);
3. registration: a B-spline FFD per selected atlas with the label-consistency objective of eq. (4),
   initialised by the landmark affine (:mod:`ssll.register`);
4. fusion: the warped atlas images and labels fused by non-local patch voting, eq. (5)
   (:mod:`ssll.fusion`); when the registration fitted the acquired slices' breath-hold shifts
   (``ffd: slice_shift_mm``), the target image is first moved slice by slice onto the model
   (:func:`ssll.motion.shift_slices`); the refined model is motion-free, and its copy on the input grid is
   moved back onto each slice as acquired (:func:`labels_as_acquired`);
5. the fused labels pasted back on the full working grid; with a thick-slice input, cut at the
   basal end of the imaged slab (:func:`clip_beyond_stack`); with a grid record, resampled to the
   input grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ssll.atlases import Atlas, AtlasConfig, crop, crop_box, select_atlases
from ssll.errors import AtlasError, LandmarkError
from ssll.fusion import FusionConfig, fuse_labels
from ssll.labels import Landmark, rv_wall_as_background
from ssll.landmarks import landmark_problems, landmarks_from_labels, voxel_to_world
from ssll.measures import has_rv_wall
from ssll.motion import MotionConfig, acquired_slices, estimate_slice_shifts, labels_as_acquired, shift_slices
from ssll.preprocess import GridRecord, input_fov_mask
from ssll.register import FFDConfig, register_affine_labels, register_labels_batch, warp_atlas
from ssll.types import Array, PathLike, voxel_size

if TYPE_CHECKING:
    from ssll.nn.infer import LoadedModel

__all__ = ["RefineConfig", "acquired_slices", "breath_hold_shifts", "clip_beyond_stack", "labels_as_acquired",
           "motion_corrected", "refine", "run_refine", "stack_slab"]


@dataclass(frozen=True)
class RefineConfig:
    """Settings of the three refinement steps (config sections ``atlases``, ``ffd``, ``fusion``) and of the
    breath-hold shift estimate that may precede them (``motion``, :func:`breath_hold_shifts`)."""

    atlases: AtlasConfig = field(default_factory=AtlasConfig)
    ffd: FFDConfig = field(default_factory=FFDConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)

    def __post_init__(self) -> None:
        if self.motion.estimate and self.ffd.slice_shift_mm > 0:
            raise ValueError("RefineConfig: motion: estimate and ffd: slice_shift_mm > 0 both take out the breath-hold "
                             "shifts; choose one")

    @classmethod
    def from_mapping(cls, m: dict[str, Any] | None) -> RefineConfig:
        """Build from ``{"atlases": ..., "ffd": ..., "fusion": ..., "motion": ...}``; unknown keys raise ``ValueError``."""
        m = dict(m or {})
        known = {"atlases", "ffd", "fusion", "motion"}
        if set(m) - known:
            raise ValueError(f"RefineConfig: unknown keys {sorted(set(m) - known)}")
        return cls(AtlasConfig.from_mapping(m.get("atlases")), FFDConfig.from_mapping(m.get("ffd")),
                   FusionConfig.from_mapping(m.get("fusion")), MotionConfig.from_mapping(m.get("motion")))


def refine(
    image: Array,
    labels: Array,
    affine: Array,
    landmarks_mm: Array,
    bank: list[Atlas],
    cfg: RefineConfig | None = None,
    *,
    slices: Array | None = None,
    stack: tuple[int, int] | None = None,
    device: torch.device | None = None,
    what: str = "target",
) -> tuple[Array, dict[str, Any]]:
    """Refine one segmentation with an atlas bank.

    Args:
        image: ``(I, J, K)`` working-grid image in [0, 1] (the preprocessed LR volume).
        labels: ``(I, J, K)`` canonical working-grid segmentation (SSLLN-LR).
        affine: 4x4 working voxel -> world mm.
        landmarks_mm: ``(6, 3)`` target landmarks, world mm.
        bank: the atlases (:func:`ssll.atlases.load_bank`).
        cfg: settings. Defaults to :class:`RefineConfig`.
        slices: working-grid indices (axis 2) of the acquired slices (:func:`acquired_slices`);
            registration fits the target there only. Defaults to all slices.
        stack: first and last working slice inside the input's imaged slab (:func:`stack_slab`);
            the model is cut beyond it at the ends ``cfg.atlases.beyond_stack`` does not free
            (:func:`clip_beyond_stack`). Defaults to no cut.
        device: torch device for registration and fusion. Defaults to CPU.
        what: name for error messages.

    Returns:
        ``(refined, record)``: ``(I, J, K)`` uint8 labels on the working grid, and a record
        (selected atlases with NMI and affines, FFD consistency per level, timings in seconds; with
        ``cfg.ffd.slice_shift_mm`` and ``slices``, ``slice_shifts_mm``: the acquired slices' working-grid
        indices and their fitted in-plane shifts (mm, axes 0 and 1, averaged over the atlases), against
        which ``refined`` is the motion-free model; see :func:`labels_as_acquired`).

    Raises:
        RegistrationError: empty segmentation or a diverged registration.
        AtlasError: no usable atlas, even with the label-only start.
    """
    cfg = cfg or RefineConfig()
    t0 = time.perf_counter()
    box = crop_box(labels, affine, cfg.atlases.margin_mm)
    tl, taff = crop(np.asarray(labels, np.uint8), affine, box)
    ti, _ = crop(np.asarray(image, np.float32), affine, box)
    # a target without an RV wall (SSLLN-LR on real scans): the atlases' RV walls are matched as background
    no_rv_wall = cfg.atlases.rv_wall_from_atlases and not has_rv_wall(tl)
    chosen, landmarks_mm, init_used, fallback = _choose_atlases(tl, taff, landmarks_mm, bank, cfg.atlases,
                                                                 no_rv_wall=no_rv_wall, what=what)
    if init_used == "labels":
        cfg = replace(cfg, atlases=replace(cfg.atlases, init="labels"))
    ks = None
    if slices is not None:
        ks = np.asarray(slices, int) - box[2].start
        ks = ks[(ks >= 0) & (ks < tl.shape[2])]
        ks = ks if ks.size >= 2 else None
    t_sel = time.perf_counter() - t0
    w_img, w_lab, regs = [], [], []
    t1 = time.perf_counter()
    inits = []
    matched = [rv_wall_as_background(c["atlas"].labels) if no_rv_wall else c["atlas"].labels for c in chosen]
    for c, m in zip(chosen, matched):
        init = c["affine"]
        if cfg.atlases.init == "labels":
            init = register_affine_labels(tl, taff, m, c["atlas"].affine, init, slices=ks, device=device)
        inits.append(init)
    # the selected atlases' FFDs optimised together (each as it would be alone)
    results = register_labels_batch(tl, taff,
                                    [(m, c["atlas"].affine, init) for c, m, init in zip(chosen, matched, inits)],
                                    cfg.ffd, slices=ks, device=device, what=what,
                                    names=[f"atlas {c['atlas'].atlas_id}" for c in chosen])
    for c, init, res in zip(chosen, inits, results):
        a: Atlas = c["atlas"]
        lab_w, img_w = warp_atlas(res, a.labels, a.load_image(), a.affine, tl.shape, taff, device=device)
        w_lab.append(lab_w)
        w_img.append(img_w)
        regs.append({"atlas_id": a.atlas_id, "rank": c["rank"], "nmi": c["nmi"],
                     "init": init_used, "affine": np.round(init, 6).tolist(), "levels": res.history})
    t_reg = time.perf_counter() - t1
    t2 = time.perf_counter()
    shifts = None
    if results and results[0].slice_shifts is not None:  # the atlases' estimates of each slice's shift, averaged
        shifts = np.mean([r.slice_shifts for r in results], axis=0)
        ti = shift_slices(ti, results[0].slices, shifts, voxel_size(taff))
    fused, frac = fuse_labels(ti, np.stack(w_img), np.stack(w_lab), cfg.fusion, device=device)
    t_fuse = time.perf_counter() - t2
    out = np.zeros(labels.shape, np.uint8)
    out[box] = fused
    cut: dict[str, Any] | None = None
    if stack is not None and cfg.atlases.beyond_stack != "both":
        out, cut = clip_beyond_stack(out, affine, landmarks_mm, stack, keep=cfg.atlases.beyond_stack)
    record = {
        "box_voxels": [[s.start, s.stop] for s in box],
        "init": init_used,
        "init_fallback": fallback,
        "mirrored": bool(chosen[0]["mirrored"]),
        "rv_wall_from_atlases": no_rv_wall,
        "beyond_stack": cut,
        "slice_shifts_mm": None if shifts is None else {
            "slices": [int(k) + box[2].start for k in results[0].slices], "shifts": np.round(shifts, 3).tolist()},
        "atlases_ranked": len(bank),
        "selected": regs,
        "fusion": {"computed_fraction": frac, "patch": list(cfg.fusion.patch), "search": list(cfg.fusion.search),
                   "h": cfg.fusion.h, "largest_component": cfg.fusion.largest_component},
        "seconds": {"selection": t_sel, "registration": t_reg, "fusion": t_fuse,
                    "total": time.perf_counter() - t0},
    }
    return out, record


def breath_hold_shifts(
    image: Array,
    labels: Array,
    affine: Array,
    landmarks_mm: Array,
    bank: list[Atlas],
    record: GridRecord,
    cfg: RefineConfig | None = None,
    *,
    device: torch.device | None = None,
    what: str = "target",
) -> tuple[Array, dict[str, Any]]:
    """Measure each acquired slice's breath-hold shift from the image and move the slices onto one motion-free heart.

    A stiff refinement (``cfg.motion``'s control grid, no per-slice shifts fitted) of the
    segmentation gives a motion-free model that absorbs little of the shifts; each acquired slice's
    in-plane shift against it is then measured from the image (:func:`ssll.motion.estimate_slice_shifts`)
    and taken out of the stack (:func:`ssll.motion.shift_slices`; working slices between acquired ones take
    the interpolated shift, slices beyond the measured ones the nearest measured one's). Segmenting the
    corrected stack again and refining that gives the motion-free model; moving it back by the shifts
    (:func:`labels_as_acquired` with ``record["slice_shifts_mm"]``) overlays the slices as acquired.

    Args:
        image: ``(I, J, K)`` working-grid image in [0, 1].
        labels: ``(I, J, K)`` canonical working-grid segmentation of it (SSLLN-LR).
        affine: 4x4 working voxel -> world mm.
        landmarks_mm: ``(6, 3)`` landmarks, world mm.
        bank: the atlases.
        record: the preprocessing's grid record (acquired slices, slice thickness, imaged slab).
        cfg: settings (``cfg.motion``; the atlases and fusion of the model). Defaults to :class:`RefineConfig`.
        device: torch device of the registrations. Defaults to CPU.
        what: name for error messages.

    Returns:
        ``(corrected, record)``: the ``(I, J, K)`` float32 image with the measured shifts taken out (``image``
        itself when the stack is not thick-sliced or fewer than two slices could be measured), and
        ``{"slice_shifts_mm": {"slices": [...], "shifts": [[mm, mm], ...]} or None, "seconds": s}``.
    """
    cfg = cfg or RefineConfig()
    t0 = time.perf_counter()
    ks = acquired_slices(record)
    image = np.asarray(image, np.float32)
    if ks is None or ks.size < 2:
        return image, {"slice_shifts_mm": None, "seconds": time.perf_counter() - t0}
    m = cfg.motion
    stiff = replace(cfg, ffd=replace(cfg.ffd, control_spacing_mm=m.control_spacing_mm, through_plane_mm=m.through_plane_mm,
                                     slice_shift_mm=0.0))
    model, _ = refine(image, labels, affine, landmarks_mm, bank, stiff, slices=ks, stack=stack_slab(record), device=device,
                      what=what)
    thickness = float(voxel_size(record.input_affine)[2])
    spacing = voxel_size(affine)
    measured, shifts = estimate_slice_shifts(image, model, ks, spacing, thickness, m)
    if measured.size < 2:
        return image, {"slice_shifts_mm": None, "seconds": time.perf_counter() - t0}
    corrected = shift_slices(image, measured, shifts, spacing)
    return corrected, {"slice_shifts_mm": {"slices": measured.tolist(), "shifts": np.round(shifts, 3).tolist()},
                       "seconds": time.perf_counter() - t0}


def _choose_atlases(tl: Array, taff: Array, landmarks_mm: Array, bank: list[Atlas], cfg: AtlasConfig, *,
                    no_rv_wall: bool, what: str) -> tuple[list[dict[str, Any]], Array, str, str | None]:
    """Atlas selection with its start: the given landmarks; where they are implausible
    (:func:`ssll.landmarks.landmark_problems`) or no atlas accepts them (missing, coplanar, in the wrong order),
    the landmarks the training rules derive from the segmentation, if those are plausible; where those fail, the
    given landmarks if only their plausibility was in doubt, else the label-only start.

    Returns:
        ``(chosen, landmarks_mm, init, fallback)``: :func:`select_atlases`'s list, the landmarks used (world mm),
        the start used (``landmarks``, ``landmarks_from_labels`` or ``labels``) and why it is not the one asked
        for, or why the given landmarks were used all the same (None where neither).
    """
    def select(points: Array, c: AtlasConfig) -> list[dict[str, Any]]:
        return select_atlases(tl, taff, points, bank, c, ignore_rv_wall=no_rv_wall)

    if cfg.init != "landmarks":
        return select(landmarks_mm, cfg), landmarks_mm, cfg.init, None
    problems = landmark_problems(landmarks_mm) if np.isfinite(landmarks_mm).all() else []  # missing: the atlases say
    if problems:
        reject = f"landmarks implausible ({'; '.join(problems)})"
    else:
        try:
            return select(landmarks_mm, cfg), landmarks_mm, "landmarks", None
        except AtlasError as exc:
            reject = f"landmark initialisation failed ({exc})"
    try:
        own = voxel_to_world(landmarks_from_labels(tl, taff, what=what), taff)
        if own_problems := landmark_problems(own):
            raise LandmarkError(f"implausible: {'; '.join(own_problems)}")
        return (select(own, cfg), own, "landmarks_from_labels",
                f"{reject}; used the landmarks the training rules derive from the segmentation")
    except (LandmarkError, AtlasError) as exc:
        own_failed = f"the segmentation's own landmarks failed too ({exc})"
    if problems:
        try:
            return select(landmarks_mm, cfg), landmarks_mm, "landmarks", f"{reject}, and {own_failed}; used them all the same"
        except AtlasError as exc:
            reject = f"{reject}; landmark initialisation failed ({exc})"
    return (select(landmarks_mm, replace(cfg, init="labels")), landmarks_mm, "labels",
            f"{reject}, and {own_failed}; used the label-based affine")


def stack_slab(record: GridRecord, *, fov: Array | None = None) -> tuple[int, int] | None:
    """First and last working-grid slice (axis 2) inside the input's field of view
    (:func:`ssll.preprocess.input_fov_mask`, the slab the network segments), or None when the input
    is not thicker-sliced than the working grid or its slab misses the working grid. ``fov``:
    :func:`ssll.preprocess.input_fov_mask` of ``record`` when the caller has it already."""
    if acquired_slices(record) is None:
        return None
    fov = input_fov_mask(record) if fov is None else fov
    ks = np.nonzero(np.asarray(fov).any(axis=(0, 1)))[0]
    return (int(ks.min()), int(ks.max())) if ks.size else None


def clip_beyond_stack(labels: Array, affine: Array, landmarks_mm: Array, stack: tuple[int, int], *,
                      keep: str = "apex") -> tuple[Array, dict[str, Any]]:
    """Cut a refined model at the ends of the imaged slab where it may not go on.

    Beyond a thick-slice stack the registration sees no data: there the model is whatever the
    atlases hold. At the apex that completes a stack that stops short; at the base it puts the
    valve plane wherever the atlases had it (on ACDC, whose stacks start at the base, 16 mm and
    more of full-width ventricles past the first slice, ended by the refinement box).

    Args:
        labels: ``(I, J, K)`` refined labels on the working grid, axis 2 the slice axis.
        affine: 4x4 working voxel -> world mm.
        landmarks_mm: ``(6, 3)`` target landmarks (world mm); the apex and the mitral valve centre
            tell which end of the slab is basal.
        stack: first and last working slice inside the imaged slab (:func:`stack_slab`).
        keep: ``apex`` (cut the basal end only), ``none`` (cut both ends) or ``both`` (no cut).

    Returns:
        ``(labels, record)``: the cut labels (a copy) and what was done: the ends cut and the
        voxels removed per label. When the landmarks do not tell the base from the apex (less than
        one slice apart along the slice axis) both ends are cut.
    """
    if keep not in ("apex", "both", "none"):
        raise ValueError(f"keep must be 'apex', 'both' or 'none', got {keep!r}")
    out = np.array(labels, np.uint8, copy=True)
    lo, hi = stack
    k_lm = (np.linalg.inv(np.asarray(affine, float)) @ np.c_[np.asarray(landmarks_mm, float), np.ones(6)].T)[2]
    k_apex, k_mv = k_lm[Landmark.APEX - 1], k_lm[Landmark.MITRAL_VALVE_CENTRE - 1]
    known = bool(np.isfinite(k_apex) and np.isfinite(k_mv) and abs(k_apex - k_mv) >= 1.0)
    base_end = ("low" if k_mv < k_apex else "high") if known else None
    if keep == "both":
        ends: list[str] = []
    elif keep == "apex" and base_end is not None:
        ends = [base_end]
    else:
        ends = ["low", "high"]
    removed: dict[int, int] = {}
    for end in ends:
        part = out[..., :lo] if end == "low" else out[..., hi + 1:]
        for c, n in zip(*np.unique(part[part > 0], return_counts=True)):
            removed[int(c)] = removed.get(int(c), 0) + int(n)
        part[...] = 0
    names = {base_end: "basal", ({"low", "high"} - {base_end}).pop(): "apical"} if base_end else {}
    return out, {"keep": keep, "slab": [int(lo), int(hi)], "base_known": known,
                 "cut_ends": [names.get(e, f"{e} slice index") for e in ends],
                 "removed_voxels": {str(c): n for c, n in sorted(removed.items())}}


def run_refine(
    *,
    subject: str,
    image: PathLike,
    labels: PathLike,
    landmarks: PathLike,
    record: PathLike,
    bank: PathLike,
    out_labels: PathLike,
    out_original: PathLike,
    out_record: PathLike,
    cfg: RefineConfig | None = None,
    weights: PathLike | None = None,
    orientation: PathLike | None = None,
) -> dict[str, Any]:
    """I/O layer of ``ssll refine``: read the working-grid image, labels, landmarks and grid record;
    write the refined labels on the working grid and on the input grid, and a JSON record.

    With ``cfg.motion.estimate`` and a thick-slice input, the acquired slices' breath-hold shifts are
    measured first (:func:`breath_hold_shifts`), the corrected stack is segmented again by SSLLN-LR
    (``weights``, default the shipped network; in the orientation ``ssll segment`` used, read from its
    ``<phase>_orientation.json`` ``orientation``, default as stored) and that segmentation is refined;
    the record's ``slice_shifts_mm`` holds the measured shifts and the input-grid output is moved back
    onto each slice as acquired.

    Raises:
        SsllError subclasses naming the subject and the file on bad input (see :func:`refine`).
    """
    from ssll.atlases import load_bank
    from ssll.io import load_image, load_labels, read_json, save_nifti, write_json
    from ssll.landmarks import read_landmarks
    from ssll.nn.device import select_device
    from ssll.preprocess import original_header, to_original
    from ssll.types import Volume

    img = load_image(image)
    lab = load_labels(labels)
    if img.array.shape != lab.array.shape or not np.allclose(img.affine, lab.affine, atol=1e-3):
        from ssll.errors import InputImageError

        raise InputImageError(f"{labels}: grid {lab.array.shape} differs from the image's {img.array.shape} ({image})")
    pts = read_landmarks(landmarks)
    rec = GridRecord.from_dict(read_json(record))
    atlases = load_bank(bank)
    device = select_device()
    cfg = cfg or RefineConfig()
    image_w, labels_w, motion = img.array, lab.array, None
    if cfg.motion.estimate:
        from ssll.nn.infer import default_weights, load_model

        weights = weights or default_weights("sslln_lr")
        name = read_json(orientation).get("orientation", "stored") if orientation else "stored"
        image_w, labels_w, pts, motion = motion_corrected(img.array, lab.array, lab.affine, pts, atlases, rec, cfg,
                                                          load_model(weights, device=device), orientation=name,
                                                          device=device, what=subject)
        motion["weights"] = str(weights)
    refined, info = refine(image_w, labels_w, lab.affine, pts, atlases, cfg, slices=acquired_slices(rec),
                           stack=stack_slab(rec), device=device, what=subject)
    if motion is not None:
        info["motion"] = motion
        if motion["slice_shifts_mm"] is not None:
            info["slice_shifts_mm"] = motion["slice_shifts_mm"]
    save_nifti(out_labels, Volume(refined, lab.affine), dtype=np.uint8)
    orig = to_original(labels_as_acquired(refined, lab.affine, info), rec, order=0)
    save_nifti(out_original, Volume(orig, rec.input_affine, header=original_header(rec)), dtype=np.uint8)
    info = {"subject": subject, "bank": str(bank), "device": str(device), **info}
    write_json(out_record, info)
    return info


def motion_corrected(image: Array, labels: Array, affine: Array, landmarks_mm: Array, bank: list[Atlas],
                     record: GridRecord, cfg: RefineConfig, net: LoadedModel, *, orientation: str = "stored",
                     device: torch.device | None = None, what: str = "target") -> tuple[Array, Array, Array, dict[str, Any]]:
    """:func:`breath_hold_shifts`, then SSLLN-LR (``net``, in ``orientation``: the one ``ssll segment`` used) on the
    corrected stack, as ``ssll refine`` does with ``motion: estimate``.

    Returns:
        ``(image, labels, landmarks_mm, motion)`` to refine: the corrected ``(I, J, K)`` image, its canonical
        segmentation and ``(6, 3)`` landmarks (world mm) as ``ssll segment`` and ``ssll landmarks`` give them (the
        inputs themselves when no shift was measured), and the ``motion`` record (:func:`breath_hold_shifts`' record
        with ``resegmented`` and ``orientation``).
    """
    from ssll.nn.infer import landmark_points, segment_volume

    corrected, mrec = breath_hold_shifts(image, labels, affine, landmarks_mm, bank, record, cfg, device=device, what=what)
    if mrec["slice_shifts_mm"] is None:
        return image, labels, landmarks_mm, {**mrec, "resegmented": False}
    seg = segment_volume(net, corrected, record, orientation=orientation).segmentation
    pts = landmark_points(seg.landmark_map, record, fov=seg.fov)
    return corrected, seg.labels, pts, {**mrec, "resegmented": True, "orientation": orientation}
