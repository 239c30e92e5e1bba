"""Subject identifiers: validated before they reach a path or a shell."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from ssll.errors import SsllError

__all__ = ["SUBJECT_ID_PATTERN", "missing_input", "read_subject_sheet", "result_paths", "validate_subject_id"]

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


def missing_input(row: Mapping[str, str]) -> str | None:
    """The first input path of a subject-sheet row (``image``, or ``ed_image`` and ``es_image``)
    that does not exist, or None when all exist (empty cells are not paths)."""
    paths = [row.get("image", "")] if row.get("image", "") else [row.get("ed_image", ""), row.get("es_image", "")]
    return next((p for p in paths if p and not Path(p).exists()), None)


def read_subject_sheet(path: str | Path) -> list[dict[str, str]]:
    """The rows of a subject sheet (TSV with a ``subject`` column; ``#`` starts a comment), each a
    dict of its cells (empty cells ``""``), ids validated.

    Raises:
        SsllError: no ``subject`` column, or an invalid subject id (naming the sheet).
    """
    import pandas as pd

    df = pd.read_csv(path, sep="\t", dtype=str, comment="#").fillna("")
    if "subject" not in df.columns:
        raise SsllError(f"{path}: the subject sheet has no 'subject' column")
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
    (``evaluate/<subject>.json``) and ``qc`` (``qc/<subject>/``, the montages). The workflow's rules
    write these paths; the cohort table and the report read them from here."""
    r = Path(results)
    return {"measures": r / "measures" / f"{subject}.tsv", "flags": r / "qc" / subject / "flags.json",
            "evaluate": r / "evaluate" / f"{subject}.json", "qc": r / "qc" / subject}
