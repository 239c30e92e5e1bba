from __future__ import annotations

import pytest
import torch

from ssll.nn.network import SSLLN


def test_forward_shapes_and_conv_count() -> None:
    m = SSLLN(n_slices=8, widths=(4, 8, 8, 8, 8))
    seg, lmk = m(torch.rand(2, 8, 32, 48))
    assert seg.shape == (2, 5, 8, 32, 48) and lmk.shape == (2, 7, 8, 32, 48)
    n_3x3 = sum(1 for mod in m.modules() if isinstance(mod, torch.nn.Conv2d) and mod.kernel_size == (3, 3))
    # 13 encoder + 2 fusion convolutions (the paper's 15) plus one 3x3 per side branch
    assert n_3x3 == 15 + 5


def test_eval_is_deterministic() -> None:
    torch.manual_seed(0)
    m = SSLLN(n_slices=4, widths=(4, 4, 4, 4, 4)).eval()
    x = torch.rand(1, 4, 32, 32)
    with torch.no_grad():
        a, b = m(x), m(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_wrong_slice_count_raises() -> None:
    m = SSLLN(n_slices=4, widths=(4, 4, 4, 4, 4))
    with pytest.raises(ValueError, match=r"expected \(B, 4, H, W\)"):
        m(torch.rand(1, 5, 32, 32))
