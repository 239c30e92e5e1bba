"""Shared fixtures: synthetic bi-ventricular volumes with anisotropic spacing, file writers,
synthetic DICOM series, and the path to the real data under ../shared/data (skip if absent)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

# ../shared/data beside the checkout (as on development machines and in CI); SSLL_SHARED_DATA overrides
SHARED_DATA = Path(os.environ.get("SSLL_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def acdc_dir() -> Path:
    return SHARED_DATA / "acdc" / "training"


@pytest.fixture
def acdc() -> Path:
    d = acdc_dir()
    if not d.is_dir():
        pytest.skip("real data ../shared/data/acdc/training is absent")
    return d


def biv_phantom(shape=(64, 60, 12), spacing=(1.5, 1.5, 8.0), centre=None) -> np.ndarray:
    """Two-ventricle label phantom (canonical labels) on a grid of ``spacing`` mm.

    LV: cylinder-ish ellipsoid cavity radius 20 mm with a 8 mm wall; RV: a crescent cavity
    to one side with a 3 mm wall.
    """
    ii, jj, kk = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    c = np.array(centre if centre is not None else [(n - 1) / 2 for n in shape])
    x = (ii - c[0]) * spacing[0]
    y = (jj - c[1]) * spacing[1]
    z = (kk - c[2]) * spacing[2]
    lab = np.zeros(shape, np.uint8)
    r_lv = np.sqrt(x**2 + y**2 + (z / 2.5) ** 2)
    rv_x = x + 22.0
    r_rv = np.sqrt((rv_x / 1.3) ** 2 + y**2 + (z / 2.5) ** 2)
    lab[(r_rv < 25.0)] = 4
    lab[(r_rv < 22.0)] = 3
    lab[r_lv < 28.0] = 2
    lab[r_lv < 20.0] = 1
    return lab


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None, spacing=(1.5, 1.5, 8.0)) -> Path:
    if affine is None:
        affine = np.diag([*spacing, 1.0])
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return path


def oblique_affine(spacing=(1.5, 1.5, 8.0), origin=(-40.0, 25.0, 10.0), angle=0.5) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0.0], [s * 0.8, c * 0.8, 0.6], [-s * 0.6, -c * 0.6, 0.8]])
    rot, _ = np.linalg.qr(rot)
    a = np.eye(4)
    a[:3, :3] = rot * np.asarray(spacing)
    a[:3, 3] = origin
    return a


def image_from_labels(lab: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    val = np.array([60.0, 400.0, 120.0, 380.0, 130.0])
    return (val[lab] + rng.normal(0, 10, lab.shape)).astype(np.float32)


def write_dicom_series(
    folder: Path,
    *,
    n_slices: int = 4,
    n_phases: int = 3,
    rows: int = 24,
    cols: int = 20,
    spacing=(1.4, 1.2),
    step: float = 8.0,
    skip: set[tuple[int, int]] = frozenset(),
    duplicate: tuple[int, int] | None = None,
    tilt_slice: int | None = None,
    series_per_slice: bool = False,
    repeat_slice: int | None = None,
    series_numbers: bool = True,
    description: str | None = None,
    offset: int = 0,
    uid: str = "1.2.826.0.1.3680043.2.1125.1",
) -> tuple[np.ndarray, np.ndarray]:
    """Write a synthetic cine series; pixel value encodes (slice, phase, row, col).

    ``series_per_slice``: each slice position its own series (UK Biobank's layout), SeriesNumber
    10 + slice; ``repeat_slice``: that slice acquired again, as a second series of SeriesNumber 99
    written first, with pixel values 5000 higher (the expected array holds the repeat's values);
    ``series_numbers``: False leaves SeriesNumber out; ``description``: the SeriesDescription;
    ``offset``: added to every pixel value (a second series told apart from the first); ``uid``: the
    SeriesInstanceUID (per-slice series append ``.k``).

    Returns the expected array ``(cols, rows, slices, phases)`` and RAS affine.
    """
    folder.mkdir(parents=True, exist_ok=True)
    r = np.array([0.0, 1.0, 0.0])
    c = np.array([0.6, 0.0, -0.8])
    n = np.cross(r, c)
    origin = np.array([10.0, -20.0, 30.0])
    data = np.zeros((cols, rows, n_slices, n_phases), np.float32)
    inst = 0
    # write slices in a scrambled order so reading must sort them
    order = [2, 0, 3, 1] + list(range(4, n_slices)) if n_slices >= 4 else list(range(n_slices))
    writes = ([(repeat_slice, True)] if repeat_slice is not None else []) + [(k, False) for k in order]
    for k, again in writes:
        for t in range(n_phases):
            inst += 1
            if (k, t) in skip:
                continue
            arr = (offset + 1000 * k + 100 * t + np.add.outer(np.arange(rows), 2 * np.arange(cols))).astype(np.int16)
            if again:
                arr = arr + 5000
                data[:, :, k, t] = arr.T
            elif k != repeat_slice:
                data[:, :, k, t] = arr.T
            img = sitk.GetImageFromArray(arr[None])
            img.SetSpacing((spacing[1], spacing[0], step))
            ipp = origin + k * step * n
            iop = np.concatenate([r, c])
            if tilt_slice == k:
                iop = np.concatenate([[1.0, 0.0, 0.0], [0.0, 0.6, -0.8]])
            tags = {
                "0008|0060": "MR",
                "0020|000e": uid + (f".{k}{'.9' if again else ''}" if series_per_slice else ""),
                "0020|000d": "1.2.826.0.1.3680043.2.1125.2",
                "0020|0032": "\\".join(f"{v:.4f}" for v in ipp),
                "0020|0037": "\\".join(f"{v:.6f}" for v in iop),
                "0028|0030": f"{spacing[0]}\\{spacing[1]}",
                "0018|1060": f"{20.0 * t + 0.3 * k:.2f}",
                "0020|0013": str(inst),
                "0018|0050": str(step),
            }
            if description is not None:
                tags["0008|103e"] = description
            if series_numbers:
                tags["0020|0011"] = str(99 if again else 10 + k if series_per_slice else 1)
            for key, v in tags.items():
                img.SetMetaData(key, v)
            w = sitk.ImageFileWriter()
            w.KeepOriginalImageUIDOn()
            names = [f"im{inst:04d}.dcm"]
            if duplicate == (k, t):
                names.append(f"im{inst:04d}_dup.dcm")
            for name in names:
                w.SetFileName(str(folder / name))
                w.Execute(img)
    lps = np.eye(4)
    lps[:3, 0] = r * spacing[1]
    lps[:3, 1] = c * spacing[0]
    lps[:3, 2] = n * step
    lps[:3, 3] = origin
    return data, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
