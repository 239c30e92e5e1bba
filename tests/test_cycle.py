"""`ssll cycle`: every frame of a cine segmented, the volume curve, ED / ES by the LV cavity."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ssll.cli import main
from ssll.io import load_labels
from ssll.measures import phase_measures
from ssll.nn.infer import SegmentItem, default_weights, run_segment
from ssll.preprocess import run_preprocess

DEMO = Path(__file__).resolve().parents[1] / "demo" / "acdc" / "patient080"


def test_cycle_of_a_cine_gives_the_segment_stage_volumes_and_finds_ed_and_es(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 4-frame cine made of patient080's ED and ES frames (ED, ES, ED, ES): each frame measures as `ssll segment`
    + `ssll measures` measure it, ED is the first frame of largest LV cavity and ES of smallest, the orientation is
    searched once and recorded; a 3D file is refused with one line naming it, nothing written."""
    ed_img, es_img = nib.load(DEMO / "patient080_frame01.nii.gz"), nib.load(DEMO / "patient080_frame10.nii.gz")
    ed, es = np.asarray(ed_img.dataobj, np.float32), np.asarray(es_img.dataobj, np.float32)
    cine = nib.Nifti1Image(np.stack([ed, es, ed, es], axis=3), None, header=ed_img.header.copy())
    cine.header.set_data_shape((*ed.shape, 4))
    nib.save(cine, tmp_path / "cine.nii.gz")
    out = {k: tmp_path / f"curve.{k}" for k in ("tsv", "json", "png")}
    assert main(["cycle", "--subject", "p80", "--image", str(tmp_path / "cine.nii.gz"), "--out-tsv", str(out["tsv"]),
                 "--out-json", str(out["json"]), "--out-png", str(out["png"])]) == 0
    rows = pd.read_csv(out["tsv"], sep="\t")
    assert list(rows["frame"]) == [0, 1, 2, 3]
    summary = json.loads(out["json"].read_text())
    assert summary["n_frames"] == 4 and summary["ed_frame"] == 0 and summary["es_frame"] == 1
    assert summary["orientation"]["searched"] and summary["orientation"]["orientation"] == "rot0"
    assert len(summary["orientation"]["mean_expected_dice"]) == 16
    for a, b in ((0, 2), (1, 3)):  # the same image twice: the same measures
        np.testing.assert_allclose(rows.iloc[a, 1:].to_numpy(float), rows.iloc[b, 1:].to_numpy(float), equal_nan=True)
    lv = rows["lv_cavity_ml"].to_numpy()
    assert lv[0] > lv[1] > 0
    assert summary["lv_ef_pct"] == pytest.approx(100 * (lv[0] - lv[1]) / lv[0], abs=1e-3)
    assert (rows["expected_dice_min"] > 0.5).all()
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height = int.from_bytes(out["png"].read_bytes()[20:24], "big")  # the IHDR's height: two panels, volumes and wall
    assert height == 540, height

    # the ED frame as the workflow's segment stage writes it, measured as `ssll measures` does
    run_preprocess(image=str(DEMO / "patient080_frame01.nii.gz"), out_image=str(tmp_path / "w.nii.gz"),
                   out_record=str(tmp_path / "w.json"))
    item = SegmentItem("p80", "ED", tmp_path / "w.nii.gz", tmp_path / "w.json", tmp_path / "seg")
    assert run_segment([item], default_weights("sslln_lr"), orientation="stored") == {}
    lab = load_labels(tmp_path / "seg" / "ED_labels_original.nii.gz")
    want = phase_measures(lab.array, tuple(float(s) for s in ed_img.header.get_zooms()[:3]))
    for k in ("lv_cavity_ml", "lv_mass_g", "rv_cavity_ml"):
        assert rows.loc[0, k] == pytest.approx(want[k], abs=1e-3), k
    # and its mean wall thickness as `ssll landmarks` + `ssll measures --ed-landmarks` give it
    seg = tmp_path / "seg"
    assert main(["landmarks", "--landmark-map", str(seg / "ED_landmarkmap.nii.gz"), "--out-json", str(seg / "l.json"),
                 "--out-csv", str(seg / "l.csv"), "--out-map", str(seg / "l.nii.gz")]) == 0
    labels, marks = str(seg / "ED_labels_original.nii.gz"), str(seg / "l.json")
    assert main(["measures", "--ed-labels", labels, "--es-labels", labels, "--ed-landmarks", marks,
                 "--es-landmarks", marks, "--out-tsv", str(tmp_path / "m.tsv")]) == 0
    m = pd.read_csv(tmp_path / "m.tsv", sep="\t").iloc[0]
    assert 5.0 < rows.loc[0, "lv_wall_thickness_mm"] < 15.0
    assert rows.loc[0, "lv_wall_thickness_mm"] == pytest.approx(m["ed_wall_thickness_mean_mm"], abs=2e-3)

    capsys.readouterr()
    bad = {k: tmp_path / f"bad.{k}" for k in ("tsv", "json")}
    assert main(["cycle", "--subject", "p80", "--image", str(DEMO / "patient080_frame01.nii.gz"),
                 "--out-tsv", str(bad["tsv"]), "--out-json", str(bad["json"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "p80" in err[0] and "patient080_frame01.nii.gz" in err[0] and "4D" in err[0]
    assert not bad["tsv"].exists() and not bad["json"].exists()
    # a blank frame in the cine: one line naming the file and the frame, nothing written
    blank = nib.Nifti1Image(np.stack([ed, es, np.zeros_like(ed)], axis=3), None, header=ed_img.header.copy())
    blank.header.set_data_shape((*ed.shape, 3))
    nib.save(blank, tmp_path / "blank.nii.gz")
    assert main(["cycle", "--subject", "p80", "--image", str(tmp_path / "blank.nii.gz"), "--orientation", "stored",
                 "--out-tsv", str(bad["tsv"]), "--out-json", str(bad["json"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "blank.nii.gz: frame 2: " in err[0] and "percentile range" in err[0]
    assert not bad["tsv"].exists() and not bad["json"].exists()


def test_curve_leaves_out_the_wall_panel_without_thickness(tmp_path) -> None:
    from ssll.nn.cycle import CycleResult, plot_curve

    frames = [{"frame": t, "lv_cavity_ml": v, "rv_cavity_ml": v, "lv_wall_thickness_mm": math.nan}
              for t, v in enumerate([120.0, 80.0, 100.0])]
    plot_curve(CycleResult(frames, {}, 0, 1), tmp_path / "c.png", title="s")
    assert int.from_bytes((tmp_path / "c.png").read_bytes()[20:24], "big") == 360
