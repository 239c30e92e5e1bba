"""Orientation search: the sixteen voxel-grid orientations, and a real study stored the other way round."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ssll.evaluate import dice
from ssll.io import load_image, load_labels, save_nifti
from ssll.labels import Label
from ssll.nn.confidence import expected_dice, expected_dice_batch
from ssll.nn.infer import LoadedModel, SegmentItem, default_weights, forward, run_segment
from ssll.nn.orientation import (
    ORIENTATIONS,
    STORED,
    Orientation,
    choose_orientation,
    orientation_scores,
    search_orientation,
)
from ssll.preprocess import run_preprocess
from ssll.types import Volume

DEMO = Path(__file__).resolve().parents[1] / "demo" / "acdc" / "patient080"  # a held-out ACDC patient


def test_orientations_are_sixteen_distinct_invertible_permutations() -> None:
    a = np.arange(2 * 4 * 6 * 3).reshape(2, 4, 6, 3)  # (C, I, J, K), I != J
    seen = set()
    for o in ORIENTATIONS:
        b = o.apply(a)
        assert b.shape == (2, *o.shape((4, 6, 3)))
        assert sorted(b.ravel()) == sorted(a.ravel())  # a permutation of the voxels
        np.testing.assert_array_equal(o.undo(b), a)
        # slices stay slices: each oriented slice holds the voxels of one stored slice
        assert all(len({int(v) % 3 for v in b[..., k].ravel()}) == 1 for k in range(3))
        seen.add(b.tobytes())
    assert len(seen) == 16 and ORIENTATIONS[0] == STORED and STORED.name == "rot0"


def test_points_go_where_apply_puts_their_voxel() -> None:
    shape = (5, 7, 4)  # I != J, so a transpose or an odd turn swaps them
    for o in ORIENTATIONS:
        for p in ((0, 0, 0), (4, 6, 3), (1, 5, 2), (3, 2, 0)):
            a = np.zeros(shape)
            a[p] = 1.0
            np.testing.assert_array_equal(o.points(np.array([p]), shape)[0], np.argwhere(o.apply(a))[0])
        # fractional coordinates: the map is affine, so a midpoint goes to the midpoint
        ends = o.points(np.array([[0, 1, 0], [3, 6, 2]]), shape)
        np.testing.assert_allclose(o.points(np.array([[1.5, 3.5, 1.0]]), shape)[0], ends.mean(0))


def test_expected_dice_batch_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    prob = rng.random((2, 5, 6, 7, 4)).astype(np.float32)
    prob /= prob.sum(1, keepdims=True)
    labels = prob.argmax(1)
    mask = rng.random((2, 6, 7, 4)) > 0.3
    got = expected_dice_batch(torch.from_numpy(prob), torch.from_numpy(labels), torch.from_numpy(mask)).numpy()
    for b in range(2):
        want = expected_dice(prob[b], labels[b], mask[b])
        np.testing.assert_allclose(got[b], list(want.values()), rtol=1e-5)
    some = expected_dice_batch(torch.from_numpy(prob), torch.from_numpy(labels), torch.from_numpy(mask),
                               structures=(Label.RV_CAVITY, Label.LV_CAVITY))
    np.testing.assert_array_equal(some.numpy(), got[:, [2, 0]])  # the same sums, in the order asked


class _PositionalNet(torch.nn.Module):
    """A stand-in network whose labels depend on where a voxel lies in the grid (so the sixteen orientations
    score differently): scores ``(B, 5, K, I, J)`` and ``(B, 7, K, I, J)`` from ``(B, K, I, J)`` images; its
    "features" are the images themselves."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.segment(x), self.landmarks(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @staticmethod
    def _ramps(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, k, i, j = x.shape
        ramp_i = torch.linspace(-1, 1, i)[None, None, :, None].expand(b, k, i, j)
        ramp_j = torch.linspace(-1, 1, j)[None, None, None, :].expand(b, k, i, j)
        ramp_k = torch.linspace(-1, 1, k)[None, :, None, None].expand(b, k, i, j)
        return ramp_i, ramp_j, ramp_k

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        ramp_i, ramp_j, ramp_k = self._ramps(x)
        return torch.stack([torch.zeros_like(x), 4 * (x + ramp_i), 3 * (x - ramp_j), 2 * (ramp_k + ramp_i * ramp_j),
                            x - 2], 1)

    def landmarks(self, x: torch.Tensor) -> torch.Tensor:
        ramp_i, ramp_j, ramp_k = self._ramps(x)
        return torch.stack([x * (n + 1) * ramp_i - n * ramp_j + ramp_k for n in range(7)], 1)


@pytest.mark.parametrize("margin", [-1.0, 0.0, 1.0])
def test_search_keeps_the_chosen_orientations_forward_pass(margin: float) -> None:
    """The search hands back the chosen orientation's own network outputs (no second forward pass needed):
    the same as a forward pass of the volume turned that way; the scores are orientation_scores'."""
    model = LoadedModel(_PositionalNet(), {"untrained_classes": [4]}, torch.device("cpu"))  # type: ignore[arg-type]
    rng = np.random.default_rng(3)
    image = rng.random((12, 16, 6)).astype(np.float32)  # not square: transposed orientations form their own batch
    fov = np.zeros(image.shape, bool)
    fov[2:11, 1:14, 1:6] = True
    found = search_orientation(model, image, fov, margin=margin, batch_size=3)
    scores = orientation_scores(model, image, fov, batch_size=3)
    np.testing.assert_allclose(found.scores, scores, rtol=1e-6)
    assert len(set(np.round(scores, 6))) > 4  # the orientations do score differently
    assert found.chosen == choose_orientation(scores, margin=margin)
    if margin > 0:
        assert found.chosen == STORED
    elif margin < 0:
        assert found.chosen == ORIENTATIONS[int(np.argmax(scores))] != STORED  # the best other one was kept
    seg, lmk = forward(model, found.chosen.apply(image)[None])
    np.testing.assert_allclose(found.seg_scores.numpy(), seg[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(found.landmark_logits.numpy(), lmk[0].numpy(), atol=1e-6)


def test_scores_inside_the_field_of_view_box_equal_whole_volume_scores() -> None:
    """The scores are computed inside the field of view's bounding box only; they equal the expected Dice
    over the whole oriented volume with the field of view as the mask."""
    model = LoadedModel(_PositionalNet(), {"untrained_classes": [4]}, torch.device("cpu"))  # type: ignore[arg-type]
    image = np.random.default_rng(5).random((12, 16, 6)).astype(np.float32)
    fov = np.zeros(image.shape, bool)
    fov[3:9, 2:15, 2:5] = True
    scores = orientation_scores(model, image, fov, batch_size=4)
    for o, score in zip(ORIENTATIONS, scores):
        logp, _ = forward(model, o.apply(image)[None])
        prob = torch.softmax(logp, 1)
        mask = torch.from_numpy(np.ascontiguousarray(o.apply(fov)))[None].permute(0, 3, 1, 2)
        whole = float(expected_dice_batch(prob, prob.max(1).indices, mask)[0, :3].mean())
        assert score == pytest.approx(whole, abs=1e-6), o.name
    assert len(set(np.round(scores, 6))) > 4


def test_choose_orientation_prefers_stored_within_margin() -> None:
    scores = np.full(16, 0.5)
    scores[0], scores[9] = 0.80, 0.82
    assert choose_orientation(scores, margin=0.03) == STORED  # 0.02 better is not enough
    assert choose_orientation(scores, margin=0.01) == ORIENTATIONS[9]
    scores[9] = 0.90
    assert choose_orientation(scores, margin=0.03) == ORIENTATIONS[9]
    scores[9] = 0.70
    assert choose_orientation(scores, margin=0.0) == STORED
    with pytest.raises(ValueError, match="15 scores for 16"):
        choose_orientation(scores[:15])


def _stored_differently(vol: Volume, o: Orientation) -> Volume:
    """The same scan stored with its voxels in orientation ``o``: the array permuted and the affine
    changed so that every voxel stays where it was in world space (as a DICOM reader might give it)."""
    idx = np.indices(vol.shape3)  # (3, I, J, K): stored index of each voxel
    old = np.stack([o.apply(idx[a]) for a in range(3)])  # the stored index of each new voxel
    t = old[:, 0, 0, 0]
    m = np.stack([old[:, 1, 0, 0] - t, old[:, 0, 1, 0] - t, old[:, 0, 0, 1] - t], axis=1)
    new_to_old = np.eye(4)
    new_to_old[:3, :3], new_to_old[:3, 3] = m, t
    return Volume(np.ascontiguousarray(o.apply(vol.array)), vol.affine @ new_to_old)


def test_segment_turns_a_study_stored_the_other_way_round(tmp_path: Path) -> None:
    """patient080 at ED stored with its slices reversed and turned: the search finds the way back and
    segments it as well as the original; segmenting it as stored fails on the RV."""
    img = load_image(DEMO / "patient080_frame01.nii.gz")
    truth = load_labels(DEMO / "patient080_frame01_gt.nii.gz", "acdc").array
    o = Orientation(transpose=True, quarter_turns=1, reverse_slices=True)
    turned = _stored_differently(img, o)
    idx = np.indices(img.shape3)  # (3, I, J, K)
    old = o.apply(idx)  # the stored index of each voxel of the turned study
    pos = np.argwhere(np.all(old == np.array([10, 100, 5])[:, None, None, None], axis=0))[0]
    np.testing.assert_allclose(turned.affine @ [*pos, 1], img.affine @ [10, 100, 5, 1], atol=1e-6)  # same place
    save_nifti(tmp_path / "turned.nii.gz", turned)
    items = []
    for name, src in (("stored", DEMO / "patient080_frame01.nii.gz"), ("turned", tmp_path / "turned.nii.gz")):
        run_preprocess(image=str(src), out_image=str(tmp_path / f"{name}_w.nii.gz"),
                       out_record=str(tmp_path / f"{name}_w.json"))
        items.append(SegmentItem(name, "ED", tmp_path / f"{name}_w.nii.gz", tmp_path / f"{name}_w.json", tmp_path / name))
    # the original as stored is the reference (searching it too would add nothing: the turned study's sixteen
    # candidates are the original's sixteen, so finding the way back shows the stored one scores best)
    assert run_segment(items[:1], default_weights("sslln_lr"), orientation="stored") == {}
    assert run_segment(items[1:], default_weights("sslln_lr")) == {}  # the default: search
    for name, how in (("as_stored", "stored"), ("fixed", None)):
        how = how or json.loads((tmp_path / "turned" / "ED_orientation.json").read_text())["orientation"]
        assert run_segment([SegmentItem(name, "ED", items[1].image, items[1].record, tmp_path / name)],
                           default_weights("sslln_lr"), orientation=how) == {}

    record = {n: json.loads((tmp_path / n / "ED_orientation.json").read_text()) for n in ("stored", "turned", "as_stored")}
    back = next(c for c in ORIENTATIONS if np.array_equal(c.apply(old), idx))  # the way back to the stored grid
    assert record["turned"]["orientation"] == back.name and record["turned"]["searched"]
    scores = record["turned"]["mean_expected_dice"]
    assert max(scores, key=scores.get) == back.name and len(scores) == 16
    assert record["as_stored"] == {"orientation": "rot0", "searched": False}
    # the orientation the search found, given by name: the same outputs without the search (the search keeps
    # the chosen orientation's own forward pass rather than running it again)
    for f in ("ED_labels.nii.gz", "ED_labels_original.nii.gz", "ED_landmarkmap.nii.gz"):
        np.testing.assert_array_equal(load_image(tmp_path / "fixed" / f).array, load_image(tmp_path / "turned" / f).array)
    for f in ("ED_expected_dice.json", "ED_landmark_confidence.json"):
        assert json.loads((tmp_path / "fixed" / f).read_text()) == json.loads((tmp_path / "turned" / f).read_text())

    got = {n: load_labels(tmp_path / n / "ED_labels_original.nii.gz") for n in ("stored", "turned", "as_stored")}
    np.testing.assert_allclose(got["turned"].affine, turned.affine, atol=1e-5)
    truth_turned = o.apply(truth)
    for c in (1, 2, 3):
        d_stored = dice(got["stored"].array == c, truth == c)
        d_turned = dice(got["turned"].array == c, truth_turned == c)
        assert abs(d_turned - d_stored) < 0.02, (c, d_stored, d_turned)
    assert dice(got["turned"].array == 3, truth_turned == 3) > 0.8
    assert dice(got["as_stored"].array == 3, truth_turned == 3) < 0.6  # the network alone fails on the RV


def test_an_unknown_orientation_is_refused_with_the_names() -> None:
    from ssll.errors import SsllError

    with pytest.raises(SsllError, match=r"orientation's name: no orientation 'sideways'; one of: rot0, .*rot90\+reversed"):
        run_segment([], "no_weights_needed.pt", orientation="sideways")
