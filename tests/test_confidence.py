from __future__ import annotations

import numpy as np
import pytest

from ssll.nn.confidence import expected_dice


def _probs(shape: tuple[int, int, int]) -> np.ndarray:
    p = np.zeros((5, *shape), np.float32)
    p[0] = 1.0
    return p


def _give(p: np.ndarray, where: tuple, label: int, prob: float) -> None:
    """Give ``label`` probability ``prob`` at ``where`` (i, j, k index), the rest to the background."""
    p[(0, *where)] = 1.0 - prob
    p[(label, *where)] = prob


def test_expected_dice_by_hand() -> None:
    p = _probs((6, 4, 2))
    lab = np.zeros((6, 4, 2), np.uint8)
    # LV cavity: 4 voxels labelled with p = 0.5, and 4 unlabelled voxels where the network gives it 0.25
    lab[0, :, 0] = 1
    _give(p, (0, slice(None), 0), 1, 0.5)
    _give(p, (1, slice(None), 0), 1, 0.25)
    # LV wall: 2 voxels labelled and certain
    lab[2, :2, 1] = 2
    _give(p, (2, slice(0, 2), 1), 2, 1.0)
    # RV cavity: labelled on 2 voxels at p = 0.8
    lab[3, :2, 1] = 3
    _give(p, (3, slice(0, 2), 1), 3, 0.8)
    # RV wall: labelled nowhere, 1.5 voxels' worth of probability on 3 voxels
    _give(p, (4, slice(0, 3), 0), 4, 0.5)
    np.testing.assert_allclose(p.sum(0), 1.0)
    d = expected_dice(p, lab)
    assert d["lv_cavity"] == pytest.approx(2 * 2.0 / (3.0 + 4))  # 2 expected inside, 3 expected in all, 4 drawn
    assert d["lv_wall"] == pytest.approx(1.0)
    assert d["rv_cavity"] == pytest.approx(2 * 1.6 / (1.6 + 2))
    assert d["rv_wall"] == pytest.approx(0.0)  # probable but drawn nowhere


def test_expected_dice_absent_class_mask_and_shapes() -> None:
    p = _probs((5, 5, 3))
    lab = np.zeros((5, 5, 3), np.uint8)
    lab[1:3, 1:3, 1] = 1
    _give(p, (slice(1, 3), slice(1, 3), 1), 1, 1.0)
    _give(p, (4, 4, 2), 1, 1.0)  # a confident voxel outside the mask: it does not count there
    d = expected_dice(p, lab)
    assert d["lv_cavity"] == pytest.approx(2 * 4 / (5 + 4))
    assert d["lv_wall"] is None and d["rv_cavity"] is None and d["rv_wall"] is None  # never trained / not there
    mask = np.ones(lab.shape, bool)
    mask[4, 4, 2] = False
    assert expected_dice(p, lab, mask)["lv_cavity"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="do not match"):
        expected_dice(p[:4], lab)
    with pytest.raises(ValueError, match="mask"):
        expected_dice(p, lab, mask[:4])
