"""Non-local patch fusion, eq. (5): identity, unanimity, a hand-computed vote, the h limit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

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


def _random_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labs = rng.integers(0, 3, (3, 12, 12, 4)).astype(np.uint8)
    imgs = rng.random((3, 12, 12, 4)).astype(np.float32)
    target = rng.random((12, 12, 4)).astype(np.float32)
    return target, imgs, labs


def _by_hand(target: np.ndarray, imgs: np.ndarray, labs: np.ndarray, v: tuple[int, int, int],
             h: float) -> tuple[np.ndarray, int]:
    """Eq. (5) at voxel ``v`` for 3x3x1 patches and a 3x3x3 search (edge-padded borders): the label
    votes, and the label of the best-matching atlas patch."""
    pad = [(2, 2), (2, 2), (1, 1)]
    tp = np.pad(target, pad, mode="edge")
    ip = np.stack([np.pad(a, pad, mode="edge") for a in imgs])
    lp = np.stack([np.pad(a, pad, mode="edge") for a in labs])
    x = np.array(v) + [2, 2, 1]
    f = tp[x[0] - 1 : x[0] + 2, x[1] - 1 : x[1] + 2, x[2]]
    votes, best = np.zeros(5), (np.inf, -1)
    for n in range(len(imgs)):
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                for dk in (-1, 0, 1):
                    y = x + [di, dj, dk]
                    g = ip[n, y[0] - 1 : y[0] + 2, y[1] - 1 : y[1] + 2, y[2]]
                    ssd = float(((f - g) ** 2).sum())
                    votes[lp[n, y[0], y[1], y[2]]] += np.exp(-ssd / h)
                    best = min(best, (ssd, int(lp[n, y[0], y[1], y[2]])))
    return votes, best[1]


def _disagreeing(labs: np.ndarray) -> list[tuple[int, int, int]]:
    return [tuple(int(c) for c in v) for v in np.argwhere(labs.min(0) != labs.max(0))]


def test_large_h_is_a_window_vote_and_matches_a_direct_sum() -> None:
    target, imgs, labs = _random_case()
    out, _ = fuse_labels(target, imgs, labs, FusionConfig(patch=(3, 3, 1), search=(3, 3, 3), h=0.7))
    for v in [(5, 5, 1), (0, 7, 0), (11, 11, 3), (3, 8, 2)]:
        if v in _disagreeing(labs):
            assert out[v] == _by_hand(target, imgs, labs, v, 0.7)[0].argmax()


def test_small_h_is_the_best_patch_vote_not_an_underflow() -> None:
    # with h far below the patch distances every exp(-ssd / h) underflows; the vote must still go to
    # the best-matching atlas patch (weights are relative), never to background by default
    target, imgs, labs = _random_case()
    out, _ = fuse_labels(target, imgs, labs, FusionConfig(patch=(3, 3, 1), search=(3, 3, 3), h=1e-6))
    voxels = _disagreeing(labs)[::7]
    best = [_by_hand(target, imgs, labs, v, 1.0)[1] for v in voxels]
    assert [int(out[v]) for v in voxels] == best
    assert len(set(best)) == 3  # the known answers are not all background


def test_largest_component_removes_an_island_only_when_asked() -> None:
    # every atlas holds a stray LV-cavity voxel far from the heart: unanimous, so the vote keeps it
    labs = np.stack([_blocks(0), _blocks(2)])
    labs[:, 22, 22, 4] = 1
    imgs = labs / 2.0
    kept, _ = fuse_labels(imgs[0], imgs, labs, FusionConfig(h=0.5))
    cleaned, _ = fuse_labels(imgs[0], imgs, labs, FusionConfig(h=0.5, largest_component=True))
    assert kept[22, 22, 4] == 1 and cleaned[22, 22, 4] == 0
    np.testing.assert_array_equal(cleaned, np.where((kept == 1) & (np.arange(24)[:, None, None] >= 20), 0, kept))
    for c in (1, 2):
        assert ndimage.label(cleaned == c, structure=np.ones((3, 3, 3)))[1] == 1
    with pytest.raises(ValueError, match="largest_component"):
        FusionConfig.from_mapping({"largest_component": "yes"})


def test_majority_vote_and_config_checks() -> None:
    labs = np.array([[[[1]]], [[[2]]], [[[2]]]], np.uint8)
    assert majority_vote(labs)[0, 0, 0] == 2
    with pytest.raises(ValueError, match="odd"):
        FusionConfig.from_mapping({"patch": [6, 7, 1]})
    with pytest.raises(ValueError, match="must agree"):
        fuse_labels(np.zeros((4, 4, 4)), np.zeros((2, 4, 4, 4)), np.zeros((2, 4, 4, 3)))
