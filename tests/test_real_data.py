"""The shipped SSLLN-LR on a real held-out ACDC volume, through the CLI (skipped without ../shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssll.cli import main
from ssll.evaluate import dice
from ssll.io import load_labels


@pytest.mark.real_data
def test_shipped_weights_segment_a_validation_patient(acdc: Path, tmp_path: Path) -> None:
    src = acdc / "patient078"  # a validation patient (NOR): never seen in training
    img, gt = src / "patient078_frame01.nii.gz", src / "patient078_frame01_gt.nii.gz"
    assert main(["preprocess", "--subject", "p078", "--image", str(img), "--out-image", str(tmp_path / "w.nii.gz"),
                 "--out-record", str(tmp_path / "w.json")]) == 0
    assert main(["segment", "--subject", "p078", "--image", str(tmp_path / "w.nii.gz"), "--record",
                 str(tmp_path / "w.json"), "--phase", "ED", "--out-dir", str(tmp_path / "seg")]) == 0
    pred = load_labels(tmp_path / "seg/ED_labels_original.nii.gz")
    truth = load_labels(gt, "acdc")
    np.testing.assert_allclose(pred.affine, truth.affine, atol=1e-5)
    # the validation benchmark's means are 0.88 / 0.66 / 0.78 at ED: a broken pipeline or weights fall far below
    assert dice(pred.array == 1, truth.array == 1) > 0.75
    assert dice(pred.array == 2, truth.array == 2) > 0.5
    assert dice(pred.array == 3, truth.array == 3) > 0.6
