"""On-device augmentation: known transforms give known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

import ssll.nn.gpu_augment as ga
from ssll.nn.data import AugmentConfig

STILL = AugmentConfig(rotate_deg=0.0, translate_mm=0.0, scale=(1.0, 1.0), gamma=(1.0, 1.0), intensity_scale=(1.0, 1.0))


def fixed(matrix: np.ndarray, t_mm: tuple[float, float]):
    def draw(n: int, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
        a = torch.zeros(n, 3, 4, dtype=torch.float64)
        a[:, :, :3] = torch.from_numpy(matrix)
        a[:, 0, 3], a[:, 1, 3] = t_mm
        return a
    return draw


def test_no_change_returns_the_input() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 8, 16, 12)
    lab = torch.randint(0, 5, (2, 2, 8, 16, 12))
    img, out = ga.augment_batch(x, lab, STILL, g)
    assert torch.allclose(img, x, atol=1e-5)
    assert torch.equal(out, lab)


def test_translation_in_mm_moves_content_by_voxels(monkeypatch: pytest.MonkeyPatch) -> None:
    # output point p samples the input at p + t: +2.5 mm along i (2 voxels of 1.25 mm), -1.25 mm along j
    monkeypatch.setattr(ga, "random_affines", fixed(np.eye(3), (2.5, -1.25)))
    x = torch.rand(1, 6, 16, 12)
    lab = torch.randint(0, 7, (1, 2, 6, 16, 12))
    img, out = ga.augment_batch(x, lab, STILL, torch.Generator().manual_seed(0))
    assert torch.allclose(img[:, :, :-2, 1:], x[:, :, 2:, :-1], atol=1e-5)
    assert torch.equal(out[:, :, :, :-2, 1:], lab[:, :, :, 2:, :-1])
    assert float(img[:, :, -2:].abs().max()) == 0.0  # from outside the input: 0


def test_rotation_and_scale_match_scipy_on_the_anisotropic_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    c, s = math.cos(0.2), math.sin(0.2)
    m = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) / 1.05
    monkeypatch.setattr(ga, "random_affines", fixed(m, (3.0, 0.0)))
    vol = ndimage.gaussian_filter(np.random.default_rng(0).random((40, 36, 10)).astype(np.float32), 2)  # (i, j, k)
    x = torch.from_numpy(vol.transpose(2, 0, 1).copy())[None]
    img, _ = ga.augment_batch(x, torch.zeros(1, 1, 10, 40, 36, dtype=torch.long), STILL, torch.Generator())
    sp = np.array([1.25, 1.25, 2.0])
    ctr = (np.array(vol.shape) - 1) / 2
    a = np.diag(1 / sp) @ m @ np.diag(sp)
    ref = ndimage.affine_transform(vol, a, offset=ctr - a @ ctr + np.array([3.0, 0, 0]) / sp, order=1)
    got = img[0].numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(got[5:-5, 5:-5, 1:-1], ref[5:-5, 5:-5, 1:-1], atol=1e-5)


def test_random_draws_stay_in_their_ranges() -> None:
    cfg = AugmentConfig(rotate_deg=15.0, translate_mm=15.0, scale=(0.9, 1.1))
    a = ga.random_affines(200, cfg, torch.Generator().manual_seed(1))
    sv = torch.linalg.svdvals(a[:, :, :3])  # = 1 / scale for a rotation over a scale
    assert float(sv.max()) <= 1 / 0.9 + 1e-9 and float(sv.min()) >= 1 / 1.1 - 1e-9
    assert float(a[:, :2, 3].abs().max()) <= 15.0 and float(a[:, 2, 3].abs().max()) == 0.0
    rot = a[:, :, :3] * torch.linalg.svdvals(a[:, :, :3])[:, :1, None] ** -1
    ang = torch.rad2deg(torch.arccos(((rot.diagonal(dim1=1, dim2=2).sum(1) - 1) / 2).clamp(-1, 1)))
    assert float(ang.max()) <= 15.0 + 1e-6


def test_intensities_stay_in_unit_range() -> None:
    x = torch.rand(3, 4, 16, 16)
    img, _ = ga.augment_batch(x, torch.zeros(3, 1, 4, 16, 16, dtype=torch.long), AugmentConfig(), torch.Generator().manual_seed(2))
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0


def test_slice_translation_moves_content_along_the_slice_axis(monkeypatch: pytest.MonkeyPatch) -> None:
    # +4 mm along k = 2 slices of 2 mm: output slice n shows input slice n + 2
    def draw(n: int, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
        a = torch.zeros(n, 3, 4, dtype=torch.float64)
        a[:, :, :3] = torch.eye(3, dtype=torch.float64)
        a[:, 2, 3] = 4.0
        return a

    monkeypatch.setattr(ga, "random_affines", draw)
    x = torch.rand(1, 10, 8, 8)
    lab = torch.randint(0, 5, (1, 1, 10, 8, 8))
    img, out = ga.augment_batch(x, lab, STILL, torch.Generator().manual_seed(0))
    assert torch.allclose(img[:, :-2], x[:, 2:], atol=1e-5) and torch.equal(out[:, :, :-2], lab[:, :, 2:])
    assert float(img[:, -2:].abs().max()) == 0.0


def test_slice_translation_draws_stay_in_range() -> None:
    a = ga.random_affines(200, AugmentConfig(translate_slice_mm=6.0), torch.Generator().manual_seed(3))
    tz = a[:, 2, 3].abs()
    assert float(tz.max()) <= 6.0 and float(tz.max()) > 3.0


def test_dropped_slab_is_zero_in_the_image_and_kept_in_the_targets() -> None:
    from dataclasses import replace

    cfg = replace(STILL, drop_prob=1.0, drop_slices=(3, 5))
    x = torch.rand(4, 20, 8, 8) * 0.5 + 0.25
    lab = torch.zeros(4, 2, 20, 8, 8, dtype=torch.long)
    lab[:, 0, 6:14, 2:6, 2:6] = 1  # the heart on slices 6-13
    img, out = ga.augment_batch(x, lab, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(out, lab)
    for n in range(4):
        dropped = torch.nonzero(img[n].amax(dim=(1, 2)) == 0).flatten().tolist()
        assert 3 <= len(dropped) <= 5 and dropped == list(range(dropped[0], dropped[-1] + 1))
        assert set(dropped) & set(range(6, 14))  # through the heart
        kept = [k for k in range(20) if k not in dropped]
        assert torch.allclose(img[n, kept], x[n, kept], atol=1e-5)
