from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_nifti

from ssll.errors import LabelError
from ssll.labels import rv_wall_as_background
from ssll.measures import (
    cardiac_measures,
    has_rv_wall,
    phase_measures,
    run_cohort_table,
    run_measures,
    rv_wall_coverage,
)


def _ellipsoid(shape, spacing, radii, label, out=None):
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    c = [(n - 1) / 2 for n in shape]
    r = sum(((g - cc) * s / rr) ** 2 for g, cc, s, rr in zip((ii, jj, kk), c, spacing, radii))
    lab = np.zeros(shape, np.uint8) if out is None else out
    lab[r <= 1.0] = label
    return lab


def test_ellipsoid_volume_and_mass() -> None:
    sp = (1.0, 1.0, 2.0)
    lab = _ellipsoid((80, 80, 50), sp, (30, 30, 40), 2)  # wall
    lab = _ellipsoid((80, 80, 50), sp, (20, 20, 30), 1, out=lab)  # cavity inside
    m = phase_measures(lab, sp)
    v_cav = 4 / 3 * math.pi * 20 * 20 * 30 / 1000
    v_all = 4 / 3 * math.pi * 30 * 30 * 40 / 1000
    assert m["lv_cavity_ml"] == pytest.approx(v_cav, rel=0.02)
    assert m["lv_mass_g"] == pytest.approx((v_all - v_cav) * 1.05, rel=0.02)
    assert m["rv_cavity_ml"] == 0.0 and math.isnan(m["rv_mass_g"])


def test_labels_are_counted_not_summed() -> None:
    lab = np.array([[[3], [3], [4], [1]]], np.uint8)  # in one slice: the RV wall closes the RV cavity's free side
    m = phase_measures(lab, (10.0, 10.0, 10.0))  # 1 ml voxels
    assert m["rv_cavity_ml"] == 2.0 and m["lv_cavity_ml"] == 1.0 and m["rv_mass_g"] == pytest.approx(1.05)


def _rv_slab(wall: str) -> np.ndarray:
    """Slices of an LV (cavity in a wall) with an RV cavity beside it, the RV wall round its free side
    (``wall="ring"``), as a few scattered voxels (``"specks"``) or absent (``"none"``)."""
    lab = np.zeros((40, 40, 3), np.uint8)
    i, j = np.mgrid[:40, :40]
    lv = (i - 20) ** 2 + (j - 14) ** 2
    rv = ((i - 20) / 12.0) ** 2 + ((j - 27) / 8.0) ** 2
    sl = np.zeros((40, 40), np.uint8)
    sl[rv <= 1.6] = 4 if wall == "ring" else 0
    sl[rv <= 1.0] = 3
    sl[lv <= 64] = 2
    sl[lv <= 25] = 1
    if wall == "specks":
        sl[20, 36] = sl[7, 27] = 4  # just outside the RV cavity
    lab[:] = sl[..., None]
    return lab


def test_rv_mass_only_where_an_rv_wall_covers_the_rv_cavity() -> None:
    ring, specks, none = (phase_measures(_rv_slab(w), (1.25, 1.25, 10.0)) for w in ("ring", "specks", "none"))
    assert ring["rv_wall_coverage"] > 0.9 and ring["rv_mass_g"] > 5.0  # the septum, beside the LV, is not counted
    assert specks["rv_wall_coverage"] < 0.1 and math.isnan(specks["rv_mass_g"])
    assert none["rv_wall_coverage"] == 0.0 and math.isnan(none["rv_mass_g"])
    for m in (ring, specks, none):  # the rest is measured as before
        assert m["rv_cavity_ml"] == ring["rv_cavity_ml"] > 0 and m["lv_mass_g"] == ring["lv_mass_g"] > 0
    assert math.isnan(rv_wall_coverage(np.ones((4, 4, 2), np.uint8)))  # no RV cavity
    assert has_rv_wall(_rv_slab("ring")) and not has_rv_wall(_rv_slab("specks"))
    assert not has_rv_wall(np.ones((4, 4, 2), np.uint8))
    stripped = rv_wall_as_background(_rv_slab("ring"))
    assert stripped.dtype == np.uint8 and not (stripped == 4).any()
    assert np.array_equal(stripped, _rv_slab("none"))  # the ring as background: the slab without a wall


def test_ef() -> None:
    row = cardiac_measures({"lv_cavity_ml": 150.0, "rv_cavity_ml": 160.0, "lv_mass_g": 1, "rv_mass_g": 1},
                           {"lv_cavity_ml": 60.0, "rv_cavity_ml": 80.0, "lv_mass_g": 1, "rv_mass_g": 1})
    assert row["lv_sv_ml"] == 90.0 and row["lv_ef_pct"] == pytest.approx(60.0) and row["rv_ef_pct"] == pytest.approx(50.0)


def test_non_canonical_labels_rejected() -> None:
    with pytest.raises(LabelError):
        phase_measures(np.array([[[7]]]), (1, 1, 1))


def test_run_measures_and_cohort(tmp_path: Path) -> None:
    lab = np.zeros((10, 10, 4), np.uint8)
    lab[2:6, 2:6, :] = 1
    write_nifti(tmp_path / "ed.nii.gz", lab, spacing=(1.5, 1.5, 10.0))
    lab[2:4, 2:6, :] = 0
    write_nifti(tmp_path / "es.nii.gz", lab, spacing=(1.5, 1.5, 10.0))
    row = run_measures(subject="s1", ed_labels=str(tmp_path / "ed.nii.gz"), es_labels=str(tmp_path / "es.nii.gz"),
                       out_tsv=str(tmp_path / "s1.tsv"))
    assert row["ed_lv_cavity_ml"] == pytest.approx(64 * 22.5 / 1000) and row["lv_ef_pct"] == pytest.approx(50.0)
    run_cohort_table(inputs=[str(tmp_path / "s1.tsv")] * 2, out_csv=str(tmp_path / "c.csv"))
    df = pd.read_csv(tmp_path / "c.csv")
    assert len(df) == 2 and "lv_ef_pct" in df.columns


def test_refined_rv_mass_only_where_the_segmentation_has_an_rv_wall(tmp_path: Path) -> None:
    sp = (1.25, 1.25, 10.0)
    for name, wall in (("ring", "ring"), ("none", "none")):
        write_nifti(tmp_path / f"{name}.nii.gz", _rv_slab(wall), spacing=sp)
    ring, none = str(tmp_path / "ring.nii.gz"), str(tmp_path / "none.nii.gz")
    # the network drew no RV wall; the refined model has the atlases' round it: no RV mass from either
    row = run_measures(subject="s", ed_labels=none, es_labels=none, ed_refined=ring, es_refined=ring,
                       out_tsv=str(tmp_path / "a.tsv"))
    assert row["refined_ed_rv_wall_coverage"] > 0.9 and math.isnan(row["refined_ed_rv_mass_g"])
    assert math.isnan(row["refined_es_rv_mass_g"]) and math.isnan(row["ed_rv_mass_g"])
    assert row["refined_ed_lv_mass_g"] == pytest.approx(row["ed_lv_mass_g"])  # the rest is measured
    # the network drew one (phantoms): the refined model's RV mass is given
    row = run_measures(subject="s", ed_labels=ring, es_labels=none, ed_refined=ring, es_refined=ring,
                       out_tsv=str(tmp_path / "b.tsv"))
    assert row["ed_rv_mass_g"] > 5.0 and row["refined_ed_rv_mass_g"] == pytest.approx(row["ed_rv_mass_g"])
    assert math.isnan(row["refined_es_rv_mass_g"])


def test_read_measure_rows_keeps_order_aligns_columns_and_skips_empty_files(tmp_path) -> None:
    from ssll.measures import read_measure_rows

    files = {"a": "subject\tx_ml\ty_g\na\t1.5\t2\n", "b": "subject\tx_ml\nb\t3.0\n", "empty": "",
             "c": "subject\tx_ml\ty_g\nc\t4.5\t\n"}  # c: y_g empty
    for name, text in files.items():
        (tmp_path / f"{name}.tsv").write_text(text)
    df = read_measure_rows([tmp_path / f"{n}.tsv" for n in ("c", "a", "empty", "b")])
    assert df["subject"].tolist() == ["c", "a", "b"]
    assert df["x_ml"].tolist() == [4.5, 1.5, 3.0]
    assert np.isnan(df.loc[0, "y_g"]) and df.loc[1, "y_g"] == 2 and np.isnan(df.loc[2, "y_g"])
    (tmp_path / "c.tsv").write_text("subject\tx_ml\ty_g\nc\t4.5\t1\n")  # without the final newline
    assert read_measure_rows([tmp_path / "a.tsv", tmp_path / "c.tsv"])["subject"].tolist() == ["a", "c"]
    assert read_measure_rows([]).columns.tolist() == ["subject"]
    # parsed a few files at a time: the same table
    paths = [tmp_path / f"{n}.tsv" for n in ("c", "a", "empty", "b", "a")]
    pd.testing.assert_frame_equal(read_measure_rows(paths, chunk=1), read_measure_rows(paths))
