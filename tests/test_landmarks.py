from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import biv_phantom, write_nifti

from ssll.errors import LandmarkError
from ssll.labels import Label, Landmark
from ssll.landmarks import (
    handedness,
    landmark_map,
    landmarks_from_labels,
    landmarks_of_record,
    odd_handed,
    points_from_landmark_map,
    read_landmarks,
    restrict_landmark_map,
    run_landmarks,
    voxel_to_world,
    world_to_voxel,
)

AFF = np.diag([1.5, 1.5, 8.0, 1.0])


def _phantom() -> np.ndarray:
    # LV centred at i=31.5, j=29.5; RV to the -i side; the LV is longer towards k=0 (apex)
    # ellipsoids centred on the base slice k=9.5, cut above: widest at the base, an apical
    # wall-only cap at k=1 (no LV at k=0)
    lab = biv_phantom((64, 60, 12), centre=(31.5, 29.5, 9.5))
    lab[..., 10:] = 0
    return lab


def test_landmarks_of_a_known_shape() -> None:
    lab = _phantom()
    pts = landmarks_from_labels(lab, AFF)
    assert pts.shape == (6, 3)
    # apex at the LV axis, at the tip of the epicardial ellipsoid (semi-axis 28 x 2.5 = 70 mm
    # from k = 9.5 with 8 mm slices: k = 0.75), between the wall-only cap slice k=1 and k=0
    assert (lab[..., 0] == 0).all() and (lab[..., 1] == Label.LV_WALL).any() and not (lab[..., 1] == Label.LV_CAVITY).any()
    np.testing.assert_allclose(pts[Landmark.APEX - 1], [31.5, 29.5, 0.75], atol=0.15)
    # mitral valve: the cut plane k = 9.5, half a slice basal of the last (full) LV slice
    np.testing.assert_allclose(pts[Landmark.MITRAL_VALVE_CENTRE - 1], [31.5, 29.5, 9.5], atol=0.1)
    mid = pts[0, 2]
    assert np.allclose(pts[:4, 2], mid) and 4 <= mid <= 6
    # LV lateral wall: opposite the RV (+i side), half-way through the wall on the mid slice
    lat = pts[Landmark.LV_LATERAL_WALL - 1]
    dz = (mid - 9.5) * 8.0 / 2.5
    r_in, r_out = np.sqrt(20.0**2 - dz**2), np.sqrt(28.0**2 - dz**2)
    assert (lat[0] - 31.5) * 1.5 == pytest.approx((r_in + r_out) / 2, abs=1.5) and abs(lat[1] - 29.5) < 2
    # RV insert points: symmetric about the LV-RV axis, one each side in j
    a, b = pts[Landmark.RV_INSERT_ANTERIOR - 1], pts[Landmark.RV_INSERT_INFERIOR - 1]
    assert a[1] > 29.5 > b[1]  # anterior = larger world y = larger j here
    assert abs((a[1] - 29.5) + (b[1] - 29.5)) < 2.0
    # RV lateral turning point: farthest RV point, on the -i side
    assert pts[Landmark.RV_LATERAL_TURNING - 1][0] < a[0]


def test_apex_beyond_a_stack_cut_short() -> None:
    # the stack loses the two most apical slices: the last LV slice (the wall-only cap) is the
    # stack's first; the tip (k = 0.75 before the cut, -1.25 after) is extrapolated from the
    # LV area of the three most apical slices
    lab = _phantom()[..., 2:]
    pts = landmarks_from_labels(lab, AFF)
    np.testing.assert_allclose(pts[Landmark.APEX - 1, 2], -1.25, atol=0.25)


def test_apex_follows_the_lv_axis_not_a_shifted_slice() -> None:
    # breath-hold misregistration: the apical cap slice is shifted 3 voxels in i; the apex follows
    # the LV axis fitted (Theil-Sen) through the 4 apical slices and moves by less than half the
    # shift (the cap's centroid would move the full 3 voxels)
    lab = _phantom()
    lab[..., 1] = np.roll(lab[..., 1], 3, axis=0)
    pts = landmarks_from_labels(lab, AFF)
    assert abs(pts[Landmark.APEX - 1, 0] - 31.5) < 1.5 and abs(pts[Landmark.APEX - 1, 1] - 29.5) < 0.1


def test_landmarks_without_rv_wall() -> None:
    lab = _phantom()
    lab[lab == Label.RV_WALL] = 0
    pts = landmarks_from_labels(lab, AFF)
    assert np.all(np.isfinite(pts))


def test_no_rv_is_an_error() -> None:
    lab = _phantom()
    lab[lab >= Label.RV_CAVITY] = 0
    with pytest.raises(LandmarkError, match="LV cavity and an RV"):
        landmarks_from_labels(lab, AFF, what="case")


def test_no_lv_is_an_error() -> None:
    with pytest.raises(LandmarkError, match="LV spans 0"):
        landmarks_from_labels(np.zeros((10, 10, 5), np.uint8), AFF)


def test_map_round_trip() -> None:
    pts = np.array([[10.2, 11.0, 3.0], [20, 20, 4], [30, 5, 5], [5, 30, 2], [15.5, 15.5, 1], [25, 25, 6.0]])
    m = landmark_map(pts, (40, 40, 8), AFF, radius_mm=3.0)
    assert set(np.unique(m)) == set(range(7))
    back = points_from_landmark_map(m)
    np.testing.assert_allclose(back, pts, atol=0.5)


def test_world_voxel_inverse() -> None:
    p = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(world_to_voxel(voxel_to_world(p, AFF), AFF), p)


def test_run_landmarks_writes_world_points(tmp_path: Path) -> None:
    pts = np.array([[10, 11, 3.0], [20, 20, 4], [30, 5, 5], [5, 30, 2], [15, 15, 1], [25, 25, 6]])
    aff = np.array([[1.25, 0, 0, -10], [0, 1.25, 0, 5], [0, 0, 2, 7], [0, 0, 0, 1.0]])
    write_nifti(tmp_path / "m.nii.gz", landmark_map(pts, (40, 40, 8), aff, radius_mm=0.1), aff)
    world = run_landmarks(landmark_map_path=str(tmp_path / "m.nii.gz"), out_json=str(tmp_path / "l.json"),
                          out_csv=str(tmp_path / "l.csv"), out_map=str(tmp_path / "o.nii.gz"))
    np.testing.assert_allclose(world[0], [10 * 1.25 - 10, 11 * 1.25 + 5, 3 * 2 + 7])
    assert "rv_insert_anterior" in (tmp_path / "l.csv").read_text()


def test_run_landmarks_missing_landmark(tmp_path: Path) -> None:
    m = np.zeros((10, 10, 5), np.uint8)
    m[2, 2, 2] = 1
    write_nifti(tmp_path / "m.nii.gz", m)
    with pytest.raises(LandmarkError, match="absent from the map: rv_insert_anterior"):
        run_landmarks(landmark_map_path=str(tmp_path / "m.nii.gz"), out_json=str(tmp_path / "l.json"),
                      out_csv=str(tmp_path / "l.csv"), out_map=str(tmp_path / "o.nii.gz"))


def test_run_landmarks_from_labels_writes_the_derived_points(tmp_path: Path) -> None:
    from ssll.landmarks import run_landmarks_from_labels

    lab = _phantom()
    write_nifti(tmp_path / "lab.nii.gz", lab, AFF)
    world = run_landmarks_from_labels(labels=str(tmp_path / "lab.nii.gz"), convention="canonical",
                                      out_json=str(tmp_path / "l.json"), out_csv=str(tmp_path / "l.csv"),
                                      out_map=str(tmp_path / "m.nii.gz"))
    np.testing.assert_allclose(world, voxel_to_world(landmarks_from_labels(lab, AFF), AFF), atol=1e-4)
    assert "mitral_valve_centre" in (tmp_path / "l.csv").read_text()


def test_landmark_outside_the_field_of_view_is_dropped_unless_it_is_all_there_is() -> None:
    lmap = np.zeros((20, 20, 10), np.uint8)
    lmap[4:6, 4:6, 2:4] = 1  # landmark 1 inside the field of view ...
    lmap[10:16, 10:16, 7:10] = 1  # ... and a larger spurious blob in the zero padding beyond it
    lmap[12:14, 12:14, 8] = 2  # landmark 2 only outside
    fov = np.zeros(lmap.shape, bool)
    fov[:, :, :6] = True
    out = restrict_landmark_map(lmap, fov)
    assert not (out[:, :, 6:] == 1).any() and (out == 1).sum() == 8
    assert (out == 2).sum() == 4  # never lost
    np.testing.assert_allclose(points_from_landmark_map(out)[0], [4.5, 4.5, 2.5])
    np.testing.assert_allclose(points_from_landmark_map(lmap)[0], [12.5, 12.5, 8.0])  # the blob would win


def test_landmark_points_use_the_field_of_view_of_the_record() -> None:
    from ssll.nn.infer import landmark_points
    from ssll.preprocess import preprocess_volume
    from ssll.types import Volume

    aff = np.diag([1.25, 1.25, 8.0, 1.0])
    _, rec = preprocess_volume(Volume(np.random.default_rng(0).random((160, 160, 8)).astype(np.float32), aff))
    lmap = np.zeros(rec.working_shape, np.uint8)
    k_in, k_out = rec.working_shape[2] // 2, 1  # the 64 mm stack is centred in a 160 mm grid: slice 1 is 44 mm out
    lmap[90:93, 90:93, k_in] = 3
    lmap[20:30, 20:30, k_out:k_out + 3] = 3
    pts = landmark_points(lmap, rec)
    np.testing.assert_allclose(pts[2], voxel_to_world(np.array([[91.0, 91.0, k_in]]), rec.working_affine)[0], atol=1e-6)
    assert np.isnan(pts[0]).all()


def test_landmarks_just_beyond_the_acquired_slices_are_kept() -> None:
    # an apex half a slice beyond the last acquired slice is a real landmark, not padding
    from ssll.nn.infer import LANDMARK_FOV_MARGIN_MM
    from ssll.preprocess import input_fov_mask, preprocess_volume
    from ssll.types import Volume

    _, rec = preprocess_volume(Volume(np.random.default_rng(1).random((160, 160, 8)).astype(np.float32),
                                      np.diag([1.25, 1.25, 8.0, 1.0])))
    fov = input_fov_mask(rec)
    grown = input_fov_mask(rec, margin_mm=LANDMARK_FOV_MARGIN_MM)
    ks, kg = np.flatnonzero(fov.any(axis=(0, 1))), np.flatnonzero(grown.any(axis=(0, 1)))
    n = int(LANDMARK_FOV_MARGIN_MM / 2.0)  # 2 mm slices
    assert kg[0] == ks[0] - n and kg[-1] == ks[-1] + n
    assert np.array_equal(grown[:, :, ks[0]:ks[-1] + 1], fov[:, :, ks[0]:ks[-1] + 1])


def test_handedness_flips_with_a_mirror_or_swapped_rv_inserts_and_is_0_when_undefined() -> None:
    # LV lateral +x, RV inserts at +-y, RV lateral -x, apex -z, mitral centre +z
    p = np.array([[35, 0, 0], [0, 20, 0], [0, -20, 0], [-45, 0, 0], [5, 0, -60], [0, 0, 30.0]])
    h = handedness(p)
    assert h in (1, -1)
    assert handedness(p * [-1, 1, 1]) == -h == handedness(p[[0, 2, 1, 3, 4, 5]])
    assert handedness(p + [10.0, -3.0, 7.0]) == h  # a shift changes nothing
    missing = p.copy()
    missing[4] = np.nan
    assert handedness(missing) == 0 and handedness(np.zeros((6, 3))) == 0


def test_odd_handed_names_the_phase_whose_landmarks_disagree_with_the_stack_and_its_own_labels() -> None:
    p = np.array([[35, 0, 0], [0, 20, 0], [0, -20, 0], [-45, 0, 0], [5, 0, -60], [0, 0, 30.0]])
    swapped = p[[0, 2, 1, 3, 4, 5]]
    assert odd_handed([p, p], [p, p]) == [] == odd_handed([p, p], [swapped, swapped])  # the given agree: nothing
    assert odd_handed([p, swapped], [p, p]) == [1]  # ES's inserts swapped (patient037's ES, turned)
    assert odd_handed([swapped, p], [p, p]) == [0]
    assert odd_handed([p, swapped], [p, None]) == []  # ES's own rules failed: no evidence against its landmarks
    assert odd_handed([p, swapped], [swapped, p]) == []  # each disagrees with its own rules: undecided
    assert odd_handed([p, swapped], [p, swapped]) == []  # each agrees with its own: undecided (the QC flag says so)


def test_a_phase_whose_landmarks_have_the_other_handedness_than_its_stack_gets_its_rv_inserts_swapped_back(
        tmp_path: Path) -> None:
    """ED and ES of one stack share one frame. ``ssll landmarks --and`` over two phases whose landmark maps differ
    in handedness (ES's RV inserts swapped, as for a volume segmented in a mirrored orientation) swaps ES's inserts
    back and says so; ED, and both phases without the stack options, are written as the maps have them."""
    from ssll.cli import main

    lab = _phantom()
    write_nifti(tmp_path / "lab.nii.gz", lab, AFF)
    pts = landmarks_from_labels(lab, AFF)
    for ph, p in (("ED", pts), ("ES", pts[[0, 2, 1, 3, 4, 5]])):
        write_nifti(tmp_path / f"{ph}_map.nii.gz", landmark_map(p, lab.shape, AFF, radius_mm=1.0), AFF)

    def run(stack: bool) -> dict[str, dict]:
        argv = ["landmarks", "--subject", "s1"]
        if stack:
            argv += ["--stack-maps", str(tmp_path / "ED_map.nii.gz"), str(tmp_path / "ES_map.nii.gz"),
                     "--stack-labels", str(tmp_path / "lab.nii.gz"), str(tmp_path / "lab.nii.gz")]
        for ph in ("ED", "ES"):
            argv += ["--and", "--landmark-map", str(tmp_path / f"{ph}_map.nii.gz"), "--out-json",
                     str(tmp_path / f"{ph}.json"), "--out-csv", str(tmp_path / f"{ph}.csv"),
                     "--out-map", str(tmp_path / f"{ph}_out.nii.gz")]
        assert main(argv) == 0
        import json

        return {ph: json.loads((tmp_path / f"{ph}.json").read_text()) for ph in ("ED", "ES")}

    def world(d: dict) -> np.ndarray:
        return np.array([[r["x_mm"], r["y_mm"], r["z_mm"]] for r in d["landmarks"]])

    truth = voxel_to_world(pts, AFF)
    plain = run(False)
    assert plain["ED"]["rv_inserts_swapped"] is None is plain["ES"]["rv_inserts_swapped"]
    assert handedness(world(plain["ES"])) == -handedness(truth)
    fixed = run(True)
    assert fixed["ED"]["rv_inserts_swapped"] is None and "swapped back" in fixed["ES"]["rv_inserts_swapped"]
    np.testing.assert_allclose(world(fixed["ES"]), world(fixed["ED"]))  # the same map once swapped back
    write_nifti(tmp_path / "ES_map.nii.gz", landmark_map(pts, lab.shape, AFF, radius_mm=1.0), AFF)  # ES mended
    assert run(True)["ES"]["rv_inserts_swapped"] is None  # a file written again is judged again
    assert np.all(np.abs(world(fixed["ED"]) - truth) <= np.diag(AFF)[:3] / 2 + 1e-6)  # within half a voxel
    assert main(["landmarks", "--stack-maps", str(tmp_path / "ED_map.nii.gz"), "--stack-labels",
                 str(tmp_path / "lab.nii.gz"), "--landmark-map", str(tmp_path / "ES_map.nii.gz"), "--out-json",
                 str(tmp_path / "x.json"), "--out-csv", str(tmp_path / "x.csv"), "--out-map", str(tmp_path / "x.nii.gz")]) == 3


def test_landmarks_of_record_reads_rows_in_landmark_order_and_names_a_broken_file(tmp_path: Path) -> None:
    rows = [{"landmark": n, "x_mm": 10.0 * n, "y_mm": -n, "z_mm": 0.5 * n} for n in (6, 2, 4, 1, 3, 5)]
    pts = landmarks_of_record({"landmarks": rows}, source="mem")
    np.testing.assert_allclose(pts, [[10.0 * n, -n, 0.5 * n] for n in range(1, 7)])
    path = tmp_path / "ED.json"
    path.write_text('{"landmarks": ' + str(rows[:5]).replace("'", '"') + "}")
    with pytest.raises(LandmarkError, match=r"ED\.json: not a landmarks file"):
        read_landmarks(path)
    with pytest.raises(LandmarkError, match="mem: not a landmarks file"):
        landmarks_of_record(["not", "a", "record"], source="mem")


def test_lv_ends_takes_the_larger_half_as_the_base() -> None:
    from ssll.landmarks import lv_ends

    area = np.array([0, 5, 9, 7, 3, 1, 0])
    assert lv_ends(area) == (1, 5)
    assert lv_ends(area[::-1]) == (5, 1)
    with pytest.raises(ValueError, match="spans 1 slice"):
        lv_ends(np.array([0, 4, 0]))
