"""Study input: 4D cine NIfTI and DICOM short-axis cine series to 3D ED/ES volumes.

DICOM geometry (PS3.3 C.7.6.2): ImageOrientationPatient gives the row direction ``r`` (towards
increasing column index) and the column direction ``c`` (towards increasing row index) in LPS+;
PixelSpacing is (row spacing, column spacing) in mm. Slices are ordered along the slice normal
``n = r x c`` by the projection of ImagePositionPatient on ``n``; the third axis of the volume
is the mean step between consecutive slice positions (so a tilted stack stays exact). Phases
within a slice position are ordered by TriggerTime, or InstanceNumber where that is absent. A
stack may be one series or one series per slice position (UK Biobank); a slice position held by
several series (acquired again) takes the series of highest SeriesNumber, and a multi-slice series
beside per-slice ones (UK Biobank's InlineVF copy) is not read.
The array is indexed ``[column, row, slice, phase]`` and the affine is converted to RAS+.

ED/ES choice for a cine: ED is frame 0 unless given; ES, unless given, is the frame whose
intensities differ most from ED (mean absolute difference over the volume) and, once a
segmentation exists, the frame with the smallest LV cavity (:func:`es_from_lv_volumes`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ssll.errors import DicomError, InputImageError
from ssll.types import Array, PathLike, Volume

log = logging.getLogger("ssll.ingest")

__all__ = ["CinePhases", "choose_phases", "dicom_layout", "es_from_lv_volumes", "frame", "read_cine", "read_cycle_record",
           "read_dicom_cine", "read_dicom_zip", "run_ingest"]

_TAGS = {
    "ipp": "0020|0032",
    "iop": "0020|0037",
    "spacing": "0028|0030",
    "trigger": "0018|1060",
    "instance": "0020|0013",
    "series": "0020|000e",
    "series_number": "0020|0011",
    "description": "0008|103e",
    "rows": "0028|0010",
    "cols": "0028|0011",
}


@dataclass(frozen=True)
class CinePhases:
    """Chosen ED and ES frame indices (0-based) and how each was chosen."""

    ed: int
    es: int
    ed_method: str
    es_method: str


def choose_phases(cine: Array, *, ed: int | None = None, es: int | None = None) -> CinePhases:
    """Choose ED and ES frames of a cine ``(I, J, K, T)``.

    ED is ``ed`` or frame 0. ES is ``es`` or the frame maximising the mean absolute intensity
    difference from ED (blood replaced by myocardium as the ventricles contract).

    Raises:
        InputImageError: fewer than 2 frames, or a given index is out of range.
    """
    if cine.ndim != 4:
        raise InputImageError(f"choose_phases: expected a 4D cine, got shape {cine.shape}")
    n = cine.shape[3]
    if n < 2:
        raise InputImageError(f"cine has {n} frame; need at least 2 for ED and ES")
    for name, idx in (("ED", ed), ("ES", es)):
        if idx is not None and not 0 <= idx < n:
            raise InputImageError(f"{name} frame {idx} is out of range 0..{n - 1}")
    ed_i = 0 if ed is None else int(ed)
    if es is not None:
        return CinePhases(ed_i, int(es), "given" if ed is not None else "frame 0", "given")
    ref = cine[..., ed_i].astype(np.float32)
    diffs = np.array([np.mean(np.abs(cine[..., t].astype(np.float32) - ref)) for t in range(n)])
    diffs[ed_i] = -np.inf
    return CinePhases(ed_i, int(np.argmax(diffs)), "given" if ed is not None else "frame 0", "max intensity change")


def es_from_lv_volumes(lv_volumes_ml: Array) -> int:
    """ES as the frame with the smallest LV cavity volume (ml per frame, shape ``(T,)``)."""
    v = np.asarray(lv_volumes_ml, dtype=np.float64)
    if v.ndim != 1 or v.size < 2 or not np.all(np.isfinite(v)):
        raise ValueError(f"es_from_lv_volumes: need a finite 1D series of >= 2 volumes, got {v!r}")
    return int(np.argmin(v))


def frame(cine: Volume, t: int) -> Volume:
    """One 3D frame of a cine volume (same affine; header dropped)."""
    return Volume(np.ascontiguousarray(cine.array[..., t]), cine.affine.copy())


def _floats(text: str, n: int, tag: str, path: Path) -> Array:
    try:
        vals = np.array([float(v) for v in text.strip().split("\\")], dtype=np.float64)
    except ValueError:
        raise DicomError(f"{path}: tag {tag} is not numeric: {text!r}") from None
    if vals.size != n or not np.all(np.isfinite(vals)):
        raise DicomError(f"{path}: tag {tag} should hold {n} numbers, got {text!r}")
    return vals


def _one_series_per_slice(root: Path | str, infos: list[tuple[Path, dict]], normal: Array) -> list[tuple[Path, dict]]:
    """The images of a stack stored as one series per slice position (as UK Biobank stores its
    short-axis cines): where several series hold the same position (a slice acquired again), the one
    of highest SeriesNumber (the later) is kept and the others are logged as dropped. A series over
    several positions beside per-slice series of at least two positions is a copy of the stack (UK
    Biobank's zips add one, ``CINE_segmented_SAX_InlineVF``, made by the scanner's inline analysis):
    it is dropped, with a warning naming its SeriesDescription.

    Raises:
        DicomError: several series over several positions and fewer than two per-slice positions
            beside them, or repeated series of one position that cannot be ordered (SeriesNumber
            missing or equal).
    """
    by_series: dict[str, list[tuple[Path, dict]]] = defaultdict(list)
    for p, m in infos:
        by_series[m["series"]].append((p, m))
    by_pos: dict[float, list[tuple[float, str]]] = defaultdict(list)
    multi: dict[str, int] = {}
    for uid, items in by_series.items():
        pos = {round(float(_floats(m["ipp"], 3, "ImagePositionPatient", p) @ normal), 2) for p, m in items}
        if len(pos) > 1:
            multi[uid] = len(pos)
            continue
        num = items[0][1]["series_number"]
        try:
            number = float(num) if num not in (None, "") else float("nan")
        except ValueError:
            number = float("nan")
        by_pos[pos.pop()].append((number, uid))
    if multi:
        uid, n_pos = next(iter(multi.items()))
        if len(by_pos) < 2:
            raise DicomError(f"{root}: {len(by_series)} series in one folder, and series {uid} "
                             f"({by_series[uid][0][0].name}) holds {n_pos} slice positions; give one series per "
                             "folder, or one series per slice position")
        for uid, n_pos in multi.items():
            desc = (by_series[uid][0][1].get("description") or "").strip() or "no SeriesDescription"
            log.warning("%s: series %s (%s) holds %d slice positions beside %d one-slice series; it is taken for a "
                        "copy of the stack and not read", root, uid, desc, n_pos, len(by_pos))
    keep: set[str] = set()
    for pos, cands in sorted(by_pos.items()):
        if len(cands) > 1:
            numbers = [n for n, _ in cands]
            if not all(np.isfinite(numbers)) or len(set(numbers)) != len(numbers):
                raise DicomError(f"{root}: {len(cands)} series at slice position {pos} mm and no distinct "
                                 "SeriesNumber to tell which was acquired last")
            cands.sort()
            log.warning("%s: slice position %s mm was acquired %d times; using series %g, dropping %s", root, pos,
                        len(cands), cands[-1][0], ", ".join(f"{n:g}" for n, _ in cands[:-1]))
        keep.add(cands[-1][1])
    return [(p, m) for p, m in infos if m["series"] in keep]


def dicom_layout(folder: PathLike, *, source: str | None = None) -> tuple[list[list[Path]], Array]:
    """The layout of a short-axis cine DICOM folder: the file of each slice and phase, and the
    stack's affine (ordering rules in the module docstring).

    Args:
        folder: folder holding the DICOM files of one series (any file names), or of one series per
            slice position (UK Biobank's layout; a position acquired again: the later series is used).
        source: what to call the folder in log messages (the archive it was extracted from).

    Returns:
        ``paths[k][t]``, the file of slice ``k`` (ordered along the normal) and phase ``t``, and
        the RAS+ voxel-to-world affine (mm) of the stack.

    Raises:
        DicomError: no DICOM files, several multi-slice series, mixed orientations or pixel spacings,
            duplicate slices, slice positions with different phase counts (missing images),
            or uneven slice spacing (a missing slice).
    """
    root = Path(folder)
    if not root.is_dir():
        raise DicomError(f"{root}: not a folder of DICOM files")
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    infos = []
    for p in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        reader.LoadPrivateTagsOff()
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            continue  # not a DICOM image file (e.g. DICOMDIR or a text file)
        if not all(reader.HasMetaDataKey(_TAGS[k]) for k in ("ipp", "iop", "spacing")):
            raise DicomError(f"{p}: lacks ImagePositionPatient, ImageOrientationPatient or PixelSpacing")
        meta = {k: reader.GetMetaData(t) if reader.HasMetaDataKey(t) else None for k, t in _TAGS.items()}
        infos.append((p, meta))
    if not infos:
        raise DicomError(f"{root}: no readable DICOM image files")
    iop0 = _floats(infos[0][1]["iop"], 6, "ImageOrientationPatient", infos[0][0])
    sp0 = _floats(infos[0][1]["spacing"], 2, "PixelSpacing", infos[0][0])
    r, c = iop0[:3], iop0[3:]
    normal = np.cross(r, c)
    if abs(np.linalg.norm(normal) - 1.0) > 1e-3:
        raise DicomError(f"{infos[0][0]}: ImageOrientationPatient is not two orthonormal vectors")
    if len({m["series"] for _, m in infos}) > 1:
        infos = _one_series_per_slice(source or root, infos, normal)
    by_pos: dict[float, list[tuple[float, int, Path, Array]]] = defaultdict(list)
    positions: dict[float, Array] = {}
    for p, m in infos:
        iop = _floats(m["iop"], 6, "ImageOrientationPatient", p)
        if np.max(np.abs(iop - iop0)) > 1e-3:
            raise DicomError(f"{p}: orientation {iop.round(4).tolist()} differs from {iop0.round(4).tolist()} (mixed orientations)")
        if np.max(np.abs(_floats(m["spacing"], 2, "PixelSpacing", p) - sp0)) > 1e-4:
            raise DicomError(f"{p}: pixel spacing differs from the rest of the series")
        ipp = _floats(m["ipp"], 3, "ImagePositionPatient", p)
        key = round(float(ipp @ normal), 2)
        trig = float(m["trigger"]) if m["trigger"] not in (None, "") else float("nan")
        inst = int(float(m["instance"])) if m["instance"] not in (None, "") else 0
        by_pos[key].append((trig, inst, p, ipp))
        positions[key] = ipp
    keys = sorted(by_pos)
    counts = {k: len(v) for k, v in by_pos.items()}
    n_phase = max(counts.values())
    short = [k for k in keys if counts[k] != n_phase]
    if short:
        raise DicomError(
            f"{root}: slice positions {short} mm have {[counts[k] for k in short]} images, others {n_phase} (missing images)"
        )
    ordered: list[list[Path]] = []
    for k in keys:
        items = by_pos[k]
        use_trigger = all(np.isfinite(t) for t, _, _, _ in items)
        items.sort(key=(lambda x: (x[0], x[1])) if use_trigger else (lambda x: x[1]))
        sort_keys = [x[0] if use_trigger else x[1] for x in items]
        if len(set(sort_keys)) != len(sort_keys):
            raise DicomError(f"{root}: duplicate images at slice position {k} mm ({items[0][2].name} and others)")
        ordered.append([x[2] for x in items])
    if len(keys) < 2:
        raise DicomError(f"{root}: a single slice position; a short-axis stack needs at least 2")
    steps = np.diff(np.array(keys))
    med = float(np.median(steps))
    if med <= 0 or np.max(np.abs(steps - med)) > max(0.1 * med, 0.05):
        raise DicomError(
            f"{root}: uneven slice spacing {np.round(steps, 2).tolist()} mm (a missing or duplicate slice?)"
        )
    ipp_first, ipp_last = positions[keys[0]], positions[keys[-1]]
    lps = np.eye(4)
    lps[:3, 0] = r * sp0[1]
    lps[:3, 1] = c * sp0[0]
    lps[:3, 2] = (ipp_last - ipp_first) / (len(keys) - 1)
    lps[:3, 3] = ipp_first
    return ordered, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def read_dicom_cine(folder: PathLike, *, source: str | None = None) -> Volume:
    """Read a short-axis cine DICOM series from a folder into a 4D volume.

    Args:
        folder: see :func:`dicom_layout`.
        source: what to call the folder in log messages (the archive it was extracted from).

    Returns:
        :class:`Volume` with array ``(columns, rows, slices, phases)`` (float32) and a RAS+
        affine in mm; single-phase series give ``T = 1``.

    Raises:
        DicomError: see :func:`dicom_layout`.
    """
    root = Path(folder)
    ordered, ras = dicom_layout(root, source=source)
    keys = ordered
    n_phase = len(ordered[0])
    first = sitk.GetArrayFromImage(sitk.ReadImage(str(ordered[0][0])))
    n_rows, n_cols = first.shape[-2], first.shape[-1]
    data = np.empty((n_cols, n_rows, len(keys), n_phase), dtype=np.float32)
    for k_i, paths in enumerate(ordered):
        for t_i, p in enumerate(paths):
            arr = sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
            arr = arr.reshape(arr.shape[-2:]) if arr.ndim > 2 else arr
            if arr.shape != (n_rows, n_cols):
                raise DicomError(f"{p}: image size {arr.shape} differs from {(n_rows, n_cols)}")
            data[:, :, k_i, t_i] = arr.T
    if not np.all(np.isfinite(data)):
        raise InputImageError(f"{root}: NaN or infinite pixel values")
    return Volume(data, ras)


def read_dicom_zip(path: PathLike) -> Volume:
    """Read a short-axis cine DICOM series from a zip archive (as UK Biobank ships each study),
    without unpacking it beside the data: the archive's files are extracted, flat and under their
    index (no member path is followed), into a temporary folder that is removed afterwards, and read
    as :func:`read_dicom_cine` reads a folder. Non-DICOM members (a manifest) are skipped.

    Raises:
        DicomError: not a readable zip archive, or see :func:`dicom_layout` (messages name the archive).
    """
    import tempfile
    import zipfile

    src = Path(path)
    try:
        with zipfile.ZipFile(src) as zf, tempfile.TemporaryDirectory(prefix="ssll-dicom-") as tmp:
            for i, info in enumerate(m for m in zf.infolist() if not m.is_dir()):
                name = Path(info.filename.replace("\\", "/")).name
                with zf.open(info) as fin, open(Path(tmp) / f"{i:06d}_{name}", "wb") as fout:
                    while chunk := fin.read(1 << 20):
                        fout.write(chunk)
            try:
                return read_dicom_cine(tmp, source=str(src))
            except InputImageError as exc:
                raise type(exc)(str(exc).replace(tmp, str(src))) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise DicomError(f"{src}: not a readable zip archive of DICOM files ({exc})") from None


def read_cine(src: PathLike) -> Volume:
    """A cine as one 4D volume ``(I, J, K, T)``, affine RAS+ mm: a 4D NIfTI file, a DICOM cine folder or a zip
    archive of one (:func:`read_dicom_cine`, :func:`read_dicom_zip`).

    Raises:
        InputImageError: unreadable input, not 4D, or a single phase (the message names the file).
    """
    from ssll.io import load_image

    src = Path(src)
    if src.is_dir() or src.suffix.lower() == ".zip":
        cine = read_dicom_cine(src) if src.is_dir() else read_dicom_zip(src)
        if cine.array.shape[3] == 1:
            raise DicomError(f"{src}: a single-phase series; ED and ES need a cine")
        return cine
    return load_image(src, ndim=(4,))


def read_cycle_record(path: PathLike) -> dict:
    """``ssll cycle``'s ``cycle.json``, checked for the frames it gives (integer ``ed_frame``, ``es_frame``,
    ``n_frames``).

    Raises:
        InputImageError: unreadable, or not such a record (the message names the file).
    """
    from ssll.io import read_json

    rec = read_json(path)
    keys = ("ed_frame", "es_frame", "n_frames")
    if not isinstance(rec, dict) or not all(isinstance(rec.get(k), int) and not isinstance(rec.get(k), bool)
                                            for k in keys):
        raise InputImageError(f"{path}: not a cycle record (integer {', '.join(keys)})")
    return rec


def _frames_from_cycle(path: PathLike, n_frames: int, *, ed: int | None, es: int | None) -> dict[str, int]:
    """The curve's ED / ES frames from ``ssll cycle``'s JSON, for those not given; checked against the cine."""
    rec = read_cycle_record(path)
    if rec["n_frames"] != n_frames:
        raise InputImageError(f"{path}: a cycle of {rec['n_frames']} frames, but the cine has {n_frames}")
    return {k: rec[f"{k}_frame"] for k, given in (("ed", ed), ("es", es)) if given is None}


def run_ingest(
    *,
    out_ed: PathLike,
    out_es: PathLike,
    out_record: PathLike,
    image: PathLike | None = None,
    ed_image: PathLike | None = None,
    es_image: PathLike | None = None,
    ed: int | None = None,
    es: int | None = None,
    frames_from: PathLike | None = None,
) -> CinePhases:
    """Write the ED and ES 3D volumes of a study (I/O layer of the ``ingest`` stage).

    Input is either ``image`` (a 4D cine NIfTI, a DICOM cine folder or a zip archive of one; frames chosen by
    :func:`choose_phases`) or the two 3D files ``ed_image`` and ``es_image`` (copied with
    their geometry unchanged). With ``frames_from`` (``ssll cycle``'s JSON of the same cine), a frame not
    given as ``ed`` / ``es`` is the curve's: ED the largest LV cavity, ES the smallest.

    Raises:
        InputImageError: unreadable or unusable input (the message names the file).
    """
    from ssll.io import load_image, save_nifti, write_json

    if image is not None:
        src = Path(image)
        cine = read_cine(src)
        from_curve = _frames_from_cycle(frames_from, cine.array.shape[3], ed=ed, es=es) if frames_from else {}
        phases = choose_phases(cine.array, ed=from_curve.get("ed", ed), es=from_curve.get("es", es))
        phases = replace(phases, **{f"{k}_method": f"{'largest' if k == 'ed' else 'smallest'} LV cavity (ssll cycle)"
                                    for k in from_curve})
        ed_vol, es_vol = frame(cine, phases.ed), frame(cine, phases.es)
        if cine.header is not None:  # keep the 4D file's sform/qform on the 3D frames
            ed_vol.header = es_vol.header = _header_3d(cine.header)
        record = {"source": str(src), "n_frames": int(cine.array.shape[3]), **phases.__dict__}
    else:
        if ed_image is None or es_image is None:
            raise InputImageError("ingest: give --image, or both --ed-image and --es-image")
        if frames_from:
            raise InputImageError(f"ingest: {frames_from}: frames from a cycle apply to a cine (--image), not to ED/ES files")
        ed_vol, es_vol = load_image(ed_image), load_image(es_image)
        phases = CinePhases(0, 1, "separate file", "separate file")
        record = {"source": [str(ed_image), str(es_image)], **phases.__dict__}
    for v, name in ((ed_vol, "ED"), (es_vol, "ES")):
        if float(v.array.max()) == float(v.array.min()):
            raise InputImageError(f"{name} frame is constant")
    save_nifti(out_ed, ed_vol)
    save_nifti(out_es, es_vol)
    write_json(out_record, record)
    return phases


def _header_3d(header):  # noqa: ANN001, ANN202 - nibabel header
    h = header.copy()
    shape = h.get_data_shape()[:3]
    h.set_data_shape(shape)
    return h
