"""Breath-hold slice motion: per-slice in-plane shifts with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from ssll.motion import shift_slices


def test_shift_slices_moves_each_slice_by_its_interpolated_shift() -> None:
    vol = np.zeros((24, 24, 9), np.uint8)
    vol[10, 10, :] = 3
    sp = (1.25, 1.25, 2.0)
    slices = np.array([2, 6])
    shifts = np.array([[2.5, 0.0], [0.0, -2.5]])  # mm: (2, 0) and (0, -2) voxels
    out = shift_slices(vol, slices, shifts, sp, order=0)
    assert out.dtype == np.uint8
    expect = {0: (12, 10), 2: (12, 10), 4: (11, 9), 6: (10, 8), 8: (10, 8)}  # ends keep the end shift; between: linear
    for k, (i, j) in expect.items():
        assert out[i, j, k] == 3 and (out[..., k] > 0).sum() == 1, k
    back = shift_slices(out, slices, -shifts, sp, order=0)
    whole = [0, 2, 4, 6, 8]  # whole-voxel shifts there: moved back exactly
    np.testing.assert_array_equal(back[..., whole], vol[..., whole])
    img = shift_slices(vol.astype(np.float32), slices, shifts, sp, order=1)
    assert img[11, 9, 4] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="do not match"):
        shift_slices(vol, slices, shifts[:1], sp)
    with pytest.raises(ValueError, match="order"):
        shift_slices(vol, slices, shifts, sp, order=3)


def test_estimate_slice_shifts_recovers_known_sub_voxel_shifts() -> None:
    from conftest import biv_phantom, image_from_labels

    from ssll.motion import MotionConfig, estimate_slice_shifts

    sp = (1.25, 1.25, 2.0)
    model = biv_phantom(shape=(80, 80, 60), spacing=sp)
    model[:, :, :5] = 0  # no heart on the first acquired slice (k = 2): nothing to measure there
    ks = np.arange(2, 60, 5)  # 10 mm acquired slices on the 2 mm working grid
    rng = np.random.default_rng(3)
    drawn = rng.uniform(-3.5, 3.5, (ks.size, 2))  # mm, not whole voxels
    # slice k shows the model at v + drawn_k: the image is the model moved by -drawn_k
    image = shift_slices(image_from_labels(model, 1) / 450.0, ks, -drawn, sp)
    measured, est = estimate_slice_shifts(image, model, ks, sp, 10.0, MotionConfig(detrend=False))
    small = [k for k in ks if (model[:, :, k] > 0).sum() * sp[0] * sp[1] < MotionConfig().min_heart_mm2]
    assert small and sorted(set(measured) | set(small)) == list(ks) and not set(measured) & set(small)
    truth = drawn[np.searchsorted(ks, measured)]
    truth -= truth.mean(0)
    assert np.abs(est.mean(0)).max() < 1e-9  # centred
    rms = np.sqrt(((est - truth) ** 2).sum(1).mean())
    assert rms < 0.3, rms  # against 2.9 mm RMS drawn: a quarter voxel
    # an image that is the model as it is gives no shift
    still = estimate_slice_shifts(image_from_labels(model, 2) / 450.0, model, ks, sp, 10.0)[1]
    assert np.abs(still).max() < 0.3
    with pytest.raises(ValueError, match="one 3D grid"):
        estimate_slice_shifts(image[:-1], model, ks, sp, 10.0)


def test_estimate_slice_shifts_detrend_takes_out_a_tilt() -> None:
    """A shift that grows steadily from slice to slice (a tilted heart) is taken out with ``detrend``, as the mean
    is: what is left is the per-slice part, measured as without the tilt."""
    from conftest import biv_phantom, image_from_labels

    from ssll.motion import MotionConfig, estimate_slice_shifts

    sp = (1.25, 1.25, 2.0)
    model = biv_phantom(shape=(80, 80, 60), spacing=sp)
    ks = np.arange(7, 60, 5)
    rng = np.random.default_rng(5)
    jitter = rng.uniform(-2.0, 2.0, (ks.size, 2))
    tilt = np.outer(ks - ks.mean(), [0.15, -0.1])  # mm per working slice: 4 and 2.7 mm from end to end
    image = shift_slices(image_from_labels(model, 1) / 450.0, ks, -(jitter + tilt), sp)

    def detrended(a: np.ndarray, k: np.ndarray) -> np.ndarray:
        x = np.c_[np.ones(len(k)), k]
        return a - x @ np.linalg.lstsq(x, a, rcond=None)[0]

    measured, plain = estimate_slice_shifts(image, model, ks, sp, 10.0, MotionConfig(detrend=False))
    _, est = estimate_slice_shifts(image, model, ks, sp, 10.0)  # detrend is the default
    truth = (jitter + tilt)[np.searchsorted(ks, measured)]
    assert np.sqrt(((plain - (truth - truth.mean(0))) ** 2).sum(1).mean()) < 0.3  # without: the tilt is measured
    want = detrended(jitter[np.searchsorted(ks, measured)], measured)
    assert np.sqrt(((est - want) ** 2).sum(1).mean()) < 0.3, (est, want)
    assert np.abs(detrended(est, measured) - est).max() < 1e-9  # no trend and no mean left


def test_motion_config_from_mapping_checks_keys_and_values() -> None:
    from ssll.motion import MotionConfig
    from ssll.refine import RefineConfig

    cfg = RefineConfig.from_mapping({"motion": {"estimate": True, "control_spacing_mm": [70, 50]}})
    assert cfg.motion.estimate and cfg.motion.control_spacing_mm == (70.0, 50.0)
    assert RefineConfig.from_mapping(None).motion == MotionConfig()
    assert MotionConfig().detrend and not MotionConfig.from_mapping({"detrend": False}).detrend
    with pytest.raises(ValueError, match="unknown keys"):
        MotionConfig.from_mapping({"estimat": True})
    with pytest.raises(ValueError, match="max_shift_mm"):
        MotionConfig.from_mapping({"max_shift_mm": 0})
    with pytest.raises(ValueError, match="choose one"):
        RefineConfig.from_mapping({"motion": {"estimate": True}, "ffd": {"slice_shift_mm": 10.0}})
