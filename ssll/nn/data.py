"""Training data: a cache of working-grid volumes, and on-the-fly augmentation with SimpleITK.

Each cached sample is an ``.npz`` with ``image`` (float16, ``(192, 192, 80)`` in [0, 1]),
``seg`` (uint8 canonical labels), ``lmk`` (uint8 landmark map), ``points`` ((6, 3) voxel
coordinates), ``affine`` (working grid) and ``has_rv_wall`` (bool). Augmentation follows Duan et al. 2019, Section III-B:
intensity rescaling and a 3D random affine about the volume centre (in-plane translation,
isotropic scaling, rotation about one random axis), applied consistently to image, labels and
landmark map; then a random in-plane crop (the network is fully convolutional in-plane, so
training on crops is exact at inference on the full grid and cuts CPU time).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ssll.labels import Label
from ssll.landmarks import landmark_map, landmarks_from_labels, world_to_voxel
from ssll.preprocess import WORKING_SPACING, labels_to_working, preprocess_volume
from ssll.types import Array

__all__ = ["GRID_ROTATIONS", "AugmentConfig", "VolumeDataset", "acdc_cases", "augment", "cache_acdc", "cache_phantoms", "held_out_cases",
           "phantom_sample"]


def acdc_cases(root: str | Path) -> list[dict[str, object]]:
    """List ACDC training cases: one dict per patient and phase (paths, group, frame)."""
    out = []
    for pdir in sorted(Path(root).glob("patient[0-9][0-9][0-9]")):
        info = {}
        for line in (pdir / "Info.cfg").read_text().splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                info[k.strip()] = v.strip()
        for phase in ("ED", "ES"):
            fr = int(info[phase])
            out.append({
                "patient": pdir.name,
                "group": info.get("Group", ""),
                "phase": phase,
                "image": pdir / f"{pdir.name}_frame{fr:02d}.nii.gz",
                "labels": pdir / f"{pdir.name}_frame{fr:02d}_gt.nii.gz",
            })
    return out


def held_out_cases(root: str | Path, config: str | Path, *, phases: Sequence[str] = ("ED", "ES")) -> list[dict[str, object]]:
    """The :func:`acdc_cases` of the patients a training config keeps out (its ``validation_patients``),
    at ``phases``: the held-out set every SSLLN-LR benchmark scores.

    Raises:
        ValueError: the config names no validation patients, or none of them is under ``root``.
    """
    import yaml

    val = set((yaml.safe_load(Path(config).read_text()) or {}).get("validation_patients") or [])
    if not val:
        raise ValueError(f"{config}: no validation_patients")
    cases = [c for c in acdc_cases(root) if c["patient"] in val and c["phase"] in phases]
    if not cases:
        raise ValueError(f"{root}: none of the {len(val)} validation patients of {config} is there")
    return cases


def cache_acdc(root: str | Path, cache_dir: str | Path, *, radius_mm: float = 4.0) -> list[Path]:
    """Preprocess every ACDC case into ``cache_dir`` (skips cases already cached)."""
    from ssll.io import load_image, load_labels  # NIfTI reading only where ACDC files are read

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    for case in acdc_cases(root):
        dest = cache / f"{case['patient']}_{case['phase']}.npz"
        paths.append(dest)
        if dest.exists():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = load_image(case["image"])  # type: ignore[arg-type]
            lab = load_labels(case["labels"], "acdc")  # type: ignore[arg-type]
        work, rec = preprocess_volume(img)
        seg = labels_to_working(lab.array, rec)
        pts = landmarks_from_labels(seg, rec.working_affine, what=str(case["labels"]))
        lmk = landmark_map(pts, seg.shape, rec.working_affine, radius_mm=radius_mm)
        tmp = dest.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, image=work.array.astype(np.float16), seg=seg, lmk=lmk, points=pts,
                            affine=rec.working_affine,
                            has_rv_wall=np.bool_((seg == Label.RV_WALL).any()), group=str(case["group"]))
        tmp.replace(dest)
    return paths


def cache_phantoms(biv_me: str | Path, cache_dir: str | Path, seeds: Sequence[int], *, mode: str,
                   radius_mm: float = 4.0) -> list[Path]:
    """Cache HR phantoms (``mode="hr"``) or their simulated-LR versions (``mode="lr"``).

    Files are named ``phantom<mode><seed>_<phase>.npz`` (one "patient" id per phantom subject). The
    image is preprocessed exactly as at inference (the LR stack is resampled to the working grid);
    labels are the HR truth (``hr``) or the LR labels brought to the working grid by nearest
    neighbour (``lr``, as a human annotation of the LR stack would be); landmarks are the exact ones
    from the mesh, stored as working-grid voxel coordinates. All four structures are labelled.

    Raises:
        ValueError: ``mode`` is not ``hr`` or ``lr``.
    """
    from ssll.phantom import make_phantom, require_bank

    if mode not in ("hr", "lr"):
        raise ValueError(f"cache_phantoms: mode must be 'hr' or 'lr', got {mode!r}")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    bank = None
    for seed in seeds:
        dests = {ph: cache / f"phantom{mode}{seed:05d}_{ph}.npz" for ph in ("ED", "ES")}
        paths.extend(dests.values())
        if all(d.exists() for d in dests.values()):
            continue
        bank = bank or require_bank(biv_me)
        samples = phantom_sample(make_phantom(bank, seed), seed, mode=mode, radius_mm=radius_mm)
        for phase, dest in dests.items():
            smp = samples[phase]
            tmp = dest.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, image=smp["image"].astype(np.float16), seg=smp["seg"], lmk=smp["lmk"],
                                points=smp["points"], affine=smp["affine"], has_rv_wall=np.bool_(True),
                                group=f"phantom_{mode}")
            tmp.replace(dest)
    return paths


def phantom_sample(subject: dict[str, object], seed: int, *, mode: str, radius_mm: float = 4.0) -> dict[str, dict[str, Any]]:
    """One phantom subject (:func:`ssll.phantom.make_phantom`) as training samples, per phase.

    Returns:
        ``{"ED": s, "ES": s}``, each with ``image`` ``(192, 192, 80)`` float32 in [0, 1], ``seg`` and ``lmk``
        uint8 on the working grid, ``points`` ``(6, 3)`` working voxel coordinates, ``affine`` (working grid)
        and ``record`` (:class:`ssll.preprocess.GridRecord` as a dict).
    """
    from ssll.simulate import LRConfig, simulate_lr
    from ssll.types import Volume

    if mode not in ("hr", "lr"):
        raise ValueError(f"phantom_sample: mode must be 'hr' or 'lr', got {mode!r}")
    out: dict[str, dict[str, Any]] = {}
    for phase in ("ED", "ES"):
        p = subject[phase]  # type: ignore[index]
        image, labels, affine = p["image"], p["labels"], subject["affine"]
        if mode == "lr":
            sim = simulate_lr(image, labels, affine, LRConfig(), np.random.default_rng([7, seed, len(phase)]))
            image, labels, affine = sim["image"], sim["labels"], sim["affine"]
        work, rec = preprocess_volume(Volume(image, affine))
        seg = labels_to_working(labels, rec)
        pts = world_to_voxel(np.asarray(p["landmarks"], float), rec.working_affine)
        lmk = landmark_map(pts, seg.shape, rec.working_affine, radius_mm=radius_mm)
        out[phase] = {"image": work.array, "seg": seg, "lmk": lmk, "points": pts, "affine": rec.working_affine,
                      "record": rec.to_dict()}
    return out


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges. Angles in degrees, translation in mm, scale as a factor.

    ``translate_mm`` is the in-plane shift (the paper's); ``translate_slice_mm`` a shift along the
    slice axis (the first layer sees slices as channels, so without it each channel is tied to one
    position along the long axis). ``drop_prob`` is the chance that a slab of ``drop_slices``
    (min, max) consecutive working-grid slices (2 mm each) through the heart is zero-filled in the
    image while the targets keep it, as the paper's Fig 8 test does: missing and lost slices.
    ``elastic_mm`` adds a smooth random in-plane deformation (a displacement of that standard deviation, mm,
    at control points ``elastic_spacing_mm`` apart, interpolated between them) to image and targets alike;
    ``noise_sd`` adds Gaussian noise of that standard deviation to the [0, 1] image.
    ``slice_jitter_mm`` moves each slice in-plane by its own random shift (that standard deviation per
    axis, mm, drawn at planes ``slice_jitter_spacing_mm`` apart along the slice axis, linear between
    them; :func:`slice_jitter`), image and targets alike: the breath-hold shift of each acquired slice,
    which the expert's contours follow, so the network learns to follow a slice rather than the stack.
    ``grid_turns`` composes a random one of the eight rotations that map the working grid onto itself
    and keep the heart's handedness (:data:`GRID_ROTATIONS`): a network trained with it no longer depends
    on which way round the heart lies in the grid, except for mirror images (``ssll.nn.orientation``).
    All four are off by default (the shipped weights were trained without them), and draw no random
    numbers when off.
    """

    rotate_deg: float = 15.0
    translate_mm: float = 15.0
    scale: tuple[float, float] = (0.9, 1.1)
    gamma: tuple[float, float] = (0.7, 1.4)
    intensity_scale: tuple[float, float] = (0.9, 1.1)
    crop: int = 128
    translate_slice_mm: float = 0.0
    drop_prob: float = 0.0
    drop_slices: tuple[int, int] = (5, 20)
    elastic_mm: float = 0.0
    elastic_spacing_mm: float = 40.0
    noise_sd: float = 0.0
    slice_jitter_mm: float = 0.0
    slice_jitter_spacing_mm: float = 10.0
    grid_turns: bool = False


#: the eight rotations (``(3, 3)``, acting on ``(i, j, k)`` mm about the grid centre) that map a working grid
#: with square slices onto itself and keep handedness: the quarter turns about the slice axis, each also
#: turned half round about the in-plane diagonal (which swaps i and j and reverses the slice order). They are
#: the proper orientations of ``ssll.nn.orientation`` (``rot*`` and ``transpose+rot*+reversed``).
GRID_ROTATIONS: tuple[Array, ...] = tuple(
    np.linalg.matrix_power(np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), r)
    @ (np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]) if half else np.eye(3))
    for half in (False, True) for r in range(4))


def slice_jitter(n_slices: int, cfg: AugmentConfig, normal: Callable[..., Any]) -> Array:
    """Random in-plane shift (mm) of every working-grid slice.

    Shifts are drawn at planes ``cfg.slice_jitter_spacing_mm`` apart along the slice axis (at least
    2, the first and last on the end slices), Gaussian with standard deviation ``cfg.slice_jitter_mm``
    per in-plane axis, and interpolated linearly between the planes.

    Args:
        n_slices: ``K``, slices of the grid (voxel size :data:`ssll.preprocess.WORKING_SPACING`, mm).
        cfg: ``slice_jitter_mm`` and ``slice_jitter_spacing_mm``.
        normal: a standard-normal sampler taking ``size`` (as for :func:`elastic_coarse`).

    Returns:
        ``(2, K)`` float32: displacement along i and along j (mm) of each slice.

    Raises:
        ValueError: ``slice_jitter_spacing_mm`` is not positive.
    """
    if not cfg.slice_jitter_spacing_mm > 0:
        raise ValueError(f"slice_jitter_spacing_mm must be positive, got {cfg.slice_jitter_spacing_mm}")
    n = max(2, int(round((n_slices - 1) * WORKING_SPACING[2] / cfg.slice_jitter_spacing_mm)) + 1)
    planes = np.asarray(normal(size=(2, n)), np.float64) * cfg.slice_jitter_mm
    at = np.linspace(0.0, n_slices - 1, n)
    return np.stack([np.interp(np.arange(n_slices), at, p) for p in planes]).astype(np.float32)


def elastic_coarse(shape: tuple[int, int, int], cfg: AugmentConfig, normal: Callable[..., Any]) -> Array:
    """Random in-plane displacements (mm) at the control points of :func:`elastic_field`.

    Control points are ``cfg.elastic_spacing_mm`` apart (at least 2 per axis) and span the grid; each
    carries Gaussian displacements of standard deviation ``cfg.elastic_mm`` along the two in-plane axes.

    Args:
        shape: grid ``(I, J, K)``, voxel size :data:`ssll.preprocess.WORKING_SPACING` (mm).
        cfg: ``elastic_mm`` and ``elastic_spacing_mm``.
        normal: a standard-normal sampler taking ``size`` (``numpy.random.Generator.standard_normal``
            or a wrapper of ``torch.randn``), so both augmentation paths draw from their own generators.

    Returns:
        ``(2, nI, nJ, nK)`` float32: displacement along i and along j (mm) per control point.
    """
    n = [max(2, int(round(s * sp / cfg.elastic_spacing_mm)) + 1) for s, sp in zip(shape, WORKING_SPACING)]
    return (np.asarray(normal(size=(2, *n)), np.float64) * cfg.elastic_mm).astype(np.float32)


def elastic_field(coarse: torch.Tensor, shape: tuple[int, int, int],
                  window: tuple[slice, slice, slice] | None = None) -> torch.Tensor:
    """Control-point displacements interpolated (trilinear, end points on the grid's end voxels) to a grid.

    Separable linear interpolation along each axis (the values of ``interpolate(..., mode="trilinear",
    align_corners=True)`` to float rounding). Each output voxel is computed the same way whatever the
    window, so a window's values equal the same window of the whole grid's, bit for bit.

    Args:
        coarse: ``(B, C, nI, nJ, nK)`` displacements on the control points, on any device.
        shape: the grid ``(I, J, K)`` (any axis order, as long as ``coarse`` follows it).
        window: per axis, the slice of the grid to compute (a training crop); defaults to all of it.

    Returns:
        ``(B, C, I', J', K')`` float32 on ``coarse``'s device, ``I' x J' x K'`` the window's size.
    """
    out = coarse.float()
    for axis, n in enumerate(shape):
        keep = window[axis] if window is not None else slice(None)
        out = _lerp_axis(out, 2 + axis, n, keep)
    return out


def _lerp_axis(x: torch.Tensor, dim: int, n: int, keep: slice) -> torch.Tensor:
    """Linear interpolation of ``x`` along ``dim`` from its ``m`` control points (the first and last on the
    grid's end voxels) to the voxels ``keep`` of an ``n``-voxel grid."""
    m = x.shape[dim]
    pos = torch.arange(n, dtype=torch.float64)[keep]
    if m == 1 or n == 1:
        return x.index_select(dim, torch.zeros(len(pos), dtype=torch.long, device=x.device))
    t = pos * ((m - 1) / (n - 1))
    lo = t.floor().long().clamp(max=m - 2)
    shape = [1] * x.dim()
    shape[dim] = len(pos)
    frac = (t - lo).float().reshape(shape).to(x.device)
    lo = lo.to(x.device)
    return torch.lerp(x.index_select(dim, lo), x.index_select(dim, lo + 1), frac)


def drop_slab(n_slices: int, foreground: Array, u: Sequence[float], cfg: AugmentConfig) -> tuple[int, int]:
    """The slab of slices to zero-fill, ``[start, stop)`` along the slice axis (empty: none).

    Args:
        n_slices: slices in the volume.
        foreground: indices of the slices that hold any label (the slab is centred on one of them).
        u: three uniform draws in [0, 1): whether to drop, the slab length, its centre.
        cfg: ``drop_prob`` and ``drop_slices`` (min, max) in slices.
    """
    if cfg.drop_prob <= 0 or u[0] >= cfg.drop_prob or len(foreground) == 0:
        return 0, 0
    lo, hi = cfg.drop_slices
    k = min(lo + int(u[1] * (hi - lo + 1)), hi)
    centre = int(foreground[min(int(u[2] * len(foreground)), len(foreground) - 1)])
    start = max(centre - k // 2, 0)
    return start, min(start + k, n_slices)


def _to_sitk(arr: Array):
    import SimpleITK as sitk

    im = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    im.SetSpacing(tuple(float(s) for s in WORKING_SPACING))
    return im


def _from_sitk(im) -> Array:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(im).transpose(2, 1, 0)


def augment(image: Array, seg: Array, lmk: Array, cfg: AugmentConfig, rng: np.random.Generator) -> tuple[Array, Array, Array]:
    """Random affine (about the grid centre), intensity change and dropped slab; arrays ``(I, J, K)``."""
    import SimpleITK as sitk  # CPU augmentation only (the GPU path is ssll.nn.gpu_augment)

    shape = image.shape
    ref = _to_sitk(np.zeros(shape, np.float32))
    centre = [(n - 1) / 2 * s for n, s in zip(shape, WORKING_SPACING)]
    axis = int(rng.integers(3))
    ang = np.deg2rad(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)) * (1.0 if axis == 2 else 0.5)
    c, s = np.cos(ang), np.sin(ang)
    rot = np.eye(3)
    a, b = [d for d in range(3) if d != axis]
    rot[a, a], rot[a, b], rot[b, a], rot[b, b] = c, -s, s, c
    if cfg.grid_turns:
        rot = rot @ GRID_ROTATIONS[int(rng.integers(len(GRID_ROTATIONS)))]
    scale = rng.uniform(*cfg.scale)
    tx = sitk.AffineTransform(3)
    tx.SetCenter(centre)
    tx.SetMatrix((rot / scale).ravel().tolist())
    t = rng.uniform(-cfg.translate_mm, cfg.translate_mm, size=2)
    tz = rng.uniform(-cfg.translate_slice_mm, cfg.translate_slice_mm)
    tx.SetTranslation((float(t[0]), float(t[1]), float(tz)))
    if cfg.elastic_mm > 0 or cfg.slice_jitter_mm > 0:
        # output point -> affine(point + displacement): elastic and slice jitter in the output frame, as on the device
        field = np.zeros((3, *shape), np.float32)  # (3, I, J, K): no shift along k
        if cfg.elastic_mm > 0:
            coarse = torch.from_numpy(elastic_coarse(shape, cfg, rng.standard_normal))[None]
            field[:2] = elastic_field(coarse, shape)[0].numpy()
        if cfg.slice_jitter_mm > 0:
            field[:2] += slice_jitter(shape[2], cfg, rng.standard_normal)[:, None, None, :]
        disp = sitk.GetImageFromArray(np.moveaxis(field, 0, -1).transpose(2, 1, 0, 3).astype(np.float64), isVector=True)
        disp.CopyInformation(ref)
        tx = sitk.CompositeTransform([tx, sitk.DisplacementFieldTransform(disp)])
    img = _from_sitk(sitk.Resample(_to_sitk(image.astype(np.float32)), ref, tx, sitk.sitkLinear, 0.0))
    sg = _from_sitk(sitk.Resample(_to_sitk(seg), ref, tx, sitk.sitkNearestNeighbor, 0))
    lm = _from_sitk(sitk.Resample(_to_sitk(lmk), ref, tx, sitk.sitkNearestNeighbor, 0))
    img = np.clip(img, 0, 1) ** rng.uniform(*cfg.gamma) * rng.uniform(*cfg.intensity_scale)
    if cfg.noise_sd > 0:
        img = img + rng.normal(0.0, cfg.noise_sd, size=img.shape)
    start, stop = drop_slab(shape[2], np.flatnonzero(sg.any(axis=(0, 1))), rng.random(3), cfg)
    img[:, :, start:stop] = 0
    return np.clip(img, 0, 1).astype(np.float32), sg, lm


class VolumeDataset(Dataset):
    """Cached working-grid samples as tensors ``(S, H, W)`` image, ``(S, H, W)`` seg and landmarks.

    Args:
        files: cached ``.npz`` samples.
        augment_cfg: augmentation settings, or None for none (validation: full grid, no crop).
        seed: base seed; each item's generator derives from it, the epoch and the index.
    """

    def __init__(self, files: Sequence[Path], augment_cfg: AugmentConfig | None = None, seed: int = 0) -> None:
        self.files = list(files)
        self.cfg = augment_cfg
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        with np.load(self.files[i]) as z:
            image = z["image"].astype(np.float32)
            seg, lmk = z["seg"], z["lmk"]
            has_rv_wall = bool(z["has_rv_wall"])
        if self.cfg is not None:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            image, seg, lmk = augment(image, seg, lmk, self.cfg, rng)
            n = self.cfg.crop
            if n < image.shape[0]:
                o = rng.integers(0, image.shape[0] - n + 1, size=2)
                sl = (slice(o[0], o[0] + n), slice(o[1], o[1] + n))
                image, seg, lmk = image[sl], seg[sl], lmk[sl]
        # [i, j, k] -> [k, i, j]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "seg": torch.from_numpy(np.ascontiguousarray(seg.transpose(2, 0, 1)).astype(np.int64)),
            "lmk": torch.from_numpy(np.ascontiguousarray(lmk.transpose(2, 0, 1)).astype(np.int64)),
            "has_rv_wall": torch.tensor(has_rv_wall),
        }
