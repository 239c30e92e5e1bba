"""SSLLN-LR on the 20 ACDC validation patients (ED and ES): segmentation, landmarks, Fig 8, speed.

* Dice and Hausdorff distance (mm) per structure on the original image grid (network class
  probabilities taken back by linear interpolation, largest component per structure kept, as
  ``ssll segment`` writes them), against the expert labels. Hausdorff distance both in 3D and
  slice-wise (2D per short-axis slice where both hold the structure, averaged: the paper's
  group's convention, ``ssll.evaluate.hausdorff_slicewise``).
* Landmark error (mm, world space) per landmark, against landmarks derived from the expert
  labels by the same geometric rules used to make the training targets.
* The paper's Fig 8 test: k consecutive working-grid slices (2 mm each) centred on the
  mid-ventricle are zero-filled (k = 5, 13, 20); Dice in the filled slab against the expert
  labels is compared with Dice in the same slab on the intact image.
* Inference time per volume (network forward and argmax, batch 1, after one warm-up) and peak
  resident memory of the whole run.
* Overlay PNGs (network and expert) of the two demo patients at ED.

Run:  python bench/sslln_validation.py --weights ssll/weights/sslln_lr.pt --out bench/results/sslln_validation
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ssll.evaluate import dice, hausdorff, hausdorff_slicewise, landmark_distances
from ssll.io import load_image, load_labels
from ssll.labels import LANDMARK_NAMES, Label
from ssll.landmarks import landmarks_from_labels, voxel_to_world, world_to_voxel
from ssll.nn.data import held_out_cases
from ssll.nn.infer import finish_segmentation, landmark_points, load_model, predict
from ssll.postprocess import keep_largest_components
from ssll.preprocess import labels_to_working, preprocess_volume
from ssll.qc import montage

STRUCTS = (Label.LV_CAVITY, Label.LV_WALL, Label.RV_CAVITY)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="ssll/weights/sslln_lr.pt")
    ap.add_argument("--data", default="../shared/data/acdc/training")
    ap.add_argument("--config", default="config/train_lr.yaml", help="for the validation patient list")
    ap.add_argument("--out", default="bench/results/sslln_validation")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="only the first N volumes (a quick check)")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cases = held_out_cases(a.data, a.config)
    if a.limit:
        cases = cases[: a.limit]
    model = load_model(a.weights)
    rows, lrows, frows, times, net_times = [], [], [], [], []
    example = None
    for c in cases:
        img = load_image(c["image"])
        gt = load_labels(c["labels"], "acdc")
        work, rec = preprocess_volume(img)
        x = work.array[None]
        if not times:
            predict(model, x)  # warm-up
        with torch.no_grad():
            xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(model.device)
            t0 = time.perf_counter()
            model.net(xt)
            net_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        lab, lmap, _, prob = predict(model, x, return_prob=True)
        times.append(time.perf_counter() - t0)
        seg = finish_segmentation(lab[0], lmap[0], prob[0], rec)
        orig, fov, lab = seg.original, seg.fov, seg.labels[None]
        row = {"patient": c["patient"], "group": c["group"], "phase": c["phase"]}
        for s in STRUCTS:
            n = s.name.lower()
            row[f"dice_{n}"] = dice(orig == s, gt.array == s)
            row[f"hd_mm_{n}"] = hausdorff(orig == s, gt.array == s, gt.spacing)
            row[f"hd2d_mm_{n}"] = hausdorff_slicewise(orig == s, gt.array == s, gt.spacing)
        rows.append(row)
        # landmarks (world mm) against label-derived ones
        gt_w = labels_to_working(gt.array, rec)
        true_pts = voxel_to_world(landmarks_from_labels(gt_w, rec.working_affine), rec.working_affine)
        pred_pts = landmark_points(lmap[0], rec, fov=fov)
        d = landmark_distances(pred_pts, true_pts)
        lrows.append({"patient": c["patient"], "phase": c["phase"],
                      **dict(zip(LANDMARK_NAMES, d.astype(float)))})
        # Fig 8: zero-fill k consecutive slices around the mid-ventricle
        lv_k = np.nonzero((gt_w == Label.LV_CAVITY).any(axis=(0, 1)))[0]
        mid = int(round((lv_k[0] + lv_k[-1]) / 2))
        for k in (5, 13, 20):
            lo, hi = mid - k // 2, mid - k // 2 + k
            filled = work.array.copy()
            filled[:, :, lo:hi] = 0.0
            lab_f, _, _ = predict(model, filled[None])
            lab_f = keep_largest_components(np.where(fov, lab_f[0], 0).astype(np.uint8))[None]
            fr = {"patient": c["patient"], "phase": c["phase"], "k": k}
            for s in STRUCTS:
                n = s.name.lower()
                fr[f"dice_intact_{n}"] = dice(lab[0][:, :, lo:hi] == s, gt_w[:, :, lo:hi] == s)
                fr[f"dice_filled_{n}"] = dice(lab_f[0][:, :, lo:hi] == s, gt_w[:, :, lo:hi] == s)
            frows.append(fr)
            if example is None and k == 13 and c["phase"] == "ED":
                example = (work.array.copy(), filled, lab[0].copy(), lab_f[0].copy(), gt_w.copy(), lo, hi)
        if c["patient"] in ("patient020", "patient080") and c["phase"] == "ED":
            pts_vox = world_to_voxel(pred_pts, rec.working_affine)
            montage(work.array, lab[0], (1.25, 1.25, 2.0), out / f"overlay_{c['patient']}_ED_network.png",
                    landmarks_vox=pts_vox, title=f"{c['patient']} ED: SSLLN-LR labels and landmarks")
            montage(work.array, gt_w, (1.25, 1.25, 2.0), out / f"overlay_{c['patient']}_ED_expert.png",
                    landmarks_vox=landmarks_from_labels(gt_w, rec.working_affine),
                    title=f"{c['patient']} ED: expert labels, label-derived landmarks")
        print(c["patient"], c["phase"], {k: round(v, 3) for k, v in row.items() if isinstance(v, float)}, flush=True)
    df, ldf, fdf = pd.DataFrame(rows), pd.DataFrame(lrows), pd.DataFrame(frows)
    df.to_csv(out / "segmentation.csv", index=False, float_format="%.4f")
    ldf.to_csv(out / "landmarks.csv", index=False, float_format="%.3f")
    fdf.to_csv(out / "fig8_zero_fill.csv", index=False, float_format="%.4f")
    summary = {
        "weights": a.weights,
        "n_volumes": len(df),
        "segmentation_mean_sd": {ph: {col: f"{df[df.phase == ph][col].mean():.3f} ± {df[df.phase == ph][col].std():.3f}"
                                      for col in df.columns if col.startswith(("dice", "hd"))} for ph in ("ED", "ES")},
        "landmark_error_mm_mean_sd": {col: f"{ldf[col].mean():.2f} ± {ldf[col].std():.2f}"
                                      for col in ldf.columns if col not in ("patient", "phase")},
        "fig8_dice_in_filled_slab": {
            int(k): {col: round(float(g[col].mean()), 3) for col in g.columns if col.startswith("dice")}
            for k, g in fdf.groupby("k")
        },
        "network_forward_s_per_volume": {"mean": float(np.mean(net_times)), "median": float(np.median(net_times))},
        "predict_with_postprocessing_s_per_volume": {"mean": float(np.mean(times)), "median": float(np.median(times))},
        "threads": a.threads,
        "device": str(model.device),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    if example is not None:
        img, filled, lab, lab_f, gt_w, lo, hi = example
        k = (lo + hi) // 2
        fig, ax = plt.subplots(2, 3, figsize=(10, 7))
        cm = plt.get_cmap("jet")
        for col, (title, im, lb) in enumerate([("intact: network", img, lab), ("13 slices zero-filled: network", filled, lab_f),
                                                ("expert (nearest, working grid)", img, gt_w)]):
            ax[0, col].imshow(im[:, :, k].T, cmap="gray", vmin=0, vmax=1)
            ax[0, col].imshow(np.ma.masked_equal(lb[:, :, k].T, 0), cmap=cm, vmin=0, vmax=4, alpha=0.4)
            ax[0, col].set_title(f"{title}\nshort axis, slice {k}", fontsize=8)
            j = int(np.argwhere(gt_w[:, :, k] == Label.LV_CAVITY)[:, 1].mean())
            ax[1, col].imshow(im[:, j, :].T, cmap="gray", vmin=0, vmax=1, aspect=2.0 / 1.25, origin="lower")
            ax[1, col].imshow(np.ma.masked_equal(lb[:, j, :].T, 0), cmap=cm, vmin=0, vmax=4, alpha=0.4,
                              aspect=2.0 / 1.25, origin="lower")
            ax[1, col].axhline(lo - 0.5, color="y", lw=0.8)
            ax[1, col].axhline(hi - 0.5, color="y", lw=0.8)
            ax[1, col].set_title("long-axis cut (filled slab between yellow lines)", fontsize=8)
        for x in ax.ravel():
            x.axis("off")
        fig.tight_layout()
        fig.savefig(out / "fig8_zero_fill.png", dpi=80)


if __name__ == "__main__":
    main()
