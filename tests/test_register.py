"""B-spline FFD on labels: recovers a known smooth warp; the trilinear sampler matches grid_sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import biv_phantom

from ssll.atlases import centroid_affine
from ssll.errors import RegistrationError
from ssll.evaluate import dice
from ssll.register import (
    FFDConfig,
    _pack,
    _sample,
    _trilinear,
    bspline_basis,
    register_affine_labels,
    register_labels,
    register_labels_batch,
    warp_volume,
)

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
    # two packed volumes of different shapes, each sampled at its own points (some outside)
    vols = [torch.rand(3, 9, 8, 7), torch.rand(3, 5, 11, 6)]
    pts = [torch.rand(500, 3) * torch.tensor([10.0, 9.0, 8.0]) - 0.5, torch.rand(500, 3) * torch.tensor([6.0, 12.0, 7.0]) - 0.5]
    got = _trilinear(*_pack(vols), torch.stack(pts))
    for n in range(2):
        np.testing.assert_allclose(got[:, n].numpy(), _sample(vols[n], pts[n]).numpy(), atol=1e-5)


def test_batch_gives_each_atlas_its_own_registration() -> None:
    # three atlases of different grids and starts, registered together = one by one
    target = biv_phantom(shape=(48, 48, 24), spacing=SP)
    atlases = []
    for n, (shape, shift) in enumerate((((48, 48, 24), 0.0), ((52, 44, 26), 2.5), ((46, 50, 24), -3.0))):
        lab = biv_phantom(shape=shape, spacing=SP)
        init = np.eye(4)
        init[:3, 3] = (shift, -shift / 2, 0.0)
        atlases.append((lab, _aff(), init))
    cfg = FFDConfig(iterations=(15, 10))
    batch = register_labels_batch(target, _aff(), atlases, cfg, slices=np.arange(1, 24, 4))
    for (lab, aff, init), res in zip(atlases, batch):
        one = register_labels(target, _aff(), lab, aff, init, cfg, slices=np.arange(1, 24, 4))
        np.testing.assert_array_equal(res.init, init)
        for (c_b, s_b), (c_1, s_1) in zip(res.levels, one.levels):
            assert s_b == s_1
            # float rounding differs between a batch of 3 and of 1 (up to 0.005 mm on some CPUs, against 6-9 mm
            # displacements); an atlas pulled by another's loss would be off by millimetres
            np.testing.assert_allclose(c_b.numpy(), c_1.numpy(), atol=0.02)  # mm
        assert res.history[-1]["consistency_end"] == pytest.approx(one.history[-1]["consistency_end"], abs=1e-4)
        assert res.history[-1]["atlases_in_batch"] == 3 and one.history[-1]["atlases_in_batch"] == 1
    bad = [(atlases[0][0], atlases[0][1], np.full((4, 4), np.nan))]
    with pytest.raises(RegistrationError, match="diverged .* for a7"):
        register_labels_batch(target, _aff(), bad, cfg, names=["a7"])


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


def test_slice_shifts_are_recovered_and_kept_out_of_the_model() -> None:
    # target: the phantom with every 5th slice acquired, each shifted in-plane by its own breath-hold
    # shift (whole voxels, so the truth is exact); atlas: the plain phantom
    from scipy import ndimage

    shape = (64, 64, 40)
    atlas = biv_phantom(shape=shape, spacing=SP)
    slices = np.arange(2, 40, 5)
    drawn = np.array([[2, -1], [-2, 0], [0, 2], [1, 1], [-1, -2], [2, 0], [0, -1], [-2, 1]], float)  # voxels
    target = atlas.copy()
    for k, s in zip(slices, drawn):
        target[:, :, k] = ndimage.shift(atlas[:, :, k], s, order=0)
    truth_mm = -(drawn - drawn.mean(0)) * SP[:2]  # slice k shows the model at v - drawn_k
    cfg = FFDConfig(band_mm=0.0, slice_shift_mm=10.0)
    res = register_labels(target, _aff(), atlas, _aff(), np.eye(4), cfg, slices=slices)
    np.testing.assert_array_equal(res.slices, slices)
    assert res.slice_shifts.shape == (len(slices), 2)
    np.testing.assert_allclose(res.slice_shifts.mean(0), 0.0, atol=1e-4)  # centred
    err = np.sqrt(((res.slice_shifts - truth_mm) ** 2).sum(1).mean())
    assert err < 0.35 * np.sqrt((truth_mm**2).sum(1).mean())
    # the transformation itself stays near the identity: the model is the motion-free atlas
    warped = warp_volume(res, atlas, _aff(), shape, _aff(), labels=True)
    assert dice(warped == 2, atlas == 2) > 0.93
    # without shifts the FFD alone fits the stack less well
    plain = register_labels(target, _aff(), atlas, _aff(), np.eye(4), FFDConfig(band_mm=0.0), slices=slices)
    assert plain.slice_shifts is None and plain.slices is None
    assert res.history[-1]["consistency_end"] > plain.history[-1]["consistency_end"] + 0.01
    # a full-resolution target (no slices) fits none
    assert register_labels(atlas, _aff(), atlas, _aff(), np.eye(4), cfg).slice_shifts is None
