"""On-device augmentation for training with the data resident on the GPU.

The same transform family as :func:`ssll.nn.data.augment` (Duan et al. 2019, Section III-B):
a 3D random affine about the volume centre (rotation about one random axis, half the angle
range for the two in-plane axes, isotropic scaling, in-plane and through-plane translation in mm) applied
consistently to image (linear) and to labels and landmark maps (nearest neighbour), then a gamma
and a scale change of the intensities, and optionally a smooth in-plane elastic deformation and an in-plane
shift per slice (both drawn in the output frame, before the affine), Gaussian noise and a zero-filled slab
of slices. Done with ``affine_grid``/``grid_sample`` on whole batches, so a GPU step never waits on CPU
workers (SimpleITK augmentation of one volume takes ~0.3 s on a CPU core; a batch here takes milliseconds
on the GPU).

Tensor layout: volumes are ``(B, S, H, W)`` = working-grid ``[k, i, j]`` with voxel size
``(2.0, 1.25, 1.25)`` mm, as the network takes them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ssll.nn.data import GRID_ROTATIONS, AugmentConfig, drop_slab, elastic_coarse, elastic_field, slice_jitter
from ssll.preprocess import WORKING_SPACING

__all__ = ["augment_batch", "random_affines"]


def random_affines(n: int, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random output-to-input transforms in mm about the volume centre.

    Returns:
        ``(n, 3, 4)`` float64 on the CPU: ``[M | t]`` mapping an output point ``(i, j, k)`` in mm
        from the centre to the input point ``M @ p + t`` (so ``M = R / scale``).
    """
    u = torch.rand(n, 5, generator=generator, dtype=torch.float64)
    axis = torch.randint(0, 3, (n,), generator=generator)
    out = torch.zeros(n, 3, 4, dtype=torch.float64)
    for b in range(n):
        ax = int(axis[b])
        ang = math.radians((2 * float(u[b, 0]) - 1) * cfg.rotate_deg) * (1.0 if ax == 2 else 0.5)
        c, s = math.cos(ang), math.sin(ang)
        rot = torch.eye(3, dtype=torch.float64)
        a, bb = [d for d in range(3) if d != ax]
        rot[a, a], rot[a, bb], rot[bb, a], rot[bb, bb] = c, -s, s, c
        if cfg.grid_turns:
            turn = int(torch.randint(0, len(GRID_ROTATIONS), (1,), generator=generator))
            rot = rot @ torch.from_numpy(GRID_ROTATIONS[turn])
        scale = cfg.scale[0] + float(u[b, 1]) * (cfg.scale[1] - cfg.scale[0])
        out[b, :, :3] = rot / scale
        out[b, 0, 3] = (2 * float(u[b, 2]) - 1) * cfg.translate_mm
        out[b, 1, 3] = (2 * float(u[b, 3]) - 1) * cfg.translate_mm
        out[b, 2, 3] = (2 * float(u[b, 4]) - 1) * cfg.translate_slice_mm
    return out


def augment_batch(image: torch.Tensor, labels: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator,
                  *, window: tuple[int, int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch on its own device.

    Args:
        image: ``(B, S, H, W)`` float in [0, 1].
        labels: ``(B, L, S, H, W)`` integer maps (segmentation, landmark map, ...), moved with the image.
        cfg: ranges (angles in degrees, translation in mm).
        generator: CPU generator (the random draws are made on the CPU and are reproducible).
        window: ``(i0, j0, size)``: compute only the ``size x size`` in-plane window of the augmented
            volume whose first voxel is ``(i0, j0)`` (a training crop; the transforms are those of the
            whole volume, so the result is that window of the uncropped output, at a fraction of the cost).
            Defaults to the whole volume.

    Returns:
        ``(image, labels)``: float32 image in [0, 1], ``int64`` labels, of the input shapes (``H = W = size``
        with a window); points that come from outside the input are 0 (background).
    """
    b, s, h, w = image.shape
    if window is not None:
        i0, j0, size = window
        if not (0 <= i0 <= h - size and 0 <= j0 <= w - size and size > 0):
            raise ValueError(f"augment_batch: window {window} does not fit an in-plane grid of {h}x{w}")
        rows, cols = slice(i0, i0 + size), slice(j0, j0 + size)
    else:
        rows, cols = slice(None), slice(None)
    dev = image.device
    aff = random_affines(b, cfg, generator)
    # normalised coordinates (x=W=j, y=H=i, z=S=k) <-> mm from the centre (i, j, k), align_corners=False
    half = torch.tensor([h * WORKING_SPACING[0], w * WORKING_SPACING[1], s * WORKING_SPACING[2]],
                        dtype=torch.float64) / 2
    perm = [1, 0, 2]  # (x, y, z) -> (j, i, k) indices into (i, j, k)
    d = half[perm]
    m = aff[:, :, :3][:, perm][:, :, perm]
    t = aff[:, :, 3][:, perm]
    theta = torch.cat([m / d[None, :, None] * d[None, None, :], (t / d)[..., None]], dim=2)
    warped = cfg.elastic_mm > 0 or cfg.slice_jitter_mm > 0
    if warped or window is not None:
        grid = _identity_grid((s, h, w), rows, cols, dev).expand(b, -1, -1, -1, -1)  # (B, S, h, w, 3) = (x=j, y=i, z=k)
        if warped:
            # output point p -> affine(p + d(p)), the displacement (elastic, slice jitter) drawn in the output frame
            def normal(size: tuple[int, ...]) -> np.ndarray:
                return torch.randn(size, generator=generator, dtype=torch.float64).numpy()

            field = torch.zeros(b, 2, *grid.shape[1:4], device=dev)  # (B, 2 = (i, j), S, window rows, cols) mm
            if cfg.elastic_mm > 0:
                # (B, 2, nI, nJ, nK) mm, interpolated in the window only
                coarse = torch.from_numpy(np.stack([elastic_coarse((h, w, s), cfg, normal) for _ in range(b)]))
                field = field + elastic_field(coarse.permute(0, 1, 4, 2, 3).to(dev), (s, h, w),
                                              (slice(None), rows, cols))
            if cfg.slice_jitter_mm > 0:
                jitter = torch.from_numpy(np.stack([slice_jitter(s, cfg, normal) for _ in range(b)]))  # (B, 2, S)
                field = field + jitter.to(dev)[..., None, None]
            grid = grid + torch.stack([field[:, 1] / float(d[0]), field[:, 0] / float(d[1]),
                                       torch.zeros_like(field[:, 0])], -1)
        th = theta.to(dev, torch.float32)
        grid = torch.einsum("bshwc,brc->bshwr", grid, th[:, :, :3]) + th[:, None, None, None, :, 3]
    else:
        grid = F.affine_grid(theta.to(dev, torch.float32), [b, 1, s, h, w], align_corners=False)
    img = F.grid_sample(image[:, None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
    lab = F.grid_sample(labels.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False).round().long()
    u = torch.rand(b, 2, generator=generator, dtype=torch.float32).to(dev)
    gamma = cfg.gamma[0] + u[:, 0] * (cfg.gamma[1] - cfg.gamma[0])
    gain = cfg.intensity_scale[0] + u[:, 1] * (cfg.intensity_scale[1] - cfg.intensity_scale[0])
    img = img.clamp(0, 1) ** gamma[:, None, None, None] * gain[:, None, None, None]
    if cfg.noise_sd > 0:
        img = img + cfg.noise_sd * torch.randn(img.shape, generator=generator, dtype=torch.float32).to(dev)
    if cfg.drop_prob > 0:
        draws = torch.rand(b, 3, generator=generator, dtype=torch.float64).tolist()
        fg = (lab[:, 0] > 0).any(dim=3).any(dim=2).cpu().numpy()  # (B, S): slices holding any label
        for n in range(b):
            start, stop = drop_slab(s, np.flatnonzero(fg[n]), draws[n], cfg)
            img[n, start:stop] = 0
    return img.clamp(0, 1), lab


def _identity_grid(shape: tuple[int, int, int], rows: slice, cols: slice, device: torch.device) -> torch.Tensor:
    """``F.affine_grid`` of the identity (``align_corners=False``) for an ``(S, H, W)`` volume, only at the
    in-plane window ``rows`` x ``cols``: ``(1, S, h, w, 3)`` normalised ``(x=j, y=i, z=k)``, the same values
    as the whole grid sliced, without computing the whole grid."""

    def axis(n: int) -> torch.Tensor:  # torch's own construction of the normalised voxel centres
        return torch.linspace(-1.0, 1.0, n, device=device) * (n - 1) / n

    z, y, x = axis(shape[0]), axis(shape[1])[rows], axis(shape[2])[cols]
    zz, yy, xx = torch.meshgrid(z, y, x, indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1)[None]
