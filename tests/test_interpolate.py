"""Nearest and shape-based upsampling of a thick-slice segmentation (Table III baselines)."""

from __future__ import annotations

import numpy as np

from ssll.interpolate import nearest_upsample, shape_based_upsample, signed_distance_2d


def _disc_stack(radii, shape=(41, 41)) -> np.ndarray:
    ii, jj = np.meshgrid(np.arange(shape[0]) - 20.0, np.arange(shape[1]) - 20.0, indexing="ij")
    return np.stack([(np.hypot(ii, jj) <= r).astype(np.uint8) for r in radii], axis=2)


def test_signed_distance_of_a_disc() -> None:
    sd = signed_distance_2d(_disc_stack([10.0]) > 0, (1.0, 1.0))[:, :, 0]
    assert sd[20, 20] < -9 and abs(sd[20, 30]) <= 0.5 and 4 < sd[20, 35] < 5.5


def test_shape_based_interpolates_radius_between_slices() -> None:
    # discs of radius 6 and 14 (mm) on slices 10 mm apart: half way, radius 10 (a cone, not a step)
    lr = _disc_stack([6.0, 14.0])
    lr_aff = np.diag([1.0, 1.0, 10.0, 1.0])
    hr_aff = np.diag([1.0, 1.0, 2.5, 1.0])
    up = shape_based_upsample(lr, lr_aff, (41, 41, 5), hr_aff)
    nn = nearest_upsample(lr, lr_aff, (41, 41, 5), hr_aff)
    radius = [np.sqrt(up[:, :, k].sum() / np.pi) for k in range(5)]
    assert abs(radius[2] - 10.0) < 0.7
    assert radius[0] < radius[1] < radius[2] < radius[3] < radius[4]
    assert len({int(nn[:, :, k].sum()) for k in range(5)}) == 2  # nearest: a step
