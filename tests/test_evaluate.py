from __future__ import annotations

import numpy as np
import pytest

from ssll.evaluate import (
    dice,
    dice_shift_compensated,
    hausdorff,
    hausdorff_slicewise,
    landmark_distances,
    slicewise_distances,
)


def test_dice_hand_computed() -> None:
    a = np.zeros((4, 4, 1), bool)
    b = np.zeros((4, 4, 1), bool)
    a[:2, :2] = True  # 4 voxels
    b[1:3, :2] = True  # 4 voxels, 2 shared
    assert dice(a, b) == pytest.approx(2 * 2 / 8)
    assert np.isnan(dice(np.zeros(3, bool), np.zeros(3, bool)))


def test_hausdorff_of_two_boxes_in_mm() -> None:
    a = np.zeros((20, 20, 10), bool)
    b = np.zeros((20, 20, 10), bool)
    a[5:10, 5:10, 2:5] = True
    b[5:10, 5:13, 2:5] = True  # b extends 3 voxels further along j
    # spacing 2 mm along j: the far face of b is 3 voxels = 6 mm from a's surface
    assert hausdorff(a, b, (1.0, 2.0, 10.0)) == pytest.approx(6.0)
    b2 = np.zeros_like(a)
    b2[5:10, 5:10, 2:6] = True  # one more slice of 10 mm
    assert hausdorff(a, b2, (1.0, 2.0, 10.0)) == pytest.approx(10.0)


def test_slicewise_hausdorff_averages_the_slices_both_hold() -> None:
    a = np.zeros((20, 20, 6), bool)
    b = np.zeros((20, 20, 6), bool)
    a[5:10, 5:10, 1:5] = True
    b[5:10, 5:12, 1:3] = True  # slices 1-2: 2 voxels longer along j (4 mm)
    b[5:10, 5:11, 3] = True  # slice 3: 1 voxel (2 mm); slice 4: a only; slice 5: b only
    b[0:3, 0:3, 5] = True
    # slices 1, 2, 3 count: (4 + 4 + 2) / 3 mm; the 3D distance sees the extra slice (10 mm)
    assert hausdorff_slicewise(a, b, (1.0, 2.0, 10.0)) == pytest.approx(10.0 / 3)
    assert hausdorff(a, b, (1.0, 2.0, 10.0)) > 10.0
    # the slice axis can be another one
    assert hausdorff_slicewise(np.moveaxis(a, 2, 0), np.moveaxis(b, 2, 0), (10.0, 1.0, 2.0), axis=0) == pytest.approx(10.0 / 3)
    assert np.isnan(hausdorff_slicewise(a[..., :1], b[..., :1], (1.0, 2.0, 10.0)))  # no slice holds both


def test_slicewise_distances_tell_the_directions_apart() -> None:
    a = np.zeros((20, 20, 4), bool)
    a[5:10, 5:10, 1:3] = True
    b = a.copy()
    b[5:10, 15:17, 1] = True  # slice 1: b also holds a fragment at j = 15-16, away from the square
    b[0:2, 0:2, 3] = True  # slice 3: b only, not counted
    d = slicewise_distances(a, b, (1.0, 2.0, 10.0))
    # every surface voxel of a lies on b's surface (0 mm); the fragment's far side (j = 16) is 7 voxels of 2 mm
    # from a's nearest surface (j = 9): 14 mm from b to a; slice 2 holds the same square in both
    np.testing.assert_allclose(d, [[0.0, 14.0], [0.0, 0.0]])
    np.testing.assert_allclose(slicewise_distances(b, a, (1.0, 2.0, 10.0)), d[:, ::-1])
    assert hausdorff_slicewise(a, b, (1.0, 2.0, 10.0)) == pytest.approx(7.0)
    assert slicewise_distances(a[..., 3:], b[..., 3:], (1.0, 2.0, 10.0)).shape == (0, 2)


def test_hd95_below_max() -> None:
    a = np.zeros((30, 30, 3), bool)
    a[5:25, 5:25, :] = True
    b = a.copy()
    b[24, 24, 1] = False
    b[29, 29, 1] = True  # one far outlier voxel
    assert hausdorff(a, b, (1, 1, 1), percentile=95) < hausdorff(a, b, (1, 1, 1))


def test_empty_masks() -> None:
    e = np.zeros((3, 3, 3), bool)
    f = e.copy()
    f[1, 1, 1] = True
    assert np.isnan(hausdorff(e, e, (1, 1, 1)))
    assert hausdorff(e, f, (1, 1, 1)) == float("inf")


def test_landmark_distances() -> None:
    d = landmark_distances(np.array([[0, 0, 0], [1, 1, 1.0]]), np.array([[3, 4, 0], [1, 1, 1.0]]))
    np.testing.assert_allclose(d, [5.0, 0.0])


def _ring_stack(shifts: list[tuple[int, int]]) -> np.ndarray:
    """A (48, 48, n) stack: cavity disc (1) in a wall ring (2), slice k moved by shifts[k] voxels."""
    ii, jj = np.mgrid[:48, :48]
    vol = np.zeros((48, 48, len(shifts)), np.uint8)
    for k, (di, dj) in enumerate(shifts):
        r = np.hypot(ii - 24 - di, jj - 24 - dj)
        vol[..., k][r < 12] = 2
        vol[..., k][r < 8] = 1
    return vol


def test_shift_compensated_dice_undoes_per_slice_shifts() -> None:
    shifts = [(0, 0), (3, -2), (-2, 1), (1, 3)]
    truth = _ring_stack(shifts)  # the expert's slices, each with its breath-hold shift
    smooth = _ring_stack([(0, 0)] * 4)  # a model that removed the shifts
    assert dice(smooth == 2, truth == 2) < 0.85
    scores, found = dice_shift_compensated(smooth, truth, (1, 2), (1.5, 1.5, 10.0), max_shift_mm=6.0)
    assert scores[1] == pytest.approx(1.0) and scores[2] == pytest.approx(1.0)
    np.testing.assert_array_equal(found, np.array(shifts))


def test_shift_compensated_dice_limits_the_shift_and_scores_shape_errors() -> None:
    truth = _ring_stack([(0, 0), (5, 0)])  # 5 voxels = 7.5 mm: beyond a 6 mm search
    smooth = _ring_stack([(0, 0), (0, 0)])
    scores, found = dice_shift_compensated(smooth, truth, (1, 2), (1.5, 1.5, 10.0), max_shift_mm=6.0)
    assert found[1, 0] == 4 and scores[2] < 1.0
    # a wrong shape stays wrong whatever the shift: a thinner wall
    thin = smooth.copy()
    ii, jj = np.mgrid[:48, :48]
    thin[np.hypot(ii - 24, jj - 24)[..., None].repeat(2, -1) >= 10] = 0
    s_thin, _ = dice_shift_compensated(thin, smooth, (1, 2), (1.5, 1.5, 10.0))
    assert s_thin[1] == pytest.approx(1.0)
    assert s_thin[2] == pytest.approx(dice(thin == 2, smooth == 2))
    assert s_thin[2] < 0.8
    # a label absent from both is NaN
    s_nan, _ = dice_shift_compensated(smooth, truth, (1, 3), (1.5, 1.5, 10.0))
    assert np.isnan(s_nan[3])
