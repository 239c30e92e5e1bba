from __future__ import annotations

import numpy as np
import pytest

from ssll.errors import LabelError
from ssll.labels import CONVENTIONS, N_CLASSES, N_LANDMARK_CLASSES, Label, Landmark, from_canonical, to_canonical


def test_canonical_values() -> None:
    assert [int(v) for v in Label] == [0, 1, 2, 3, 4]
    assert [v.name for v in Label] == ["BACKGROUND", "LV_CAVITY", "LV_WALL", "RV_CAVITY", "RV_WALL"]
    assert N_CLASSES == 5 and N_LANDMARK_CLASSES == 7
    assert len(Landmark) == 6 and Landmark.APEX == 5


@pytest.mark.parametrize(
    ("convention", "src", "expected"),
    [
        ("acdc", [0, 1, 2, 3], [0, 3, 2, 1]),
        ("ukbb", [0, 1, 2, 3], [0, 1, 2, 3]),
        ("mnms", [0, 1, 2, 3], [0, 1, 2, 3]),
        ("4dsegment", [0, 1, 2, 3, 4], [0, 1, 2, 4, 3]),
        ("canonical", [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]),
    ],
)
def test_mappings(convention: str, src: list[int], expected: list[int]) -> None:
    out = to_canonical(np.array(src), convention)
    assert out.tolist() == expected and out.dtype == np.uint8
    assert from_canonical(out, convention).tolist() == src


def test_value_outside_convention_is_an_error() -> None:
    with pytest.raises(LabelError, match=r"values \[4\] are not labels of the 'acdc'"):
        to_canonical(np.array([0, 1, 4]), "acdc", what="x.nii.gz")


def test_non_integer_labels_rejected() -> None:
    with pytest.raises(LabelError, match="non-integer"):
        to_canonical(np.array([0.0, 1.5]), "canonical")


def test_unknown_convention() -> None:
    with pytest.raises(LabelError, match="unknown label convention 'foo'"):
        to_canonical(np.zeros(3, int), "foo")


def test_rv_wall_has_no_acdc_counterpart() -> None:
    with pytest.raises(LabelError, match=r"canonical labels \[4\]"):
        from_canonical(np.array([0, 4]), "acdc")


def test_tables_are_bijective_onto_canonical() -> None:
    for name, table in CONVENTIONS.items():
        assert len(set(table.values())) == len(table), name
        assert set(table.values()) <= set(range(N_CLASSES))
