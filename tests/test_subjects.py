from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_dicom_series, write_nifti

from ssll.cli import main
from ssll.errors import SsllError
from ssll.subjects import (
    SHEET_COLUMNS,
    discover_subjects,
    missing_input,
    missing_inputs,
    read_sheet_table,
    read_subject_sheet,
)


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


ROOT = Path(__file__).resolve().parents[1]


SCHEMA = ROOT / "workflow/schemas/subjects.schema.yaml"


def _schema() -> dict:
    import yaml

    return yaml.safe_load(SCHEMA.read_text())


def _write_sheet(path: Path, rows: list[dict[str, str]]) -> Path:
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def test_sheet_table_adds_the_schema_defaults_and_keeps_sheet_order(tmp_path: Path) -> None:
    sheet = tmp_path / "s.tsv"
    sheet.write_text("# a comment\nsubject\ted_image\tes_image\tes_frame\nb2\tx.nii\ty.nii\t\na1\tx.nii\ty.nii\t7\n")
    df = read_sheet_table(sheet, _schema())
    assert list(df.index) == ["b2", "a1"] and list(df["subject"]) == ["b2", "a1"]
    assert set(SHEET_COLUMNS) <= set(df.columns)
    assert df.loc["a1", "es_frame"] == "7" and df.loc["b2", "es_frame"] == ""
    assert (df[["image", "ed_frame", "gt_ed", "gt_es", "gt_convention"]] == "").all().all()


@pytest.mark.parametrize(("column", "value"), [
    ("ed_frame", "1.5"), ("es_frame", "-1"), ("es_frame", "x"), ("gt_convention", "ACDC"), ("gt_convention", "mnm"),
    ("subject", "bad/../id"), ("subject", "a b"), ("subject", "_x"), ("subject", "x" * 65),
])
def test_sheet_table_refuses_what_the_schema_refuses(tmp_path: Path, column: str, value: str) -> None:
    """Each cell the schema refuses is refused, naming the sheet, the column and the subject with the value; the
    same sheet with that cell valid passes, and snakemake's row-wise check of the schema agrees on both."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    good = {"subject": "ok1", "ed_image": "x.nii", "es_image": "y.nii", "ed_frame": "0", "es_frame": "12",
            "gt_convention": "acdc"}
    sheet = _write_sheet(tmp_path / "good.tsv", [good, {**good, "subject": "ok2"}])
    read_sheet_table(sheet, _schema())
    validate(pd.read_csv(sheet, sep="\t", dtype=str).fillna(""), str(SCHEMA))
    bad_row = {**good, "subject": "ok3", column: value}
    sheet = _write_sheet(tmp_path / "bad.tsv", [good, bad_row])
    with pytest.raises(SsllError) as err:
        read_sheet_table(sheet, _schema())
    msg = str(err.value)
    assert str(sheet) in msg and (f"column {column}" in msg or "invalid subject ids" in msg), msg
    assert repr(value) in msg and ("ok1" not in msg), msg
    if value != "bad/../id":  # the schema's pattern allows '..'; ids with it are refused by validate_subject_id
        with pytest.raises(WorkflowError):
            validate(pd.read_csv(sheet, sep="\t", dtype=str).fillna(""), str(SCHEMA))


def test_sheet_table_refuses_dots_duplicates_rows_without_images_and_no_subject_column(tmp_path: Path) -> None:
    ok = {"subject": "s1", "ed_image": "x.nii", "es_image": "y.nii"}
    cases = {
        "dots": ([ok, {**ok, "subject": "a..b"}], "'a..b'"),  # would name a path's parent
        "dup": ([ok, ok, {**ok, "subject": "s2"}, {**ok, "subject": "s2"}], "duplicate subject ids ['s1', 's2']"),
        "noimage": ([ok, {**ok, "subject": "s2", "es_image": ""}, {"subject": "s3", "image": ""}],
                    "subjects ['s2', 's3']: give image, or ed_image and es_image"),
    }
    for name, (rows, want) in cases.items():
        sheet = _write_sheet(tmp_path / f"{name}.tsv", rows)
        with pytest.raises(SsllError, match=re.escape(want)):
            read_sheet_table(sheet, _schema())
    sheet = _write_sheet(tmp_path / "nosubject.tsv", [{"id": "s1", "image": "c.nii"}])
    with pytest.raises(SsllError, match="no column subject$"):
        read_sheet_table(sheet, _schema())
    # a comma-separated sheet (as a spreadsheet saves it) is told to be tab-separated, by both readers
    sheet = tmp_path / "comma.csv"
    sheet.write_text("subject,ed_image,es_image\ns1,x.nii,y.nii\n")
    with pytest.raises(SsllError, match="no column subject .a subject sheet is tab-separated; its header reads "
                                        "'subject,ed_image,es_image'"):
        read_sheet_table(sheet, _schema())
    with pytest.raises(SsllError, match="tab-separated"):
        read_subject_sheet(sheet)
    # many offenders: the first five named, the rest counted
    rows = [{**ok, "subject": f"s{i}", "ed_frame": "x"} for i in range(8)]
    with pytest.raises(SsllError, match=re.escape("subject 's4' ('x') and 3 more")):
        read_sheet_table(_write_sheet(tmp_path / "many.tsv", rows), _schema())


def test_missing_inputs_names_each_subjects_first_missing_file_and_looks_each_up_once(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    import os

    for name in ("ed.nii", "es.nii", "cine.nii"):
        (tmp_path / name).write_bytes(b"")
    ed, es, cine, gone = (str(tmp_path / n) for n in ("ed.nii", "es.nii", "cine.nii", "gone.nii"))
    table = pd.DataFrame({
        "subject": ["a", "b", "c", "d", "e"],
        "image": [cine, "", gone, "", ""],
        "ed_image": ["", ed, ed, gone, ed],
        "es_image": ["", es, es, es, gone],
    })
    calls: list[str] = []
    real = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: calls.append(p) or real(p))
    got = missing_inputs(table)
    assert got == {"c": gone, "d": gone, "e": gone}  # c: its cine (ed/es ignored); d: ED first; e: ES
    assert sorted(calls) == sorted({cine, ed, es, gone})
    assert got == {s: m for s, *_ in table.itertuples(index=False)
                   if (m := missing_input(table.set_index("subject", drop=False).loc[s]))}
