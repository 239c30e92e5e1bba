from __future__ import annotations

import numpy as np
import pytest

from ssll.simulate import LRConfig, simulate_lr


def _hr() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    img = np.broadcast_to(np.arange(40, dtype=np.float32), (30, 30, 40)).copy()
    lab = np.zeros((30, 30, 40), np.uint8)
    lab[10:20, 10:20, 6:34] = 1
    aff = np.diag([1.25, 1.25, 2.0, 1.0])
    aff[:3, 3] = [5.0, -3.0, 7.0]
    return img, lab, aff


def test_thick_slices_average_and_geometry() -> None:
    img, lab, aff = _hr()
    out = simulate_lr(img, lab, aff, LRConfig(slice_mm=10.0, shift_mm=0.0, max_lost=0), np.random.default_rng(0))
    # heart in HR slices 6..33 -> LR slices 1..6, plus one margin slice each side -> 0..7
    assert out["image"].shape == (30, 30, 8)
    np.testing.assert_allclose(out["image"][5, 5, :], 5 * np.arange(8) + 2.0)
    np.testing.assert_allclose(np.linalg.norm(out["affine"][:3, 2]), 10.0)
    # LR slice 0 is centred on HR slice 2 (z = 7 + 2 * 2 mm)
    assert out["affine"][2, 3] == pytest.approx(11.0)
    assert out["record"]["slice_mm"] == 10.0


def test_shifts_move_labels_by_the_recorded_amount() -> None:
    img, lab, aff = _hr()
    out = simulate_lr(img, lab, aff, LRConfig(shift_mm=2.0, max_lost=0), np.random.default_rng(3))
    shifts = np.array(out["record"]["shifts_mm"])
    for k in range(1, 6):
        c = np.argwhere(out["labels"][:, :, k] == 1).mean(0)
        np.testing.assert_allclose((c - 14.5) * 1.25, shifts[k], atol=1.25)


def test_lost_coverage_drops_end_slices() -> None:
    img, lab, aff = _hr()
    full = simulate_lr(img, lab, aff, LRConfig(shift_mm=0.0, max_lost=0), np.random.default_rng(0))
    lost = [simulate_lr(img, lab, aff, LRConfig(shift_mm=0.0, max_lost=1), np.random.default_rng(s)) for s in range(8)]
    n_lost = [r["record"]["slices_lost_first_end"] + r["record"]["slices_lost_last_end"] for r in lost]
    assert max(n_lost) >= 1
    for r, n in zip(lost, n_lost):
        # each lost heart slice also removes the margin slice beyond it
        assert (full["labels"][..., :].any(axis=(0, 1)).sum() - r["labels"].any(axis=(0, 1)).sum()) == n


def test_without_shifts_the_same_draw_gives_the_same_stack_unshifted() -> None:
    """``shift_mm=0`` pairs with the default: the same lost end slices and slab, only no shifts
    (bench/refinement.py --sim-shift-mm 0 relies on it)."""
    img, lab, aff = _hr()
    for seed in range(6):
        shifted = simulate_lr(img, lab, aff, LRConfig(shift_mm=2.0, max_lost=1), np.random.default_rng(seed))
        still = simulate_lr(img, lab, aff, LRConfig(shift_mm=0.0, max_lost=1), np.random.default_rng(seed))
        assert [shifted["record"][k] for k in ("slices_lost_first_end", "slices_lost_last_end", "lr_slices")] == \
               [still["record"][k] for k in ("slices_lost_first_end", "slices_lost_last_end", "lr_slices")]
        np.testing.assert_array_equal(shifted["affine"], still["affine"])
        assert not np.any(still["record"]["shifts_mm"])
        assert np.abs(np.asarray(shifted["record"]["shifts_mm"])).max() > 0


def test_horizontal_shifts_keep_the_default_draw_along_axis_0_only() -> None:
    """``shift_axes=(0,)`` (the paper's "horizontal" translation) moves slices along axis 0 by the
    default draw's axis-0 component and not at all along axis 1; image and labels move together."""
    img, lab, aff = _hr()
    both = simulate_lr(img, lab, aff, LRConfig(shift_mm=2.0, max_lost=1), np.random.default_rng(5))
    horiz = simulate_lr(img, lab, aff, LRConfig(shift_mm=2.0, max_lost=1, shift_axes=(0,)), np.random.default_rng(5))
    s_both, s_h = np.asarray(both["record"]["shifts_mm"]), np.asarray(horiz["record"]["shifts_mm"])
    np.testing.assert_array_equal(s_h[:, 0], s_both[:, 0])
    assert not np.any(s_h[:, 1]) and np.abs(s_h[:, 0]).max() > 0
    still = simulate_lr(img, lab, aff, LRConfig(shift_mm=0.0, max_lost=1), np.random.default_rng(5))
    sp = np.linalg.norm(aff[:3, :3], axis=0)
    for k in range(still["labels"].shape[2]):
        c_still = np.argwhere(still["labels"][:, :, k] > 0).mean(0)
        c_h = np.argwhere(horiz["labels"][:, :, k] > 0).mean(0)
        np.testing.assert_allclose((c_h - c_still) * sp[:2], [s_h[k, 0], 0.0], atol=sp[0])


@pytest.mark.parametrize("axes", [(), (2,), (0, 0)])
def test_bad_shift_axes_raise(axes: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="shift_axes"):
        LRConfig(shift_axes=axes)
