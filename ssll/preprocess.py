"""Preprocessing of Duan et al. 2019, Section III-B, with an exact way back to the input grid.

A short-axis volume is resampled to the *working grid*: 1.25x1.25x2 mm voxels, 192x192x80,
centred on the centre of the input's field of view (no region-of-interest detection), with
the input's own axis directions (so axis 2 stays the slice axis). Intensities are clipped to
the 1st-99th percentile of the input's voxel values and scaled to [0, 1]; the padding outside
the input's field of view is 0.

The :class:`GridRecord` holds both grids (shapes and voxel-to-world affines). Every later
result on the working grid can be put back on the original grid with :func:`to_original`
(nearest neighbour for labels), and world coordinates are shared by both grids.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ssll.errors import InputImageError
from ssll.types import Array, PathLike, Volume, voxel_size

__all__ = [
    "IN_PLANE_SPACING_MM",
    "SLICE_SPACING_MM",
    "WORKING_SHAPE",
    "WORKING_SPACING",
    "GridRecord",
    "PreprocessConfig",
    "check_cine_spacing",
    "grow_along_slices",
    "input_fov_mask",
    "labels_to_working",
    "labels_to_working_soft",
    "normalise_intensity",
    "original_header",
    "preprocess_volume",
    "probabilities_on_original",
    "probabilities_to_original",
    "resample",
    "to_original",
    "working_affine",
]

#: Working voxel size in mm (i, j, k).
WORKING_SPACING: tuple[float, float, float] = (1.25, 1.25, 2.0)
#: Working grid shape (i, j, k).
WORKING_SHAPE: tuple[int, int, int] = (192, 192, 80)
#: Voxel sizes (mm) a short-axis cine stack can have: in-plane (axes i, j) and between slices (axis k).
#: Clinical and UK Biobank cines are 0.6-2.5 mm in plane with 5-20 mm between slices; outside these
#: limits the header's units are almost surely not mm (a file written in metres or microns) or the
#: image is not a short-axis stack, and the network would see a heart of the wrong size.
IN_PLANE_SPACING_MM: tuple[float, float] = (0.2, 5.0)
SLICE_SPACING_MM: tuple[float, float] = (0.5, 30.0)


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings of the preprocessing stage.

    Attributes:
        spacing: working voxel size in mm. Defaults to 1.25x1.25x2.
        shape: working grid shape. Defaults to 192x192x80.
        percentiles: intensity clipping percentiles. Defaults to (1, 99).
        order: spline order of image interpolation (1 linear, 3 cubic). Defaults to 1.
    """

    spacing: tuple[float, float, float] = WORKING_SPACING
    shape: tuple[int, int, int] = WORKING_SHAPE
    percentiles: tuple[float, float] = (1.0, 99.0)
    order: int = 1

    @classmethod
    def from_mapping(cls, m: dict[str, Any] | None) -> PreprocessConfig:
        """Build from a config mapping; unknown keys raise ``ValueError`` naming the key."""
        m = dict(m or {})
        unknown = set(m) - {"spacing", "shape", "percentiles", "order"}
        if unknown:
            raise ValueError(f"PreprocessConfig: unknown keys {sorted(unknown)}")
        kw: dict[str, Any] = {}
        if "spacing" in m:
            kw["spacing"] = tuple(float(v) for v in m["spacing"])
        if "shape" in m:
            kw["shape"] = tuple(int(v) for v in m["shape"])
        if "percentiles" in m:
            kw["percentiles"] = tuple(float(v) for v in m["percentiles"])
        if "order" in m:
            kw["order"] = int(m["order"])
        cfg = cls(**kw)
        if len(cfg.spacing) != 3 or min(cfg.spacing) <= 0:
            raise ValueError(f"PreprocessConfig: spacing must be 3 positive mm values, got {cfg.spacing}")
        if len(cfg.shape) != 3 or min(cfg.shape) < 1:
            raise ValueError(f"PreprocessConfig: shape must be 3 positive sizes, got {cfg.shape}")
        lo, hi = cfg.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"PreprocessConfig: percentiles must satisfy 0 <= lo < hi <= 100, got {cfg.percentiles}")
        return cfg


@dataclass
class GridRecord:
    """The exact relation between an input grid and the working grid.

    Attributes:
        input_shape: ``(I, J, K)`` of the input.
        input_affine: input voxel -> world RAS+ mm, 4x4.
        working_shape: ``(I, J, K)`` of the working grid.
        working_affine: working voxel -> world RAS+ mm, 4x4.
        intensity_range: the clipping values (input intensity units) mapped to 0 and 1.
    """

    input_shape: tuple[int, int, int]
    input_affine: Array
    working_shape: tuple[int, int, int]
    working_affine: Array
    intensity_range: tuple[float, float] = (0.0, 1.0)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        d = asdict(self)
        d["input_affine"] = np.asarray(self.input_affine).tolist()
        d["working_affine"] = np.asarray(self.working_affine).tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GridRecord:
        """Inverse of :meth:`to_dict`."""
        return cls(
            input_shape=tuple(int(v) for v in d["input_shape"]),  # type: ignore[arg-type]
            input_affine=np.asarray(d["input_affine"], dtype=np.float64),
            working_shape=tuple(int(v) for v in d["working_shape"]),  # type: ignore[arg-type]
            working_affine=np.asarray(d["working_affine"], dtype=np.float64),
            intensity_range=tuple(float(v) for v in d.get("intensity_range", (0.0, 1.0))),  # type: ignore[arg-type]
            extra=dict(d.get("extra", {})),
        )


def working_affine(
    input_affine: Array,
    input_shape: tuple[int, ...],
    *,
    spacing: tuple[float, float, float] = WORKING_SPACING,
    shape: tuple[int, int, int] = WORKING_SHAPE,
) -> Array:
    """Affine of the working grid for an input grid.

    The working grid has the input's axis directions, voxel size ``spacing`` (mm) and is
    centred on the centre of the input's field of view.

    Args:
        input_affine: 4x4 input voxel -> world (mm).
        input_shape: input ``(I, J, K, ...)``; only the first three are used.
        spacing: working voxel size (mm).
        shape: working grid shape.

    Returns:
        4x4 working voxel -> world (mm).
    """
    a = np.asarray(input_affine, dtype=np.float64)
    directions = a[:3, :3] / voxel_size(a)
    centre_in = (np.asarray(input_shape[:3], dtype=np.float64) - 1.0) / 2.0
    centre_world = a[:3, :3] @ centre_in + a[:3, 3]
    out = np.eye(4)
    out[:3, :3] = directions * np.asarray(spacing, dtype=np.float64)
    out[:3, 3] = centre_world - out[:3, :3] @ ((np.asarray(shape, dtype=np.float64) - 1.0) / 2.0)
    return out


def resample(
    array: Array,
    src_affine: Array,
    dst_affine: Array,
    dst_shape: tuple[int, int, int],
    *,
    order: int,
    cval: float = 0.0,
) -> Array:
    """Resample a 3D array from one grid onto another sharing world space.

    Args:
        array: ``(I, J, K)`` data on the source grid.
        src_affine: 4x4 source voxel -> world (mm).
        dst_affine: 4x4 destination voxel -> world (mm).
        dst_shape: destination ``(I, J, K)``.
        order: 0 nearest neighbour (labels), 1 linear, 3 cubic.
        cval: value outside the source field of view.

    Returns:
        Array of shape ``dst_shape``, dtype of ``array`` for ``order=0`` else float32.
    """
    t = np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ np.asarray(dst_affine, dtype=np.float64)
    shape_in = np.asarray(array.shape[:3])
    out_shape = tuple(int(n) for n in dst_shape)
    # Source voxel coordinates of every destination voxel, one destination slice at a time.
    grid = np.stack(np.meshgrid(np.arange(out_shape[0]), np.arange(out_shape[1]), indexing="ij"), 0)
    grid = grid.reshape(2, -1).astype(np.float64)
    out = np.empty(out_shape, dtype=array.dtype if order == 0 else np.float32)
    src = array if order == 0 else np.asarray(array, dtype=np.float32)
    if order > 1:
        src = ndimage.spline_filter(src, order=order, output=np.float32)
    for k in range(out_shape[2]):
        coords = t[:3, :2] @ grid + (t[:3, 2] * k + t[:3, 3])[:, None]
        # A voxel covers [-0.5, n - 0.5) of its index range: points there take the edge value.
        inside = np.all((coords >= -0.5) & (coords < shape_in[:, None] - 0.5), axis=0)
        if order == 0:
            idx = np.clip(np.floor(coords + 0.5).astype(np.int64), 0, shape_in[:, None] - 1)
            vals = src[idx[0], idx[1], idx[2]]
        else:
            vals = ndimage.map_coordinates(src, coords, order=order, mode="nearest", prefilter=False)
        vals = np.where(inside, vals, cval)
        out[:, :, k] = vals.reshape(out_shape[:2])
    return out


def normalise_intensity(array: Array, lo: float, hi: float) -> Array:
    """Clip to ``[lo, hi]`` and scale linearly to [0, 1] (float32)."""
    if not hi > lo:
        raise InputImageError(f"intensity range [{lo}, {hi}] is empty: image is (nearly) constant")
    out = (np.clip(array, lo, hi) - lo) / (hi - lo)
    return out.astype(np.float32)


def preprocess_volume(vol: Volume, cfg: PreprocessConfig | None = None, *,
                      grid_affine: Array | None = None) -> tuple[Volume, GridRecord]:
    """Resample a 3D short-axis image to the working grid and normalise its intensities.

    Args:
        vol: input image, array ``(I, J, K)``, any voxel size (mm).
        cfg: settings; defaults to the paper's.
        grid_affine: 4x4 working voxel -> world (mm) of a grid of ``cfg.shape`` to use instead of
            :func:`working_affine`'s (centred on the input's field of view); benchmarks move it.

    Returns:
        The working-grid image (float32 in [0, 1], shape ``cfg.shape``, clean affine) and the
        :class:`GridRecord` relating it to the input grid.

    Raises:
        InputImageError: the image is not 3D, or its 1st-99th percentile range is empty.
    """
    cfg = cfg or PreprocessConfig()
    if vol.array.ndim != 3:
        raise InputImageError(f"preprocess_volume: expected a 3D image, got shape {vol.array.shape}")
    lo, hi = (float(v) for v in np.percentile(vol.array, cfg.percentiles))
    if not hi > lo:
        raise InputImageError(
            f"intensity {cfg.percentiles[0]}-{cfg.percentiles[1]} percentile range [{lo}, {hi}] is empty"
        )
    w_aff = (working_affine(vol.affine, vol.array.shape, spacing=cfg.spacing, shape=cfg.shape)
             if grid_affine is None else np.asarray(grid_affine, dtype=np.float64))
    res = resample(vol.array, vol.affine, w_aff, cfg.shape, order=cfg.order, cval=lo)
    img = normalise_intensity(res, lo, hi)
    record = GridRecord(
        input_shape=vol.shape3,
        input_affine=vol.affine.copy(),
        working_shape=tuple(cfg.shape),  # type: ignore[arg-type]
        working_affine=w_aff,
        intensity_range=(lo, hi),
    )
    return Volume(img, w_aff), record


def labels_to_working(labels: Array, record: GridRecord) -> Array:
    """Put a label map from the input grid onto the working grid (nearest neighbour, uint8)."""
    return resample(
        np.asarray(labels, dtype=np.uint8), record.input_affine, record.working_affine, record.working_shape, order=0
    )


def labels_to_working_soft(labels: Array, record: GridRecord, n_classes: int = 5) -> Array:
    """Class fractions of a label map on the working grid, ``(C, I, J, K)`` float32.

    Each class's indicator is interpolated linearly, so a working voxel keeps the partial-volume
    fractions of the input voxels it overlaps (outside the input: background).
    """
    out = np.empty((n_classes, *record.working_shape), np.float32)
    for c in range(n_classes):
        out[c] = resample((labels == c).astype(np.float32), record.input_affine, record.working_affine,
                          record.working_shape, order=1, cval=1.0 if c == 0 else 0.0)
    return out


def probabilities_on_original(prob: Array, record: GridRecord) -> Array:
    """Class probabilities ``(C, I, J, K)`` on the working grid put onto the input grid, each class map
    interpolated linearly (outside the working field of view: background). Returns ``(C, *input_shape)``
    float32."""
    if tuple(prob.shape[1:]) != tuple(record.working_shape):
        raise ValueError(f"probabilities_on_original: shape {prob.shape} does not match {record.working_shape}")
    return np.stack([
        resample(np.asarray(prob[c], np.float32), record.working_affine, record.input_affine, record.input_shape,
                 order=1, cval=1.0 if c == 0 else 0.0)
        for c in range(prob.shape[0])
    ])


def probabilities_to_original(prob: Array, record: GridRecord) -> Array:
    """Labels on the input grid from class probabilities on the working grid.

    Each class map ``(C, I, J, K)`` is interpolated linearly onto the input grid
    (:func:`probabilities_on_original`) and the most probable class taken; this keeps sub-voxel boundary
    information that nearest-neighbour transport of hard labels loses when the input grid is finer than
    1.25 mm. Outside the working field of view the result is background.

    Returns:
        ``uint8`` labels of shape ``record.input_shape``.
    """
    return probabilities_on_original(prob, record).argmax(axis=0).astype(np.uint8)


def to_original(array: Array, record: GridRecord, *, order: int = 0) -> Array:
    """Put a working-grid array back onto the input grid.

    Args:
        array: ``(I, J, K)`` on the working grid.
        record: the grid record written by preprocessing.
        order: 0 (nearest, labels) or 1 (linear, probabilities).

    Returns:
        Array of shape ``record.input_shape``.
    """
    if tuple(array.shape[:3]) != tuple(record.working_shape):
        raise ValueError(f"to_original: array shape {array.shape} is not the working shape {record.working_shape}")
    return resample(array, record.working_affine, record.input_affine, record.input_shape, order=order)


def original_header(record: GridRecord) -> Any:
    """The NIfTI header of the input the record came from (to write original-grid outputs with
    the input's own geometry fields), or None when that file is gone."""
    import nibabel as nib

    src = record.extra.get("input_path")
    if src and Path(src).is_file():
        return nib.load(str(src)).header.copy()
    return None


def check_cine_spacing(affine: Array, source: PathLike) -> None:
    """Refuse an image whose voxel size (mm, from the ``(4, 4)`` voxel-to-world ``affine``; axes i, j in
    plane, k between slices) is outside :data:`IN_PLANE_SPACING_MM` / :data:`SLICE_SPACING_MM`.

    Raises:
        InputImageError: naming ``source``, the voxel size and the limits.
    """
    sp = voxel_size(affine)
    (lo, hi), (slo, shi) = IN_PLANE_SPACING_MM, SLICE_SPACING_MM
    if not (lo <= sp[0] <= hi and lo <= sp[1] <= hi and slo <= sp[2] <= shi):
        raise InputImageError(
            f"{source}: voxel size {np.round(sp, 4).tolist()} mm is not a short-axis cine's (in plane {lo}-{hi} mm, "
            f"{slo}-{shi} mm between slices): are the header's units mm, and is the third axis the slice axis?")


def run_preprocess(
    *,
    image: str,
    out_image: str,
    out_record: str,
    cfg: PreprocessConfig | None = None,
    labels: str | None = None,
    labels_convention: str = "canonical",
    out_labels: str | None = None,
) -> GridRecord:
    """I/O layer of the ``preprocess`` stage: image (and optional labels) to the working grid.

    Writes the normalised working-grid image, the :class:`GridRecord` JSON (with the input
    path, so later stages can write results on the original grid), and, when ``labels`` is
    given, the canonical labels on the working grid.
    """
    from ssll.io import load_image, load_labels, save_nifti, save_unit_image, write_json

    vol = load_image(image)
    check_cine_spacing(vol.affine, image)
    work, record = preprocess_volume(vol, cfg)
    record.extra["input_path"] = str(image)
    if labels is not None:
        lab = load_labels(labels, labels_convention)
        if lab.shape3 != vol.shape3 or not np.allclose(lab.affine, vol.affine, atol=1e-3):
            raise InputImageError(f"{labels}: label grid does not match image {image}")
        if out_labels is None:
            raise ValueError("run_preprocess: labels given without out_labels")
        save_nifti(out_labels, Volume(labels_to_working(lab.array, record), work.affine), dtype=np.uint8)
    save_unit_image(out_image, work)
    write_json(out_record, record.to_dict())
    return record


def input_fov_mask(record: GridRecord, *, margin_mm: float = 0.0) -> Array:
    """Working-grid voxels inside the input image's field of view, ``(I, J, K)`` bool, grown by
    ``margin_mm`` along the slice axis (axis 2)."""
    ones = np.ones(record.input_shape, np.uint8)
    fov = resample(ones, record.input_affine, record.working_affine, record.working_shape, order=0).astype(bool)
    return grow_along_slices(fov, record, margin_mm)


def grow_along_slices(mask: Array, record: GridRecord, margin_mm: float) -> Array:
    """A working-grid mask ``(I, J, K)`` grown by ``margin_mm`` along the slice axis (axis 2)."""
    n = int(np.ceil(margin_mm / float(voxel_size(record.working_affine)[2]))) if margin_mm > 0 else 0
    return ndimage.binary_dilation(mask, structure=np.ones((1, 1, 3), bool), iterations=n) if n else mask
