from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import biv_phantom, image_from_labels, write_nifti

from ssll.errors import SsllError
from ssll.orientation import orientation_by_name
from ssll.qc import COLOURS, montage, overlay_rgb, run_qc


def test_overlay_colours_labels() -> None:
    img = np.zeros((4, 3), np.float32)
    lab = np.zeros((4, 3), np.uint8)
    lab[1, 2] = 1
    rgb = overlay_rgb(img, lab, alpha=1.0)
    assert rgb.shape == (3, 4, 3)  # shown transposed: rows are j
    np.testing.assert_allclose(rgb[2, 1], COLOURS[1])
    np.testing.assert_allclose(rgb[0, 0], 0.0)


def test_montage_writes_png(tmp_path: Path) -> None:
    lab = biv_phantom((64, 60, 12))
    img = image_from_labels(lab) / 400.0
    pts = np.array([[40, 30, 6], [20, 40, 6], [20, 20, 6], [5, 30, 6], [31, 30, 1], [31, 30, 10.0]])
    montage(img, lab, (1.5, 1.5, 8.0), tmp_path / "qc.png", landmarks_vox=pts, title="phantom")
    data = (tmp_path / "qc.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_montage_shows_a_turned_study_the_way_it_was_segmented(tmp_path: Path, monkeypatch) -> None:
    import ssll.qc

    lab = biv_phantom((64, 60, 12))
    img = image_from_labels(lab) / 400.0
    turn = orientation_by_name("transpose+rot90+reversed")
    panels: list[tuple[np.ndarray, np.ndarray]] = []
    monkeypatch.setattr(ssll.qc, "overlay_rgb", lambda i, la: panels.append((i.copy(), la.copy())) or overlay_rgb(i, la))
    montage(img, lab, (1.5, 1.5, 8.0), tmp_path / "a.png", refined=lab)
    as_segmented, panels[:] = list(panels), []
    # the same study stored the other way round, shown in the orientation that turns it back
    montage(turn.undo(img), turn.undo(lab), (1.5, 1.5, 8.0), tmp_path / "b.png", refined=turn.undo(lab),
            orientation=turn)
    assert len(panels) == len(as_segmented) == 2 * (8 + 2)
    for (i1, l1), (i2, l2) in zip(panels, as_segmented):
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(l1, l2)
    # without it, the montage shows the stored grid: other pictures
    panels[:] = []
    montage(turn.undo(img), turn.undo(lab), (1.5, 1.5, 8.0), tmp_path / "c.png")
    assert not np.array_equal(panels[0][1], as_segmented[0][1])


def test_run_qc_names_a_bad_orientation_record(tmp_path: Path) -> None:
    lab = biv_phantom((32, 30, 6))
    write_nifti(tmp_path / "img.nii.gz", image_from_labels(lab).astype(np.float32))
    write_nifti(tmp_path / "lab.nii.gz", lab)
    bad = tmp_path / "ED_orientation.json"
    bad.write_text('{"orientation": "rot45"}')
    with pytest.raises(SsllError, match=r"ED_orientation\.json: no orientation 'rot45'"):
        run_qc(image=str(tmp_path / "img.nii.gz"), labels=str(tmp_path / "lab.nii.gz"), out_png=str(tmp_path / "q.png"),
               orientation_json=str(bad))
    assert not (tmp_path / "q.png").exists()


def _landmarks_ok() -> np.ndarray:
    # LV lateral wall, RV inserts 40 mm apart, RV lateral beyond them, apex 90 mm from the mitral centre
    return np.array([[35, 0, 0], [0, 20, 0], [0, -20, 0], [-45, 0, 0], [5, 0, -60], [0, 0, 30.0]])


def test_refined_rv_wall_in_pieces_is_flagged_only_where_the_segmentation_has_an_rv_wall() -> None:
    from ssll.qc import qc_flags

    lab = biv_phantom((64, 60, 24), spacing=(1.5, 1.5, 4.0))  # an RV wall round the RV cavity
    refined = lab.copy()
    refined[(refined == 4) & (np.arange(60)[None, :, None] % 6 == 0)] = 0  # the refined RV wall cut in strips
    refined[(refined == 4) & (np.arange(24)[None, None, :] % 4 == 0)] = 0
    kw = {"landmarks_mm": {"ED": _landmarks_ok()}, "measures": {}}
    flags = qc_flags(segmentations={"ED": lab}, refined={"ED": refined}, **kw)
    assert [f["reason"].split(" in ")[0] for f in flags if f["flag"] == "refined_in_pieces"] == ["refined rv_wall"]
    no_wall = np.where(lab == 4, 0, lab)  # a real scan's segmentation: no RV wall
    assert not any(f["flag"] == "refined_in_pieces" for f in qc_flags(segmentations={"ED": no_wall},
                                                                       refined={"ED": refined}, **kw))


def test_flags_fire_for_known_faults_and_stay_quiet_on_a_good_subject() -> None:
    from ssll.qc import qc_flags

    lab = biv_phantom((64, 60, 24), spacing=(1.5, 1.5, 4.0))
    good = {"ed_lv_cavity_ml": 150.0, "es_lv_cavity_ml": 60.0, "ed_lv_mass_g": 120.0, "ed_rv_cavity_ml": 160.0,
            "lv_ef_pct": 60.0, "rv_ef_pct": 55.0}
    assert qc_flags(segmentations={"ED": lab}, refined={"ED": lab}, landmarks_mm={"ED": _landmarks_ok()},
                    measures=good) == []
    broken = lab.copy()
    broken[(broken == 2) & (np.arange(64)[:, None, None] > 40)] = 0  # an open LV wall
    broken[2:6, 2:6, 2:6] = 3  # a second RV cavity piece
    bad_lm = _landmarks_ok()
    bad_lm[5] = bad_lm[4] + [0, 0, 10]  # apex 10 mm from the mitral centre
    flags = qc_flags(segmentations={"ED": broken}, refined={"ED": np.zeros_like(lab)},
                     landmarks_mm={"ED": bad_lm}, measures={**good, "lv_ef_pct": 95.0})
    names = {f["flag"] for f in flags}
    assert {"lv_wall_open", "landmarks_implausible", "refined_disagrees", "measure_out_of_range"} <= names
    assert not any(f["flag"] == "structure_in_pieces" for f in flags)  # 64 voxels: < 5% of the RV cavity
    big = broken.copy()
    big[0:14, 0:14, 0:10] = 3
    assert "structure_in_pieces" in {f["flag"] for f in qc_flags(segmentations={"ED": big}, refined=None,
                                                                    landmarks_mm={"ED": _landmarks_ok()}, measures=good)}
    reasons = " ".join(f["reason"] for f in flags)
    assert "lv_ef_pct = 95.0 outside 10-85" in reasons and "apex to mitral centre 10 mm" in reasons
    swapped = _landmarks_ok()
    swapped[3] = [30.0, 5.0, 0.0]  # the RV lateral point found on the LV's lateral side
    assert "RV lateral turning point on the LV lateral side" in " ".join(
        f["reason"] for f in qc_flags(segmentations={"ED": lab}, refined=None, landmarks_mm={"ED": swapped},
                                      measures=good))


def test_low_expected_dice_is_flagged_below_the_threshold_for_the_cavities_and_lv_wall_only() -> None:
    from ssll.qc import MIN_EXPECTED_DICE, qc_flags

    lab = biv_phantom((64, 60, 24), spacing=(1.5, 1.5, 4.0))
    good = {"ed_lv_cavity_ml": 150.0, "es_lv_cavity_ml": 60.0, "ed_lv_mass_g": 120.0, "ed_rv_cavity_ml": 160.0,
            "lv_ef_pct": 60.0, "rv_ef_pct": 55.0}
    fine = {"lv_cavity": 0.93, "lv_wall": 0.80, "rv_cavity": MIN_EXPECTED_DICE, "rv_wall": 0.2}  # thin RV wall: not flagged
    poor = {"lv_cavity": 0.42, "lv_wall": 0.78, "rv_cavity": 0.47, "rv_wall": None}

    def flags(scores: dict) -> list[dict]:
        return qc_flags(segmentations={"ED": lab, "ES": lab}, refined=None,
                        landmarks_mm={"ED": _landmarks_ok(), "ES": _landmarks_ok()}, measures=good,
                        expected_dice=scores)

    assert flags({"ED": fine, "ES": fine}) == [] and flags({}) == []
    assert flags({"ED": fine, "ES": poor}) == [
        {"flag": "low_expected_dice", "phase": "ES",
         "reason": f"the network expects Dice lv_cavity 0.420, rv_cavity 0.470 (< {MIN_EXPECTED_DICE:.2f})"}]
    # a higher line (qc: min_expected_dice) also catches the LV wall at 0.78 and the fine RV cavity
    strict = qc_flags(segmentations={"ED": lab, "ES": lab}, refined=None,
                      landmarks_mm={"ED": _landmarks_ok(), "ES": _landmarks_ok()}, measures=good,
                      expected_dice={"ED": fine, "ES": poor}, min_expected_dice=0.79)
    assert [(f["phase"], f["reason"]) for f in strict] == [
        ("ED", f"the network expects Dice rv_cavity {MIN_EXPECTED_DICE:.3f} (< 0.79)"),
        ("ES", "the network expects Dice lv_cavity 0.420, lv_wall 0.780, rv_cavity 0.470 (< 0.79)")]


def test_ed_and_es_segmented_in_different_orientations_are_flagged() -> None:
    from ssll.qc import qc_flags

    lab = biv_phantom((64, 60, 24), spacing=(1.5, 1.5, 4.0))
    good = {"ed_lv_cavity_ml": 150.0, "es_lv_cavity_ml": 60.0, "ed_lv_mass_g": 120.0, "ed_rv_cavity_ml": 160.0,
            "lv_ef_pct": 60.0, "rv_ef_pct": 55.0}

    def flags(orientations: dict) -> list[dict]:
        return qc_flags(segmentations={"ED": lab, "ES": lab}, refined=None,
                        landmarks_mm={"ED": _landmarks_ok(), "ES": _landmarks_ok()}, measures=good,
                        orientations=orientations)

    assert flags({"ED": "rot0", "ES": "rot0"}) == [] == flags({"ED": "rot90+reversed", "ES": "rot90+reversed"})
    assert flags({}) == [] == flags({"ED": "rot90"})
    assert flags({"ED": "rot0", "ES": "rot90+reversed"}) == [
        {"flag": "orientation_differs", "phase": "ED+ES", "reason": "segmented in different orientations of the "
         "voxel grid (ED rot0, ES rot90+reversed): one of them is probably wrong"}]


def test_ed_and_es_refined_with_and_without_mirroring_are_flagged() -> None:
    from ssll.qc import qc_flags

    lab = biv_phantom((64, 60, 24), spacing=(1.5, 1.5, 4.0))
    good = {"ed_lv_cavity_ml": 150.0, "es_lv_cavity_ml": 60.0, "ed_lv_mass_g": 120.0, "ed_rv_cavity_ml": 160.0,
            "lv_ef_pct": 60.0, "rv_ef_pct": 55.0}

    def flags(ed: dict, es: dict) -> list[dict]:
        return [f for f in qc_flags(segmentations={"ED": lab, "ES": lab}, refined=None,
                                    landmarks_mm={"ED": _landmarks_ok(), "ES": _landmarks_ok()}, measures=good,
                                    refine_records={"ED": ed, "ES": es}) if f["flag"] == "mirror_differs"]

    fell_back = {"init": "labels", "mirrored": False, "init_fallback": "landmark initialisation failed (...)"}
    started = [f for f in qc_flags(segmentations={"ED": lab, "ES": lab}, refined=None,
                                   landmarks_mm={"ED": _landmarks_ok(), "ES": _landmarks_ok()}, measures=good,
                                   refine_records={"ED": fell_back, "ES": {"init": "landmarks", "mirrored": False}})]
    assert [(f["flag"], f["phase"]) for f in started] == [("refined_from_labels", "ED")]
    ruled = {"init": "landmarks_from_labels", "mirrored": True, "init_fallback": "landmark initialisation failed (...)"}
    started = [f for f in qc_flags(segmentations={"ED": lab, "ES": lab}, refined=None,
                                   landmarks_mm={"ED": _landmarks_ok(), "ES": _landmarks_ok()}, measures=good,
                                   refine_records={"ED": {"init": "landmarks", "mirrored": True}, "ES": ruled})]
    assert [(f["flag"], f["phase"]) for f in started] == [("landmarks_rejected", "ES")]
    kept = {"init": "landmarks", "mirrored": True, "init_fallback": "landmarks implausible (...); used them all the same"}
    started = qc_flags(segmentations={"ED": lab, "ES": lab}, refined=None,
                       landmarks_mm={"ED": _landmarks_ok(), "ES": _landmarks_ok()}, measures=good,
                       refine_records={"ED": {"init": "landmarks", "mirrored": True}, "ES": kept})
    assert started == []  # started from the network's landmarks after all: not refined from the labels
    assert [f["flag"] for f in flags({"init": "landmarks", "mirrored": False}, ruled)] == ["mirror_differs"]
    swapped = qc_flags(segmentations={"ED": lab, "ES": lab}, refined=None,
                       landmarks_mm={"ED": _landmarks_ok(), "ES": _landmarks_ok()}, measures=good,
                       swapped_inserts={"ED": None, "ES": "the network's landmarks had the other handedness ..."})
    assert [(f["flag"], f["phase"], f["reason"]) for f in swapped] == [
        ("rv_inserts_swapped", "ES", "the network's landmarks had the other handedness ...")]
    plain, mirror = {"init": "landmarks", "mirrored": False}, {"init": "landmarks", "mirrored": True}
    assert flags(plain, plain) == [] == flags(mirror, mirror)
    assert flags(mirror, {"init": "labels", "mirrored": False}) == []  # a label-only start says nothing of it
    assert flags(plain, mirror) == [{"flag": "mirror_differs", "phase": "ED+ES", "reason": "the refinement mirrored "
                                     "the atlases into ES but not ED: the two come from one stack, so one phase's "
                                     "landmarks are probably in the wrong order"}]


def test_ed_or_es_off_the_volume_curve_is_flagged_beyond_one_frame_cyclically(tmp_path: Path) -> None:
    """phase_off_curve: ES 3 frames from the curve's smallest LV cavity is flagged with both frames and the method;
    a neighbouring frame, or ED at frame 0 against the curve's last frame (cyclic neighbours), is not; through
    run_qc_flags the two records must come together and be well formed."""
    import json

    import pytest

    from ssll.errors import SsllError
    from ssll.qc import qc_flags, run_qc_flags

    lab = biv_phantom((64, 60, 24), spacing=(1.5, 1.5, 4.0))
    good = {"ed_lv_cavity_ml": 150.0, "es_lv_cavity_ml": 60.0, "ed_lv_mass_g": 120.0, "ed_rv_cavity_ml": 160.0,
            "lv_ef_pct": 60.0, "rv_ef_pct": 55.0}

    def flags(ed: int, es: int, curve_ed: int, curve_es: int) -> list[dict]:
        return qc_flags(segmentations={"ED": lab, "ES": lab}, refined=None,
                        landmarks_mm={"ED": _landmarks_ok(), "ES": _landmarks_ok()}, measures=good,
                        phases={"ed": ed, "es": es, "n_frames": 20, "ed_method": "frame 0",
                                "es_method": "max intensity change"},
                        cycle={"ed_frame": curve_ed, "es_frame": curve_es, "n_frames": 20})

    assert flags(0, 7, 0, 7) == [] == flags(0, 6, 0, 7) == flags(0, 7, 19, 8)
    assert flags(0, 6, 0, 9) == [{"flag": "phase_off_curve", "phase": "ES", "reason": "ES is frame 6 (max intensity "
                                  "change), the volume curve's smallest LV cavity is frame 9 of 20 (ssll cycle): "
                                  "measures may be off"}]
    assert [f["phase"] for f in flags(0, 7, 17, 7)] == ["ED"]

    kw = _flag_inputs(tmp_path)
    (tmp_path / "frames.json").write_text(json.dumps({"ed": 0, "es": 4, "n_frames": 20, "ed_method": "frame 0",
                                                      "es_method": "given"}))
    (tmp_path / "cycle.json").write_text(json.dumps({"ed_frame": 0, "es_frame": 9, "n_frames": 20}))
    got = run_qc_flags(**kw, frames=str(tmp_path / "frames.json"), cycle=str(tmp_path / "cycle.json"))
    assert [(f["flag"], f["phase"]) for f in got] == [("phase_off_curve", "ES")] and "(given)" in got[0]["reason"]
    with pytest.raises(SsllError, match="together"):
        run_qc_flags(**kw, cycle=str(tmp_path / "cycle.json"))
    (tmp_path / "cycle.json").write_text(json.dumps({"ed_frame": 0, "n_frames": 20}))
    with pytest.raises(SsllError, match=r"cycle.json: not a cycle record \(integer ed_frame, es_frame, n_frames\)"):
        run_qc_flags(**kw, frames=str(tmp_path / "frames.json"), cycle=str(tmp_path / "cycle.json"))


def _flag_inputs(tmp_path: Path) -> dict:
    """run_qc_flags' arguments for one phantom subject at ED, with landmarks and measures."""
    import json

    import pandas as pd
    from conftest import write_nifti

    lab = biv_phantom((64, 60, 24), spacing=(1.5, 1.5, 4.0))
    write_nifti(tmp_path / "lab.nii.gz", lab, spacing=(1.5, 1.5, 4.0))
    (tmp_path / "l.json").write_text(json.dumps({"landmarks": [
        {"landmark": i, "x_mm": float(x), "y_mm": float(y), "z_mm": float(z)}
        for i, (x, y, z) in enumerate(_landmarks_ok(), 1)]}))
    pd.DataFrame([{"subject": "s", "lv_ef_pct": 60.0}]).to_csv(tmp_path / "m.tsv", sep="\t", index=False)
    return {"subject": "s", "segmentations": {"ED": str(tmp_path / "lab.nii.gz")}, "refined": {},
            "landmarks": {"ED": str(tmp_path / "l.json")}, "measures_tsv": str(tmp_path / "m.tsv"),
            "refine_records": {}, "records": {}, "out_json": str(tmp_path / "f.json")}


def test_run_qc_flags_records_the_expected_dice_and_refuses_a_bad_record(tmp_path: Path) -> None:
    import json

    import pytest

    from ssll.errors import SsllError
    from ssll.qc import run_qc_flags

    kw = _flag_inputs(tmp_path)
    scores = {"lv_cavity": 0.5, "lv_wall": 0.8, "rv_cavity": 0.9, "rv_wall": None}
    (tmp_path / "d.json").write_text(json.dumps(scores))
    flags = run_qc_flags(**kw, expected_dice={"ED": str(tmp_path / "d.json")})
    assert [f["flag"] for f in flags] == ["low_expected_dice"]
    written = json.loads((tmp_path / "f.json").read_text())
    assert written["expected_dice"] == {"ED": scores} and written["min_expected_dice"] == 0.70
    assert run_qc_flags(**kw, expected_dice={"ED": str(tmp_path / "d.json")}, min_expected_dice=0.45) == []
    assert json.loads((tmp_path / "f.json").read_text())["min_expected_dice"] == 0.45
    with pytest.raises(ValueError, match="min_expected_dice 70.0: must be in"):
        run_qc_flags(**kw, expected_dice={"ED": str(tmp_path / "d.json")}, min_expected_dice=70.0)
    (tmp_path / "o.json").write_text(json.dumps({"orientation": "rot90+reversed", "searched": True}))
    run_qc_flags(**kw, orientations={"ED": str(tmp_path / "o.json")})
    assert json.loads((tmp_path / "f.json").read_text())["orientation"] == {"ED": "rot90+reversed"}
    (tmp_path / "o.json").write_text(json.dumps({"searched": True}))
    with pytest.raises(SsllError, match="o.json: not an orientation record"):
        run_qc_flags(**kw, orientations={"ED": str(tmp_path / "o.json")})
    (tmp_path / "d.json").write_text(json.dumps({"lv_cavity": 1.7}))
    with pytest.raises(SsllError, match="d.json: not an expected-Dice record"):
        run_qc_flags(**kw, expected_dice={"ED": str(tmp_path / "d.json")})


def test_open_wall_fraction_is_zero_for_a_closed_ring() -> None:
    from ssll.qc import open_wall_fraction

    lab = biv_phantom((64, 60, 24), spacing=(1.5, 1.5, 4.0))
    assert open_wall_fraction(lab) == 0.0
    no_wall = np.where(lab == 2, 0, lab)
    assert open_wall_fraction(no_wall) == 1.0



def test_qc_flags_and_simulation_do_not_import_torch(tmp_path: Path) -> None:
    # the QC job runs once per subject: importing torch (it came with ssll.refine) was most of its time
    import json

    kw = _flag_inputs(tmp_path)
    (tmp_path / "kw.json").write_text(json.dumps(kw))
    code = ("import json, sys; from ssll.qc import run_qc_flags; import ssll.simulate; "
            f"run_qc_flags(**json.load(open({str(tmp_path / 'kw.json')!r}))); "
            "sys.exit(3 if 'torch' in sys.modules else 0)")
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "f.json").exists()


def _bullet(shape=(48, 48, 56), spacing=(1.25, 1.25, 2.0), base_k=10, centre_i=None, towards=1) -> np.ndarray:
    """An LV (canonical labels) shaped as half an ellipsoid: its base, 36 mm across, on slice ``base_k``, its
    apex 60 mm from there towards increasing ``k`` (``towards`` 1) or decreasing ``k`` (-1); wall 6 mm."""
    ii, jj, kk = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    x = (ii - ((shape[0] - 1) / 2 if centre_i is None else centre_i)) * spacing[0]
    y = (jj - (shape[1] - 1) / 2) * spacing[1]
    z = (kk - base_k) * spacing[2] * towards
    lab = np.zeros(shape, np.uint8)
    lab[(z >= 0) & ((x**2 + y**2) / 18.0**2 + z**2 / 60.0**2 < 1)] = 2
    lab[(z >= 0) & ((x**2 + y**2) / 12.0**2 + z**2 / 54.0**2 < 1)] = 1
    return lab


def _stack(shape=(48, 48, 56), first=8, last=47) -> tuple[np.ndarray, np.ndarray]:
    """A field of view holding working slices ``first..last`` (an 8 mm stack at 2 mm) and its acquired slices."""
    fov = np.zeros(shape, bool)
    fov[:, :, first : last + 1] = True
    return fov, np.arange(first + 1, last + 1, 4)


def test_coverage_flags_a_stack_that_stops_short_of_the_apex_whichever_way_it_runs() -> None:
    from ssll.qc import FieldOfView, coverage_problems

    spacing = (1.25, 1.25, 2.0)
    fov, acquired = _stack()
    whole = _bullet()  # the apex at slice 40, inside the stack (8-47)
    assert coverage_problems(np.where(fov, whole, 0), FieldOfView(fov, spacing), acquired=acquired) == []
    short, short_acq = _stack(last=27)  # the stack ends 34 mm from the base, 26 mm short of the apex
    got = coverage_problems(np.where(short, whole, 0), FieldOfView(short, spacing), acquired=short_acq)
    assert [f for f, _ in got] == ["apex_not_covered"]
    cav = (whole[:, :, short_acq] == 1).sum(axis=(0, 1))
    assert f"working slice 25) is {100 * cav[-1] / cav.max():.0f}% of its largest" in got[0][1]  # ~ 1 - (30/54)^2
    # the same heart stored apex first: the apical end is found from the LV's areas, not from the slice order
    flipped = coverage_problems(np.where(short, whole, 0)[:, :, ::-1], FieldOfView(short[:, :, ::-1], spacing),
                                acquired=55 - short_acq)
    assert [f for f, _ in flipped] == ["apex_not_covered"] and "working slice 30" in flipped[0][1]
    # without acquired slices every working slice counts: the stack's last one is still well inside the LV
    assert [f for f, _ in coverage_problems(np.where(short, whole, 0), FieldOfView(short, spacing))] == [
        "apex_not_covered"]
    # a stack cut only at the base is not flagged (no basal rule)
    base_cut, base_acq = _stack(first=20)
    assert coverage_problems(np.where(base_cut, whole, 0), FieldOfView(base_cut, spacing), acquired=base_acq) == []


def test_coverage_flags_a_heart_at_the_edge_of_the_scan_or_of_the_working_grid() -> None:
    from ssll.qc import FieldOfView, coverage_problems

    spacing = (1.25, 1.25, 2.0)
    fov, acquired = _stack()
    # the scan's in-plane field of view ends 10 mm inside the heart (what lies beyond is not labelled)
    narrow = fov.copy()
    narrow[int(23.5 + 18 / 1.25 - 10 / 1.25) + 1 :] = False
    got = coverage_problems(np.where(narrow, _bullet(), 0), FieldOfView(narrow, spacing), acquired=acquired)
    assert [f for f, _ in got] == ["heart_at_edge"]
    assert "the scan's in-plane field of view" in got[0][1] and "working grid" not in got[0][1]
    # the scan reaches past the grid, whose face cuts the heart
    off = _bullet(centre_i=47 - 18 / 1.25 + 10 / 1.25)
    got = coverage_problems(np.where(fov, off, 0), FieldOfView(fov, spacing), acquired=acquired)
    assert [f for f, _ in got] == ["heart_at_edge"] and "of the working grid" in got[0][1]
    assert "scan's" not in got[0][1]
    # 6 mm clear of both edges: not flagged (the band is 5 mm)
    clear = _bullet(centre_i=47 - (18 + 6) / 1.25)
    assert coverage_problems(np.where(fov, clear, 0), FieldOfView(fov, spacing), acquired=acquired) == []
    with pytest.raises(ValueError, match="differ"):
        coverage_problems(clear[:-1], FieldOfView(fov, spacing))


def test_run_qc_flags_reads_the_field_of_view_from_the_grid_record(tmp_path: Path) -> None:
    import json

    from ssll.preprocess import GridRecord, input_fov_mask, working_affine
    from ssll.qc import run_qc_flags

    # a 96 mm scan of five 8 mm slices; a working grid of 48x48x56 at 1.25x1.25x2 mm centred on it
    aff = np.diag([1.5, 1.5, 8.0, 1.0])
    shape = (48, 48, 56)
    rec = GridRecord((64, 64, 5), aff, shape, working_affine(aff, (64, 64, 5), shape=shape))
    (tmp_path / "rec.json").write_text(json.dumps(rec.to_dict()))
    kw = _flag_inputs(tmp_path)
    fov = input_fov_mask(rec)
    ks = np.nonzero(fov.any(axis=(0, 1)))[0]
    # what the network labels of an LV whose base is at the stack's start: the stack stops 40 mm short of the apex
    lab = np.where(fov, _bullet(base_k=int(ks[0])), 0).astype(np.uint8)
    write_nifti(tmp_path / "lab.nii.gz", lab, affine=rec.working_affine)
    assert "apex_not_covered" not in {f["flag"] for f in run_qc_flags(**kw)}  # no grid record: not checked
    kw["records"] = {"ED": str(tmp_path / "rec.json")}
    flags = {f["flag"] for f in run_qc_flags(**kw)}
    assert "apex_not_covered" in flags and "heart_at_edge" not in flags
