from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_dicom_series, write_nifti

from ssll.cli import main
from ssll.errors import SsllError
from ssll.subjects import SHEET_COLUMNS, discover_subjects, read_subject_sheet


def _data(root: Path) -> None:
    """One study of each kind, and entries that are not studies."""
    acdc = root / "patient101"
    acdc.mkdir(parents=True)
    (acdc / "Info.cfg").write_text("ED: 1\nES: 14\nGroup: NOR\nNbFrame: 30\n")
    for n in (1, 14):
        write_nifti(acdc / f"patient101_frame{n:02d}.nii.gz", np.zeros((8, 8, 4), np.float32))
        write_nifti(acdc / f"patient101_frame{n:02d}_gt.nii.gz", np.zeros((8, 8, 4), np.uint8))
    only4d = root / "patient102"
    only4d.mkdir()
    (only4d / "Info.cfg").write_text("ED: 1\nES: 9\n")
    write_nifti(only4d / "patient102_4d.nii.gz", np.zeros((8, 8, 4, 12), np.float32))
    write_dicom_series(root / "sax_dicom", series_per_slice=True)
    with zipfile.ZipFile(root / "1234567_20209_2_0.zip", "w") as zf:
        zf.writestr("manifest.csv", "x\n")
    write_nifti(root / "cine7.nii.gz", np.zeros((8, 8, 4, 10), np.float32))
    write_nifti(root / "ed_only.nii.gz", np.zeros((8, 8, 4), np.float32))  # 3D: not a cine
    (root / "README.md").write_text("notes")  # passed over silently
    (root / "empty_folder").mkdir()
    (root / "bad id.zip").write_bytes(b"")
    broken = root / "patient103"
    broken.mkdir()
    (broken / "Info.cfg").write_text("ED: 1\nES: 9\n")  # its frames are missing


def test_sheet_of_a_data_folder(tmp_path: Path) -> None:
    _data(tmp_path / "data")
    rows, skipped = discover_subjects(tmp_path / "data")
    by = {r["subject"]: r for r in rows}
    assert list(by) == ["1234567_20209_2_0", "cine7", "patient101", "patient102", "sax_dicom"]
    assert all(list(r) == SHEET_COLUMNS for r in rows)
    p101 = by["patient101"]
    assert p101["ed_image"].endswith("patient101/patient101_frame01.nii.gz") and Path(p101["ed_image"]).is_absolute()
    assert p101["es_image"].endswith("patient101_frame14.nii.gz") and p101["gt_es"].endswith("frame14_gt.nii.gz")
    assert p101["gt_convention"] == "acdc" and p101["image"] == ""
    # only the 4D file: Info.cfg's 1-based frames become the sheet's 0-based frame indices
    assert by["patient102"]["image"].endswith("patient102_4d.nii.gz")
    assert (by["patient102"]["ed_frame"], by["patient102"]["es_frame"]) == ("0", "8")
    assert by["sax_dicom"]["image"].endswith("sax_dicom") and by["1234567_20209_2_0"]["image"].endswith(".zip")
    assert by["cine7"]["image"].endswith("cine7.nii.gz") and by["cine7"]["es_frame"] == ""
    reasons = "\n".join(skipped)
    assert len(skipped) == 4 and "README" not in reasons
    assert "ed_only.nii.gz: a 3D NIfTI" in reasons and "empty_folder: no DICOM files" in reasons
    assert "invalid subject id 'bad id'" in reasons and "patient103: Info.cfg names frames 1 and 9" in reasons
    # the CLI writes it, and it reads back as a valid subject sheet
    assert main(["sheet", "--data", str(tmp_path / "data"), "--out-tsv", str(tmp_path / "s.tsv")]) == 0
    back = read_subject_sheet(tmp_path / "s.tsv")
    assert [r["subject"] for r in back] == list(by) and back[3]["es_frame"] == "8"
    assert list(pd.read_csv(tmp_path / "s.tsv", sep="\t").columns) == SHEET_COLUMNS


def test_sheet_refuses_a_duplicate_subject_and_a_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    write_nifti(tmp_path / "d" / "s1.nii.gz", np.zeros((4, 4, 2, 3), np.float32))
    write_nifti(tmp_path / "d" / "s1.nii", np.zeros((4, 4, 2, 3), np.float32))
    with pytest.raises(SsllError, match="subject 's1' given by both"):
        discover_subjects(tmp_path / "d")
    with pytest.raises(SsllError, match="not a folder"):
        discover_subjects(tmp_path / "nowhere")
