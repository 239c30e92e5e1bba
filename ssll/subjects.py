"""Subject identifiers: validated before they reach a path or a shell."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssll.errors import SsllError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SHEET_COLUMNS", "SUBJECT_ID_PATTERN", "discover_subjects", "missing_input", "missing_inputs",
           "read_sheet_table", "read_subject_sheet", "result_paths", "run_sheet", "validate_subject_id"]

#: the subject sheet's columns (workflow/schemas/subjects.schema.yaml)
SHEET_COLUMNS = ["subject", "image", "ed_image", "es_image", "ed_frame", "es_frame", "gt_ed", "gt_es", "gt_convention"]

#: Letters, digits, ``_``, ``-`` and ``.``; starts with a letter or digit; at most 64 characters.
SUBJECT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_RE = re.compile(SUBJECT_ID_PATTERN)


def validate_subject_id(subject: str) -> str:
    """Return ``subject`` if it matches :data:`SUBJECT_ID_PATTERN`.

    Raises:
        SsllError: the id is empty, too long, or holds a character outside the pattern
            (``/``, spaces, shell metacharacters, ``..``).
    """
    if not isinstance(subject, str) or not _RE.match(subject) or ".." in subject:
        raise SsllError(f"invalid subject id {subject!r}: must match {SUBJECT_ID_PATTERN} without '..'")
    return subject


def _study_paths(image: str, ed_image: str, es_image: str) -> list[str]:
    """The input files of one sheet row: its cine (``image``), or else its ED and ES volumes; empty cells
    are not paths."""
    return [p for p in ([image] if image else [ed_image, es_image]) if p]


def missing_input(row: Mapping[str, str]) -> str | None:
    """The first input path of a subject-sheet row (``image``, or ``ed_image`` and ``es_image``)
    that does not exist, or None when all exist (empty cells are not paths)."""
    paths = _study_paths(row.get("image", ""), row.get("ed_image", ""), row.get("es_image", ""))
    return next((p for p in paths if not Path(p).exists()), None)


def missing_inputs(rows: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """:func:`missing_input` for many subjects at once: ``{subject: first missing path}`` for the subjects
    with one (each distinct path looked up once).

    Args:
        rows: columns of a subject sheet, each a sequence over the same subjects: ``subject``, ``image``,
            ``ed_image``, ``es_image`` (a DataFrame's columns will do).
    """
    exists: dict[str, bool] = {}
    out: dict[str, str] = {}
    for subject, image, ed, es in zip(rows["subject"], rows["image"], rows["ed_image"], rows["es_image"], strict=True):
        for p in _study_paths(image, ed, es):
            if p not in exists:
                exists[p] = os.path.exists(p)
            if not exists[p]:
                out[subject] = p
                break
    return out


def _offenders(df: pd.DataFrame, bad: pd.Series, column: str, limit: int = 5) -> str:
    """'subject s1 ('value'), ...' for the first ``limit`` rows of ``df`` where ``bad`` is true."""
    hits = df.loc[bad, ["subject", column]]
    shown = ", ".join(f"subject {s!r} ({v!r})" for s, v in hits.head(limit).itertuples(index=False))
    return shown + (f" and {len(hits) - limit} more" if len(hits) > limit else "")


def _sheet_frame(path: str | Path) -> pd.DataFrame:
    """A subject sheet as read, every cell a string (empty ``""``; ``#`` starts a comment).

    Raises:
        SsllError: the file cannot be read or parsed (naming it).
    """
    import pandas as pd

    try:
        return pd.read_csv(path, sep="\t", dtype=str, comment="#").fillna("")
    except (OSError, ValueError) as exc:
        raise SsllError(f"{path}: cannot read the subject sheet ({exc})") from None


def _separator_hint(df: pd.DataFrame) -> str:
    """A hint when a sheet's header looks comma- or semicolon-separated (a sheet is tab-separated)."""
    header = "\t".join(map(str, df.columns))
    if len(df.columns) == 1 and ("," in header or ";" in header):
        return f" (a subject sheet is tab-separated; its header reads {header[:80]!r})"
    return ""


def read_sheet_table(path: str | Path, schema: Mapping[str, Any]) -> pd.DataFrame:
    """Read and check a subject sheet (TSV, ``#`` starts a comment) as one table, column by column.

    What :func:`snakemake.utils.validate` checks one row at a time (``schema``'s ``required`` columns, each
    property's ``pattern`` and ``enum``, its ``default`` for a column the sheet lacks), plus: subject ids as
    :func:`validate_subject_id` wants them, no duplicate ids, and ``image`` or both ``ed_image`` and
    ``es_image`` in every row. Vectorised, so 100,000 subjects take about a second where the row-wise
    check took tens: every workflow job reads the sheet again.

    Args:
        path: the sheet.
        schema: the sheet's JSON schema (``workflow/schemas/subjects.schema.yaml``, loaded).

    Returns:
        A ``pandas.DataFrame`` of strings (empty cells ``""``), one row per subject in sheet order, with every
        column of ``schema``, indexed by subject (the ``subject`` column kept).

    Raises:
        SsllError: naming the sheet, the column, what is wrong and the first subjects (with their values)
            where it is wrong.
    """
    df = _sheet_frame(path)
    missing = [c for c in schema.get("required", []) if c not in df.columns]
    if missing:
        raise SsllError(f"{path}: the subject sheet has no column {', '.join(missing)}{_separator_hint(df)}")
    for col, prop in schema.get("properties", {}).items():
        if col not in df.columns:
            df[col] = prop.get("default", "")
            continue
        if "pattern" in prop:  # JSON schema's pattern is a search, anchored by ^ and $ where wanted
            search = re.compile(prop["pattern"]).search
            bad = df[col].map(lambda v, search=search: search(v) is None).astype(bool)
            if bad.any():
                raise SsllError(f"{path}: column {col} must match {prop['pattern']}: {_offenders(df, bad, col)}")
        if "enum" in prop:
            bad = ~df[col].isin(prop["enum"])
            if bad.any():
                raise SsllError(f"{path}: column {col} must be one of {prop['enum']}: {_offenders(df, bad, col)}")
    bad = df["subject"].map(lambda v: _RE.match(v) is None or ".." in v).astype(bool)
    if bad.any():
        raise SsllError(f"{path}: invalid subject ids (must match {SUBJECT_ID_PATTERN} without '..'): "
                        f"{_offenders(df, bad, 'subject')}")
    dups = df["subject"][df["subject"].duplicated()].unique().tolist()
    if dups:
        raise SsllError(f"{path}: duplicate subject ids {dups[:10]}" + (" ..." if len(dups) > 10 else ""))
    bad = (df["image"] == "") & ((df["ed_image"] == "") | (df["es_image"] == ""))
    if bad.any():
        shown = df.loc[bad, "subject"].head(5).tolist()
        raise SsllError(f"{path}: subjects {shown}" + (f" and {int(bad.sum()) - 5} more" if bad.sum() > 5 else "")
                        + ": give image, or ed_image and es_image")
    return df.set_index("subject", drop=False)


def read_subject_sheet(path: str | Path) -> list[dict[str, str]]:
    """The rows of a subject sheet (TSV with a ``subject`` column; ``#`` starts a comment), each a
    dict of its cells (empty cells ``""``), ids validated.

    Raises:
        SsllError: no ``subject`` column, or an invalid subject id (naming the sheet).
    """
    df = _sheet_frame(path)
    if "subject" not in df.columns:
        raise SsllError(f"{path}: the subject sheet has no 'subject' column{_separator_hint(df)}")
    rows = df.to_dict("records")
    for r in rows:
        try:
            validate_subject_id(r["subject"])
        except SsllError as exc:
            raise SsllError(f"{path}: {exc}") from None
    return rows


def result_paths(results: str | Path, subject: str) -> dict[str, Path]:
    """Where a workflow run leaves a subject's cohort-level results under ``results``: ``measures``
    (``measures/<subject>.tsv``), ``flags`` (``qc/<subject>/flags.json``), ``evaluate``
    (``evaluate/<subject>.json``), ``qc`` (``qc/<subject>/``, the montages) and ``cycle``
    (``cycle/<subject>/cycle.json``, with ``cycle: true``). The workflow's rules write these paths; the
    cohort table and the report read them from here."""
    r = Path(results)
    return {"measures": r / "measures" / f"{subject}.tsv", "flags": r / "qc" / subject / "flags.json",
            "evaluate": r / "evaluate" / f"{subject}.json", "qc": r / "qc" / subject,
            "cycle": r / "cycle" / subject / "cycle.json"}


#: files beside the studies that are not studies (a data set's notes and tables): passed over silently
_NOT_STUDIES = {".md", ".txt", ".csv", ".tsv", ".json", ".cfg", ".pdf", ".html", ".yaml", ".yml"}


def _is_dicom(path: Path) -> bool:
    """A DICOM Part 10 file: ``DICM`` after the 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii", ".zip"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _acdc_row(folder: Path) -> dict[str, str]:
    """A row from an ACDC-style patient folder: ``Info.cfg`` (``ED: n``, ``ES: n``, 1-based frames) and
    ``<name>_frameNN.nii.gz`` (ground truth ``..._gt.nii.gz`` where present), or ``<name>_4d.nii.gz``."""
    info: dict[str, str] = {}
    for line in (folder / "Info.cfg").read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    try:
        ed, es = int(float(info["ED"])), int(float(info["ES"]))
    except (KeyError, ValueError):
        raise SsllError(f"{folder / 'Info.cfg'}: no ED and ES frame numbers") from None
    name = folder.name
    frames = {ph: folder / f"{name}_frame{n:02d}.nii.gz" for ph, n in (("ed", ed), ("es", es))}
    row = dict.fromkeys(SHEET_COLUMNS, "")
    row["subject"] = name
    if all(f.is_file() for f in frames.values()):
        row.update(ed_image=str(frames["ed"]), es_image=str(frames["es"]))
        gts = {ph: f.with_name(f.name.replace(".nii.gz", "_gt.nii.gz")) for ph, f in frames.items()}
        if all(g.is_file() for g in gts.values()):
            row.update(gt_ed=str(gts["ed"]), gt_es=str(gts["es"]), gt_convention="acdc")
    elif (folder / f"{name}_4d.nii.gz").is_file():
        row.update(image=str(folder / f"{name}_4d.nii.gz"), ed_frame=str(ed - 1), es_frame=str(es - 1))
    else:
        raise SsllError(f"{folder}: Info.cfg names frames {ed} and {es}, but neither {frames['ed'].name} and "
                        f"{frames['es'].name} nor {name}_4d.nii.gz is there")
    return row


def discover_subjects(data: str | Path) -> tuple[list[dict[str, str]], list[str]]:
    """The subject sheet of a data folder, one subject per entry (sorted by name):

    * a folder with ``Info.cfg`` (the ACDC layout): its ED and ES frame files, with the expert labels
      as ground truth (``acdc`` convention) where present, or its 4D file with the frames;
    * a folder holding DICOM files: a DICOM cine (one series, or one per slice position);
    * a ``.zip`` file: a zipped DICOM cine (UK Biobank's ``<eid>_20209_<instance>_0.zip``);
    * a 4D ``.nii``/``.nii.gz`` file: a cine (ED frame 0, ES chosen by ``ssll ingest``).

    The subject id is the folder's name or the file's name without its extension. Paths are absolute.

    Returns:
        ``(rows, skipped)``: sheet rows (:data:`SHEET_COLUMNS`) and one line per entry left out, saying why
        (an invalid id, a 3D NIfTI, an ACDC folder without its frames, nothing recognised).

    Raises:
        SsllError: ``data`` is not a folder, or two entries give the same subject id.
    """
    import nibabel as nib

    root = Path(data)
    if not root.is_dir():
        raise SsllError(f"{root}: not a folder")
    rows: list[dict[str, str]] = []
    skipped: list[str] = []
    seen: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or (entry.is_file() and entry.suffix.lower() in _NOT_STUDIES):
            continue
        entry = entry.absolute()
        subject = _stem(entry) if entry.is_file() else entry.name
        try:
            validate_subject_id(subject)
            if entry.is_dir() and (entry / "Info.cfg").is_file():
                row = _acdc_row(entry)
            elif entry.is_dir():
                if not any(_is_dicom(f) for f in sorted(entry.iterdir())[:20] if f.is_file()):
                    raise SsllError(f"{entry}: no DICOM files (and no Info.cfg)")
                row = {**dict.fromkeys(SHEET_COLUMNS, ""), "subject": subject, "image": str(entry)}
            elif entry.name.lower().endswith(".zip"):
                row = {**dict.fromkeys(SHEET_COLUMNS, ""), "subject": subject, "image": str(entry)}
            elif entry.name.lower().endswith((".nii", ".nii.gz")):
                try:
                    ndim = len(nib.load(str(entry)).header.get_data_shape())
                except Exception as exc:  # noqa: BLE001 - any unreadable header is reported, not raised
                    raise SsllError(f"{entry}: not a readable NIfTI ({exc})") from None
                if ndim != 4:
                    raise SsllError(f"{entry}: a {ndim}D NIfTI; a cine needs 4D (give ED and ES files in a sheet)")
                row = {**dict.fromkeys(SHEET_COLUMNS, ""), "subject": subject, "image": str(entry)}
            else:
                raise SsllError(f"{entry}: not a study (folder, .zip or 4D NIfTI)")
        except SsllError as exc:
            skipped.append(str(exc))
            continue
        if subject in seen:
            raise SsllError(f"{root}: subject {subject!r} given by both {seen[subject].name} and {entry.name}")
        seen[subject] = entry
        rows.append(row)
    return rows, skipped


def run_sheet(*, data: str | Path, out_tsv: str | Path) -> tuple[int, list[str]]:
    """I/O layer of ``ssll sheet``: write the subject sheet of :func:`discover_subjects` (TSV)."""
    import pandas as pd

    from ssll.io import atomic_path

    rows, skipped = discover_subjects(data)
    with atomic_path(out_tsv) as tmp:
        pd.DataFrame(rows, columns=SHEET_COLUMNS).to_csv(tmp, sep="\t", index=False)
    return len(rows), skipped
