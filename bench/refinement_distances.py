"""Where Table III's slice-wise Hausdorff distance comes from: per slice, per structure, in both directions.

Table III's slice-wise HD (``ssll.evaluate.hausdorff_slicewise``) is, per short-axis slice holding both masks, the
larger of two directed distances: how far the prediction strays from the truth (``pred_to_truth``) and how far
the truth reaches beyond the prediction (``truth_to_pred``); Table III averages it over the slices. This benchmark
keeps the slices apart, for

* ``network``: the shipped SSLLN-LR on the working grid, and ``refined``: its refinement (``ssll.refine``,
  ``RefineConfig()`` but for the fusion options), on Table III's targets (``bench/refinement.py``'s
  ``lr_target``: seeds 30000.., the same LR simulation options) against the mesh truth on the working grid;
* ``atlas``: the labels the refinement fuses, SSLLN-HR on the bank's HR phantoms, against each phantom's own truth.

Each slice gets its place between base (0) and apex (1) along the slice axis, from the exact mitral-valve and apex
landmarks, so the summary splits the distances into basal, mid and apical thirds of the heart's long axis.

Run (after ``bench/refinement.py`` has built its bank; about 10 min on 2 cores):
    python bench/refinement_distances.py --n 20 --out bench/results/refinement_distances
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refinement import (
    STRUCTS,
    add_fusion_args,
    add_lr_simulation_args,
    add_target_args,
    fusion_config,
    lr_simulation,
    lr_target,
)

from ssll.atlases import load_bank
from ssll.evaluate import slicewise_distances
from ssll.io import load_labels
from ssll.labels import LANDMARK_NAMES, Label
from ssll.landmarks import read_landmarks
from ssll.nn.infer import default_weights, landmark_points, load_model, predict
from ssll.phantom import require_bank
from ssll.preprocess import resample
from ssll.refine import RefineConfig, acquired_slices, refine, stack_slab

REGIONS = ("basal", "mid", "apical")


def slice_position(landmarks_mm: np.ndarray, affine: np.ndarray, n_slices: int) -> np.ndarray:
    """Each slice's place along the long axis: 0 at the mitral-valve centre's slice, 1 at the apex's.

    Args:
        landmarks_mm: ``(6, 3)`` world landmarks (mm) in ``LANDMARK_NAMES`` order.
        affine: the grid's voxel-to-world affine (axis 2 = slice axis).
        n_slices: slices of the grid.

    Returns:
        ``(n_slices,)`` positions (below 0 past the valve, above 1 past the apex).
    """
    inv = np.linalg.inv(affine)
    k = (inv[:3, :3] @ np.asarray(landmarks_mm, float).T + inv[:3, 3:]).T[:, 2]
    base, apex = k[LANDMARK_NAMES.index("mitral_valve_centre")], k[LANDMARK_NAMES.index("apex")]
    return (np.arange(n_slices) - base) / (apex - base)


def slice_rows(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], position: np.ndarray,
               **ids: object) -> list[dict]:
    """One row per structure and slice where the truth or the prediction holds it: voxel counts, the two directed
    2D distances (mm; NaN where one of them is empty) and the slice's long-axis position."""
    rows = []
    for c, name in enumerate(STRUCTS, 1):
        p, t = pred == c, truth == c
        for k in np.nonzero(p.any((0, 1)) | t.any((0, 1)))[0]:
            d = slicewise_distances(p[..., k:k + 1], t[..., k:k + 1], spacing)
            to_truth, to_pred = d[0] if len(d) else (np.nan, np.nan)
            rows.append({**ids, "structure": name, "k": int(k), "position": float(position[k]),
                         "n_pred": int(p[..., k].sum()), "n_truth": int(t[..., k].sum()),
                         "pred_to_truth_mm": to_truth, "truth_to_pred_mm": to_pred})
    return rows


def region(position: pd.Series) -> pd.Series:
    """Basal, mid or apical third of the long axis (positions outside [0, 1] go to the nearer end)."""
    return pd.cut(position.clip(0.0, 1.0), [-0.01, 1 / 3, 2 / 3, 1.01], labels=REGIONS)


def summarise(df: pd.DataFrame) -> dict:
    """Per source and structure: Table III's slice-wise HD and its two directions (mean over cases of the mean over
    the slices holding both), the slices only one of them holds, and the same distances per long-axis third."""
    both = df.dropna(subset=["pred_to_truth_mm"]).assign(hd2d_mm=lambda d: d[["pred_to_truth_mm", "truth_to_pred_mm"]].max(1),
                                                        region=lambda d: region(d.position))
    out: dict = {}
    cols = ["hd2d_mm", "pred_to_truth_mm", "truth_to_pred_mm"]
    for (src, s), g in both.groupby(["source", "structure"], sort=False):
        per_case = g.groupby("case")[cols].mean()
        only = df[(df.source == src) & (df.structure == s) & df.pred_to_truth_mm.isna()]
        out.setdefault(src, {})[s] = {
            **{c: round(float(per_case[c].mean()), 2) for c in cols},
            "slices_per_case_both": round(len(g) / g.case.nunique(), 1),
            "slices_per_case_truth_only": round(int((only.n_pred == 0).sum()) / g.case.nunique(), 2),
            "slices_per_case_pred_only": round(int((only.n_truth == 0).sum()) / g.case.nunique(), 2),
            "by_region": {str(r): {**{c: round(float(h[c].mean()), 2) for c in cols}, "share_of_slices": round(len(h) / len(g), 3)}
                          for r, h in g.groupby("region", observed=True)},
        }
    return out


def picture(path: Path, truth: np.ndarray, preds: dict[str, np.ndarray], position: np.ndarray, label: int) -> None:
    """Six slices from base to apex: the structure in both (white), the truth only (red), the prediction only (blue)."""
    t = truth == label
    ks = np.nonzero(t.any((0, 1)))[0]
    ks = ks[np.argsort(position[ks])][np.linspace(0, len(ks) - 1, 6).round().astype(int)]
    ii, jj = np.nonzero((truth > 0).any(2))
    box = (slice(max(ii.min() - 6, 0), ii.max() + 7), slice(max(jj.min() - 6, 0), jj.max() + 7))
    fig, axes = plt.subplots(len(preds), len(ks), figsize=(2.2 * len(ks), 2.4 * len(preds)), squeeze=False)
    for r, (name, pred) in enumerate(preds.items()):
        p = pred == label
        for c, k in enumerate(ks):
            rgb = np.zeros(t[box + (k,)].shape + (3,))
            tk, pk = t[box + (k,)], p[box + (k,)]
            rgb[tk & pk] = 1.0
            rgb[tk & ~pk] = (0.9, 0.1, 0.1)
            rgb[pk & ~tk] = (0.2, 0.4, 1.0)
            rgb[(truth[box + (k,)] > 0) & ~tk & ~pk] = 0.25
            ax = axes[r, c]
            ax.imshow(rgb, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"slice {k}, {position[k]:.2f}", fontsize=8)
        axes[r, 0].set_ylabel(name, fontsize=9)
    fig.suptitle(f"{Label(label).name.lower()}: both (white), truth only (red), prediction only (blue); "
                 "grey: the other structures; 0 = mitral valve, 1 = apex", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(a: argparse.Namespace) -> None:
    torch.set_num_threads(2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work)
    bank = load_bank(work / "bank")
    model = load_model(Path(a.weights_lr or default_weights("sslln_lr")))
    shapes = require_bank(a.biv_me)
    cfg = RefineConfig(fusion=fusion_config(a))
    lr_sim = lr_simulation(a)
    rows: list[dict] = []
    for n, seed in enumerate(range(30000, 30000 + a.n)):
        t = lr_target(shapes, seed, lr_sim)
        labels, lmap, _conf = predict(model, t.image.array[None])
        pts = landmark_points(lmap[0], t.record)
        waff = t.record.working_affine
        refined, _info = refine(t.image.array, labels[0], waff, pts, bank, cfg,
                                slices=acquired_slices(t.record), stack=stack_slab(t.record))
        pos = slice_position(np.asarray(t.ed["landmarks"]), waff, t.truth.shape[2])
        for src, pred in (("network", labels[0]), ("refined", refined)):
            rows += slice_rows(pred, t.truth, t.spacing, pos, source=src, case=f"target{seed}")
        if n == 0:
            picture(out / "rv_wall_slices.png", t.truth, {"SSLLN-LR": labels[0], "refined": refined}, pos, Label.RV_WALL)
        print(seed, flush=True)
    for atlas in bank[: a.atlases]:
        seed, phase = atlas.atlas_id.removeprefix("phantom").split("_")
        d = work / "atlas_phantoms" / f"phantom_{int(seed):04d}"
        truth = load_labels(d / f"{phase}_labels.nii.gz")
        pred = resample(atlas.labels, atlas.affine, truth.affine, truth.array.shape, order=0)
        pos = slice_position(read_landmarks(d / f"{phase}_landmarks.json"), truth.affine, truth.array.shape[2])
        rows += slice_rows(pred, truth.array, truth.spacing, pos, source="atlas", case=atlas.atlas_id)
    df = pd.DataFrame(rows)
    df.to_csv(out / "slices.csv.gz", index=False, float_format="%.2f")
    summary = {"targets": f"Table III's seeds 30000-{30000 + a.n - 1}, ED", "lr_simulation": vars(lr_sim),
               "fusion": vars(cfg.fusion), "atlases": f"the bank's first {a.atlases}: SSLLN-HR on HR phantoms",
               "regions": "thirds of the long axis, mitral-valve centre (0) to apex (1), exact landmarks",
               "distances": summarise(df)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({s: v["rv_wall"] for s, v in summary["distances"].items()}, indent=1))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_args(ap, 20, first_seed=False, what="Table III targets")
    ap.add_argument("--atlases", type=int, default=40, help="atlases of the bank scored against their phantom truth")
    ap.add_argument("--out", default="bench/results/refinement_distances")
    add_lr_simulation_args(ap)
    add_fusion_args(ap)
    main(ap.parse_args())
