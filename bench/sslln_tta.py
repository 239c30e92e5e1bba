"""Test-time augmentation for SSLLN-LR: do averaged class probabilities over shifted copies of the input beat one pass?

The held-out gap (LV wall about 0.76 against 0.86 on training patients) needs training on a GPU. This
asks what inference alone can recover: each held-out volume (20 ACDC patients, ED and ES, as stored)
goes through the network as it is and shifted, and the softmax of the passes is averaged before the
arg-max. Transforms, each undone on the scores before averaging:

* ``ip``: in-plane rolls by half the network's coarsest stride (8 working pixels = 10 mm) along i, j or
  both; the five stride-2 stages make the network only 16-pixel shift-equivariant.
* ``tp``: rolls along the slice axis by 1 or 2 working slices (2 or 4 mm): each slice meets other
  input channels of the 2.5D network.
* ``gamma``: intensity gamma 0.8 and 1.25.

Scored as ``bench/sslln_validation.py`` scores: Dice on the original grid (probabilities taken back
linearly, largest component per structure), against the expert labels; plus landmark error (world mm)
against the label-derived landmarks, with the landmark softmax averaged the same way.

Run:  python bench/sslln_tta.py --out bench/results/sslln_tta   (about 15 min on 2 cores)
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import torch
from held_out import held_out_parser, start
from scipy.stats import wilcoxon

from ssll.evaluate import dice, landmark_distances
from ssll.io import load_image, load_labels
from ssll.labels import Label
from ssll.landmarks import landmarks_from_labels, voxel_to_world
from ssll.nn.data import held_out_cases
from ssll.nn.infer import finish_segmentation, forward, landmark_points, outputs_from_scores
from ssll.preprocess import labels_to_working, preprocess_volume

STRUCTS = (Label.LV_CAVITY, Label.LV_WALL, Label.RV_CAVITY)

#: name -> (roll i, roll j, roll k, gamma)
TRANSFORMS: dict[str, tuple[int, int, int, float]] = {
    "id": (0, 0, 0, 1.0),
    "ip_i": (8, 0, 0, 1.0),
    "ip_j": (0, 8, 0, 1.0),
    "ip_ij": (8, 8, 0, 1.0),
    "tp+1": (0, 0, 1, 1.0),
    "tp-1": (0, 0, -1, 1.0),
    "tp+2": (0, 0, 2, 1.0),
    "tp-2": (0, 0, -2, 1.0),
    "gamma0.8": (0, 0, 0, 0.8),
    "gamma1.25": (0, 0, 0, 1.25),
}

#: ensembles scored: name -> transforms averaged
ENSEMBLES: dict[str, tuple[str, ...]] = {
    "single": ("id",),
    "ip4": ("id", "ip_i", "ip_j", "ip_ij"),
    "tp3": ("id", "tp+1", "tp-1"),
    "tp5": ("id", "tp+1", "tp-1", "tp+2", "tp-2"),
    "gamma3": ("id", "gamma0.8", "gamma1.25"),
    "ip4+tp3": ("id", "ip_i", "ip_j", "ip_ij", "tp+1", "tp-1"),
    "all10": tuple(TRANSFORMS),
}


def passes(model, image: np.ndarray) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per transform: segmentation and landmark softmax ``(5|7, K, I, J)``, each undone onto the image's grid."""
    out = {}
    for name, (di, dj, dk, g) in TRANSFORMS.items():
        x = np.roll(image, (di, dj, dk), axis=(0, 1, 2))
        if g != 1.0:
            x = np.clip(x, 0, 1) ** g
        seg, lmk = forward(model, x[None].astype(np.float32))
        # network layout (B, C, K, I, J): undo the roll on axes K, I, J
        undo = ((-dk, -di, -dj), (1, 2, 3))
        out[name] = (torch.roll(torch.softmax(seg[0], 0), *undo), torch.roll(torch.softmax(lmk[0], 0), *undo))
    return out


def main() -> None:
    ap = held_out_parser(__doc__, "bench/results/sslln_tta")
    ap.add_argument("--limit", type=int, default=0)
    a = ap.parse_args()
    out, model = start(a)
    cases = held_out_cases(a.data, a.config)[: a.limit or None]
    rows = []
    t_pass = []
    for c in cases:
        img, gt = load_image(c["image"]), load_labels(c["labels"], "acdc")
        work, rec = preprocess_volume(img)
        t0 = time.perf_counter()
        p = passes(model, work.array)
        t_pass.append((time.perf_counter() - t0) / len(TRANSFORMS))
        gt_w = labels_to_working(gt.array, rec)
        true_pts = voxel_to_world(landmarks_from_labels(gt_w, rec.working_affine), rec.working_affine)
        for ens, members in ENSEMBLES.items():
            seg = torch.stack([p[m][0] for m in members]).mean(0)
            lmk = torch.stack([p[m][1] for m in members]).mean(0)
            labels, lmap, _, prob = (v[0] for v in outputs_from_scores(torch.log(seg[None].clamp_min(1e-12)),
                                                                        torch.log(lmk[None].clamp_min(1e-12))))
            # (K, I, J) network layout -> outputs_from_scores already gives (I, J, K)
            s = finish_segmentation(labels, lmap, prob, rec)
            row = {"patient": c["patient"], "phase": c["phase"], "ensemble": ens, "n_passes": len(members)}
            for st in STRUCTS:
                row[f"dice_{st.name.lower()}"] = dice(s.original == st, gt.array == st)
            d = landmark_distances(landmark_points(lmap, rec, fov=s.fov), true_pts)
            row["landmark_error_mm_mean"] = float(np.nanmean(d))
            rows.append(row)
        print(c["patient"], c["phase"], {r["ensemble"]: round(r["dice_lv_wall"], 3) for r in rows[-len(ENSEMBLES):]},
              flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "per_volume.csv", index=False, float_format="%.4f")
    cols = [f"dice_{s.name.lower()}" for s in STRUCTS] + ["landmark_error_mm_mean"]
    base = df[df.ensemble == "single"].sort_values(["patient", "phase"])
    summary: dict = {"weights": a.weights, "n_volumes": len(base), "transforms": TRANSFORMS,
                     "ensembles": ENSEMBLES, "forward_s_per_pass_2_threads": float(np.mean(t_pass)), "mean": {},
                     "wilcoxon_p_vs_single": {}}
    for ens in ENSEMBLES:
        e = df[df.ensemble == ens].sort_values(["patient", "phase"])
        summary["mean"][ens] = {ph: {col: round(float(e[e.phase == ph][col].mean()), 4) for col in cols}
                                for ph in ("ED", "ES")}
        if ens != "single":
            summary["wilcoxon_p_vs_single"][ens] = {
                col: float(wilcoxon(e[col].to_numpy(), base[col].to_numpy()).pvalue) for col in cols}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary["mean"], indent=1))


if __name__ == "__main__":
    main()
