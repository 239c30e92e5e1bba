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
