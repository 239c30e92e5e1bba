"""Non-local patch fusion, eq. (5): identity, unanimity, a hand-computed vote, the h limit."""

from __future__ import annotations

import numpy as np
import pytest

from ssll.fusion import FusionConfig, fuse_labels, majority_vote


def _blocks(shift: int) -> np.ndarray:
    lab = np.zeros((24, 24, 5), np.uint8)
    lab[6 + shift : 18 + shift, 6:18] = 1
    lab[9 + shift : 15 + shift, 9:15] = 2
    return lab


def test_identical_atlases_give_the_atlas() -> None:
    lab = _blocks(0)
    img = lab / 2.0
    out, frac = fuse_labels(img, np.stack([img] * 3), np.stack([lab] * 3))
    np.testing.assert_array_equal(out, lab)
    assert frac == 0.0


def test_vote_follows_the_atlas_whose_patches_match_the_target() -> None:
    # two atlases disagree by a 2-voxel shift; the target image is atlas 0's: its patches win
    labs = np.stack([_blocks(0), _blocks(2)])
    imgs = labs / 2.0
    out, frac = fuse_labels(imgs[0], imgs, labs, FusionConfig(h=0.5))
    np.testing.assert_array_equal(out, labs[0])
    assert 0 < frac < 0.2


def test_large_h_is_a_window_vote_and_matches_a_direct_sum() -> None:
    rng = np.random.default_rng(0)
    labs = rng.integers(0, 3, (3, 12, 12, 4)).astype(np.uint8)
    imgs = rng.random((3, 12, 12, 4)).astype(np.float32)
    target = rng.random((12, 12, 4)).astype(np.float32)
    cfg = FusionConfig(patch=(3, 3, 1), search=(3, 3, 3), h=0.7)
    out, _ = fuse_labels(target, imgs, labs, cfg)
    # eq. (5) by hand at a few voxels where the atlases disagree (edge-padded borders)
    pad = [(2, 2), (2, 2), (1, 1)]
    tp = np.pad(target, pad, mode="edge")
    ip = np.stack([np.pad(a, pad, mode="edge") for a in imgs])
    lp = np.stack([np.pad(a, pad, mode="edge") for a in labs])
    for v in [(5, 5, 1), (0, 7, 0), (11, 11, 3), (3, 8, 2)]:
        if labs[:, v[0], v[1], v[2]].min() == labs[:, v[0], v[1], v[2]].max():
            continue
        x = np.array(v) + [2, 2, 1]
        f = tp[x[0] - 1 : x[0] + 2, x[1] - 1 : x[1] + 2, x[2]]
        votes = np.zeros(5)
        for n in range(3):
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    for dk in (-1, 0, 1):
                        y = x + [di, dj, dk]
                        g = ip[n, y[0] - 1 : y[0] + 2, y[1] - 1 : y[1] + 2, y[2]]
                        votes[lp[n, y[0], y[1], y[2]]] += np.exp(-((f - g) ** 2).sum() / 0.7)
        assert out[v] == votes.argmax()


def test_majority_vote_and_config_checks() -> None:
    labs = np.array([[[[1]]], [[[2]]], [[[2]]]], np.uint8)
    assert majority_vote(labs)[0, 0, 0] == 2
    with pytest.raises(ValueError, match="odd"):
        FusionConfig.from_mapping({"patch": [6, 7, 1]})
    with pytest.raises(ValueError, match="must agree"):
        fuse_labels(np.zeros((4, 4, 4)), np.zeros((2, 4, 4, 4)), np.zeros((2, 4, 4, 3)))
