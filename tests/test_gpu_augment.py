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


def _constant_coarse(d_i_mm: float, d_j_mm: float):
    def draw(shape, cfg, normal):
        return np.stack([np.full((2, 2, 2), d_i_mm), np.full((2, 2, 2), d_j_mm)]).astype(np.float32)
    return draw


def test_uniform_elastic_field_acts_as_a_shift_before_the_affine(monkeypatch: pytest.MonkeyPatch) -> None:
    # output point p samples the input at M (p + d) + t: a constant field is a shift, rotated by M
    cfg = AugmentConfig(**{**STILL.__dict__, "elastic_mm": 1.0})
    monkeypatch.setattr(ga, "elastic_coarse", _constant_coarse(2.5, -1.25))
    monkeypatch.setattr(ga, "random_affines", fixed(np.eye(3), (2.5, 0.0)))
    x = torch.rand(1, 6, 16, 12)
    lab = torch.randint(0, 7, (1, 2, 6, 16, 12))
    img, out = ga.augment_batch(x, lab, cfg, torch.Generator().manual_seed(0))
    # 2.5 + 2.5 mm = 4 voxels along i, -1.25 mm = -1 voxel along j
    assert torch.allclose(img[:, :, :-4, 1:], x[:, :, 4:, :-1], atol=1e-5)
    assert torch.equal(out[:, :, :, :-4, 1:], lab[:, :, :, 4:, :-1])
    c, s = math.cos(0.3), math.sin(0.3)
    m = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    monkeypatch.setattr(ga, "random_affines", fixed(m, (0.0, 0.0)))
    vol = ndimage.gaussian_filter(np.random.default_rng(1).random((40, 36, 10)).astype(np.float32), 2)
    got, _ = ga.augment_batch(torch.from_numpy(vol.transpose(2, 0, 1).copy())[None],
                              torch.zeros(1, 1, 10, 40, 36, dtype=torch.long), cfg, torch.Generator())
    sp = np.array([1.25, 1.25, 2.0])
    ctr = (np.array(vol.shape) - 1) / 2
    a = np.diag(1 / sp) @ m @ np.diag(sp)
    ref = ndimage.affine_transform(vol, a, offset=ctr - a @ ctr + (m @ np.array([2.5, -1.25, 0.0])) / sp, order=1)
    np.testing.assert_allclose(got[0].numpy().transpose(1, 2, 0)[6:-6, 6:-6, 1:-1], ref[6:-6, 6:-6, 1:-1], atol=1e-5)


def test_elastic_deformation_is_smooth_in_plane_and_of_the_drawn_size() -> None:
    cfg = AugmentConfig(**{**STILL.__dict__, "elastic_mm": 2.0})
    s, h, w = 12, 96, 96
    ramp_i = torch.arange(h, dtype=torch.float32)[None, :, None].expand(s, h, w) * 1.25 / 200 + 0.2  # i in mm / 200
    ramp_j = torch.arange(w, dtype=torch.float32)[None, None, :].expand(s, h, w) * 1.25 / 200 + 0.2
    lab = torch.zeros(2, 1, s, h, w, dtype=torch.long)
    g = torch.Generator().manual_seed(5)
    img, _ = ga.augment_batch(torch.stack([ramp_i, ramp_j]), lab, cfg, g)
    inner = (slice(None), slice(8, -8), slice(8, -8))
    di = ((img[0] - ramp_i) * 200)[inner]  # displacement along i (mm) at each output voxel
    dj = ((img[1] - ramp_j) * 200)[inner]
    for d in (di, dj):
        rms = float(d.pow(2).mean().sqrt())
        assert 0.3 * 2.0 < rms < 1.5 * 2.0, rms
        assert float((d[:, 1:] - d[:, :-1]).abs().max()) < 0.2  # smooth: < 0.2 mm change per 1.25 mm voxel
    # labels and image move together (a two-class image sampled both ways agrees away from its edge)
    blob = torch.zeros(1, s, h, w)
    blob[:, :, 30:66, 30:66] = 1
    img, out = ga.augment_batch(blob, blob.long()[:, None], cfg, torch.Generator().manual_seed(6))
    assert float(((img > 0.5).long() == out[:, 0]).float().mean()) > 0.995
    assert not torch.equal(out[:, 0], blob.long())  # it did deform


def test_noise_has_the_set_spread() -> None:
    cfg = AugmentConfig(**{**STILL.__dict__, "noise_sd": 0.05})
    x = torch.full((2, 4, 32, 32), 0.5)
    img, _ = ga.augment_batch(x, torch.zeros(2, 1, 4, 32, 32, dtype=torch.long), cfg, torch.Generator().manual_seed(7))
    assert abs(float(img.std()) - 0.05) < 0.005 and abs(float(img.mean()) - 0.5) < 0.005


def test_cpu_augmentation_applies_the_same_elastic_shift(monkeypatch: pytest.MonkeyPatch) -> None:
    from ssll.nn import data

    cfg = AugmentConfig(**{**STILL.__dict__, "elastic_mm": 1.0})
    monkeypatch.setattr(data, "elastic_coarse", _constant_coarse(2.5, -1.25))
    vol = np.random.default_rng(2).random((16, 12, 6)).astype(np.float32)  # (i, j, k)
    seg = np.random.default_rng(3).integers(0, 5, (16, 12, 6)).astype(np.uint8)
    img, sg, _ = data.augment(vol, seg, seg.copy(), cfg, np.random.default_rng(0))
    np.testing.assert_allclose(img[:-2, 1:], vol[2:, :-1], atol=1e-5)
    np.testing.assert_array_equal(sg[:-2, 1:], seg[2:, :-1])


def test_slice_jitter_is_drawn_at_planes_and_linear_between() -> None:
    from ssll.nn.data import slice_jitter

    cfg = AugmentConfig(slice_jitter_mm=2.0, slice_jitter_spacing_mm=10.0)
    # 21 slices of 2 mm: planes 10 mm apart on slices 0, 5, 10, 15, 20
    planes = np.array([[0.0, 1.0, -1.0, 0.5, 2.0], [1.0, 1.0, 0.0, 0.0, -3.0]])
    got = slice_jitter(21, cfg, lambda size: planes.reshape(size))
    assert got.shape == (2, 21)
    np.testing.assert_allclose(got[:, ::5], 2.0 * planes, atol=1e-6)
    np.testing.assert_allclose(got[:, 7], 2.0 * (0.6 * planes[:, 1] + 0.4 * planes[:, 2]), atol=1e-6)
    rng = np.random.default_rng(0)
    draws = np.stack([slice_jitter(21, cfg, rng.standard_normal)[:, ::5] for _ in range(2000)])
    assert abs(float(draws.std()) - 2.0) < 0.1 and abs(float(draws.mean())) < 0.1
    with pytest.raises(ValueError, match="slice_jitter_spacing_mm"):
        slice_jitter(21, AugmentConfig(slice_jitter_mm=2.0, slice_jitter_spacing_mm=0.0), rng.standard_normal)


def _fixed_jitter(n_slices: int, cfg: AugmentConfig, normal) -> np.ndarray:
    k = np.arange(n_slices)
    return np.stack([1.25 * (k % 3), -1.25 * (k % 2)]).astype(np.float32)  # whole voxels: i 0, 1, 2; j 0, -1


def test_slice_jitter_moves_each_slice_and_its_labels_by_its_own_shift(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = AugmentConfig(**{**STILL.__dict__, "slice_jitter_mm": 1.0})
    monkeypatch.setattr(ga, "slice_jitter", _fixed_jitter)
    x = torch.rand(2, 6, 16, 12)
    lab = torch.randint(0, 7, (2, 2, 6, 16, 12))
    img, out = ga.augment_batch(x, lab, cfg, torch.Generator().manual_seed(0))
    for k in range(6):
        di, dj = k % 3, k % 2  # output (i, j) shows the input at (i + di, j - dj)
        assert torch.allclose(img[:, k, : 16 - di, dj:], x[:, k, di:, : 12 - dj], atol=1e-5), k
        assert torch.equal(out[:, :, k, : 16 - di, dj:], lab[:, :, k, di:, : 12 - dj]), k
    drawn = ga.augment_batch(x, lab, AugmentConfig(**{**STILL.__dict__, "slice_jitter_mm": 2.0}),
                             torch.Generator().manual_seed(0))[0]
    monkeypatch.undo()
    real = ga.augment_batch(x, lab, AugmentConfig(**{**STILL.__dict__, "slice_jitter_mm": 2.0}),
                            torch.Generator().manual_seed(0))[0]
    assert torch.equal(drawn, img) and not torch.allclose(real, x, atol=1e-3)  # the real draw moves the slices


def test_cpu_augmentation_applies_the_same_slice_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    from ssll.nn import data

    cfg = AugmentConfig(**{**STILL.__dict__, "slice_jitter_mm": 1.0})
    monkeypatch.setattr(data, "slice_jitter", _fixed_jitter)
    vol = np.random.default_rng(2).random((16, 12, 6)).astype(np.float32)  # (i, j, k)
    seg = np.random.default_rng(3).integers(0, 5, (16, 12, 6)).astype(np.uint8)
    img, sg, _ = data.augment(vol, seg, seg.copy(), cfg, np.random.default_rng(0))
    for k in range(6):
        di, dj = k % 3, k % 2
        np.testing.assert_allclose(img[: 16 - di, dj:, k], vol[di:, : 12 - dj, k], atol=1e-5)
        np.testing.assert_array_equal(sg[: 16 - di, dj:, k], seg[di:, : 12 - dj, k])


def test_grid_turns_give_the_eight_proper_orientations_and_no_mirror_image() -> None:
    """With everything else still, a grid turn is an exact permutation of the voxels: one of the eight
    orientations of ssll.nn.orientation that keep handedness, image and targets alike, on both paths."""
    from ssll.nn.data import augment
    from ssll.nn.orientation import ORIENTATIONS

    proper = {o.name: o for o in ORIENTATIONS if o.transpose == o.reverse_slices}  # rot*, transpose+rot*+reversed
    assert len(proper) == 8
    cfg = AugmentConfig(**{**STILL.__dict__, "grid_turns": True})
    rng = np.random.default_rng(0)
    x = rng.random((16, 16, 8)).astype(np.float32)  # (I, J, K), square slices
    lab = rng.integers(0, 5, (16, 16, 8)).astype(np.uint8)

    def which(img: np.ndarray, targets: np.ndarray) -> str:
        found = [n for n, o in proper.items() if np.allclose(img, o.apply(x), atol=1e-5)]
        assert len(found) == 1 and np.array_equal(targets, proper[found[0]].apply(lab)), found
        return found[0]

    seen_cpu = {which(*augment(x, lab, lab, cfg, rng)[:2]) for _ in range(40)}
    g = torch.Generator().manual_seed(1)
    img, out = ga.augment_batch(torch.from_numpy(x).permute(2, 0, 1)[None].repeat(40, 1, 1, 1),
                                torch.from_numpy(lab).permute(2, 0, 1)[None, None].repeat(40, 1, 1, 1, 1), cfg, g)
    seen_gpu = {which(img[b].permute(1, 2, 0).numpy(), out[b, 0].permute(1, 2, 0).numpy().astype(np.uint8))
                for b in range(40)}
    assert seen_cpu == seen_gpu == set(proper)  # all eight drawn, on both paths


@pytest.mark.parametrize("elastic", [0.0, 3.0])
def test_window_is_the_crop_of_the_whole_augmented_volume(elastic: float) -> None:
    cfg = AugmentConfig(rotate_deg=20.0, translate_mm=8.0, translate_slice_mm=4.0, elastic_mm=elastic,
                        slice_jitter_mm=1.5)
    x = torch.rand(3, 10, 48, 40)
    lab = torch.randint(0, 5, (3, 2, 10, 48, 40))
    full_img, full_lab = ga.augment_batch(x, lab, cfg, torch.Generator().manual_seed(9))
    img, out = ga.augment_batch(x, lab, cfg, torch.Generator().manual_seed(9), window=(5, 11, 24))
    assert img.shape == (3, 10, 24, 24) and out.shape == (3, 2, 10, 24, 24)
    assert torch.allclose(img, full_img[..., 5:29, 11:35], atol=1e-6)
    assert torch.equal(out, full_lab[..., 5:29, 11:35])
    base = torch.nn.functional.affine_grid(torch.eye(3, 4)[None], [1, 1, 10, 48, 40], align_corners=False)
    assert torch.equal(ga._identity_grid((10, 48, 40), slice(5, 29), slice(11, 35), torch.device("cpu")),
                       base[:, :, 5:29, 11:35])  # torch's own voxel centres, bit for bit
    with pytest.raises(ValueError, match="does not fit"):
        ga.augment_batch(x, lab, cfg, torch.Generator(), window=(30, 0, 24))



def test_elastic_field_is_trilinear_and_its_window_is_the_crop() -> None:
    from ssll.nn.data import elastic_field

    coarse = torch.randn(2, 2, 3, 5, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    full = elastic_field(coarse, (10, 48, 40))
    ref = torch.nn.functional.interpolate(coarse.float(), size=(10, 48, 40), mode="trilinear", align_corners=True)
    assert full.shape == (2, 2, 10, 48, 40) and full.dtype == torch.float32
    assert torch.allclose(full, ref, atol=1e-5)
    corners = [0, -1]  # the grid's end voxels carry the end control points
    assert torch.allclose(full[:, :, corners][..., corners, :][..., corners],
                          coarse[:, :, corners][..., corners, :][..., corners].float())
    win = elastic_field(coarse, (10, 48, 40), (slice(None), slice(5, 29), slice(11, 35)))
    assert win.shape == (2, 2, 10, 24, 24)
    assert torch.equal(win, full[..., 5:29, 11:35])  # each voxel computed the same way, bit for bit
    flat = elastic_field(coarse[:, :, :1], (10, 48, 40))  # one control point along an axis: constant along it
    assert torch.equal(flat, flat[:, :, :1].expand_as(flat))
