from __future__ import annotations

import numpy as np

from ssll.postprocess import keep_largest_components


def test_islands_are_removed() -> None:
    lab = np.zeros((20, 20, 5), np.uint8)
    lab[2:10, 2:10, 1:4] = 1
    lab[15:17, 15:17, 2] = 1  # island of LV cavity
    lab[2:10, 11:14, 1:4] = 3
    out = keep_largest_components(lab)
    assert (out[15:17, 15:17, 2] == 0).all()
    assert (out[2:10, 2:10, 1:4] == 1).all() and (out == 3).sum() == (lab == 3).sum()
    assert (lab[15:17, 15:17, 2] == 1).all()  # input untouched
