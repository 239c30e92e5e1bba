"""Quality-control pictures: a montage of short-axis slices and long-axis cuts with the
segmentation overlaid and the landmarks marked.

The montage shows, on the working grid: up to 8 short-axis slices evenly spread over the heart
(base to apex, in slice order), and two long-axis cuts through the LV centre (along i and j).
Colours: LV cavity red, LV wall green, RV cavity yellow, RV wall blue; landmarks as numbered
white crosses on the short-axis slices within 2 mm of them.
"""

from __future__ import annotations

import numpy as np

from ssll.labels import Label
from ssll.types import Array, PathLike

__all__ = ["COLOURS", "overlay_rgb", "montage", "run_qc"]

COLOURS = {Label.LV_CAVITY: (1.0, 0.15, 0.15), Label.LV_WALL: (0.15, 0.9, 0.15),
           Label.RV_CAVITY: (1.0, 0.9, 0.1), Label.RV_WALL: (0.2, 0.45, 1.0)}


def overlay_rgb(image2d: Array, labels2d: Array, *, alpha: float = 0.4) -> Array:
    """RGB ``(H, W, 3)`` of a [0, 1] image with labels blended in (arrays indexed ``[i, j]``, shown transposed)."""
    g = np.clip(np.asarray(image2d, np.float32), 0, 1).T
    rgb = np.stack([g, g, g], -1)
    lab = np.asarray(labels2d).T
    for k, c in COLOURS.items():
        m = lab == k
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(c)
    return rgb


def montage(image: Array, labels: Array, spacing: tuple[float, float, float], out_png: PathLike, *,
            landmarks_vox: Array | None = None, title: str = "") -> None:
    """Write the QC montage PNG (see module docstring). Arrays ``(I, J, K)``, spacing in mm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssll.io import atomic_path

    heart = np.nonzero((labels > 0).any(axis=(0, 1)))[0]
    ks = np.linspace(heart[0], heart[-1], min(8, heart.size)).round().astype(int) if heart.size else \
        np.linspace(0, image.shape[2] - 1, 8).round().astype(int)
    lv = np.argwhere(labels == Label.LV_CAVITY)
    ci, cj = (lv[:, 0].mean(), lv[:, 1].mean()) if lv.size else (image.shape[0] / 2, image.shape[1] / 2)
    ci, cj = int(round(ci)), int(round(cj))
    n_sa = len(ks)
    fig, axes = plt.subplots(2, max(n_sa // 2 + n_sa % 2, 1) + 1, figsize=(3 * (n_sa // 2 + 2), 6.4))
    axes = np.atleast_2d(axes)
    for n, k in enumerate(ks):
        ax = axes[n % 2, n // 2]
        ax.imshow(overlay_rgb(image[:, :, k], labels[:, :, k]))
        ax.set_title(f"short axis k={k}", fontsize=8)
        if landmarks_vox is not None:
            for idx, p in enumerate(landmarks_vox, start=1):
                if np.all(np.isfinite(p)) and abs(p[2] - k) * spacing[2] <= 2.0:
                    ax.plot(p[0], p[1], "w+", ms=8, mew=1.5)
                    ax.text(p[0] + 3, p[1] - 3, str(idx), color="w", fontsize=8)
    asp = spacing[2] / spacing[0]
    for row, (cut_img, cut_lab, name) in enumerate(((image[:, cj, :], labels[:, cj, :], f"long axis j={cj}"),
                                                     (image[ci, :, :], labels[ci, :, :], f"long axis i={ci}"))):
        ax = axes[row, -1]
        ax.imshow(overlay_rgb(cut_img, cut_lab), aspect=asp)
        ax.set_title(name, fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=70)
    plt.close(fig)


def run_qc(*, image: str, labels: str, out_png: str, landmarks_json: str | None = None, title: str = "") -> None:
    """I/O layer of ``ssll qc``: working-grid image, labels and optional landmarks JSON -> PNG."""
    from ssll.io import load_image, load_labels, read_json
    from ssll.landmarks import world_to_voxel

    img, lab = load_image(image), load_labels(labels)
    pts = None
    if landmarks_json:
        rows = read_json(landmarks_json)["landmarks"]
        pts = world_to_voxel(np.array([[r["x_mm"], r["y_mm"], r["z_mm"]] for r in rows]), lab.affine)
    montage(img.array, lab.array, lab.spacing, out_png, landmarks_vox=pts, title=title)
