"""Does SSLLN-LR follow a breath-hold shift of one slice? Known in-plane shifts added to real slices.

For the 20 held-out ACDC patients at ED, every acquired slice of the input image is shifted in-plane
by a known random vector (Gaussian, ``--sd`` mm per axis, clipped at 3 sd; the same draw as
``bench/refinement_acdc.py --add-shift-mm``). Both the original and the shifted image are segmented as
``ssll segment`` does; per slice, the centroid (mm) of the LV (cavity and wall) on the input grid
moves by ``d_k``. A network that follows each slice moves it by the added shift ``s_k``
(slope 1); one that keeps the heart where the other slices put it does not move it (slope 0).
Reported: the least-squares slope of ``d`` on ``s`` (both centred over the slices, pooled over
patients and axes), the RMS of ``s`` and of ``d``, and Dice of the LV cavity against the expert's
unshifted contours for both inputs.

Run: python bench/sslln_slice_shifts.py  (-> bench/results/sslln_slice_shifts.json, ~3 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refinement_acdc import with_slice_shifts  # noqa: E402

from ssll.evaluate import dice  # noqa: E402
from ssll.io import load_image, load_labels  # noqa: E402
from ssll.labels import Label  # noqa: E402
from ssll.nn.data import held_out_cases  # noqa: E402
from ssll.nn.infer import default_weights, finish_segmentation, load_model, predict  # noqa: E402
from ssll.preprocess import preprocess_volume  # noqa: E402


def lv_centroids(model, img) -> tuple[np.ndarray, np.ndarray]:
    """The segmentation on the input grid and per-slice LV centroids ``(K, 2)`` mm (NaN where the LV
    has fewer than 30 voxels)."""
    work, rec = preprocess_volume(img)
    lab, lmap, _c, prob = predict(model, work.array[None], return_prob=True)
    seg = finish_segmentation(lab[0], lmap[0], prob[0], rec).original
    out = np.full((seg.shape[2], 2), np.nan)
    for k in range(seg.shape[2]):
        m = (seg[:, :, k] == Label.LV_CAVITY) | (seg[:, :, k] == Label.LV_WALL)
        if m.sum() >= 30:
            ii, jj = np.nonzero(m)
            out[k] = [ii.mean() * img.spacing[0], jj.mean() * img.spacing[1]]
    return seg, out


def main(a: argparse.Namespace) -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    cases = held_out_cases(a.data, a.config, phases=("ED",))
    model = load_model(a.weights or default_weights("sslln_lr"))
    rows, num, den = [], 0.0, 0.0
    for c in cases:
        img = load_image(c["image"])
        gt = load_labels(c["labels"], "acdc").array
        n = int(c["patient"].removeprefix("patient"))
        seg0, c0 = lv_centroids(model, img)
        shifted, added = with_slice_shifts(img, a.sd, n, "ED")
        seg1, c1 = lv_centroids(model, shifted)
        ok = ~(np.isnan(c0).any(1) | np.isnan(c1).any(1))
        s = added[ok] - added[ok].mean(0)
        d = (c1 - c0)[ok] - (c1 - c0)[ok].mean(0)
        num += float((d * s).sum())
        den += float((s * s).sum())
        rows.append({"patient": c["patient"], "slices": int(ok.sum()),
                     "added_rms_mm": float(np.sqrt((s**2).sum(1).mean())),
                     "centroid_moved_rms_mm": float(np.sqrt((d**2).sum(1).mean())),
                     "slope": float((d * s).sum() / (s * s).sum()),
                     "dice_lv_cavity_original": dice(seg0 == Label.LV_CAVITY, gt == Label.LV_CAVITY),
                     "dice_lv_cavity_shifted_input": dice(seg1 == Label.LV_CAVITY, gt == Label.LV_CAVITY)})
        print(rows[-1], flush=True)
    keys = [k for k in rows[0] if k not in ("patient", "slices")]
    summary = {"sd_mm": a.sd, "n_patients": len(rows), "pooled_slope": num / den,
               "mean": {k: float(np.mean([r[k] for r in rows])) for k in keys}, "per_patient": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "per_patient"}, indent=1))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/acdc/training")
    ap.add_argument("--config", default="config/train_lr.yaml", help="for the validation patient list")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--sd", type=float, default=2.0, help="added shift, sd per axis (mm)")
    ap.add_argument("--out", default="bench/results/sslln_slice_shifts.json")
    main(ap.parse_args())
