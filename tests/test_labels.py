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
    with pytest.raises(LabelError, match=r"canonical labels 4 \(rv_wall\) have no 'acdc' counterpart"):
        from_canonical(np.array([0, 4]), "acdc")
    # dropped explicitly, it becomes background, and the rest maps as ACDC numbers it
    np.testing.assert_array_equal(from_canonical(np.array([0, 1, 2, 3, 4]), "acdc", drop_unmapped=True),
                                  [0, 3, 2, 1, 0])


def test_convert_labels_cli_keeps_the_grid_and_maps_the_values(tmp_path, capsys) -> None:
    """Canonical network output to ACDC's numbering and back; the RV wall only with --drop-unmapped; the header
    geometry untouched; a refused conversion writes nothing."""
    import nibabel as nib

    from ssll.cli import main

    rng = np.random.default_rng(0)
    lab = rng.integers(0, 5, (6, 5, 4)).astype(np.uint8)
    aff = np.array([[-1.4, 0.1, 0, 30], [0.1, 1.4, 0, -20], [0, 0, 10, 5], [0, 0, 0, 1]])
    img = nib.Nifti1Image(lab, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=2)
    nib.save(img, tmp_path / "seg.nii.gz")
    out = tmp_path / "seg_acdc.nii.gz"
    rc = main(["convert-labels", "--subject", "p1", "--labels", str(tmp_path / "seg.nii.gz"), "--to", "acdc",
               "--out", str(out)])
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "p1" in err and "seg.nii.gz" in err and "rv_wall" in err
    assert main(["convert-labels", "--labels", str(tmp_path / "seg.nii.gz"), "--to", "acdc", "--out", str(out),
                 "--drop-unmapped"]) == 0
    got = nib.load(out)
    want = np.choose(lab, [0, 3, 2, 1, 0])  # canonical 1 LV cavity -> ACDC 3, 3 RV cavity -> 1, RV wall -> 0
    np.testing.assert_array_equal(np.asarray(got.dataobj), want)
    np.testing.assert_allclose(got.get_qform(), img.get_qform(), atol=1e-6)
    np.testing.assert_allclose(got.get_sform(), img.get_sform(), atol=1e-6)
    assert int(got.header["sform_code"]) == 2
    back = tmp_path / "back.nii.gz"
    assert main(["convert-labels", "--labels", str(out), "--from", "acdc", "--to", "canonical", "--out", str(back)]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(back).dataobj), np.where(lab == 4, 0, lab))


def test_tables_are_bijective_onto_canonical() -> None:
    for name, table in CONVENTIONS.items():
        assert len(set(table.values())) == len(table), name
        assert set(table.values()) <= set(range(N_CLASSES))
