"""How far to trust a segmentation without its ground truth: the expected Dice from the network's
class probabilities.

If each voxel's true class were drawn from the network's softmax ``p``, a structure ``c`` segmented
as the voxel set ``A`` would expect ``sum_{x in A} p_c(x)`` true voxels inside ``A`` and
``sum_x p_c(x)`` in all. The ratio of those expectations gives the expected Dice::

    E[Dice_c] ~= 2 * sum_{x in A} p_c(x) / (sum_x p_c(x) + |A|)

It is 1 only where the network is certain everywhere, and it falls where the network hesitates
over many voxels or puts probability where it drew nothing. On the 20 held-out ACDC patients it
follows the Dice against the expert (``bench/qc_expected_dice.py``, the README's QC section), so
it ranks a cohort's segmentations for review and feeds the ``low_expected_dice`` QC flag.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ssll.labels import Label
from ssll.types import Array

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

__all__ = ["STRUCTURES", "expected_dice", "expected_dice_batch"]

#: the structures scored, in canonical label order (``Label`` values 1-4)
STRUCTURES: tuple[Label, ...] = (Label.LV_CAVITY, Label.LV_WALL, Label.RV_CAVITY, Label.RV_WALL)


def expected_dice(prob: Array, labels: Array, mask: Array | None = None, *,
                  min_voxels: float = 1.0) -> dict[str, float | None]:
    """Expected Dice of each structure of a segmentation under its own class probabilities.

    Args:
        prob: ``(5, I, J, K)`` class probabilities (canonical label order: background, LV cavity,
            LV wall, RV cavity, RV wall), summing to 1 over axis 0; any float dtype.
        labels: ``(I, J, K)`` canonical labels drawn from them (after any post-processing:
            what is delivered is what is scored).
        mask: ``(I, J, K)`` bool, the voxels that count (the input's field of view on the working
            grid); None: all.
        min_voxels: a structure with less probability mass than this (in voxels) and no voxel
            labelled is "not there" and gets None (a class the network was never trained on).

    Returns:
        ``{"lv_cavity": d, "lv_wall": d, "rv_cavity": d, "rv_wall": d}``, each ``d`` in [0, 1] or
        None. A structure labelled nowhere while the network gives it at least ``min_voxels`` of
        probability scores 0.
    """
    prob = np.asarray(prob)
    labels = np.asarray(labels)
    if prob.ndim != 4 or prob.shape[0] != 5 or prob.shape[1:] != labels.shape:
        raise ValueError(f"expected_dice: probabilities {prob.shape} do not match labels {labels.shape} "
                         "as (5, I, J, K) and (I, J, K)")
    if mask is not None and np.asarray(mask).shape != labels.shape:
        raise ValueError(f"expected_dice: mask {np.asarray(mask).shape} does not match labels {labels.shape}")
    out: dict[str, float | None] = {}
    for c in STRUCTURES:
        p = prob[int(c)].astype(np.float64)
        a = labels == int(c)
        if mask is not None:
            p = np.where(mask, p, 0.0)
            a = a & mask
        inside, total, n = float(p[a].sum()), float(p.sum()), float(a.sum())
        if n == 0 and total < min_voxels:
            out[c.name.lower()] = None
        else:
            out[c.name.lower()] = 2.0 * inside / (total + n)
    return out


def expected_dice_batch(prob: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, *,
                        structures: Sequence[Label] = STRUCTURES) -> torch.Tensor:
    """:func:`expected_dice` of a batch, on the tensors' device (GPU or CPU), without the None rule.

    Args:
        prob: ``(B, 5, ...)`` class probabilities in canonical label order (any spatial layout).
        labels: ``(B, ...)`` integer labels in the same layout.
        mask: ``(B, ...)`` bool, the voxels that count.
        structures: the structures to score, in the order wanted (each costs a pass over the volume).

    Returns:
        ``(B, len(structures))`` float32 expected Dice, by default of LV cavity, LV wall, RV cavity, RV wall; 0 for
        a structure neither labelled nor given any probability.
    """
    import torch  # here, not at the top: the numpy function above needs no torch

    if prob.ndim < 3 or prob.shape[1] != 5 or prob.shape[:1] + prob.shape[2:] != labels.shape \
            or mask.shape != labels.shape:
        raise ValueError(f"expected_dice_batch: probabilities {tuple(prob.shape)}, labels {tuple(labels.shape)} and "
                         f"mask {tuple(mask.shape)} do not match as (B, 5, ...), (B, ...), (B, ...)")
    out = []
    for c in structures:
        p = prob[:, int(c)].float() * mask
        a = (labels == int(c)) & mask
        inside, total, n = (p * a).flatten(1).sum(1), p.flatten(1).sum(1), a.flatten(1).sum(1).float()
        out.append(2.0 * inside / (total + n).clamp_min(1e-12))
    return torch.stack(out, 1)
