"""Losses of Duan et al. 2019, eqs. (1)-(3), in functional form with thin wrappers.

* :func:`dice_loss` - the differentiable Dice loss of eq. (2) on softmax probabilities,
  ``1 - 2 sum(g p) / (sum(g^2) + sum(p^2) + eps)``, evaluated per class and averaged over the
  classes present in the sample's convention (eq. (2) pools classes; pooled, the background
  outweighs the thin walls, so the per-class form is used). For samples without an RV-wall
  label (ACDC) the RV-wall probability is merged into the background and the RV-wall class is
  left out of that sample's loss, instead of inventing a label.
* :func:`landmark_loss` - the class-balanced weighted cross-entropy of eq. (3) with
  ``w_k = 1 - |Y_k| / |Y|`` per sample, normalised by the total weight.
* Weight decay (the third term of eq. (1)) is the optimiser's ``weight_decay``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssll.labels import Label

__all__ = ["dice_loss", "landmark_loss", "multitask_loss"]


def dice_loss(
    logits: torch.Tensor, target: torch.Tensor, *, has_rv_wall: torch.Tensor | None = None, eps: float = 1e-8
) -> torch.Tensor:
    """Differentiable Dice loss.

    Args:
        logits: ``(B, C, ...)`` segmentation logits, ``C = 5`` canonical classes.
        target: ``(B, ...)`` integer canonical labels.
        has_rv_wall: ``(B,)`` bool; False where the sample's labels have no RV wall. Defaults
            to all True.
        eps: the small constant of eq. (2). Defaults to 1e-8.

    Returns:
        Scalar loss in [0, 1], averaged over samples.
    """
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"dice_loss: logits {tuple(logits.shape)} do not match target {tuple(target.shape)}")
    n_cls = logits.shape[1]
    p = torch.softmax(logits.float(), dim=1)
    g = F.one_hot(target.long(), n_cls).movedim(-1, 1).to(p.dtype)
    dims = tuple(range(2, p.ndim))
    if has_rv_wall is None:
        has_rv_wall = torch.ones(p.shape[0], dtype=torch.bool, device=p.device)
    losses = []
    for b in range(p.shape[0]):
        pb, gb = p[b], g[b]
        if not bool(has_rv_wall[b]):
            rv = int(Label.RV_WALL)
            keep = [c for c in range(n_cls) if c != rv]
            pb = torch.cat([pb[:1] + pb[rv : rv + 1], pb[1:rv], pb[rv + 1 :]], dim=0)[: len(keep)]
            gb = gb[keep]
        d = tuple(x - 1 for x in dims)
        inter = (gb * pb).sum(d)
        denom = (gb * gb).sum(d) + (pb * pb).sum(d) + eps
        losses.append(1.0 - (2.0 * inter / denom).mean())
    return torch.stack(losses).mean()


def landmark_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Class-balanced weighted cross-entropy of eq. (3).

    Args:
        logits: ``(B, K, ...)`` landmark logits, ``K = 7`` (background + 6 landmarks).
        target: ``(B, ...)`` integer landmark labels.

    Returns:
        Scalar: per sample ``sum_k w_k sum_{j in Y_k} -log p_jk / sum_k w_k |Y_k|``, averaged.
    """
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"landmark_loss: logits {tuple(logits.shape)} do not match target {tuple(target.shape)}")
    n_cls = logits.shape[1]
    logp = torch.log_softmax(logits.float(), dim=1)
    nll = -torch.gather(logp, 1, target.long().unsqueeze(1)).squeeze(1)  # (B, ...)
    flat_t = target.reshape(target.shape[0], -1).long()
    counts = torch.stack([torch.bincount(t, minlength=n_cls) for t in flat_t]).to(logp.dtype)  # (B, K)
    total = counts.sum(1, keepdim=True)
    w = 1.0 - counts / total  # (B, K)
    wv = torch.gather(w, 1, flat_t)  # per-voxel weight
    per_sample = (wv * nll.reshape(nll.shape[0], -1)).sum(1) / (w * counts).sum(1).clamp_min(1e-12)
    return per_sample.mean()


def multitask_loss(
    seg_logits: torch.Tensor,
    lmk_logits: torch.Tensor,
    seg_target: torch.Tensor,
    lmk_target: torch.Tensor,
    *,
    alpha: float = 0.8,
    has_rv_wall: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``L_D + alpha * L_L`` (eq. (1) without the weight decay). Returns (total, L_D, L_L)."""
    ld = dice_loss(seg_logits, seg_target, has_rv_wall=has_rv_wall)
    ll = landmark_loss(lmk_logits, lmk_target)
    return ld + alpha * ll, ld, ll
