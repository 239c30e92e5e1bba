"""Low-resolution artefacts of Duan et al. 2019 (Section III-F) simulated from an HR volume.

From an HR short-axis volume (e.g. 1.25x1.25x2 mm) and its labels:

* thick slices: every LR slice averages the HR slices within its thickness (boxcar slice
  profile; 10 mm default); LR labels are the HR labels at the LR slice centre;
* breath-hold misregistration: each LR slice is shifted in-plane by a random vector
  (Gaussian, ``shift_mm`` standard deviation per axis, clipped at 3 sigma), image and labels alike,
  along both in-plane axes (the default) or along ``shift_axes`` only: the paper translated each slice
  "horizontally", i.e. along axis 0, the horizontal axis of the short-axis views drawn here (:mod:`ssll.qc`);
* lost coverage: 0..``max_lost`` LR slices are dropped at the basal and at the apical end
  (among the slices that hold heart).

The LR grid keeps the HR in-plane grid and directions; its slice axis is ``slice_mm`` apart.
The HR truth stays as it was. The record lists the shifts (mm) and the slices kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ssll.motion import shift_slices
from ssll.types import Array, voxel_size

__all__ = ["LRConfig", "run_simulate_lr", "simulate_lr"]


@dataclass(frozen=True)
class LRConfig:
    """LR simulation settings: slice spacing and thickness (mm), shift sd (mm), max slices lost per end,
    and the in-plane axes (0 = i, 1 = j) the shifts move along."""

    slice_mm: float = 10.0
    shift_mm: float = 2.0
    max_lost: int = 1
    shift_axes: tuple[int, ...] = (0, 1)

    def __post_init__(self) -> None:
        if not self.shift_axes or not set(self.shift_axes) <= {0, 1} or len(set(self.shift_axes)) != len(self.shift_axes):
            raise ValueError(f"LRConfig: shift_axes must be (0,), (1,) or (0, 1), got {self.shift_axes}")


def simulate_lr(image: Array, labels: Array, affine: Array, cfg: LRConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Simulate an LR acquisition of an HR volume.

    Args:
        image: ``(I, J, K)`` HR image; labels: ``(I, J, K)`` canonical HR labels; affine: HR voxel -> world mm.

    Returns:
        ``{"image", "labels", "affine", "record"}``: LR arrays ``(I, J, K_lr)`` and the LR affine.
    """
    sp = voxel_size(affine)
    step = max(1, int(round(cfg.slice_mm / sp[2])))
    n_lr = image.shape[2] // step
    centres = np.arange(n_lr) * step + (step - 1) / 2.0
    lr_img = np.stack([image[:, :, i * step : (i + 1) * step].mean(axis=2) for i in range(n_lr)], axis=2)
    lr_lab = np.stack([labels[:, :, int(round(c))] for c in centres], axis=2)
    heart = np.nonzero((lr_lab > 0).any(axis=(0, 1)))[0]
    lost = [0, 0]
    if heart.size > 4 and cfg.max_lost > 0:
        lost = [int(rng.integers(0, cfg.max_lost + 1)), int(rng.integers(0, cfg.max_lost + 1))]
    if heart.size:
        # the stack covers the heart with one margin slice, less the slices lost at each end
        first = int(heart[lost[0]]) - (1 if lost[0] == 0 else 0)
        last = int(heart[heart.size - 1 - lost[1]]) + (1 if lost[1] == 0 else 0)
        first, last = max(first, 0), min(last, n_lr - 1)
    else:
        first, last = 0, n_lr - 1
    shifts = np.clip(rng.normal(0, cfg.shift_mm, size=(n_lr, 2)), -3 * cfg.shift_mm, 3 * cfg.shift_mm)
    # both axes are always drawn, so every setting of shift_axes pairs with the default
    shifts[:, [a for a in (0, 1) if a not in cfg.shift_axes]] = 0.0
    lr_img = shift_slices(lr_img, np.arange(n_lr), shifts, sp, order=1)
    lr_lab = shift_slices(lr_lab, np.arange(n_lr), shifts, sp, order=0)
    lr_img, lr_lab = lr_img[:, :, first : last + 1], lr_lab[:, :, first : last + 1]
    lr_aff = affine.copy()
    lr_aff[:3, 2] = affine[:3, 2] * step
    lr_aff[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, centres[first]]) + affine[:3, 3]
    record = {"slice_mm": float(sp[2] * step), "hr_slices_per_lr_slice": step, "lr_slices": int(last - first + 1),
              "slices_lost_first_end": lost[0], "slices_lost_last_end": lost[1],
              "shifts_mm": shifts[first : last + 1].round(3).tolist()}
    return {"image": lr_img.astype(np.float32), "labels": lr_lab.astype(np.uint8), "affine": lr_aff, "record": record}


def run_simulate_lr(*, image: str, labels: str, out_image: str, out_labels: str, out_record: str, seed: int,
                    cfg: LRConfig | None = None) -> dict[str, Any]:
    """I/O layer of ``ssll simulate-lr``."""
    from ssll.io import load_image, load_labels, save_nifti, write_json
    from ssll.types import Volume

    img = load_image(image)
    lab = load_labels(labels)
    out = simulate_lr(img.array, lab.array, img.affine, cfg or LRConfig(), np.random.default_rng([7, seed]))
    save_nifti(out_image, Volume(out["image"], out["affine"]), dtype=np.float32)
    save_nifti(out_labels, Volume(out["labels"], out["affine"]), dtype=np.uint8)
    write_json(out_record, {"source_image": image, "source_labels": labels, "seed": seed, **out["record"]})
    return out
