"""The canonical label convention, the six landmarks, and mappings from other conventions.

Canonical segmentation labels (Duan et al. 2019, Fig 3 right)::

    0 background, 1 LV cavity, 2 LV wall (myocardium), 3 RV cavity, 4 RV wall

Landmark labels (Fig 3 middle), 0 is background::

    1 LV lateral wall mid-point, 2 RV anterior insert point, 3 RV inferior insert point,
    4 RV lateral wall turning point, 5 apex, 6 mitral valve centre

Other datasets are mapped to canonical labels by explicit tables. A label map holding a value
that its declared convention does not define raises :class:`~ssll.errors.LabelError`: a
mismatch is never guessed away.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from ssll.errors import LabelError
from ssll.types import Array

__all__ = [
    "CONVENTIONS",
    "LANDMARK_NAMES",
    "N_CLASSES",
    "N_LANDMARK_CLASSES",
    "Label",
    "Landmark",
    "check_canonical",
    "from_canonical",
    "run_convert_labels",
    "rv_wall_as_background",
    "to_canonical",
]


class Label(IntEnum):
    """Canonical segmentation labels."""

    BACKGROUND = 0
    LV_CAVITY = 1
    LV_WALL = 2
    RV_CAVITY = 3
    RV_WALL = 4


class Landmark(IntEnum):
    """The six landmarks of Duan et al. 2019 (Fig 3), as landmark-map labels 1..6."""

    LV_LATERAL_WALL = 1
    RV_INSERT_ANTERIOR = 2
    RV_INSERT_INFERIOR = 3
    RV_LATERAL_TURNING = 4
    APEX = 5
    MITRAL_VALVE_CENTRE = 6


#: Lower-case landmark names in landmark-label order 1..6 (as written in CSV/JSON outputs).
LANDMARK_NAMES: tuple[str, ...] = tuple(v.name.lower() for v in Landmark)

N_CLASSES = len(Label)  # 5
N_LANDMARK_CLASSES = len(Landmark) + 1  # 7, background included

#: Mapping from each known convention's label values to canonical labels.
CONVENTIONS: dict[str, dict[int, int]] = {
    "canonical": {0: 0, 1: 1, 2: 2, 3: 3, 4: 4},
    # ACDC: 1 RV cavity, 2 myocardium, 3 LV cavity (no RV wall).
    "acdc": {0: 0, 1: 3, 2: 2, 3: 1},
    # M&Ms, UK Biobank, ukbb_cardiac: 1 LV cavity, 2 myocardium, 3 RV cavity.
    "ukbb": {0: 0, 1: 1, 2: 2, 3: 3},
    "mnms": {0: 0, 1: 1, 2: 2, 3: 3},
    # 4Dsegment: 1 LV cavity, 2 LV wall, 3 RV wall, 4 RV cavity.
    "4dsegment": {0: 0, 1: 1, 2: 2, 3: 4, 4: 3},
}


def _table(convention: str) -> dict[int, int]:
    try:
        return CONVENTIONS[convention]
    except KeyError:
        raise LabelError(
            f"unknown label convention {convention!r}; known: {', '.join(sorted(CONVENTIONS))}"
        ) from None


def _check_integer(labels: Array, what: str) -> Array:
    arr = np.asarray(labels)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise LabelError(f"{what}: label map holds non-integer values")
    elif arr.dtype.kind not in "iub":
        raise LabelError(f"{what}: label map has non-numeric dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def to_canonical(labels: Array, convention: str, *, what: str = "label map") -> Array:
    """Map a label map from ``convention`` to canonical labels.

    Args:
        labels: integer label map of any shape.
        convention: one of :data:`CONVENTIONS`.
        what: name of the source (file, subject) used in error messages.

    Returns:
        ``uint8`` array of the same shape with canonical labels.

    Raises:
        LabelError: the map holds a value the convention does not define.
    """
    table = _table(convention)
    arr = _check_integer(labels, what)
    present = np.unique(arr)
    unknown = [int(v) for v in present if int(v) not in table]
    if unknown:
        raise LabelError(
            f"{what}: values {unknown} are not labels of the {convention!r} convention "
            f"(allowed {sorted(table)})"
        )
    lut = np.zeros(max(table) + 1, dtype=np.uint8)
    for src, dst in table.items():
        lut[src] = dst
    return lut[arr]


def from_canonical(labels: Array, convention: str, *, what: str = "label map", drop_unmapped: bool = False) -> Array:
    """Map canonical labels to ``convention`` (inverse of :func:`to_canonical`).

    Args:
        labels: canonical label map (0..4) of any shape.
        convention: one of :data:`CONVENTIONS`.
        what: name of the source (file, subject) used in error messages.
        drop_unmapped: write canonical labels that ``convention`` lacks (the RV wall in ``acdc``, ``ukbb``,
            ``mnms``) as background, as those datasets' experts leave them, instead of refusing.

    Returns:
        ``uint8`` array of the same shape in ``convention``'s values.

    Raises:
        LabelError: a canonical label has no counterpart in ``convention`` and ``drop_unmapped`` is off.
    """
    table = _table(convention)
    inverse = {dst: src for src, dst in table.items()}
    arr = check_canonical(labels, what=what)
    missing = [int(v) for v in np.unique(arr) if int(v) not in inverse]
    if missing and not drop_unmapped:
        names = ", ".join(f"{v} ({Label(v).name.lower()})" for v in missing)
        raise LabelError(f"{what}: canonical labels {names} have no {convention!r} counterpart "
                         "(drop them to background explicitly if that is meant)")
    lut = np.zeros(N_CLASSES, dtype=np.uint8)  # a label without a counterpart stays 0, background
    for dst, src in inverse.items():
        lut[dst] = src
    return lut[arr]


def run_convert_labels(*, labels: str, out: str, to_convention: str, from_convention: str = "canonical",
                       drop_unmapped: bool = False) -> Array:
    """I/O layer of ``ssll convert-labels``: a label map from one convention to another, on the same grid
    (the input file's header geometry kept verbatim). Returns the written ``(I, J, K)`` uint8 array."""
    from ssll.io import load_labels, save_nifti

    vol = load_labels(labels, from_convention)
    _table(to_convention)  # an unknown target is named before anything is written
    vol.array = from_canonical(vol.array, to_convention, what=str(labels), drop_unmapped=drop_unmapped)
    save_nifti(out, vol, dtype=np.uint8)
    return vol.array


def check_canonical(labels: Array, *, what: str = "label map") -> Array:
    """Return ``labels`` as ``uint8`` after checking it holds only canonical values 0..4.

    Raises:
        LabelError: a value outside 0..4 is present.
    """
    return to_canonical(labels, "canonical", what=what)


def rv_wall_as_background(labels: Array) -> Array:
    """A copy of canonical ``labels`` (any shape, same dtype) with the RV wall counted as background: how a
    label map is matched against one without an RV wall (ACDC's convention; SSLLN-LR on real scans)."""
    return np.where(labels == Label.RV_WALL, 0, labels).astype(np.asarray(labels).dtype)
