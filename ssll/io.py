"""File input and output: NIfTI volumes, JSON records, atomic writes.

Geometry rules (documented in README, "Orientation and geometry"):

* The voxel-to-world affine is taken from the NIfTI sform when its column norms agree with the
  header's voxel sizes (pixdim), else from the qform when one is set, else from the sform's
  direction and origin with pixdim spacing. ACDC files, for example, carry an sform with unit
  scales beside pixdim of 1.56x1.56x10 mm; ITK and nibabel disagree on such files, we use the
  pixdim spacing (the acquisition's true voxel size) and say so with a warning.
* Outputs on an input's own grid are written with the input's header geometry fields
  unchanged (sform, qform and their codes), so any reader places them exactly on the input.
  Outputs on the working grid get one clean affine in both sform and qform (code 1, scanner).
* Every file is written to a temporary name in the destination folder and renamed into place,
  so an interrupted job never leaves a half-written output.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ssll.errors import InputImageError
from ssll.labels import to_canonical
from ssll.types import Array, PathLike, Volume, voxel_size

__all__ = [
    "MAX_AXIS",
    "MAX_VOXELS",
    "atomic_path",
    "load_image",
    "load_labels",
    "load_nifti",
    "read_json",
    "save_nifti",
    "save_unit_image",
    "write_json",
]

#: Largest accepted number of voxels in one file (4D included): 2**31.
MAX_VOXELS = 2**31
#: Largest accepted extent of one axis in voxels.
MAX_AXIS = 4096


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary name keeps the full suffix (``.nii.gz``) so writers infer the format from it. The
    file gets the permissions of any newly created file (``0o666`` less the process's umask), not the
    owner-only ``0o600`` of a temporary file, so a group sharing a cohort's results can read them.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(dest.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name.split('.')[0]}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: PathLike) -> Any:
    """Read a JSON file, raising :class:`InputImageError` naming the file on failure."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputImageError(f"{path}: cannot read JSON ({exc})") from None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _check_gzip(path: Path) -> None:
    """Raise if a ``.gz`` file is not gzip or is truncated (decompress it fully)."""
    with path.open("rb") as fh:
        magic = fh.read(2)
    if magic != b"\x1f\x8b":
        raise InputImageError(f"{path}: not a gzip file although named .gz")
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass
    except (EOFError, OSError, zlib.error) as exc:
        raise InputImageError(f"{path}: truncated or corrupt gzip data ({exc})") from None


def _raw_pixdim(path: Path, header_cls: type) -> Array | None:
    """pixdim[1:4] as stored in the file (nibabel silently repairs bad values on load)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            hdr = header_cls.from_fileobj(fh, check=False)
        return np.asarray(hdr["pixdim"][1:4], dtype=np.float64)
    except Exception:  # unreadable header: load already succeeded, keep nibabel's view
        return None


#: The ``descrip`` of an output written on an input's own grid with the input's geometry fields kept verbatim
#: (:func:`save_nifti`). Reading such a file does not repeat the input's header warning: the stage that read
#: the input gave it, and a cohort's logs would otherwise carry it once per derived file.
KEPT_GEOMETRY_DESCRIP = b"ssll: geometry fields kept from the input"


def _resolve_affine(img: nib.Nifti1Image, path: Path) -> Array:
    hdr = img.header
    zooms = np.asarray(hdr.get_zooms()[:3], dtype=np.float64)
    if np.any(~np.isfinite(zooms)) or np.any(zooms <= 0):
        raise InputImageError(f"{path}: voxel spacing {zooms.tolist()} mm is not positive")
    sform, scode = img.get_sform(coded=True)
    qform, qcode = img.get_qform(coded=True)
    if sform is not None and scode > 0:
        norms = voxel_size(sform)
        if np.allclose(norms, zooms, rtol=1e-3, atol=1e-4):
            return np.asarray(sform, dtype=np.float64)
        if qform is not None and qcode > 0:
            affine = np.asarray(qform, dtype=np.float64)
        else:
            if np.any(norms <= 0):
                raise InputImageError(f"{path}: singular sform")
            affine = np.array(sform, dtype=np.float64)
            affine[:3, :3] = sform[:3, :3] / norms * zooms
        message = (f"{path}: sform scales {np.round(norms, 4).tolist()} disagree with pixdim "
                   f"{np.round(zooms, 4).tolist()} mm; using pixdim spacing")
        if bytes(hdr["descrip"]).rstrip(b"\0") == KEPT_GEOMETRY_DESCRIP:
            logging.getLogger("ssll").debug(message)
        else:
            warnings.warn(message, stacklevel=3)
        return affine
    if qform is not None and qcode > 0:
        return np.asarray(qform, dtype=np.float64)
    # Neither set (analyze-style): nibabel's fallback is a diagonal with pixdim spacing.
    return np.asarray(img.affine, dtype=np.float64)


def load_nifti(path: PathLike, *, ndim: tuple[int, ...] = (3,), dtype: Any = np.float32) -> Volume:
    """Read a NIfTI file into a :class:`Volume` after checking it is a usable image.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        ndim: accepted numbers of dimensions (trailing singleton axes beyond 3 are dropped).
        dtype: dtype of the returned array.

    Returns:
        The volume, array shape ``(I, J, K)`` or ``(I, J, K, T)``, affine in RAS+ mm.

    Raises:
        InputImageError: missing, truncated, not NIfTI, wrong dimensionality, non-positive
            spacing, absurd size, or NaN/Inf voxels. The message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise InputImageError(f"{p}: no such file")
    if p.name.endswith(".gz"):
        _check_gzip(p)
    try:
        img = nib.load(str(p))
    except Exception as exc:  # nibabel raises several unrelated types for non-NIfTI input
        raise InputImageError(f"{p}: not a readable NIfTI image ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputImageError(f"{p}: not a NIfTI image ({type(img).__name__})")
    raw_pixdim = _raw_pixdim(p, type(img.header))
    if raw_pixdim is not None and np.any(raw_pixdim <= 0):
        raise InputImageError(f"{p}: voxel spacing {raw_pixdim.tolist()} mm is not positive")
    shape = tuple(int(n) for n in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in ndim:
        raise InputImageError(f"{p}: {len(shape)}D image of shape {shape}; expected {' or '.join(f'{n}D' for n in ndim)}")
    if any(n < 1 for n in shape) or any(n > MAX_AXIS for n in shape) or int(np.prod(shape)) > MAX_VOXELS:
        raise InputImageError(f"{p}: absurd image size {shape}")
    if min(shape[:3]) < 2:
        raise InputImageError(f"{p}: image of shape {shape} is a single slice or line, not a volume")
    affine = _resolve_affine(img, p)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputImageError(f"{p}: singular or non-finite voxel-to-world affine")
    try:
        data = np.asarray(img.dataobj, dtype=dtype).reshape(shape)
    except Exception as exc:
        raise InputImageError(f"{p}: cannot read voxel data ({type(exc).__name__}: {exc})") from None
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        n_bad = int(np.count_nonzero(~np.isfinite(data)))
        raise InputImageError(f"{p}: {n_bad} NaN or infinite voxel values")
    return Volume(data, affine, header=img.header.copy())


def load_image(path: PathLike, *, ndim: tuple[int, ...] = (3,)) -> Volume:
    """Read an intensity image (float32) and reject constant images.

    Raises:
        InputImageError: as :func:`load_nifti`, or the image is constant.
    """
    vol = load_nifti(path, ndim=ndim, dtype=np.float32)
    if float(vol.array.max()) == float(vol.array.min()):
        raise InputImageError(f"{path}: constant image (every voxel is {float(vol.array.min())})")
    return vol


def load_labels(path: PathLike, convention: str = "canonical") -> Volume:
    """Read a 3D label map and map it to canonical labels (``uint8``).

    Raises:
        InputImageError: as :func:`load_nifti`.
        LabelError: a value outside ``convention``.
    """
    vol = load_nifti(path, ndim=(3,), dtype=np.float64)
    vol.array = to_canonical(vol.array, convention, what=str(path))
    return vol


def save_nifti(path: PathLike, vol: Volume, *, dtype: Any = None) -> None:
    """Write ``vol`` atomically as NIfTI-1.

    If ``vol.header`` is set (a volume on an input's own grid) its geometry fields are kept
    verbatim and ``descrip`` says so (:data:`KEPT_GEOMETRY_DESCRIP`); otherwise ``vol.affine`` is written as both
    sform and qform (code 1).
    """
    data = np.asarray(vol.array if dtype is None else vol.array.astype(dtype))
    if vol.header is not None:
        hdr = vol.header.copy()
        hdr.set_data_dtype(data.dtype)
        img = nib.Nifti1Image(data, None, header=hdr)
        img.header.set_data_shape(data.shape)
        zooms = list(vol.header.get_zooms()[:3]) + [1.0] * (data.ndim - 3)
        img.header.set_zooms(zooms[: data.ndim])
        img.header["scl_slope"] = np.nan
        img.header["scl_inter"] = np.nan
        img.header["descrip"] = KEPT_GEOMETRY_DESCRIP
    else:
        img = _image_with_affine(data, vol.affine)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def _image_with_affine(data: Array, affine: Array) -> nib.Nifti1Image:
    """A NIfTI-1 image of ``data`` with ``affine`` (voxel -> RAS+ mm) as both sform and qform (code 1)."""
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    return img


#: Steps of :func:`save_unit_image`: values in [0, 1] are stored in steps of 1 / 65535 (1.5e-5).
UNIT_IMAGE_STEPS = 65535


def save_unit_image(path: PathLike, vol: Volume) -> None:
    """Write an image whose values lie in [0, 1] (a working-grid image) atomically as ``uint16`` with
    ``scl_slope`` = 1 / :data:`UNIT_IMAGE_STEPS`: every NIfTI reader (nibabel, SimpleITK / ITK, ITK-SNAP, 3D
    Slicer) applies the slope, so it reads back as float within half a step (7.6e-6) of ``vol.array``, at about
    half the size of float32 (gzip compresses the interpolated float32 mantissas poorly).

    Raises:
        ValueError: a value outside [0, 1] or not finite.
    """
    a = np.asarray(vol.array, dtype=np.float64)
    if a.size and (not np.all(np.isfinite(a)) or a.min() < 0.0 or a.max() > 1.0):
        raise ValueError(f"save_unit_image: {path}: values outside [0, 1]")
    img = _image_with_affine(np.rint(a * UNIT_IMAGE_STEPS).astype(np.uint16), vol.affine)
    img.header.set_slope_inter(1.0 / UNIT_IMAGE_STEPS, 0.0)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
