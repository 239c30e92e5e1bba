"""Non-local patch-based label fusion (Duan et al. 2019, eq. 5; Coupé et al. 2011, Bai et al. 2013).

For each target voxel ``x``, every warped atlas ``n`` and every voxel ``y`` in the search window
``N(x)`` vote for the atlas label at ``y`` with the weight ``exp(-||f_x - f_{n,y}||^2 / h)``, where
``f_x`` is the target image patch at ``x`` and ``f_{n,y}`` the atlas image patch at ``y``
(squared Frobenius norm over the patch, intensities in [0, 1]). The label with the largest total
vote wins. Where all warped atlases give the same label at ``x`` that label is kept, and the
vote is computed only at the voxels where they disagree (typically a few percent of the box).

Arrays are ``(I, J, K)`` on one grid (axis 2 the slice axis); patch and search sizes are given
in voxels as ``(i, j, k)``, odd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ssll.postprocess import keep_largest_components
from ssll.types import Array, config_kwargs

__all__ = ["FusionConfig", "fuse_labels", "majority_vote"]


@dataclass(frozen=True)
class FusionConfig:
    """Patch fusion settings (the paper's values as defaults).

    Attributes:
        patch: patch size in voxels ``(i, j, k)``. Defaults to (7, 7, 1).
        search: search window in voxels. Defaults to (7, 7, 3).
        h: bandwidth of the Gaussian weight, against the *sum* of squared differences over the patch
            of intensities in [0, 1]. Defaults to 10, the paper's number, which there makes the vote
            close to a majority over the search window. The paper's reference implementation (Bai et
            al. 2013, IRTK) divides by the patch's voxel count and works on the images' own
            intensities: on a 0-255 scale its h = 10 is ``10 * 49 / 255**2`` = 0.0075 here, a vote
            close to best-patch, which scored worse on real ACDC hearts with the phantom atlases
            (``bench/README.md``, "The paper's h").
        chunk: voxels per vectorised block (memory bound). Defaults to 2048.
        largest_component: after fusion keep only each structure's largest 26-connected component
            (:func:`ssll.postprocess.keep_largest_components`). Defaults to False.
    """

    patch: tuple[int, int, int] = (7, 7, 1)
    search: tuple[int, int, int] = (7, 7, 3)
    h: float = 10.0
    chunk: int = 2048
    largest_component: bool = False

    @classmethod
    def from_mapping(cls, m: dict[str, Any] | None) -> FusionConfig:
        """Build from a config mapping; unknown keys, even sizes or ``h <= 0`` raise ``ValueError``."""
        cfg = cls(**config_kwargs(cls, m, tuples=("patch", "search")))
        if any(v < 1 or v % 2 == 0 for v in (*cfg.patch, *cfg.search)) or len(cfg.patch) != 3 or len(cfg.search) != 3:
            raise ValueError(f"FusionConfig: patch and search need three odd sizes, got {cfg.patch}, {cfg.search}")
        if cfg.h <= 0 or cfg.chunk < 1:
            raise ValueError(f"FusionConfig: h and chunk must be positive, got {cfg.h}, {cfg.chunk}")
        if not isinstance(cfg.largest_component, bool):
            raise ValueError(  # noqa: TRY004 (every config error is a ValueError)
                f"FusionConfig: largest_component must be true or false, got {cfg.largest_component!r}")
        return cfg


def majority_vote(labels: Array, n_labels: int = 5) -> Array:
    """Voxel-wise majority of ``(L, I, J, K)`` label maps -> ``(I, J, K)`` uint8 (ties: lowest label)."""
    votes = np.stack([(labels == c).sum(0) for c in range(n_labels)])
    return votes.argmax(0).astype(np.uint8)


def _offsets(size: tuple[int, int, int]) -> Array:
    r = [np.arange(-(s // 2), s // 2 + 1) for s in size]
    return np.stack(np.meshgrid(*r, indexing="ij"), -1).reshape(-1, 3)


def fuse_labels(
    target_image: Array,
    atlas_images: Array,
    atlas_labels: Array,
    cfg: FusionConfig | None = None,
    *,
    n_labels: int = 5,
    device: torch.device | None = None,
) -> tuple[Array, float]:
    """Non-local patch label fusion, eq. (5).

    Args:
        target_image: ``(I, J, K)`` target intensities in [0, 1].
        atlas_images: ``(L, I, J, K)`` warped atlas intensities in [0, 1].
        atlas_labels: ``(L, I, J, K)`` warped atlas labels.
        cfg: settings. Defaults to :class:`FusionConfig`.

    Returns:
        ``(labels, fraction)``: fused ``(I, J, K)`` uint8 labels (largest component per structure with
        ``cfg.largest_component``) and the fraction of voxels computed (where the atlases disagree).

    Raises:
        ValueError: shapes differ.
    """
    cfg = cfg or FusionConfig()
    device = device or torch.device("cpu")
    f = np.asarray(target_image, np.float32)
    ai = np.asarray(atlas_images, np.float32)
    al = np.asarray(atlas_labels, np.uint8)
    if ai.shape != al.shape or ai.shape[1:] != f.shape or ai.ndim != 4:
        raise ValueError(f"fuse_labels: target {f.shape}, atlas images {ai.shape}, atlas labels {al.shape} must agree")
    out = al[0].copy()
    lo, hi = al.min(0), al.max(0)
    todo = np.flatnonzero(lo != hi)
    if todo.size == 0:
        return _cleaned(out, cfg), 0.0
    patch, search = np.asarray(cfg.patch), np.asarray(cfg.search)
    block = patch + search - 1  # the voxels any patch in the search window touches
    pad = block // 2
    widths = [(int(p), int(p)) for p in pad]
    fp = np.pad(f, widths, mode="edge")
    aip = np.pad(ai, [(0, 0), *widths], mode="edge")
    alp = np.pad(al, [(0, 0), *widths], mode="edge")
    shape_p = np.asarray(fp.shape)
    strides = np.array([shape_p[1] * shape_p[2], shape_p[2], 1])
    n_at = len(ai)
    patch_off = torch.from_numpy(_offsets(cfg.patch) @ strides).to(device)
    block_off = torch.from_numpy(_offsets(tuple(int(b) for b in block)) @ strides).to(device)
    search_off = torch.from_numpy(_offsets(cfg.search) @ strides).to(device)
    ft = torch.from_numpy(fp.reshape(-1)).to(device)
    ait = torch.from_numpy(aip.reshape(n_at, -1)).to(device)
    # sum of a^2 over the patch centred at every atlas voxel (box filter, once)
    box_sq = np.stack([ndimage.uniform_filter(a * a, size=tuple(int(v) for v in patch), mode="nearest") for a in aip])
    asqt = torch.from_numpy((box_sq * float(np.prod(patch))).reshape(n_at, -1)).to(device)
    alt = torch.from_numpy(alp.reshape(n_at, -1).astype(np.int64)).to(device)
    centres = np.stack(np.unravel_index(todo, f.shape), 1) + pad
    flat = torch.from_numpy(centres @ strides).to(device)
    fused = np.empty(todo.size, np.uint8)
    kp = tuple(int(v) for v in patch)
    for s in range(0, todo.size, cfg.chunk):
        c = flat[s : s + cfg.chunk]
        m = c.numel()
        # target patches (M, *patch) and atlas blocks (M * L, *block)
        tp = ft.index_select(0, (c[:, None] + patch_off[None]).reshape(-1)).view(m, 1, *kp)
        blk = ait.index_select(1, (c[:, None] + block_off[None]).reshape(-1)).view(n_at, m, *block)
        # (M, L, I, J, K) -> (1, M * L * K, I, J): the k offsets as channels of an in-plane grouped conv
        bk, pk = int(block[2]), int(patch[2])
        blk = blk.transpose(0, 1).permute(0, 1, 4, 2, 3).reshape(m * n_at, bk, int(block[0]), int(block[1]))
        # ||f_x - a_y||^2 = sum a_y^2 - 2 <f_x, a_y> + sum f_x^2, for every y of the search window at once
        weight = tp.permute(0, 1, 4, 2, 3).reshape(m, pk, kp[0], kp[1]).repeat_interleave(n_at, 0)
        cross = F.conv3d(blk[None], weight[:, None], groups=m * n_at)  # (1, M*L, |sk|, |si|, |sj|)
        cross = cross[0].permute(0, 2, 3, 1).reshape(m, n_at, -1)  # search order (i, j, k)
        sidx = (c[:, None] + search_off[None]).reshape(-1)
        asq = asqt.index_select(1, sidx).view(n_at, m, -1).transpose(0, 1)
        fsq = (tp * tp).sum((1, 2, 3, 4)).view(m, 1, 1)
        ssd = (asq - 2 * cross + fsq).clamp_min(0)
        # each voxel's weights divided by its best patch's: the same argmax, and no underflow to all-zero
        # votes (a silent background) when h is small against the patch distances
        w = torch.exp(-(ssd - ssd.amin((1, 2), keepdim=True)) / cfg.h)  # (M, L, |search|)
        lab = alt.index_select(1, sidx).view(n_at, m, -1).transpose(0, 1)
        votes = torch.zeros((m, n_labels), dtype=torch.float32, device=device)
        votes.scatter_add_(1, lab.reshape(m, -1), w.reshape(m, -1))
        fused[s : s + cfg.chunk] = votes.argmax(1).to(torch.uint8).cpu().numpy()
    out.reshape(-1)[todo] = fused
    return _cleaned(out, cfg), float(todo.size / f.size)


def _cleaned(labels: Array, cfg: FusionConfig) -> Array:
    """``labels`` with only each structure's largest component where ``cfg.largest_component`` asks for it."""
    return keep_largest_components(labels) if cfg.largest_component else labels
