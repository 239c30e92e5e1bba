"""Wall thickness per AHA segment on synthetic hearts with known answers: a ring of known thickness, the
segments' places around the septum (and the same under a mirror and a transpose), base and apex from the
landmarks, thickening between phases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ssll.labels import Label
from ssll.thickness import AHA_SEGMENTS, aha_segments, segment_thickness, thickness_measures, wall_thickness_map

SHAPE, SPACING = (96, 96, 12), (1.25, 1.25, 8.0)
AFFINE = np.diag([*SPACING, 1.0])
CENTRE = np.array([48.0, 48.0])  # voxels
R_IN = 20.0  # mm


def _heart(wall_mm=8.0, lateral_extra_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """LV ring around CENTRE on slices 1..10 (cavity radius 20 mm), RV cavity on the +j side; the wall
    `wall_mm` thick, plus `lateral_extra_mm` * cos(angle from -j) (thick opposite the RV, thin at the septum).
    Landmarks: insertion points at 150 deg (anterior) and 30 deg (inferior) from +i, mitral centre at slice 0,
    apex at slice 11."""
    i, j = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    di, dj = (i - CENTRE[0]) * SPACING[0], (j - CENTRE[1]) * SPACING[1]
    r, theta = np.hypot(di, dj), np.arctan2(dj, di)
    outer = R_IN + wall_mm + lateral_extra_mm * np.cos(theta + math.pi / 2)
    sl = np.zeros(SHAPE[:2], np.uint8)
    rv = np.hypot(di, dj - 40.0) < 20.0  # against the septum
    sl[rv] = Label.RV_CAVITY
    sl[r < outer] = Label.LV_WALL
    sl[r < R_IN] = Label.LV_CAVITY
    lab = np.zeros(SHAPE, np.uint8)
    lab[:, :, 1:11] = sl[:, :, None]
    ring = R_IN + wall_mm
    lm = np.zeros((6, 3))
    for n, deg in ((1, 150.0), (2, 30.0)):
        lm[n] = [CENTRE[0] * 1.25 + ring * math.cos(math.radians(deg)), CENTRE[1] * 1.25 + ring * math.sin(math.radians(deg)), 40.0]
    lm[0] = [CENTRE[0] * 1.25, CENTRE[1] * 1.25 - ring, 40.0]  # LV lateral wall
    lm[3] = [CENTRE[0] * 1.25, CENTRE[1] * 1.25 + 70.0, 40.0]  # RV lateral turning point
    lm[4] = [CENTRE[0] * 1.25, CENTRE[1] * 1.25, 11 * 8.0]  # apex
    lm[5] = [CENTRE[0] * 1.25, CENTRE[1] * 1.25, 0.0]  # mitral-valve centre
    return lab, lm


def _at(deg: float, k: int, radius_mm: float = R_IN + 4.0) -> tuple[int, int, int]:
    a = math.radians(deg)
    return (round(CENTRE[0] + radius_mm * math.cos(a) / 1.25), round(CENTRE[1] + radius_mm * math.sin(a) / 1.25), k)


@pytest.mark.parametrize("wall_mm", [5.0, 8.0, 12.0])
def test_ring_of_known_thickness(wall_mm: float) -> None:
    lab, lm = _heart(wall_mm)
    t = wall_thickness_map(lab, SPACING)
    wall = lab == Label.LV_WALL
    assert np.isfinite(t[wall]).all() and np.isnan(t[~wall]).all()
    assert np.mean(t[wall]) == pytest.approx(wall_mm, abs=0.6)
    per = segment_thickness(lab, AFFINE, lm)
    assert set(per) == set(AHA_SEGMENTS) and all(v == pytest.approx(wall_mm, abs=0.8) for v in per.values())


def test_segments_sit_around_the_septum() -> None:
    lab, lm = _heart()
    seg = aha_segments(lab, AFFINE, lm)
    assert set(np.unique(seg[lab == Label.LV_WALL])) == set(AHA_SEGMENTS)
    assert (seg[lab != Label.LV_WALL] == 0).all()
    # the RV is at +90 deg, the insertion points at 150 (anterior) and 30 (inferior); base at slice 1 (mitral side)
    expect = {120: 2, 60: 3, 0: 4, 300: 5, 240: 6, 200: 1}
    for deg, n in expect.items():
        assert seg[_at(deg, 2)] == n, (deg, seg[_at(deg, 2)])  # basal third: slices 1-4
        assert seg[_at(deg, 5)] == n + 6  # mid: 5-7
    for deg, n in {90: 14, 0: 15, 270: 16, 180: 13}.items():
        assert seg[_at(deg, 9)] == n  # apical: 8-10
    # the landmarks, not the slice order, say where the base is
    lm_flipped = lm.copy()
    lm_flipped[[4, 5]] = lm[[5, 4]]
    seg_flipped = aha_segments(lab, AFFINE, lm_flipped)
    assert seg_flipped[_at(120, 9)] == 2 and seg_flipped[_at(120, 2)] == 14


@pytest.mark.parametrize("how", ["mirror", "transpose"])
def test_segments_follow_the_anatomy_not_the_grid(how: str) -> None:
    lab, lm = _heart(lateral_extra_mm=3.0)
    seg = aha_segments(lab, AFFINE, lm)
    ijk = np.asarray(lm) / np.array(SPACING)  # world -> voxel (diagonal affine, no offset)
    if how == "mirror":
        lab2, f = lab[:, ::-1], lambda p: np.array([p[0], SHAPE[1] - 1 - p[1], p[2]])
    else:
        lab2, f = lab.transpose(1, 0, 2), lambda p: np.array([p[1], p[0], p[2]])
    lm2 = np.array([f(p) for p in ijk]) * np.array(SPACING)
    seg2 = aha_segments(np.ascontiguousarray(lab2), AFFINE, lm2)
    back = seg2[:, ::-1] if how == "mirror" else seg2.transpose(1, 0, 2)
    wall = lab == Label.LV_WALL
    assert (back[wall] == seg[wall]).mean() > 0.99  # a few voxels on sector borders may round the other way
    t1, t2 = segment_thickness(lab, AFFINE, lm), segment_thickness(np.ascontiguousarray(lab2), AFFINE, lm2)
    assert all(t1[n] == pytest.approx(t2[n], abs=0.1) for n in AHA_SEGMENTS)


def test_thick_lateral_wall_and_thickening() -> None:
    lab, lm = _heart(wall_mm=8.0, lateral_extra_mm=3.0)  # 11 mm opposite the RV, 5 mm at the septum
    per = segment_thickness(lab, AFFINE, lm)
    septal, lateral = [per[n] for n in (2, 3, 8, 9, 14)], [per[n] for n in (5, 6, 11, 12, 16)]
    assert max(septal) < 7.0 and min(lateral) > 9.5
    ed = segment_thickness(*_heart(wall_mm=8.0)[:1], AFFINE, lm)
    es_lab, _ = _heart(wall_mm=12.0)
    row = thickness_measures(ed, segment_thickness(es_lab, AFFINE, lm))
    assert all(row[f"wall_thickening_aha{n:02d}_pct"] == pytest.approx(50.0, abs=10.0) for n in AHA_SEGMENTS)
    assert row["ed_wall_thickness_mean_mm"] == pytest.approx(8.0, abs=0.6)
    assert row["es_wall_thickness_aha07_mm"] == pytest.approx(12.0, abs=0.8)


def test_no_rv_no_segments() -> None:
    lab, lm = _heart()
    lab[lab == Label.RV_CAVITY] = 0
    assert not aha_segments(lab, AFFINE, lm).any()
    assert all(math.isnan(v) for v in segment_thickness(lab, AFFINE, lm).values())


def test_ssll_measures_adds_the_segments_with_landmarks(tmp_path) -> None:
    import json

    import pandas as pd

    from ssll.cli import main
    from ssll.io import save_nifti
    from ssll.labels import LANDMARK_NAMES
    from ssll.types import Volume

    paths = {}
    for phase, wall in (("ED", 8.0), ("ES", 12.0)):
        lab, lm = _heart(wall_mm=wall)
        save_nifti(tmp_path / f"{phase}.nii.gz", Volume(lab, AFFINE), dtype=np.uint8)
        rows = [{"landmark": n + 1, "name": name, "x_mm": p[0], "y_mm": p[1], "z_mm": p[2]}
                for n, (name, p) in enumerate(zip(LANDMARK_NAMES, lm))]
        (tmp_path / f"{phase}.json").write_text(json.dumps({"space": "world RAS+ mm", "landmarks": rows}))
        paths[phase] = (str(tmp_path / f"{phase}.nii.gz"), str(tmp_path / f"{phase}.json"))
    base = ["measures", "--subject", "s1", "--ed-labels", paths["ED"][0], "--es-labels", paths["ES"][0]]
    assert main([*base, "--out-tsv", str(tmp_path / "plain.tsv")]) == 0
    assert not any("thick" in c for c in pd.read_csv(tmp_path / "plain.tsv", sep="\t").columns)
    assert main([*base, "--ed-landmarks", paths["ED"][1], "--es-landmarks", paths["ES"][1], "--ed-refined", paths["ED"][0],
                 "--es-refined", paths["ES"][0], "--out-tsv", str(tmp_path / "m.tsv")]) == 0
    row = pd.read_csv(tmp_path / "m.tsv", sep="\t").iloc[0]
    for prefix in ("", "refined_"):
        assert row[f"{prefix}ed_wall_thickness_aha01_mm"] == pytest.approx(8.0, abs=0.8)
        assert row[f"{prefix}es_wall_thickness_aha16_mm"] == pytest.approx(12.0, abs=0.8)
        assert row[f"{prefix}wall_thickening_aha09_pct"] == pytest.approx(50.0, abs=10.0)
    # a landmarks file that is not one is named
    (tmp_path / "bad.json").write_text("{}")
    assert main([*base, "--ed-landmarks", str(tmp_path / "bad.json"), "--es-landmarks", paths["ES"][1],
                 "--out-tsv", str(tmp_path / "x.tsv")]) != 0
    assert not (tmp_path / "x.tsv").exists()


def test_evaluate_measures_the_truths_wall_with_its_own_landmarks(tmp_path) -> None:
    from ssll.evaluate import run_evaluate
    from ssll.io import save_nifti
    from ssll.types import Volume

    files = {}
    for phase, wall in (("ED", 8.0), ("ES", 12.0)):
        lab, _ = _heart(wall_mm=wall)
        files[phase] = str(tmp_path / f"{phase}.nii.gz")
        save_nifti(files[phase], Volume(lab, AFFINE), dtype=np.uint8)
    out = run_evaluate(subject="s1", predictions={"sslln": files}, truth=files, convention="canonical",
                       out_json=str(tmp_path / "e.json"))
    m = out["measures_truth"]
    assert m["ed_wall_thickness_mean_mm"] == pytest.approx(8.0, abs=0.6)
    assert m["es_wall_thickness_mean_mm"] == pytest.approx(12.0, abs=0.6)
    # a truth the rules cannot place landmarks on (no RV): volumes still, no thickness
    for phase in ("ED", "ES"):
        lab, _ = _heart()
        lab[lab == Label.RV_CAVITY] = 0
        save_nifti(files[phase], Volume(lab, AFFINE), dtype=np.uint8)
    m = run_evaluate(subject="s1", predictions={"sslln": files}, truth=files, convention="canonical",
                     out_json=str(tmp_path / "e2.json"))["measures_truth"]
    assert m["ed_lv_cavity_ml"] > 0 and not any("thick" in k for k in m)
