"""Shape refinement end to end on a synthetic heart: a thick-slice staircase is pulled back to the
smooth HR shape by HR atlases, and ``ssll refine`` writes outputs where the input was in world space."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import biv_phantom, image_from_labels, write_nifti
from scipy import ndimage

from ssll.atlases import AtlasConfig, load_bank, write_atlas, write_manifest
from ssll.cli import main
from ssll.evaluate import dice
from ssll.fusion import FusionConfig
from ssll.interpolate import nearest_upsample
from ssll.motion import shift_slices
from ssll.preprocess import GridRecord
from ssll.refine import (
    RefineConfig,
    acquired_slices,
    clip_beyond_stack,
    labels_as_acquired,
    refine,
    stack_slab,
)

HR = (1.25, 1.25, 2.0)
SHAPE = (80, 80, 60)
LANDMARKS_VOX = np.array([[52.0, 40, 30], [30, 28, 30], [30, 52, 30], [10, 40, 30], [40, 40, 8], [40, 40, 50]])


def _hr_affine(origin=(-50.0, -50.0, -60.0)) -> np.ndarray:
    a = np.diag([*HR, 1.0])
    a[:3, 3] = origin
    return a


def _landmarks_world(aff: np.ndarray) -> np.ndarray:
    return LANDMARKS_VOX @ aff[:3, :3].T + aff[:3, 3]


@pytest.fixture(scope="module")
def bank_dir(tmp_path_factory):
    """Five HR atlases: the heart scaled by 0.95..1.05 about its centre (landmarks scaled alike)."""
    d = tmp_path_factory.mktemp("bank")
    rows = []
    for n, s in enumerate([0.95, 0.975, 1.0, 1.025, 1.05]):
        sp = tuple(v / s for v in HR)  # the same index grid read at a finer spacing = a larger heart in mm
        lab = biv_phantom(shape=SHAPE, spacing=sp)
        aff = _hr_affine()
        centre = aff[:3, :3] @ ((np.asarray(SHAPE) - 1) / 2) + aff[:3, 3]
        world = (_landmarks_world(aff) - centre) * s + centre
        # the atlas grid is the target grid scaled about the heart centre
        a_aff = aff.copy()
        a_aff[:3, :3] *= s
        a_aff[:3, 3] = centre - a_aff[:3, :3] @ ((np.asarray(SHAPE) - 1) / 2)
        vols = write_atlas(d / f"atlas{n}.npz", image=image_from_labels(lab, n) / 450.0, labels=lab, affine=a_aff,
                           landmarks=world)
        rows.append({"atlas_id": f"atlas{n}", "file": f"atlas{n}.npz", "source_image": "synthetic", "weights": "-", **vols})
    write_manifest(d, rows)
    return d


def _lr_target():
    truth = biv_phantom(shape=SHAPE, spacing=HR)
    aff = _hr_affine()
    lr = truth[:, :, 2::5]  # 10 mm slices through the HR truth
    lr_aff = aff.copy()
    lr_aff[:3, 2] *= 5
    lr_aff[:3, 3] = aff[:3, :3] @ [0, 0, 2] + aff[:3, 3]
    return truth, aff, lr, lr_aff


def test_refinement_beats_the_staircase(bank_dir) -> None:
    truth, aff, lr, lr_aff = _lr_target()
    staircase = nearest_upsample(lr, lr_aff, SHAPE, aff)
    image = image_from_labels(staircase, 7) / 450.0
    refined, record = refine(image, staircase, aff, _landmarks_world(aff), load_bank(bank_dir),
                             RefineConfig(atlases=AtlasConfig(top_k=3)), slices=np.arange(2, SHAPE[2], 5))
    for c in (1, 2):
        assert dice(refined == c, truth == c) > dice(staircase == c, truth == c)
    assert dice(refined == 2, truth == 2) > 0.9
    assert len(record["selected"]) == 3 and record["selected"][0]["nmi"] >= record["selected"][-1]["nmi"]
    assert {"selection", "registration", "fusion", "total"} <= set(record["seconds"])
    assert record["fusion"]["largest_component"] is False


def test_a_target_without_rv_wall_takes_the_atlases_rv_wall(bank_dir) -> None:
    """SSLLN-LR on a real scan draws no RV wall: matched as background, the atlases' RV walls follow the
    target's RV cavity into the refined model, instead of being pulled away from the target's background."""
    truth, aff, lr, lr_aff = _lr_target()
    staircase = nearest_upsample(lr, lr_aff, SHAPE, aff)
    no_wall = np.where(staircase == 4, 0, staircase).astype(np.uint8)
    image = image_from_labels(staircase, 7) / 450.0
    bank, ks = load_bank(bank_dir), np.arange(2, SHAPE[2], 5)

    def run(target: np.ndarray, from_atlases: bool) -> tuple[np.ndarray, dict]:
        cfg = RefineConfig(atlases=AtlasConfig(top_k=3, rv_wall_from_atlases=from_atlases))
        return refine(image, target, aff, _landmarks_world(aff), bank, cfg, slices=ks)

    (as_is, rec_as_is), (taken, rec_taken) = run(no_wall, False), run(no_wall, True)
    assert rec_as_is["rv_wall_from_atlases"] is False and rec_taken["rv_wall_from_atlases"] is True
    assert dice(taken == 4, truth == 4) > dice(as_is == 4, truth == 4) + 0.1
    assert dice(taken == 3, truth == 3) >= dice(as_is == 3, truth == 3) - 0.01
    assert run(staircase, True)[1]["rv_wall_from_atlases"] is False  # a target with its RV wall is matched as it is


def test_cli_refine_writes_outputs_on_both_grids(bank_dir, tmp_path) -> None:
    truth, aff, lr, lr_aff = _lr_target()
    img = write_nifti(tmp_path / "lr.nii.gz", image_from_labels(lr, 3), lr_aff)
    rc = main(["preprocess", "--subject", "s1", "--image", str(img), "--out-image", str(tmp_path / "w.nii.gz"),
               "--out-record", str(tmp_path / "w.json"), "--labels", str(write_nifti(tmp_path / "l.nii.gz", lr, lr_aff)),
               "--out-labels", str(tmp_path / "wl.nii.gz")])
    assert rc == 0
    rec = GridRecord.from_dict(json.loads((tmp_path / "w.json").read_text()))
    assert list(acquired_slices(rec)) == sorted(set(acquired_slices(rec)))
    assert len(acquired_slices(rec)) == lr.shape[2]
    pts = _landmarks_world(aff)
    (tmp_path / "lm.json").write_text(json.dumps({"landmarks": [
        {"landmark": n + 1, "x_mm": p[0], "y_mm": p[1], "z_mm": p[2]} for n, p in enumerate(pts)]}))
    out = {k: tmp_path / f"ref_{k}" for k in ("labels.nii.gz", "orig.nii.gz", "rec.json")}
    rc = main(["refine", "--subject", "s1", "--image", str(tmp_path / "w.nii.gz"), "--labels", str(tmp_path / "wl.nii.gz"),
               "--landmarks", str(tmp_path / "lm.json"), "--record", str(tmp_path / "w.json"), "--bank", str(bank_dir),
               "--out-labels", str(out["labels.nii.gz"]), "--out-original", str(out["orig.nii.gz"]),
               "--out-record", str(out["rec.json"]), "--params", '{"atlases": {"top_k": 2}}'])
    assert rc == 0
    orig = nib.load(str(out["orig.nii.gz"]))
    np.testing.assert_allclose(orig.affine, lr_aff, atol=1e-4)
    assert orig.shape == lr.shape
    assert dice(np.asarray(orig.dataobj) == 2, lr == 2) > 0.85
    work = nib.load(str(out["labels.nii.gz"]))
    np.testing.assert_allclose(work.affine, nib.load(str(tmp_path / "w.nii.gz")).affine, atol=1e-6)
    record = json.loads(out["rec.json"].read_text())
    assert record["subject"] == "s1"
    # the model ends with the imaged slab at the base (high k here: the mitral valve landmark's end)
    lo, hi = stack_slab(rec)
    assert record["beyond_stack"]["slab"] == [lo, hi] and record["beyond_stack"]["cut_ends"] == ["basal"]
    assert not np.asarray(work.dataobj)[..., hi + 1:].any()


def test_cli_refine_bad_bank_is_one_line(tmp_path, capsys) -> None:
    rc = main(["refine", "--subject", "s9", "--image", "a", "--labels", "b", "--landmarks", "c", "--record", "d",
               "--bank", str(tmp_path), "--out-labels", "e", "--out-original", "f", "--out-record", "g"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("ssll refine: s9: error:")


def test_config_schema_and_config_yaml_carry_the_code_defaults() -> None:
    """The workflow's schema defaults and config/config.yaml state the refinement settings the code
    uses by default (they drifted once: the schema kept an old control grid)."""
    import dataclasses
    from pathlib import Path

    import yaml

    from ssll.fusion import FusionConfig
    from ssll.register import FFDConfig

    root = Path(__file__).resolve().parents[1]
    schema = yaml.safe_load((root / "workflow/schemas/config.schema.yaml").read_text())["properties"]
    config = yaml.safe_load((root / "config/config.yaml").read_text())
    from ssll.motion import MotionConfig

    for section, cls in (("atlases", AtlasConfig), ("ffd", FFDConfig), ("fusion", FusionConfig), ("motion", MotionConfig)):
        code = {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}
        code = {k: list(v) if isinstance(v, tuple) else v for k, v in code.items()}
        for key, props in schema[section]["properties"].items():
            if "default" in props:
                assert props["default"] == code[key], f"schema {section}.{key}"
        for key, value in config[section].items():
            assert value == code[key], f"config.yaml {section}.{key}"


def test_stack_slab_is_the_input_field_of_view_along_the_slices() -> None:
    from ssll.preprocess import input_fov_mask, preprocess_volume
    from ssll.types import Volume

    for n, origin_k in ((9, 0.0), (10, 3.3)):  # odd and even stacks, off the working grid's phase
        aff = np.diag([1.5, 1.5, 10.0, 1.0])
        aff[:3, 3] = (-100.0, -90.0, origin_k)
        _, rec = preprocess_volume(Volume(np.random.default_rng(n).random((120, 110, n)).astype(np.float32), aff))
        lo, hi = stack_slab(rec)
        assert hi - lo + 1 == n * 5  # n slices of 10 mm on 2 mm working slices
        ks = acquired_slices(rec)
        assert lo < ks.min() and ks.max() < hi  # the slab holds every acquired slice, and more
        assert (lo, hi) == tuple(np.nonzero(input_fov_mask(rec).any(axis=(0, 1)))[0][[0, -1]])
    hr = np.diag([1.25, 1.25, 2.0, 1.0])
    _, rec = preprocess_volume(Volume(np.random.default_rng(0).random((40, 40, 30)).astype(np.float32), hr))
    assert stack_slab(rec) is None


def test_clip_beyond_stack_cuts_where_asked() -> None:
    aff = np.diag([1.25, 1.25, 2.0, 1.0])
    lab = np.zeros((12, 12, 60), np.uint8)
    lab[2:10, 2:10, 4:57] = 2
    lab[4:8, 4:8, 4:57] = 1
    per_slice = {1: 16, 2: 48}
    lm = np.zeros((6, 3))
    lm[4] = (6 * 1.25, 6 * 1.25, 52 * 2.0)  # apex at k = 52
    lm[5] = (6 * 1.25, 6 * 1.25, 8 * 2.0)  # mitral valve centre at k = 8: the base is the low-k end
    out, rec = clip_beyond_stack(lab, aff, lm, (10, 50), keep="apex")
    assert not out[..., :10].any() and (out[..., 10:] == lab[..., 10:]).all()
    assert rec["cut_ends"] == ["basal"] and rec["base_known"]
    assert rec["removed_voxels"] == {str(c): 6 * n for c, n in per_slice.items()}  # k = 4..9
    out, rec = clip_beyond_stack(lab, aff, lm[[0, 1, 2, 3, 5, 4]], (10, 50), keep="apex")  # base at high k
    assert not out[..., 51:].any() and (out[..., :51] == lab[..., :51]).all() and rec["cut_ends"] == ["basal"]
    out, rec = clip_beyond_stack(lab, aff, lm, (10, 50), keep="none")
    assert not out[..., :10].any() and not out[..., 51:].any() and sorted(rec["cut_ends"]) == ["apical", "basal"]
    out, rec = clip_beyond_stack(lab, aff, lm, (10, 50), keep="both")
    assert (out == lab).all() and rec["cut_ends"] == [] and out is not lab
    flat = lm.copy()
    flat[4, 2] = flat[5, 2] + 1.0  # apex and mitral valve half a slice apart: the base is unknown, both ends cut
    out, rec = clip_beyond_stack(lab, aff, flat, (10, 50), keep="apex")
    assert not rec["base_known"] and not out[..., :10].any() and not out[..., 51:].any()
    with pytest.raises(ValueError, match="keep"):
        clip_beyond_stack(lab, aff, lm, (10, 50), keep="base")
    with pytest.raises(ValueError, match="beyond_stack"):
        AtlasConfig.from_mapping({"beyond_stack": "base"})


def test_labels_as_acquired_puts_the_model_back_on_each_slice() -> None:
    lab = biv_phantom(shape=(40, 40, 20), spacing=HR)
    aff = _hr_affine()
    np.testing.assert_array_equal(labels_as_acquired(lab, aff, {"slice_shifts_mm": None}), lab)
    rec = {"slice_shifts_mm": {"slices": [2, 12], "shifts": [[2.5, 0.0], [-2.5, 1.25]]}}
    moved = labels_as_acquired(lab, aff, rec)
    # slice 2 shows the model at v + (2, 0) voxels
    np.testing.assert_array_equal(moved[:-2, :, 2], lab[2:, :, 2])
    np.testing.assert_array_equal(moved, shift_slices(lab, [2, 12], -np.asarray(rec["slice_shifts_mm"]["shifts"]), HR,
                                                      order=0))


def _shifted_stack(tmp_path):  # noqa: ANN001, ANN202
    """The LR target with each slice shifted in-plane by whole voxels (``drawn``), preprocessed by ``ssll preprocess``
    into ``tmp_path`` (w.nii.gz, w.json, wl.nii.gz) with its landmarks (lm.json)."""
    truth, aff, lr, lr_aff = _lr_target()
    drawn = np.array([[2, 0], [-2, 1], [0, -2], [1, 2], [-1, -1], [2, 1], [0, 0], [-2, -1], [1, -2], [0, 2], [-1, 0], [2, -2]])
    shifted = lr.copy()
    for k in range(lr.shape[2]):
        shifted[:, :, k] = ndimage.shift(lr[:, :, k], drawn[k], order=0)
    img = write_nifti(tmp_path / "lr.nii.gz", image_from_labels(shifted, 3), lr_aff)
    assert main(["preprocess", "--subject", "s1", "--image", str(img), "--out-image", str(tmp_path / "w.nii.gz"),
                 "--out-record", str(tmp_path / "w.json"), "--labels",
                 str(write_nifti(tmp_path / "l.nii.gz", shifted, lr_aff)), "--out-labels", str(tmp_path / "wl.nii.gz")]) == 0
    pts = _landmarks_world(aff)
    (tmp_path / "lm.json").write_text(json.dumps({"landmarks": [
        {"landmark": n + 1, "x_mm": p[0], "y_mm": p[1], "z_mm": p[2]} for n, p in enumerate(pts)]}))
    return truth, aff, lr, lr_aff, drawn, shifted


def test_cli_refine_fits_slice_shifts_and_writes_the_input_grid_as_acquired(bank_dir, tmp_path) -> None:
    truth, aff, lr, lr_aff, drawn, shifted = _shifted_stack(tmp_path)
    out = {k: tmp_path / f"ref_{k}" for k in ("labels.nii.gz", "orig.nii.gz", "rec.json")}
    assert main(["refine", "--subject", "s1", "--image", str(tmp_path / "w.nii.gz"), "--labels", str(tmp_path / "wl.nii.gz"),
                 "--landmarks", str(tmp_path / "lm.json"), "--record", str(tmp_path / "w.json"), "--bank", str(bank_dir),
                 "--out-labels", str(out["labels.nii.gz"]), "--out-original", str(out["orig.nii.gz"]),
                 "--out-record", str(out["rec.json"]),
                 "--params", '{"atlases": {"top_k": 2, "beyond_stack": "both"}, "ffd": {"slice_shift_mm": 10.0}}']) == 0
    record = json.loads(out["rec.json"].read_text())
    rec = GridRecord.from_dict(json.loads((tmp_path / "w.json").read_text()))
    ss = record["slice_shifts_mm"]
    assert ss["slices"] == [int(k) for k in acquired_slices(rec)] and np.shape(ss["shifts"]) == (lr.shape[2], 2)
    # the fitted shifts follow the drawn ones (a slice drawn shifted by +d shows the model at v - d)
    truth_mm = -(drawn - drawn.mean(0)) * HR[0]
    fitted = np.asarray(ss["shifts"])
    inner = slice(1, -1)  # the end slices hold little heart
    assert np.corrcoef(fitted[inner].ravel(), truth_mm[inner].ravel())[0, 1] > 0.9
    # the working-grid model is motion-free: it matches the unshifted truth better than the shifted stack does
    from ssll.preprocess import resample, to_original

    work = np.asarray(nib.load(str(out["labels.nii.gz"])).dataobj)
    truth_w = resample(truth, aff, rec.working_affine, rec.working_shape, order=0)
    stair = nearest_upsample(shifted, lr_aff, rec.working_shape, rec.working_affine)
    assert dice(work == 2, truth_w == 2) > dice(stair == 2, truth_w == 2) + 0.05
    # the input-grid copy is back on each slice as acquired: it overlays the shifted stack
    orig = np.asarray(nib.load(str(out["orig.nii.gz"])).dataobj)
    motion_free = to_original(work, rec, order=0)
    assert dice(orig == 2, shifted == 2) > dice(motion_free == 2, shifted == 2) + 0.05


def test_refine_passes_largest_component_to_the_fusion_and_records_it(bank_dir) -> None:
    _truth, aff, lr, lr_aff = _lr_target()
    staircase = nearest_upsample(lr, lr_aff, SHAPE, aff)
    image = image_from_labels(staircase, 7) / 450.0
    cfg = RefineConfig(atlases=AtlasConfig(top_k=2), fusion=FusionConfig(largest_component=True))
    out, record = refine(image, staircase, aff, _landmarks_world(aff), load_bank(bank_dir), cfg,
                         slices=np.arange(2, SHAPE[2], 5))
    assert record["fusion"]["largest_component"] is True
    for c in (1, 2, 3):
        assert ndimage.label(out == c, structure=np.ones((3, 3, 3)))[1] == 1


def _start_case(bank_dir):  # noqa: ANN001, ANN202
    """The refinement-start tests' target: truth, working affine, the LR staircase and its image, the bank, the
    acquired slices and a 3-atlas config."""
    truth, aff, lr, lr_aff = _lr_target()
    staircase = nearest_upsample(lr, lr_aff, SHAPE, aff)
    image = image_from_labels(staircase, 7) / 450.0
    return truth, aff, staircase, image, load_bank(bank_dir), np.arange(2, SHAPE[2], 5), RefineConfig(
        atlases=AtlasConfig(top_k=3))


def test_landmarks_no_atlas_accepts_are_replaced_by_the_segmentations_own(bank_dir) -> None:
    """Given landmarks that no atlas accepts (here too few: three of six lost), the refinement starts from the
    landmarks the training rules derive from the segmentation, says so in the record, and is as good as from the
    true landmarks; with ``init: labels`` asked for, nothing is replaced."""
    truth, aff, staircase, image, bank, ks, cfg = _start_case(bank_dir)
    lost = _landmarks_world(aff)
    lost[:3] = np.nan
    given, rec_given = refine(image, staircase, aff, _landmarks_world(aff), bank, cfg, slices=ks)
    ruled, rec = refine(image, staircase, aff, lost, bank, cfg, slices=ks)
    assert rec_given["init"] == "landmarks" and rec_given["init_fallback"] is None
    assert rec["init"] == "landmarks_from_labels" and "3 usable landmark pairs" in rec["init_fallback"]
    assert {s["init"] for s in rec["selected"]} == {"landmarks_from_labels"}
    for c in (1, 2, 3):
        assert dice(ruled == c, truth == c) > dice(given == c, truth == c) - 0.02
    labels_cfg = RefineConfig(atlases=AtlasConfig(top_k=3, init="labels"))
    assert refine(image, staircase, aff, lost, bank, labels_cfg, slices=ks)[1]["init"] == "labels"


def test_implausible_landmarks_are_replaced_by_the_segmentations_own(bank_dir, monkeypatch) -> None:
    """Given landmarks that the QC calls implausible (the apex 20 mm from the mitral valve centre), the refinement
    starts from the segmentation's own landmarks and says why; where those are implausible too, it uses the given
    ones all the same (an atlas accepts them) rather than the label-only start."""
    truth, aff, staircase, image, bank, ks, cfg = _start_case(bank_dir)
    true_pts = _landmarks_world(aff)
    short = true_pts.copy()
    axis = short[4] - short[5]
    short[4] = short[5] + 20.0 * axis / np.linalg.norm(axis)
    given, _ = refine(image, staircase, aff, true_pts, bank, cfg, slices=ks)
    ruled, rec = refine(image, staircase, aff, short, bank, cfg, slices=ks)
    assert rec["init"] == "landmarks_from_labels"
    assert "landmarks implausible (apex to mitral centre 20 mm" in rec["init_fallback"]
    for c in (1, 2, 3):
        assert dice(ruled == c, truth == c) > dice(given == c, truth == c) - 0.02
    # every set of landmarks called implausible, the segmentation's own too: the given are used, and it says so
    monkeypatch.setattr("ssll.refine.landmark_problems", lambda pts: ["judged implausible"])
    _, rec_all = refine(image, staircase, aff, true_pts, bank, cfg, slices=ks)
    assert rec_all["init"] == "landmarks" and "used them all the same" in rec_all["init_fallback"]


def test_cli_refine_measures_breath_hold_shifts_and_segments_the_corrected_stack(bank_dir, tmp_path) -> None:
    """motion: estimate: the shifts of a shifted stack are measured from the image, the corrected stack is
    segmented again (in the orientation segment recorded) and refined, and the input-grid copy is moved back
    onto each slice as acquired."""
    truth, aff, lr, lr_aff, drawn, shifted = _shifted_stack(tmp_path)
    (tmp_path / "orientation.json").write_text(json.dumps({"orientation": "rot0", "searched": False}))
    out = {k: tmp_path / f"ref_{k}" for k in ("labels.nii.gz", "orig.nii.gz", "rec.json")}
    assert main(["refine", "--subject", "s1", "--image", str(tmp_path / "w.nii.gz"), "--labels", str(tmp_path / "wl.nii.gz"),
                 "--landmarks", str(tmp_path / "lm.json"), "--record", str(tmp_path / "w.json"), "--bank", str(bank_dir),
                 "--orientation", str(tmp_path / "orientation.json"),
                 "--out-labels", str(out["labels.nii.gz"]), "--out-original", str(out["orig.nii.gz"]),
                 "--out-record", str(out["rec.json"]),
                 "--params", '{"atlases": {"top_k": 2, "beyond_stack": "both"}, "motion": {"estimate": true}}']) == 0
    record = json.loads(out["rec.json"].read_text())
    m = record["motion"]
    assert m["resegmented"] and m["orientation"] == "rot0" and m["slice_shifts_mm"] == record["slice_shifts_mm"]
    rec = GridRecord.from_dict(json.loads((tmp_path / "w.json").read_text()))
    ks = list(acquired_slices(rec))
    measured, est = m["slice_shifts_mm"]["slices"], np.asarray(m["slice_shifts_mm"]["shifts"])
    assert len(measured) >= 8 and set(measured) <= set(ks)
    # the measured shifts are the drawn ones (a slice drawn shifted by +d shows the model at v - d)
    d = -drawn[[ks.index(k) for k in measured]] * HR[0]
    assert np.sqrt(((est - (d - d.mean(0))) ** 2).sum(1).mean()) < 1.0  # mm, against 2.3 mm RMS drawn
    work = nib.load(str(out["labels.nii.gz"]))
    np.testing.assert_allclose(work.affine, rec.working_affine, atol=1e-4)
    orig = nib.load(str(out["orig.nii.gz"]))
    np.testing.assert_allclose(orig.affine, lr_aff, atol=1e-4)
    assert (np.asarray(work.dataobj) == 1).sum() > 1000
