from __future__ import annotations

import pytest
import torch

from ssll.nn.network import SSLLN, upsample_side


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


@pytest.mark.parametrize("factor", [2, 4, 16])
def test_aligned_upsampling_puts_a_coarse_pixel_where_the_strided_convolutions_centred_it(factor: int) -> None:
    h = 64 // factor
    y = torch.zeros(1, 1, h, h)
    y[0, 0, 2, 1] = 1.0  # coarse pixel (2, 1) is centred on fine pixel (2, 1) * factor
    up = upsample_side(y, (64, 64), aligned=True)[0, 0]
    assert up.shape == (64, 64)
    assert tuple(int(v) for v in divmod(int(up.argmax()), 64)) == (2 * factor, factor)
    assert float(up[2 * factor, factor]) == pytest.approx(1.0)
    # the legacy mode is shifted by (factor - 1) / 2 fine pixels along each axis
    legacy = upsample_side(y, (64, 64), aligned=False)[0, 0]
    rows = torch.arange(64, dtype=torch.float32)
    centre_i = float((legacy.sum(1) * rows).sum() / legacy.sum())
    assert centre_i == pytest.approx(2 * factor + (factor - 1) / 2, abs=0.05)
    # a constant map stays constant, edges included
    assert torch.allclose(upsample_side(torch.ones(1, 3, h, h), (64, 64), aligned=True), torch.ones(1, 3, 64, 64))


def test_stride2_chain_centres_match_the_aligned_upsampling() -> None:
    # an impulse at fine pixel (16, 8) goes through two stride-2 3x3 convolutions that average; the
    # coarse response, upsampled "aligned", peaks back at (16, 8)
    x = torch.zeros(1, 1, 64, 64)
    x[0, 0, 16, 8] = 1.0
    k = torch.ones(1, 1, 3, 3) / 9
    y = torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, k, stride=2, padding=1), k, stride=2, padding=1)
    up = upsample_side(y, (64, 64), aligned=True)[0, 0]
    assert tuple(int(v) for v in divmod(int(up.argmax()), 64)) == (16, 8)


def test_upsample_mode_is_part_of_the_architecture() -> None:
    m = SSLLN(n_slices=4, widths=(4, 4, 4, 4, 4), upsample="aligned")
    assert m.architecture()["upsample"] == "aligned"
    assert SSLLN(n_slices=4, widths=(4, 4, 4, 4, 4)).architecture()["upsample"] == "bilinear"
    seg, _ = m(torch.rand(1, 4, 32, 32))
    assert seg.shape == (1, 5, 4, 32, 32)
    with pytest.raises(ValueError, match="upsample"):
        SSLLN(upsample="nearest")


def test_batch_size_zero_is_the_devices() -> None:
    from ssll.nn.device import batch_size_for

    assert batch_size_for(torch.device("cpu"), 0) == 1
    assert batch_size_for(torch.device("cuda"), 0) == 4
    assert batch_size_for(torch.device("cpu"), 3) == 3
    with pytest.raises(ValueError, match="batch size -1"):
        batch_size_for(torch.device("cpu"), -1)


def test_segmentation_pass_and_deferred_landmark_head_equal_the_forward_pass() -> None:
    """The orientation search runs the network without its landmark head, and the head later on the kept features
    of the chosen orientation: both outputs equal those of the network's own forward pass."""
    import numpy as np

    from ssll.nn.infer import default_weights, forward, forward_segmentation, landmark_logits, load_model

    model = load_model(default_weights(), device=torch.device("cpu"))
    assert not model.card["untrained_classes"]  # so forward() hands back the network's scores as they are
    images = np.random.default_rng(0).random((2, 48, 64, 80), dtype=np.float32)  # (B, I, J, K)
    with torch.no_grad():
        seg, lmk = model.net(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))))
    seg2, feats = forward_segmentation(model, images)
    assert feats.shape == (2, 64, 48, 64) and lmk.shape == (2, 7, 80, 48, 64)
    torch.testing.assert_close(seg2, seg, rtol=0, atol=0)
    torch.testing.assert_close(landmark_logits(model, feats[1:]), lmk[1:], rtol=0, atol=0)
    seg3, lmk3 = forward(model, images)
    torch.testing.assert_close(seg3, seg, rtol=0, atol=0)
    torch.testing.assert_close(lmk3, lmk, rtol=0, atol=0)
