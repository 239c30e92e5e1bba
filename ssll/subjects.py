"""Subject identifiers: validated before they reach a path or a shell."""

from __future__ import annotations

import re

from ssll.errors import SsllError

__all__ = ["SUBJECT_ID_PATTERN", "validate_subject_id"]

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
