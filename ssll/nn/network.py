"""SSLLN: the 2.5D multi-task FCN of Duan et al. 2019 (Fig 4).

The input volume is a multi-channel 2D image: its ``#S`` slices are channels. A VGG-like
encoder of five stages (stride-2 downsampling between stages) learns features from fine to
coarse; each stage's output is reduced to ``side_width`` channels and brought back to full
resolution; the concatenation passes two 3x3 fusion convolutions; two 1x1 heads give, for
every slice, the segmentation logits (5 classes) and landmark logits (7 classes). With the
defaults (2, 2, 3, 3, 3 encoder convolutions plus 2 fusion convolutions) the network has the
paper's 15 convolutional layers before its heads.

Side branches are brought to full resolution by bilinear interpolation. A stride-2 3x3
convolution (padding 1) centres coarse pixel ``j`` of stage ``s`` on fine pixel ``2**s * j``;
``upsample="aligned"`` samples there, while ``"bilinear"`` (``F.interpolate`` with
``align_corners=False``, which assumes the centre at ``2**s * j + (2**s - 1) / 2``) leaves
stage ``s`` shifted by ``(2**s - 1) / 2`` fine pixels along each axis (7.5 pixels, 9.4 mm, for the
fifth stage). The shipped weights were trained with ``"bilinear"``, the constructor's default.

Tensor layout: input ``(B, S, H, W)`` with ``S`` slices, ``H = I`` and ``W = J`` of the
working grid (array ``[i, j, k]`` -> tensor ``[k, i, j]``); outputs ``(B, C, S, H, W)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ssll.labels import N_CLASSES, N_LANDMARK_CLASSES

__all__ = ["SSLLN", "upsample_side"]


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def upsample_side(y: torch.Tensor, size: tuple[int, int] | torch.Size, *, aligned: bool) -> torch.Tensor:
    """Bilinear upsampling of ``(B, C, h, w)`` features to ``size = (H, W)`` (integer factors).

    ``aligned``: coarse pixel ``j`` sits on fine pixel ``j * H / h`` (the centre a stride-2
    convolution chain gives it), and fine pixels beyond the last coarse centre take its value;
    otherwise ``F.interpolate(..., align_corners=False)``.
    """
    if not aligned:
        return F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=False)
    h, w = y.shape[-2:]
    big_h, big_w = int(size[0]), int(size[1])
    ci = torch.arange(big_h, device=y.device, dtype=torch.float32) * (h / big_h)  # coarse coordinate of each fine row
    cj = torch.arange(big_w, device=y.device, dtype=torch.float32) * (w / big_w)
    gi = 2 * ci / max(h - 1, 1) - 1
    gj = 2 * cj / max(w - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gj, gi, indexing="xy"), -1)  # (H, W, 2) as (x = column, y = row)
    grid = grid.to(y.dtype).unsqueeze(0).expand(y.shape[0], -1, -1, -1)
    return F.grid_sample(y, grid, mode="bilinear", padding_mode="border", align_corners=True)


class SSLLN(nn.Module):
    """Simultaneous segmentation and landmark localisation network.

    Args:
        n_slices: number of slices ``#S`` (input channels). Defaults to 80.
        widths: encoder widths per stage. Defaults to (16, 32, 64, 128, 256).
        depths: convolutions per stage. Defaults to (2, 2, 3, 3, 3).
        side_width: channels of each full-resolution side branch. Defaults to 32.
        fuse_width: channels of the two fusion convolutions. Defaults to 64.
        n_classes: segmentation classes. Defaults to 5.
        n_landmarks: landmark classes including background. Defaults to 7.
        upsample: ``"bilinear"`` or ``"aligned"`` (see the module docstring). Defaults to ``"bilinear"``.
    """

    def __init__(
        self,
        n_slices: int = 80,
        *,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        depths: Sequence[int] = (2, 2, 3, 3, 3),
        side_width: int = 32,
        fuse_width: int = 64,
        n_classes: int = N_CLASSES,
        n_landmarks: int = N_LANDMARK_CLASSES,
        upsample: str = "bilinear",
    ) -> None:
        super().__init__()
        if len(widths) != len(depths):
            raise ValueError(f"SSLLN: widths {widths} and depths {depths} differ in length")
        if upsample not in ("bilinear", "aligned"):
            raise ValueError(f"SSLLN: upsample must be 'bilinear' or 'aligned', got {upsample!r}")
        self.upsample = upsample
        self.n_slices = n_slices
        self.n_classes = n_classes
        self.n_landmarks = n_landmarks
        self._arch = {"n_slices": n_slices, "widths": list(widths), "depths": list(depths), "side_width": side_width,
                      "fuse_width": fuse_width, "upsample": upsample}
        stages = []
        cin = n_slices
        for s, (w, d) in enumerate(zip(widths, depths)):
            layers = [_conv(cin, w, stride=2 if s > 0 else 1)]
            layers += [_conv(w, w) for _ in range(d - 1)]
            stages.append(nn.Sequential(*layers))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.sides = nn.ModuleList([_conv(w, side_width) for w in widths])
        self.fuse = nn.Sequential(_conv(side_width * len(widths), fuse_width), _conv(fuse_width, fuse_width))
        self.seg_head = nn.Conv2d(fuse_width, n_slices * n_classes, 1)
        self.lmk_head = nn.Conv2d(fuse_width, n_slices * n_landmarks, 1)

    def architecture(self) -> dict[str, object]:
        """The settings that rebuild this network (the model card's ``architecture``; see
        :func:`ssll.nn.infer.load_model`)."""
        return dict(self._arch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map ``(B, S, H, W)`` images to ``(B, 5, S, H, W)`` and ``(B, 7, S, H, W)`` logits.

        ``H`` and ``W`` must be divisible by ``2 ** (stages - 1)`` (16 with the defaults).
        """
        f = self.features(x)
        return self.segment(f), self.landmarks(f)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The fused full-resolution features ``(B, fuse_width, H, W)`` of ``(B, S, H, W)`` images, which
        both heads read (:meth:`segment`, :meth:`landmarks`)."""
        if x.ndim != 4 or x.shape[1] != self.n_slices:
            raise ValueError(f"SSLLN.forward: expected (B, {self.n_slices}, H, W), got {tuple(x.shape)}")
        size = x.shape[-2:]
        sides = []
        for stage, side in zip(self.stages, self.sides):
            x = stage(x)
            y = side(x)
            if y.shape[-2:] != size:
                y = upsample_side(y, size, aligned=self.upsample == "aligned")
            sides.append(y)
        return self.fuse(torch.cat(sides, dim=1))

    def segment(self, f: torch.Tensor) -> torch.Tensor:
        """Segmentation logits ``(B, 5, S, H, W)`` of :meth:`features` ``f``."""
        b, _, h, w = f.shape
        return self.seg_head(f).view(b, self.n_classes, self.n_slices, h, w)

    def landmarks(self, f: torch.Tensor) -> torch.Tensor:
        """Landmark logits ``(B, 7, S, H, W)`` of :meth:`features` ``f``."""
        b, _, h, w = f.shape
        return self.lmk_head(f).view(b, self.n_landmarks, self.n_slices, h, w)
