"""Which way round the heart lies in the voxel grid: the sixteen presentations of a working-grid
volume, and the choice among them by the network's own expected Dice.

SSLLN-LR learnt from ACDC, whose NIfTI files store every heart the same way round in the voxel grid
(and carry no true patient orientation to correct it by). A study read from DICOM keeps its scanner
geometry, so its voxel grid can hold the heart turned, mirrored, or with the slices running apex to
base instead of base to apex. The network is not invariant to any of these: on the 20 held-out ACDC
patients at ED and ES, turning the input half round drops the RV-cavity Dice from 0.79 to 0.14, and
reversing the slice order (slices are the network's input channels) drops it to 0.21
(``bench/orientation.py``).

The fix at inference: present the volume in each of the sixteen orientations that keep the slice axis
the slice axis (the eight symmetries of the in-plane square, each with the slice order kept or
reversed), score each by the network's mean expected Dice (:func:`ssll.nn.confidence.expected_dice`)
over LV cavity, LV wall and RV cavity inside the field of view, and use the best. Every orientation
is an exact permutation of voxels (no resampling), undone on the outputs, so the world geometry of the
results is untouched. The stored orientation is kept unless another beats it by a margin: a study
already the right way round keeps its result, while one the wrong way round (the Sunnybrook cine: mean
expected Dice 0.62 as stored, 0.83 with its slices reversed and turned a quarter) is turned.

The permutations themselves (:class:`Orientation`, :data:`ORIENTATIONS`, :data:`STORED`) live in the
torch-free :mod:`ssll.orientation` and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ssll.labels import Label
from ssll.nn.confidence import expected_dice_batch
from ssll.orientation import ORIENTATIONS, STORED, Orientation, orientation_by_name, same_shape_groups
from ssll.types import Array

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from ssll.nn.infer import LoadedModel

__all__ = ["DEFAULT_MARGIN", "ORIENTATIONS", "STORED", "Orientation", "OrientationSearch", "choose_orientation",
           "orientation_by_name", "orientation_scores", "same_shape_groups", "search_orientation"]

#: how much higher (mean expected Dice) another orientation must score than the stored one to be used
#: (on the held-out ACDC patients, all stored the right way round, the best other orientation came
#: within 0.02 of the stored one in 3 of 20 volumes and the stored one was truly better in each)
DEFAULT_MARGIN = 0.03

#: the structures whose mean expected Dice scores an orientation (not the RV wall, which SSLLN-LR learnt from phantoms
#: alone: on real scans it draws only pieces of it)
SCORED: tuple[Label, ...] = (Label.LV_CAVITY, Label.LV_WALL, Label.RV_CAVITY)


def _scored_passes(model: LoadedModel, image: Array, fov: Array, candidates: Sequence[Orientation],
                   batch_size: int) -> Iterator[tuple[int, float, torch.Tensor, torch.Tensor]]:
    """Forward passes of ``image`` in each candidate orientation, in batches, without the landmark head: yields,
    per candidate, its index, its mean expected Dice, its segmentation scores ``(5, K', I', J')`` in the
    candidate's own grid and the fused features ``(F, I', J')`` the landmark head reads
    (:func:`ssll.nn.infer.landmark_logits`; views into the batch: clone what is kept)."""
    from ssll.nn.infer import forward_segmentation  # infer imports this module

    image = np.asarray(image, np.float32)
    fov = np.asarray(fov, bool)
    if image.shape != fov.shape or image.ndim != 3:
        raise ValueError(f"orientation_scores: image {image.shape} and field of view {fov.shape} must be one (I, J, K)")
    for group in same_shape_groups([image.shape] * len(candidates), candidates):
        for s in range(0, len(group), batch_size):
            members = group[s : s + batch_size]
            x = np.stack([candidates[n].apply(image) for n in members])  # np.stack copies: no contiguous copy first
            m = np.stack([candidates[n].apply(fov) for n in members])
            logp, feats = forward_segmentation(model, x)  # (B, 5, K, I, J): the network's slice-as-channel layout
            mask = torch.from_numpy(m).to(model.device).permute(0, 3, 1, 2)
            # one volume at a time, and only inside the field of view's bounding box (voxels outside the mask
            # add nothing to the sums): on 2 CPU cores the batch's volume-sized temporaries doubled this step's
            # cost (0.26 against 0.12 s a volume), and an ACDC stack fills about 40 % of the working grid
            for q, n in enumerate(members):
                box = (slice(None), *_bounding_box(m[q].transpose(2, 0, 1)))  # (C, K, I, J) layout
                prob = torch.softmax(logp[q][box][None], 1)
                ed = expected_dice_batch(prob, prob.max(1).indices, mask[q][box[1:]][None], structures=SCORED)[0]
                yield n, float(ed.mean()), logp[q], feats[q]


def _bounding_box(mask: Array) -> tuple[slice, ...]:
    """The smallest box holding every True voxel of ``mask`` (any number of axes); the whole array when
    none is True (the sums are then zero either way)."""
    box = []
    for ax in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1) if hit.size else slice(None))
    return tuple(box)


@torch.no_grad()
def orientation_scores(model: LoadedModel, image: Array, fov: Array, *,
                       candidates: Sequence[Orientation] = ORIENTATIONS, batch_size: int = 4) -> Array:
    """The network's mean expected Dice over LV cavity, LV wall and RV cavity for each orientation.

    Expected Dice is a sum over voxels, so it is scored in each orientation's own grid (with the field
    of view oriented alike) and nothing is turned back. Computed on the model's device.

    Args:
        model: the loaded network (:func:`ssll.nn.infer.load_model`).
        image: ``(I, J, K)`` working-grid image in [0, 1] (axes: in-plane i, j; slice k).
        fov: ``(I, J, K)`` bool, the input's field of view on the working grid
            (:func:`ssll.preprocess.input_fov_mask`).
        candidates: the orientations to score.
        batch_size: volumes per forward pass.

    Returns:
        ``(len(candidates),)`` float64 scores in [0, 1].
    """
    scores = np.empty(len(candidates), np.float64)
    for n, score, _, _ in _scored_passes(model, image, fov, candidates, batch_size):
        scores[n] = score
    return scores


@dataclass
class OrientationSearch:
    """What :func:`search_orientation` found for one volume.

    Attributes:
        chosen: the orientation to segment in (:func:`choose_orientation`).
        scores: ``(len(candidates),)`` mean expected Dice of each candidate (:func:`orientation_scores`).
        seg_scores: ``(5, K', I', J')`` float32 segmentation log-probabilities of the chosen orientation's
            forward pass, in its own grid and the network's layout (:func:`ssll.nn.infer.forward`).
        landmark_logits: ``(7, K', I', J')`` float32 landmark logits, alike.
    """

    chosen: Orientation
    scores: Array
    seg_scores: torch.Tensor
    landmark_logits: torch.Tensor


@torch.no_grad()
def search_orientation(model: LoadedModel, image: Array, fov: Array, *, margin: float = DEFAULT_MARGIN,
                       candidates: Sequence[Orientation] = ORIENTATIONS, batch_size: int = 4) -> OrientationSearch:
    """Score every candidate (:func:`orientation_scores`), choose (:func:`choose_orientation`), and keep the
    chosen orientation's network outputs, so that segmenting in it needs no further forward pass.

    Only the stored orientation's outputs and those of the best other candidate so far are held (two
    volumes' segmentation scores and fused features, about 0.14 GB on the model's device for a 192x192x80 grid),
    as the choice is always one of the two. The landmark head runs once, for the chosen orientation (on 2 CPU
    cores it is about a fifth of a forward pass, and its output the largest array of one). Arguments as
    :func:`orientation_scores`; ``margin`` as :func:`choose_orientation`.
    """
    from ssll.nn.infer import landmark_logits  # infer imports this module

    if STORED not in candidates:
        raise ValueError("search_orientation: the stored orientation must be among the candidates")
    stored = list(candidates).index(STORED)
    scores = np.empty(len(candidates), np.float64)
    kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    best = -1
    for n, score, seg, feats in _scored_passes(model, image, fov, candidates, batch_size):
        scores[n] = score
        if n == stored:
            kept[n] = (seg.clone(), feats.clone())
        elif best < 0 or score > scores[best]:  # strictly higher: the first best, as np.argmax picks it
            kept.pop(best, None)
            best = n
            kept[n] = (seg.clone(), feats.clone())
    chosen = choose_orientation(scores, margin=margin, candidates=candidates)
    seg, feats = kept[list(candidates).index(chosen)]
    return OrientationSearch(chosen, scores, seg, landmark_logits(model, feats[None])[0])


def choose_orientation(scores: Array, *, margin: float = DEFAULT_MARGIN,
                       candidates: Sequence[Orientation] = ORIENTATIONS) -> Orientation:
    """The orientation to segment in: the best-scoring candidate, unless it beats the stored one by
    less than ``margin`` (then the stored one). ``scores`` ``(len(candidates),)`` from
    :func:`orientation_scores`; the stored orientation must be among the candidates."""
    scores = np.asarray(scores, np.float64)
    if scores.shape != (len(candidates),):
        raise ValueError(f"choose_orientation: {scores.shape[0] if scores.ndim else 0} scores for "
                         f"{len(candidates)} orientations")
    stored = list(candidates).index(STORED)
    best = int(np.argmax(scores))
    return candidates[best] if scores[best] >= scores[stored] + margin else STORED
