"""B-spline FFD on labels: recovers a known smooth warp; the trilinear sampler matches grid_sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import biv_phantom
from ssll.errors import RegistrationError
from ssll.evaluate import dice
from ssll.register import (
    FFDConfig,
    _sample,
    _trilinear,
    bspline_basis,
    register_affine_labels,
    register_labels,
    warp_volume,
)
from ssll.atlases import centroid_affine

SP = (1.25, 1.25, 2.0)


def _aff(origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    a = np.diag([*SP, 1.0])
    a[:3, 3] = origin
    return a


def test_bspline_basis_is_a_partition_of_unity() -> None:
    b = bspline_basis(np.linspace(0, 100, 57), 15.0, 11).numpy()
    np.testing.assert_allclose(b.sum(1), 1.0, atol=1e-6)
    assert (b >= 0).all()


def test_trilinear_matches_grid_sample() -> None:
    vol = torch.rand(3, 9, 8, 7)
    pts = torch.rand(500, 3) * torch.tensor([10.0, 9.0, 8.0]) - 0.5
    np.testing.assert_allclose(_trilinear(vol, pts).numpy(), _sample(vol, pts).numpy(), atol=1e-5)


def test_ffd_recovers_a_smooth_warp() -> None:
    # target: the phantom bulged by a smooth (Gaussian) displacement; atlas: the plain phantom
    shape = (72, 72, 36)
    atlas = biv_phantom(shape=shape, spacing=SP)
    ii, jj, kk = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    bump = 4.0 * np.exp(-(((ii - 30) * SP[0]) ** 2 + ((jj - 36) * SP[1]) ** 2) / (2 * 25.0**2))
    from scipy import ndimage

    target = ndimage.map_coordinates(atlas, [ii - bump / SP[0], jj, kk], order=0).astype(np.uint8)
    before = dice(atlas == 2, target == 2)
    res = register_labels(target, _aff(), atlas, _aff(), np.eye(4), FFDConfig(band_mm=0.0))
    warped = warp_volume(res, atlas, _aff(), shape, _aff(), labels=True)
    after = dice(warped == 2, target == 2)
    assert before < 0.9 and after > 0.95
    assert res.history[-1]["consistency_end"] > res.history[0]["consistency_start"]


def test_label_affine_recovers_a_translation() -> None:
    shape = (64, 64, 32)
    target = biv_phantom(shape=shape, spacing=SP)
    atlas_aff = _aff(origin=(7.0, -5.0, 3.0))  # the same heart, 7/-5/3 mm away in world space
    init = centroid_affine(target, _aff(), target, atlas_aff)
    np.testing.assert_allclose(init[:3, 3], [7.0, -5.0, 3.0], atol=1e-6)
    off = init.copy()
    off[:3, 3] += [4.0, 0.0, 0.0]
    fitted = register_affine_labels(target, _aff(), target, atlas_aff, off)
    start = warp_volume(None, target, atlas_aff, shape, _aff(), init=off, labels=True)
    end = warp_volume(None, target, atlas_aff, shape, _aff(), init=fitted, labels=True)
    assert dice(start == 2, target == 2) < 0.85
    assert dice(end == 2, target == 2) > 0.95 and dice(end == 4, target == 4) > 0.85


def test_empty_target_raises() -> None:
    with pytest.raises(RegistrationError, match="empty"):
        register_labels(np.zeros((8, 8, 8), np.uint8), _aff(), np.ones((8, 8, 8), np.uint8), _aff(), np.eye(4))
    with pytest.raises(ValueError, match="one entry per level"):
        FFDConfig.from_mapping({"iterations": [10]})


def test_device_smoothing_matches_scipy() -> None:
    """The GPU path's one-hot smoothing (run here on the CPU) equals scipy's, edges included."""
    from ssll.register import one_hot_smooth, one_hot_smooth_torch

    lab = np.random.default_rng(3).integers(0, 5, (20, 17, 9)).astype(np.uint8)
    for sigma in (0.0, 0.7, 1.5):
        ref = one_hot_smooth(lab, sigma)
        got = one_hot_smooth_torch(lab, sigma, torch.device("cpu")).numpy()
        np.testing.assert_allclose(got, ref, atol=1e-5)
