"""Training and inference on a tiny synthetic ACDC-like folder (seconds on CPU)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import biv_phantom, image_from_labels, write_nifti

from ssll.labels import from_canonical
from ssll.nn.data import AugmentConfig, VolumeDataset, augment, cache_acdc, drop_slab, held_out_cases
from ssll.nn.infer import SegmentItem, load_model, predict, run_segment
from ssll.nn.train import TrainConfig, train


def _fake_acdc(root: Path, n: int = 2) -> Path:
    for p in range(1, n + 1):
        d = root / f"patient{p:03d}"
        d.mkdir(parents=True)
        (d / "Info.cfg").write_text("ED: 1\nES: 2\nGroup: NOR\n")
        for fr, scale in ((1, 1.0), (2, 0.85)):
            lab = biv_phantom((80, 80, 10), spacing=(1.5 / scale, 1.5 / scale, 8.0))
            lab[lab == 4] = 0  # ACDC has no RV wall
            write_nifti(d / f"patient{p:03d}_frame{fr:02d}.nii.gz", image_from_labels(lab, seed=p + fr))
            write_nifti(d / f"patient{p:03d}_frame{fr:02d}_gt.nii.gz", from_canonical(lab, "acdc"))
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, Path]:
    tmp = tmp_path_factory.mktemp("train")
    data = _fake_acdc(tmp / "acdc")
    cfg = TrainConfig.from_mapping({
        "name": "tiny", "data_dir": str(data), "cache_dir": str(tmp / "cache"), "out_dir": str(tmp / "out"),
        "validation_patients": ["patient002"], "epochs": 1, "batch_size": 2, "widths": [4, 4, 4, 4, 4],
        "val_every": 1, "num_workers": 0, "augment": {"crop": 64},
    })
    train(cfg)
    return cfg, tmp


def test_cache_has_targets(trained: tuple[TrainConfig, Path]) -> None:
    cfg, _ = trained
    files = sorted(Path(cfg.cache_dir).glob("*.npz"))
    assert [f.name for f in files] == ["patient001_ED.npz", "patient001_ES.npz", "patient002_ED.npz", "patient002_ES.npz"]
    with np.load(files[0]) as z:
        assert z["image"].shape == (192, 192, 80) and z["seg"].max() == 3 and not bool(z["has_rv_wall"])
        assert set(np.unique(z["lmk"])) == set(range(7))


def test_resume_continues_from_checkpoint(trained: tuple[TrainConfig, Path]) -> None:
    cfg, _ = trained
    from dataclasses import replace

    train(replace(cfg, epochs=2))
    rows = list(csv.DictReader((Path(cfg.out_dir) / "log.csv").read_text().splitlines()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert torch.load(Path(cfg.out_dir) / "checkpoint.pt", weights_only=True)["epoch"] == 2
    card = json.loads((Path(cfg.out_dir) / "tiny.json").read_text())
    assert card["training"]["epochs"] == 2 and "CC BY-NC-SA 4.0" in card["licence"]
    assert card["untrained_classes"] == [4]


def test_export_only_writes_the_checkpoints_weights_without_training(trained: tuple[TrainConfig, Path]) -> None:
    import yaml

    from ssll.cli import main

    cfg, tmp = trained
    out = tmp / "export"
    out.mkdir()
    conf = tmp / "export.yaml"
    conf.write_text(yaml.safe_dump({"name": "tiny", "data_dir": cfg.data_dir, "cache_dir": cfg.cache_dir,
                                    "out_dir": str(out), "validation_patients": ["patient002"],
                                    "widths": [4, 4, 4, 4, 4], "epochs": 9}))
    assert main(["train", "--config", str(conf), "--export-only"]) == 2  # no checkpoint yet: refused
    assert not (out / "tiny.pt").exists()
    src = Path(cfg.out_dir)
    (out / "checkpoint.pt").write_bytes((src / "checkpoint.pt").read_bytes())
    (out / "log.csv").write_text("epoch,lr,loss,val_dice_lv_cavity,val_dice_lv_wall\n1,0.001,0.9,0.5,0.4\n"
                                 "2,0.001,0.8,,\n")
    assert main(["train", "--config", str(conf), "--export-only"]) == 0
    card = json.loads((out / "tiny.json").read_text())
    epoch = torch.load(src / "checkpoint.pt", weights_only=True)["epoch"]
    assert card["training"]["epochs"] == epoch  # the checkpoint's, not the config's 9
    assert card["validation"]["dice_working_grid_mean"] == {"val_dice_lv_cavity": 0.5, "val_dice_lv_wall": 0.4}
    assert load_model(out / "tiny.pt").net.n_slices == 80
    assert not (out / "checkpoint.tmp").exists() and len(list(out.glob("*.csv"))) == 1  # nothing trained


def test_weights_load_and_predict(trained: tuple[TrainConfig, Path]) -> None:
    cfg, _ = trained
    model = load_model(Path(cfg.out_dir) / "tiny.pt")
    x = np.random.default_rng(0).random((2, 192, 192, 80)).astype(np.float32)
    labels, lmap, conf = predict(model, x, batch_size=2)
    assert labels.shape == lmap.shape == (2, 192, 192, 80) and conf.shape == (2, 6)
    assert labels.max() <= 3  # the RV wall is folded into background for an ACDC-trained model
    assert set(np.unique(lmap[0])) >= set(range(1, 7))  # every landmark is placed
    # the labels are the most probable class wherever the (float16) probabilities leave no near-tie
    labels_p, _, _, prob = predict(model, x, batch_size=2, return_prob=True)
    np.testing.assert_array_equal(labels_p, labels)
    top2 = np.sort(prob.astype(np.float32), axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-2
    np.testing.assert_array_equal(labels[clear], prob.astype(np.float32).argmax(1)[clear])


def test_run_segment_isolates_a_bad_subject(trained: tuple[TrainConfig, Path], tmp_path: Path) -> None:
    cfg, tmp = trained
    from ssll.preprocess import run_preprocess

    src = tmp / "acdc/patient001/patient001_frame01.nii.gz"
    run_preprocess(image=str(src), out_image=str(tmp_path / "w.nii.gz"), out_record=str(tmp_path / "w.json"))
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    items = [SegmentItem("good", "ED", tmp_path / "w.nii.gz", tmp_path / "w.json", tmp_path / "good"),
             SegmentItem("bad", "ED", bad, tmp_path / "w.json", tmp_path / "bad")]
    failures = run_segment(items, Path(cfg.out_dir) / "tiny.pt")
    assert list(failures) == ["bad/ED"] and "bad.nii.gz" in failures["bad/ED"]
    assert (tmp_path / "bad/ED_error.txt").exists()
    import nibabel as nib

    orig = nib.load(str(tmp_path / "good/ED_labels_original.nii.gz"))
    np.testing.assert_allclose(orig.affine, nib.load(str(src)).affine, atol=1e-5)
    # the network's own quality estimate: a number in [0, 1] per trained structure, null for the RV wall
    # (folded into the background of this ACDC-trained model)
    scores = json.loads((tmp_path / "good/ED_expected_dice.json").read_text())
    assert list(scores) == ["lv_cavity", "lv_wall", "rv_cavity", "rv_wall"] and scores["rv_wall"] is None
    assert all(v is None or 0.0 <= v <= 1.0 for v in scores.values())
    assert not (tmp_path / "bad/ED_expected_dice.json").exists()


def test_run_segment_with_a_fixed_orientation_holds_one_batch_at_a_time(
        trained: tuple[TrainConfig, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a manifest of any length: volumes are segmented as each batch fills, not all loaded first
    cfg, tmp = trained
    import ssll.io
    import ssll.nn.infer as infer
    from ssll.preprocess import run_preprocess

    run_preprocess(image=str(tmp / "acdc/patient001/patient001_frame01.nii.gz"), out_image=str(tmp_path / "w.nii.gz"),
                   out_record=str(tmp_path / "w.json"))
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    names = ["a", "b", "bad", "c", "d"]
    items = [SegmentItem(n, "ED", bad if n == "bad" else tmp_path / "w.nii.gz", tmp_path / "w.json", tmp_path / n)
             for n in names]
    events: list[tuple[str, int]] = []
    load, predict_oriented = ssll.io.load_image, infer.predict_oriented
    monkeypatch.setattr(ssll.io, "load_image", lambda *a, **k: (events.append(("load", 1)), load(*a, **k))[1])
    monkeypatch.setattr(infer, "predict_oriented",
                        lambda m, imgs, *a, **k: (events.append(("predict", len(imgs))), predict_oriented(m, imgs, *a, **k))[1])
    weights = Path(cfg.out_dir) / "tiny.pt"
    failures = run_segment(items, weights, orientation="stored", batch_size=2)
    assert list(failures) == ["bad/ED"]
    assert [n for e, n in events if e == "predict"] == [2, 2]
    assert events.index(("predict", 2)) < len(events) - 2  # the first batch ran before the last volumes were read
    monkeypatch.undo()
    assert run_segment(items[:1], weights, orientation="stored", batch_size=1) == {}
    one = nib_load(tmp_path / "a/ED_labels.nii.gz")
    for n in ("b", "c", "d"):
        np.testing.assert_array_equal(nib_load(tmp_path / n / "ED_labels.nii.gz"), one)


def nib_load(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj)


def test_augment_is_consistent() -> None:
    lab = np.zeros((64, 64, 16), np.uint8)
    lab[20:40, 24:44, 4:12] = 1
    img = lab.astype(np.float32) * 0.8 + 0.1
    lmk = np.zeros_like(lab)
    lmk[30, 34, 8] = 5
    rng = np.random.default_rng(0)
    a_img, a_lab, a_lmk = augment(img, lab, lmk, AugmentConfig(rotate_deg=20, translate_mm=5, gamma=(1, 1),
                                                                intensity_scale=(1, 1)), rng)
    # the image stays bright exactly where the labels went
    assert a_img[a_lab == 1].mean() > 0.7 and a_img[a_lab == 0].mean() < 0.3
    assert a_lab.sum() == pytest.approx(lab.sum(), rel=0.25)
    assert (a_lmk == 5).sum() <= 1


def test_drop_slab_known_answers() -> None:
    cfg = AugmentConfig(drop_prob=0.5, drop_slices=(4, 6))
    fg = np.arange(10, 30)
    assert drop_slab(80, fg, (0.6, 0.0, 0.0), cfg) == (0, 0)  # draw above the probability: nothing
    assert drop_slab(80, np.array([], int), (0.0, 0.0, 0.0), cfg) == (0, 0)  # no heart: nothing
    assert drop_slab(80, fg, (0.1, 0.0, 0.5), cfg) == (18, 22)  # 4 slices centred on slice 20
    assert drop_slab(80, fg, (0.1, 0.999, 0.5), cfg) == (17, 23)  # 6 slices
    assert drop_slab(25, np.array([0, 24]), (0.1, 0.999, 0.0), cfg) == (0, 6)  # clipped at the first slice
    assert drop_slab(25, np.array([0, 24]), (0.1, 0.999, 0.99), cfg) == (21, 25)  # and at the last
    assert drop_slab(80, fg, (0.0, 0.0, 0.0), AugmentConfig()) == (0, 0)  # off by default


def test_augment_slice_shift_and_dropped_slab() -> None:
    lab = np.zeros((32, 32, 40), np.uint8)
    lab[10:22, 10:22, 10:30] = 1
    img = np.where(lab > 0, 0.8, 0.2).astype(np.float32)
    still = {"rotate_deg": 0, "translate_mm": 0, "scale": (1, 1), "gamma": (1, 1), "intensity_scale": (1, 1)}
    # a slice shift alone moves image and labels together along k by whole or partial slices
    a_img, a_lab, _ = augment(img, lab, np.zeros_like(lab), AugmentConfig(**still, translate_slice_mm=8.0),
                              np.random.default_rng(5))
    ks = np.flatnonzero(a_lab.any(axis=(0, 1)))
    assert ks[0] != 10 and abs(int(ks[0]) - 10) <= 4 and len(ks) in (19, 20, 21)
    assert a_img[a_lab == 1].min() > 0.7
    # a dropped slab: image zero on 5-8 consecutive slices through the heart, labels untouched
    d_img, d_lab, _ = augment(img, lab, np.zeros_like(lab), AugmentConfig(**still, drop_prob=1.0, drop_slices=(5, 8)),
                              np.random.default_rng(6))
    np.testing.assert_array_equal(d_lab, lab)
    dropped = np.flatnonzero(d_img.max(axis=(0, 1)) == 0)
    assert 5 <= len(dropped) <= 8 and np.all(np.diff(dropped) == 1) and 10 <= dropped.mean() < 30


def test_dataset_crops(trained: tuple[TrainConfig, Path]) -> None:
    cfg, _ = trained
    files = cache_acdc(cfg.data_dir, cfg.cache_dir)
    item = VolumeDataset(files, AugmentConfig(crop=64))[0]
    assert item["image"].shape == (80, 64, 64) and item["seg"].shape == (80, 64, 64)
    assert VolumeDataset(files, None)[0]["image"].shape == (80, 192, 192)


def test_resident_training_runs_and_repeats_an_epoch(trained: tuple[TrainConfig, Path]) -> None:
    """`resident: true` (data on the device, batch augmentation there) trains, logs and resumes; an
    epoch's batches are a function of (seed, epoch), so a resumed run sees the same batches."""
    from dataclasses import replace

    from ssll.nn.train import _load_resident, _ResidentBatches

    cfg, tmp = trained
    rcfg = replace(cfg, resident=True, out_dir=str(tmp / "resident"), epochs=2)
    train(rcfg)
    rows = list(csv.DictReader((Path(rcfg.out_dir) / "log.csv").read_text().splitlines()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(np.isfinite(float(r["loss"])) for r in rows)
    data = _load_resident(sorted(Path(cfg.cache_dir).glob("patient001_*.npz")), torch.device("cpu"))
    assert data["image"].shape == (2, 80, 192, 192) and data["labels"].shape == (2, 2, 80, 192, 192)
    a, b = (next(iter(_ResidentBatches(data, rcfg, 3))) for _ in range(2))
    assert a["image"].shape == (2, 80, 64, 64) and torch.equal(a["image"], b["image"]) and torch.equal(a["seg"], b["seg"])
    c = next(iter(_ResidentBatches(data, rcfg, 4)))
    assert not torch.equal(a["image"], c["image"])


def test_freeze_batchnorm_keeps_statistics_and_trains_the_rest() -> None:
    from ssll.nn.network import SSLLN
    from ssll.nn.train import freeze_batchnorm

    torch.manual_seed(0)
    net = SSLLN(n_slices=4, widths=(4, 8), depths=(1, 1), side_width=4, fuse_width=8)
    bn = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [(m.running_mean.clone(), m.weight.detach().clone()) for m in bn]
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    w0 = conv.weight.detach().clone()
    net.train()
    freeze_batchnorm(net)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    seg, lmk = net(torch.rand(2, 4, 32, 32) * 5 + 3)  # inputs far from the initial statistics
    (seg.mean() + lmk.mean()).backward()
    opt.step()
    for m, (rm, w) in zip(bn, before):
        assert not m.training and torch.equal(m.running_mean, rm) and torch.equal(m.weight, w)
    assert not torch.equal(conv.weight, w0) and net.training


def test_held_out_cases(tmp_path: Path) -> None:
    data = _fake_acdc(tmp_path / "acdc")
    cfg = tmp_path / "train.yaml"
    cfg.write_text("validation_patients: [patient002, patient099]\n")
    assert [(c["patient"], c["phase"]) for c in held_out_cases(data, cfg)] == [("patient002", "ED"), ("patient002", "ES")]
    assert [c["phase"] for c in held_out_cases(data, cfg, phases=("ES",))] == ["ES"]
    cfg.write_text("validation_patients: [patient099]\n")
    with pytest.raises(ValueError, match="none of the 1 validation patients"):
        held_out_cases(data, cfg)
    cfg.write_text("epochs: 1\n")
    with pytest.raises(ValueError, match="no validation_patients"):
        held_out_cases(data, cfg)
