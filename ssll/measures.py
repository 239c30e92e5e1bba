"""Clinical measures from canonical label maps: volumes (ml), masses (g), stroke volumes, EF (%).

Each structure is counted by its own canonical label (never by summing label values): voxel
count x voxel volume (mm^3 -> ml). Myocardial mass = wall volume x 1.05 g/ml. With ED and ES:
stroke volume = EDV - ESV (ml) and ejection fraction = 100 x SV / EDV (%).

The RV mass is given only where the segmentation has an RV wall around the RV cavity
(:func:`rv_wall_coverage` at least :data:`RV_WALL_MIN_COVERAGE`): on real scans SSLLN-LR, which learned
the RV wall from phantoms alone (ACDC has no RV-wall label), draws a few scattered RV-wall voxels, whose
"mass" of 0.7-10 g is not a measurement. Nor is the refined model's RV mass there: its RV wall is then
the atlases' (:func:`run_measures`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ssll.labels import Label, check_canonical
from ssll.types import Array, PathLike

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CYCLE_COLUMNS", "MYOCARDIAL_DENSITY_G_PER_ML", "RV_WALL_MIN_COVERAGE", "cardiac_measures", "has_rv_wall",
           "phase_measures", "read_measure_rows", "run_cohort_table", "run_measures", "rv_wall_coverage"]

#: Myocardial density (g/ml).
MYOCARDIAL_DENSITY_G_PER_ML = 1.05

#: below this :func:`rv_wall_coverage` the RV wall is not segmented as a wall and no RV mass is given (a wall
#: over less of the free wall would understate the mass by more than its gaps). The values are far apart:
#: 0.93-0.98 for phantom truths and 0.83-0.89 for SSLLN-LR on simulated thick-slice phantoms, against
#: 0.10-0.48 (median 0.32) for SSLLN-LR on the 40 held-out ACDC volumes and 0.62-0.83 for the refined model on
#: the demo's (0.05-0.34 before it took its RV wall from the atlases, ``AtlasConfig.rv_wall_from_atlases``, 0.39-0.61
#: before its atlases were mirrored into ACDC's frames); that wall is the atlases', so :func:`run_measures` gives no
#: refined RV mass where the segmentation has no RV wall.
RV_WALL_MIN_COVERAGE = 0.7


def rv_wall_coverage(labels: Array) -> float:
    """How much of the RV cavity's free wall the RV-wall label covers.

    Per short-axis slice (in-plane 4-neighbourhood, so thick slices do not count as neighbours): of the RV
    cavity's boundary voxels that do not touch the LV (wall or cavity), the fraction touching the RV wall.

    Args:
        labels: ``(I, J, K)`` canonical labels, axis 2 the slice axis.

    Returns:
        A fraction in [0, 1]; NaN without an RV-cavity boundary away from the LV.
    """
    from scipy import ndimage

    lab = np.asarray(labels)
    plane = np.zeros((3, 3, 1), bool)
    plane[1, :, 0] = plane[:, 1, 0] = True

    def grow(mask: Array) -> Array:
        return ndimage.binary_dilation(mask, plane)

    rv = lab == Label.RV_CAVITY
    free = rv & grow(~rv) & ~grow((lab == Label.LV_WALL) | (lab == Label.LV_CAVITY))
    n = int(free.sum())
    return float((free & grow(lab == Label.RV_WALL)).sum() / n) if n else math.nan


def has_rv_wall(labels: Array) -> bool:
    """Whether ``labels`` ``(I, J, K)`` have an RV wall round the RV cavity: :func:`rv_wall_coverage` at least
    :data:`RV_WALL_MIN_COVERAGE` (False without an RV cavity), the test under which :func:`phase_measures` gives
    an RV mass."""
    return rv_wall_coverage(labels) >= RV_WALL_MIN_COVERAGE


def phase_measures(labels: Array, spacing_mm: tuple[float, float, float], *, what: str = "labels") -> dict[str, float]:
    """Volumes and masses of one phase.

    Args:
        labels: ``(I, J, K)`` canonical labels.
        spacing_mm: voxel size (mm).

    Returns:
        ``lv_cavity_ml``, ``lv_mass_g``, ``rv_cavity_ml``, ``rv_mass_g`` (NaN unless the RV wall covers
        the RV cavity: :func:`rv_wall_coverage` at least :data:`RV_WALL_MIN_COVERAGE`) and
        ``rv_wall_coverage``.
    """
    lab = check_canonical(labels, what=what)
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    counts = np.bincount(lab.ravel(), minlength=5)
    coverage = rv_wall_coverage(lab) if counts[Label.RV_WALL] else 0.0
    return {
        "lv_cavity_ml": counts[Label.LV_CAVITY] * voxel_ml,
        "lv_mass_g": counts[Label.LV_WALL] * voxel_ml * MYOCARDIAL_DENSITY_G_PER_ML,
        "rv_cavity_ml": counts[Label.RV_CAVITY] * voxel_ml,
        "rv_mass_g": (counts[Label.RV_WALL] * voxel_ml * MYOCARDIAL_DENSITY_G_PER_ML
                      if coverage >= RV_WALL_MIN_COVERAGE else math.nan),
        "rv_wall_coverage": coverage,
    }


def cardiac_measures(ed: dict[str, float], es: dict[str, float]) -> dict[str, float]:
    """One row: ED and ES measures (prefixed), stroke volumes (ml) and ejection fractions (%)."""
    row: dict[str, float] = {}
    for phase, m in (("ed", ed), ("es", es)):
        row.update({f"{phase}_{k}": v for k, v in m.items()})
    for v in ("lv", "rv"):
        edv, esv = ed[f"{v}_cavity_ml"], es[f"{v}_cavity_ml"]
        row[f"{v}_sv_ml"] = edv - esv
        row[f"{v}_ef_pct"] = 100.0 * (edv - esv) / edv if edv > 0 else math.nan
    return row


def run_measures(*, subject: str, ed_labels: str, es_labels: str, out_tsv: str, ed_refined: str | None = None,
                 es_refined: str | None = None, ed_landmarks: str | None = None,
                 es_landmarks: str | None = None) -> dict[str, Any]:
    """I/O layer of ``ssll measures``: one subject's row (TSV with a header).

    Columns from the SSLLN segmentation (``ed_lv_cavity_ml``, ..., ``lv_ef_pct``) and, with the
    refined HR models, the same prefixed ``refined_``. With the landmarks of both phases (``ssll landmarks``
    JSON, world mm), the LV wall thickness of the 16 AHA segments at ED and ES and its thickening
    (:func:`ssll.thickness.thickness_measures`: ``ed_wall_thickness_aha01_mm``, ..., ``wall_thickening_aha16_pct``),
    from the segmentation and from the refined models alike. The refined RV mass is given only where the
    segmentation itself has an RV wall (its ``rv_wall_coverage`` at least :data:`RV_WALL_MIN_COVERAGE`): else the
    refined model's RV wall is the atlases' (``AtlasConfig.rv_wall_from_atlases``), a shape, not a measurement.
    """
    import pandas as pd

    from ssll.io import atomic_path, load_labels

    ed, es = load_labels(ed_labels), load_labels(es_labels)
    row: dict[str, Any] = {"subject": subject, **cardiac_measures(phase_measures(ed.array, ed.spacing, what=ed_labels),
                                                                  phase_measures(es.array, es.spacing, what=es_labels))}
    points = None
    if ed_landmarks and es_landmarks:
        from ssll.landmarks import read_landmarks

        points = (read_landmarks(ed_landmarks), read_landmarks(es_landmarks))
        row.update(_thickness_row(ed, es, points))
    if ed_refined and es_refined:
        red, res = load_labels(ed_refined), load_labels(es_refined)
        ref = cardiac_measures(phase_measures(red.array, red.spacing, what=ed_refined),
                               phase_measures(res.array, res.spacing, what=es_refined))
        if points is not None:
            ref.update(_thickness_row(red, res, points))
        for ph in ("ed", "es"):  # a refined RV wall where the segmentation has none is the atlases' (not measured)
            if not row[f"{ph}_rv_wall_coverage"] >= RV_WALL_MIN_COVERAGE:
                ref[f"{ph}_rv_mass_g"] = float("nan")
        row.update({f"refined_{k}": v for k, v in ref.items()})
    with atomic_path(out_tsv) as tmp:
        pd.DataFrame([row]).to_csv(tmp, sep="\t", index=False, float_format="%.3f")
    return row


def _thickness_row(ed: Any, es: Any, points: tuple[Array, Array]) -> dict[str, float]:
    """:func:`ssll.thickness.thickness_measures` of ED and ES label volumes with their landmarks (world mm)."""
    from ssll.thickness import segment_thickness, thickness_measures

    return thickness_measures(segment_thickness(ed.array, ed.affine, points[0]),
                              segment_thickness(es.array, es.affine, points[1]))


#: what the cohort table takes from ``ssll cycle``'s ``cycle.json`` (column ``cycle_<name>``)
CYCLE_COLUMNS = {"n_frames": "n_frames", "ed_frame": "ed_frame", "es_frame": "es_frame", "lv_edv_ml": "ed_lv_cavity_ml",
                 "lv_esv_ml": "es_lv_cavity_ml", "lv_ef_pct": "lv_ef_pct", "rv_edv_ml": "ed_rv_cavity_ml",
                 "rv_esv_ml": "es_rv_cavity_ml", "rv_ef_pct": "rv_ef_pct"}


def read_measure_rows(paths: list[PathLike], *, chunk: int = 10000) -> pd.DataFrame:
    """The rows of many ``ssll measures`` TSVs (a header and one row each) as one frame, in ``paths`` order.

    Files with the same header are parsed as one table, ``chunk`` files per ``read_csv``: concatenating one
    frame per file took 53 s and 1.9 GB for 10,000 subjects (``bench/report_scale.py``). Empty files are
    skipped; files whose columns differ are aligned by name.
    """
    import io

    import pandas as pd

    groups: dict[str, list[tuple[int, str]]] = {}  # header -> (position, data lines) not yet parsed
    frames: list[pd.DataFrame] = []

    def parse(header: str) -> None:
        members = groups.pop(header)
        f = pd.read_csv(io.StringIO(header + "\n" + "".join(b for _, b in members)), sep="\t")
        if len(f) != len(members):
            raise ValueError(f"measures: {len(members)} files with header {header[:40]!r}... gave {len(f)} rows")
        frames.append(f.set_axis([n for n, _ in members]))

    for n, p in enumerate(paths):
        text = Path(p).read_text()
        if not text.strip():
            continue
        header, _, body = text.partition("\n")
        groups.setdefault(header, []).append((n, body if body.endswith("\n") or not body else body + "\n"))
        if len(groups[header]) >= chunk:
            parse(header)
    for header in list(groups):
        parse(header)
    if not frames:
        return pd.DataFrame(columns=["subject"])
    df = frames[0] if len(frames) == 1 else pd.concat(frames)
    return df.sort_index().reset_index(drop=True)


def run_cohort_table(*, inputs: list[str] | None = None, out_csv: str, out_parquet: str | None = None,
                     flags: list[str] | None = None, sheet: str | None = None,
                     results: str | None = None, cycles: list[str] | None = None) -> None:
    """Concatenate per-subject measure rows into the cohort table: one row per subject, units in
    the column names; with ``flags`` (``ssll qc-flags`` JSON files) also ``qc_n_flags`` and
    ``qc_flags`` (``flag@phase`` joined by ``;``), and where the flags record the network's expected
    Dice, ``<phase>_expected_dice_<structure>`` and ``qc_expected_dice_min`` (the lowest over both
    phases of the LV cavity, LV wall and RV cavity: sort by it to review the doubtful first), and
    where they record it, ``<phase>_orientation`` (the voxel-grid orientation ``ssll segment`` used;
    ``rot0`` = as stored); with ``cycles`` (``ssll cycle`` JSON files) the whole cycle's ``cycle_*`` columns
    (:data:`CYCLE_COLUMNS`: frames, ED and ES frames by the LV cavity, their volumes and EFs; empty for a subject
    without one). CSV, and Parquet when asked.

    With ``sheet`` and ``results`` instead of file lists: every subject of the sheet that has
    ``results/measures/<subject>.tsv`` (and its ``results/qc/<subject>/flags.json``), so a cohort
    of any size needs no file list on the command line (a shell command is limited to 128 KiB).
    """
    import json

    import pandas as pd

    from ssll.io import atomic_path
    from ssll.subjects import read_subject_sheet, result_paths

    if sheet is not None:
        if results is None:
            raise ValueError("cohort table: give results with sheet")
        paths = [result_paths(results, r["subject"]) for r in read_subject_sheet(sheet)]
        inputs = [str(p["measures"]) for p in paths if p["measures"].is_file()]
        flags = [str(p["flags"]) for p in paths if p["flags"].is_file()]
        cycles = [str(p["cycle"]) for p in paths if p["cycle"].is_file()]
    df = read_measure_rows(inputs or [])
    extra: dict[str, list] = {}  # columns added at once (one insert per column fragments the frame)
    if flags:
        fl, scores, turned = {}, {}, {}
        for f in flags:
            d = json.loads(Path(f).read_text())
            fl[d["subject"]] = ";".join(f"{x['flag']}@{x['phase']}" for x in d["flags"])
            scores[d["subject"]] = {f"{ph.lower()}_expected_dice_{name}": v
                                    for ph, per in (d.get("expected_dice") or {}).items() for name, v in per.items()}
            turned[d["subject"]] = {f"{ph.lower()}_orientation": o for ph, o in (d.get("orientation") or {}).items()}
        extra["qc_n_flags"] = [len(fl[s].split(";")) if fl.get(s) else 0 for s in df["subject"]]
        extra["qc_flags"] = [fl.get(s, "") for s in df["subject"]]
        if any(scores.values()):
            cols = sorted({c for per in scores.values() for c in per})
            for c in cols:
                extra[c] = [scores.get(s, {}).get(c, np.nan) for s in df["subject"]]
            main = [c for c in cols if not c.endswith("_rv_wall")]
            extra["qc_expected_dice_min"] = list(
                pd.DataFrame({c: extra[c] for c in main}, dtype=float).min(axis=1, skipna=True))
        for c in sorted({c for per in turned.values() for c in per}):
            extra[c] = [turned.get(s, {}).get(c, "") for s in df["subject"]]
    if cycles:
        per = {}
        for f in cycles:
            d = json.loads(Path(f).read_text())
            per[d.get("subject") or Path(f).parent.name] = d
        for col, key in CYCLE_COLUMNS.items():
            extra[f"cycle_{col}"] = [per[s].get(key) if s in per else np.nan for s in df["subject"]]
    if extra:
        df = pd.concat([df.drop(columns=[c for c in extra if c in df.columns]),
                        pd.DataFrame(extra, index=df.index)], axis=1)
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.3f")
    if out_parquet:
        with atomic_path(out_parquet) as tmp:
            df.to_parquet(tmp, index=False)
