"""High-resolution atlas bank, landmark affine and NMI atlas selection (Duan et al. 2019, Section II-C).

An atlas is a high-resolution (1.25 x 1.25 x 2 mm) short-axis volume with its SSLLN-HR
segmentation (canonical labels) and SSLLN-HR landmarks, cropped to a box around the heart.

Bank layout (a folder)::

    atlases.tsv          manifest: atlas_id, file, source_image, weights, lv_cavity_ml, ...
    <atlas_id>.npz       image (float16, [0, 1]), labels (uint8), affine (4x4 voxel -> world mm),
                         landmarks (6, 3) world mm, row n = landmark n + 1

Selection: the target landmarks (SSLLN-LR, world mm) give a 12-DOF least-squares affine to each
atlas's landmarks (world -> world); each atlas segmentation is warped into the target box by that
affine, and atlases are ranked by the normalised mutual information (Studholme:
``(H(S) + H(A)) / H(S, A)``) between the target segmentation and the warped atlas segmentation.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssll.errors import AtlasError, RegistrationError
from ssll.labels import Label, rv_wall_as_background
from ssll.subjects import validate_subject_id
from ssll.types import Array, PathLike, config_kwargs, voxel_size

__all__ = [
    "Atlas",
    "AtlasConfig",
    "centroid_affine",
    "crop",
    "crop_box",
    "landmark_affine",
    "load_bank",
    "nmi",
    "read_sheet",
    "run_atlas_build",
    "select_atlases",
    "write_atlas",
    "write_manifest",
]

MANIFEST = "atlases.tsv"
MANIFEST_FIELDS = ["atlas_id", "file", "source_image", "weights", "lv_cavity_ml", "lv_wall_ml", "rv_cavity_ml", "rv_wall_ml"]


@dataclass(frozen=True)
class AtlasConfig:
    """Atlas selection settings.

    Attributes:
        top_k: atlases kept for registration and fusion (the paper's L). Defaults to 5.
        margin_mm: margin of the box around the heart (mm). Defaults to 15.
        nmi_stride: target-box subsampling for the NMI (voxels per axis). Defaults to 3.
        init: ``landmarks`` (the paper: 12-DOF affine from the six landmarks) or ``labels``
            (no landmarks: heart centroids aligned for selection, then an affine fitted to the
            labels; the paper's Fig. 12 ablation). Defaults to ``landmarks``.
        beyond_stack: at which ends of a thick-slice input's stack the refined model may go on
            beyond the imaged slab (along the slice axis): ``apex`` (default: a stack that stops
            short of the apex is completed there, while at the base nothing beyond the first slice
            says where the valve plane is), ``both`` or ``none``.
        rv_wall_from_atlases: for a target without an RV wall around its RV cavity
            (:func:`ssll.measures.rv_wall_coverage` below :data:`ssll.measures.RV_WALL_MIN_COVERAGE`: SSLLN-LR on
            real scans), match the atlases with their RV wall counted as background (selection and
            registration), so that their RV walls follow the target's RV cavity and the fusion gives the model
            one. False: match every label as it is (the atlas RV wall is then pulled away from the target's
            background). Defaults to True.
    """

    top_k: int = 5
    margin_mm: float = 15.0
    nmi_stride: int = 3
    init: str = "landmarks"
    beyond_stack: str = "apex"
    rv_wall_from_atlases: bool = True

    @classmethod
    def from_mapping(cls, m: dict[str, Any] | None) -> AtlasConfig:
        """Build from a config mapping; unknown keys or bad values raise ``ValueError``."""
        cfg = cls(**config_kwargs(cls, m))
        if cfg.init not in ("landmarks", "labels"):
            raise ValueError(f"AtlasConfig: init must be 'landmarks' or 'labels', got {cfg.init!r}")
        if cfg.beyond_stack not in ("apex", "both", "none"):
            raise ValueError(f"AtlasConfig: beyond_stack must be 'apex', 'both' or 'none', got {cfg.beyond_stack!r}")
        if cfg.top_k < 1 or cfg.nmi_stride < 1 or cfg.margin_mm < 0:
            raise ValueError(f"AtlasConfig: top_k and nmi_stride must be >= 1, margin_mm >= 0, got {cfg}")
        return cfg


@dataclass
class Atlas:
    """One atlas: ``labels`` ``(I, J, K)`` uint8 canonical, ``affine`` 4x4, ``landmarks`` ``(6, 3)`` world mm.

    ``image`` ``(I, J, K)`` float32 in [0, 1] is loaded on demand (:meth:`load_image`).
    """

    atlas_id: str
    path: Path
    labels: Array
    affine: Array
    landmarks: Array
    image: Array | None = None

    def load_image(self) -> Array:
        """The atlas image ``(I, J, K)`` float32 (cached after the first call)."""
        if self.image is None:
            with np.load(self.path) as z:
                self.image = z["image"].astype(np.float32)
        return self.image


def crop_box(labels: Array, affine: Array, margin_mm: float) -> tuple[slice, slice, slice]:
    """Box around the foreground of ``labels`` with ``margin_mm`` on every side, clipped to the grid.

    Raises:
        RegistrationError: no foreground.
    """
    nz = np.argwhere(np.asarray(labels) > 0)
    if nz.size == 0:
        raise RegistrationError("the segmentation has no foreground to refine")
    sp = voxel_size(affine)
    m = np.ceil(margin_mm / sp).astype(int)
    lo = np.maximum(nz.min(0) - m, 0)
    hi = np.minimum(nz.max(0) + m + 1, labels.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def crop(array: Array, affine: Array, box: tuple[slice, slice, slice]) -> tuple[Array, Array]:
    """``array[box]`` and the affine of the cropped grid (same world positions)."""
    lo = np.array([s.start for s in box], float)
    out = np.asarray(affine, float).copy()
    out[:3, 3] = out[:3, :3] @ lo + out[:3, 3]
    return np.ascontiguousarray(array[box]), out


def landmark_affine(source_mm: Array, dest_mm: Array, *, what: str = "landmarks",
                    allow_reflection: bool = False) -> Array:
    """12-DOF least-squares affine (4x4) mapping ``source_mm`` points to ``dest_mm`` points.

    Args:
        source_mm: ``(N, 3)`` world mm, N >= 4 (the 6 landmarks); NaN rows are left out.
        dest_mm: ``(N, 3)`` corresponding points.
        allow_reflection: accept an affine with a negative determinant (the two point sets are mirror
            images of each other: :func:`select_atlases` with a target whose world frame is mirrored).

    Raises:
        RegistrationError: fewer than 4 usable pairs, the points are (nearly) coplanar, the affine is
            singular, or (without ``allow_reflection``) it is a reflection.
    """
    s, d = np.asarray(source_mm, float), np.asarray(dest_mm, float)
    ok = np.isfinite(s).all(1) & np.isfinite(d).all(1)
    s, d = s[ok], d[ok]
    if len(s) < 4:
        raise RegistrationError(f"{what}: {len(s)} usable landmark pairs; a 12-DOF affine needs at least 4")
    sv = np.linalg.svd(s - s.mean(0), compute_uv=False)
    if sv[-1] < 1e-3 * sv[0] or sv[-1] < 1.0:
        raise RegistrationError(f"{what}: landmarks nearly coplanar (singular values {np.round(sv, 2).tolist()} mm)")
    x = np.c_[s, np.ones(len(s))]
    m = np.linalg.lstsq(x, d, rcond=None)[0].T
    out = np.eye(4)
    out[:3] = m
    det = np.linalg.det(out[:3, :3])
    if abs(det) < 1e-6:
        raise RegistrationError(f"{what}: the landmark affine is singular")
    if det < 0 and not allow_reflection:
        raise RegistrationError(f"{what}: the landmark affine is a reflection (landmarks in the wrong order?)")
    return out


def nmi(a: Array, b: Array, n_labels: int = len(Label)) -> float:
    """Normalised mutual information ``(H(a) + H(b)) / H(a, b)`` of two label arrays (1 = independent, 2 = identical)."""
    a = np.asarray(a, np.int64).ravel()
    b = np.asarray(b, np.int64).ravel()
    joint = np.bincount(a * n_labels + b, minlength=n_labels * n_labels).astype(float)
    p = joint / joint.sum()

    def h(q: Array) -> float:
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    hab = h(p)
    pm = p.reshape(n_labels, n_labels)
    return (h(pm.sum(1)) + h(pm.sum(0))) / hab if hab > 0 else 2.0


def write_atlas(path: PathLike, *, image: Array, labels: Array, affine: Array, landmarks: Array,
                margin_mm: float = 20.0) -> dict[str, float]:
    """Crop an HR volume and its segmentation to the heart and write one atlas ``.npz`` (atomically).

    Returns:
        The atlas's structure volumes (ml), for the manifest.
    """
    from ssll.io import atomic_path

    box = crop_box(labels, affine, margin_mm)
    lab, aff = crop(np.asarray(labels, np.uint8), affine, box)
    img, _ = crop(np.asarray(image, np.float32), affine, box)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, image=img.astype(np.float16), labels=lab, affine=aff,
                            landmarks=np.asarray(landmarks, float))
    voxel_ml = abs(np.linalg.det(aff[:3, :3])) / 1000.0
    return {f"{Label(c).name.lower()}_ml": round(float((lab == c).sum() * voxel_ml), 2) for c in range(1, 5)}


def write_manifest(bank: PathLike, rows: list[dict[str, Any]]) -> Path:
    """Write ``atlases.tsv`` (atomically) in ``bank``."""
    from ssll.io import atomic_path

    path = Path(bank) / MANIFEST
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS, delimiter="\t", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


_LOADED: dict[tuple[Any, ...], list[Atlas]] = {}


def load_bank(bank: PathLike) -> list[Atlas]:
    """Load an atlas bank's labels, affines and landmarks (images stay on disk until needed).

    A process that refines several volumes (``ssll refine ... --and ...``) reads the bank once:
    the result is kept per bank folder while none of its files changes (names, sizes, times).

    Raises:
        AtlasError: no manifest, an empty bank, a bad id, or an unreadable atlas file.
    """
    path = Path(bank) / MANIFEST
    if not path.is_file():
        raise AtlasError(f"{bank}: no {MANIFEST}: not an atlas bank (build one with `ssll atlas build`)")
    stats = ((f.name, f.stat()) for f in Path(bank).iterdir() if f.is_file())
    key = (str(path.resolve()), *sorted((name, st.st_mtime_ns, st.st_size) for name, st in stats))
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = _read_bank(Path(bank))
    return list(_LOADED[key])


def _read_bank(bank: Path) -> list[Atlas]:
    path = bank / MANIFEST
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows:
        raise AtlasError(f"{path}: the atlas bank is empty")
    out = []
    for r in rows:
        aid = r.get("atlas_id") or ""
        try:
            validate_subject_id(aid)
        except Exception as exc:
            raise AtlasError(f"{path}: bad atlas id {aid!r}") from exc
        f = bank / r["file"]
        try:
            with np.load(f) as z:
                lab, aff, lm = z["labels"], z["affine"], z["landmarks"]
        except (OSError, KeyError, ValueError) as exc:
            raise AtlasError(f"{f}: atlas {aid}: unreadable ({exc})") from exc
        if lab.ndim != 3 or aff.shape != (4, 4) or lm.shape != (6, 3):
            raise AtlasError(f"{f}: atlas {aid}: labels {lab.shape}, affine {aff.shape}, landmarks {lm.shape}")
        out.append(Atlas(aid, f, lab, aff, lm))
    return out


def centroid_affine(target: Array, target_affine: Array, atlas: Array, atlas_affine: Array) -> Array:
    """4x4 world(target) -> world(atlas) translation aligning the two hearts' centroids (label-only start).

    Raises:
        RegistrationError: a segmentation is empty.
    """
    def centre(lab: Array, aff: Array) -> Array:
        idx = np.argwhere(np.asarray(lab) > 0)
        if idx.size == 0:
            raise RegistrationError("centroid_affine: a segmentation is empty")
        return np.asarray(aff)[:3, :3] @ idx.mean(0) + np.asarray(aff)[:3, 3]

    out = np.eye(4)
    out[:3, 3] = centre(atlas, atlas_affine) - centre(target, target_affine)
    return out


def _grid_points(shape: tuple[int, ...], stride: int) -> Array:
    idx = [np.arange(0, n, stride) for n in shape]
    return np.stack(np.meshgrid(*idx, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)


def warp_labels_nearest(atlas: Atlas, world_to_atlas: Array, points_world: Array) -> Array:
    """Atlas labels at world points ``(P, 3)`` after ``world_to_atlas`` (nearest neighbour; 0 outside)."""
    v = (np.linalg.inv(atlas.affine) @ world_to_atlas).astype(np.float32)
    # axis-major (3, P): each coordinate contiguous, so the bounds checks below are plain vector ops
    r = np.rint(v[:3, :3] @ np.asarray(points_world, np.float32).T + v[:3, 3:]).astype(np.int32)
    n = atlas.labels.shape
    inside = (r[0] >= 0) & (r[0] < n[0]) & (r[1] >= 0) & (r[1] < n[1]) & (r[2] >= 0) & (r[2] < n[2])
    for a in range(3):
        np.clip(r[a], 0, n[a] - 1, out=r[a])
    flat = (r[0] * n[1] + r[1]) * n[2] + r[2]
    return np.where(inside, atlas.labels.reshape(-1)[flat], 0).astype(np.uint8)


def select_atlases(
    target_labels: Array,
    target_affine: Array,
    target_landmarks: Array,
    bank: list[Atlas],
    cfg: AtlasConfig | None = None,
    *,
    ignore_rv_wall: bool = False,
) -> list[dict[str, Any]]:
    """Rank every atlas by NMI after its landmark affine (or centroid alignment, ``cfg.init="labels"``);
    return the top ``cfg.top_k``.

    A heart has one handedness, so the landmark affines from a target to a bank's atlases are either mostly
    proper (det > 0) or, where the target image's world frame is a mirror image of the patient (a header
    without the true patient orientation: ACDC's files put every heart so), mostly reflections. The
    majority decides which the target is; the atlases whose affine is of the other kind are skipped, as
    landmarks in the wrong order would give them. A mirrored target gets its atlases mirrored into it.

    Args:
        target_labels: ``(I, J, K)`` target segmentation on the (cropped) working grid.
        target_affine: its 4x4 voxel -> world mm.
        target_landmarks: ``(6, 3)`` target landmarks, world mm.
        bank: the atlases.
        ignore_rv_wall: count the atlases' RV wall as background (a target without one;
            :attr:`AtlasConfig.rv_wall_from_atlases`).

    Returns:
        One dict per kept atlas, best first: ``atlas`` (:class:`Atlas`), ``affine`` (4x4 world(target)
        -> world(atlas)), ``nmi``, ``rank`` (1-based), ``mirrored`` (the target's frame is the atlases'
        mirror image: the affines are reflections). Atlases whose landmark affine fails (too few
        landmarks, coplanar, of the minority's handedness) are skipped; fewer than ``top_k`` are returned (with a
        warning) when fewer are usable.

    Raises:
        AtlasError: no atlas is usable.
    """
    cfg = cfg or AtlasConfig()
    pts = _grid_points(target_labels.shape, cfg.nmi_stride)
    s = cfg.nmi_stride
    tl = np.asarray(target_labels)[::s, ::s, ::s].reshape(-1)
    world = pts @ np.asarray(target_affine)[:3, :3].T.astype(np.float32) + np.asarray(target_affine)[:3, 3]
    starts, errors = [], []
    for a in bank:
        try:
            if cfg.init == "labels":
                starts.append((a, centroid_affine(target_labels, target_affine, a.labels, a.affine)))
            else:
                starts.append((a, landmark_affine(target_landmarks, a.landmarks, what=f"atlas {a.atlas_id}",
                                                  allow_reflection=True)))
        except RegistrationError as exc:
            errors.append(str(exc))
            continue
    flipped = [bool(np.linalg.det(aff[:3, :3]) < 0) for _, aff in starts]
    mirrored = 2 * sum(flipped) > len(starts)
    starts = [s for s, f in zip(starts, flipped) if f == mirrored]
    scored = []
    for a, aff in starts:
        warped = warp_labels_nearest(a, aff, world)
        scored.append((nmi(tl, rv_wall_as_background(warped) if ignore_rv_wall else warped), a, aff))
    if not scored:
        first = f"; first: {errors[0]}" if errors else ""
        raise AtlasError(f"no usable atlas in a bank of {len(bank)}: every {cfg.init} affine failed "
                         f"(target landmarks missing, coplanar or in the wrong order?{first})")
    if len(scored) < cfg.top_k:
        import warnings

        warnings.warn(f"{cfg.top_k} atlases asked for, {len(scored)} usable in a bank of {len(bank)}", stacklevel=2)
    scored.sort(key=lambda t: -t[0])
    return [{"atlas": a, "affine": aff, "nmi": float(v), "rank": r + 1, "mirrored": mirrored}
            for r, (v, a, aff) in enumerate(scored[: cfg.top_k])]



def read_sheet(path: PathLike) -> list[tuple[str, Path]]:
    """An atlas source sheet (TSV with columns ``atlas_id`` and ``image``; relative paths are
    relative to the sheet).

    Raises:
        AtlasError: missing columns, a bad or duplicate id.
    """
    p = Path(path)
    with p.open(newline="") as fh:
        rows = list(csv.DictReader((line for line in fh if not line.startswith("#")), delimiter="\t"))
    if not rows or not {"atlas_id", "image"} <= set(rows[0]):
        raise AtlasError(f"{p}: an atlas sheet needs the columns atlas_id and image")
    out, seen = [], set()
    for r in rows:
        aid = r["atlas_id"]
        try:
            validate_subject_id(aid)
        except Exception as exc:
            raise AtlasError(f"{p}: bad atlas id {aid!r}") from exc
        if aid in seen:
            raise AtlasError(f"{p}: duplicate atlas id {aid}")
        seen.add(aid)
        img = Path(r["image"])
        out.append((aid, img if img.is_absolute() else p.parent / img))
    return out


def run_atlas_build(*, sources: list[tuple[str, Path]], out_dir: PathLike, weights: PathLike,
                    margin_mm: float = 20.0, batch_size: int = 4) -> Path:
    """I/O layer of ``ssll atlas build``: segment HR volumes with SSLLN-HR (one model load) and write the bank.

    Each source image is preprocessed to the working grid, segmented (labels and landmarks, as
    the paper makes its atlases: network output, not manual truth), cropped to the heart and
    written as ``<atlas_id>.npz``; ``atlases.tsv`` lists them. A source that fails (unreadable,
    no heart found) is reported and left out; the bank is written when at least one atlas is made.

    Raises:
        AtlasError: no atlas could be made.
    """
    import logging

    from ssll.errors import SsllError
    from ssll.io import load_image
    from ssll.nn.infer import landmark_points, load_model, predict
    from ssll.postprocess import keep_largest_components
    from ssll.preprocess import preprocess_volume

    log = logging.getLogger("ssll")
    model = load_model(weights)
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    for s in range(0, len(sources), batch_size):
        chunk = []
        for aid, img_path in sources[s : s + batch_size]:
            try:
                work, rec = preprocess_volume(load_image(img_path))
                chunk.append((aid, img_path, work, rec))
            except SsllError as exc:
                log.error("atlas %s: %s: %s", aid, img_path, exc)
        if not chunk:
            continue
        labels, lmap, _conf = predict(model, np.stack([c[2].array for c in chunk]))
        for n, (aid, img_path, work, rec) in enumerate(chunk):
            lab = keep_largest_components(labels[n])
            pts = landmark_points(lmap[n], rec)  # world mm
            if not np.isfinite(pts).all() or not (lab == Label.LV_CAVITY).any():
                log.error("atlas %s: %s: the network found no heart or not all six landmarks; left out", aid, img_path)
                continue
            vols = write_atlas(out / f"{aid}.npz", image=work.array, labels=lab, affine=rec.working_affine,
                               landmarks=pts, margin_mm=margin_mm)
            rows.append({"atlas_id": aid, "file": f"{aid}.npz", "source_image": str(img_path),
                         "weights": str(weights), **vols})
    if not rows:
        raise AtlasError(f"{out}: no atlas could be made from {len(sources)} source image(s)")
    return write_manifest(out, rows)
