"""Breath-hold shifts measured from the image (``motion: estimate``): does taking them out lift Table III?

Each acquired slice of a thick-slice stack is its own breath-hold, shifted in-plane against the
others; fitting one smooth model to the shifted slices puts each wall boundary about a shift off,
which is what keeps the refined LV wall below the paper (bench/README, "The breath-hold shifts").
:func:`ssll.refine.breath_hold_shifts` measures each slice's shift from the image against a stiff
motion-free model (80/60 mm in-plane control spacing) with a partial-volume class-mean fit
(:func:`ssll.motion.estimate_slice_shifts`), and moves the slices onto it; the corrected stack is
then segmented again by SSLLN-LR and refined with the default settings.

On Table III's targets (``bench/refinement.py``'s ``lr_target``: simulated-LR phantoms, seeds 30000..,
the same bank), per target, scored against the HR truth on the working grid (Dice, HD mm):

* ``refined``: Table III's (c), the default refinement of the network's segmentation;
* ``motion_refined``: shifts measured, stack corrected, segmented again, refined;
* ``true_shift_refined``: the same with the simulated shifts themselves (centred): the ceiling of
  a perfect estimate.

Also the estimate's error (RMS over the measured slices, mm, in-plane vector, both centred) beside
the RMS of the simulated shifts, and paired Wilcoxon tests against ``refined``.

Run (after ``bench/refinement.py`` has built its bank; ~35 min for 50 targets on 2 cores), with the
product's ``motion`` settings (``detrend`` on):
    python bench/refinement_motion.py --n 50 --out bench/results/refinement_motion_detrend
The 8 tuning targets the settings came from: ``--first-seed 30100 --n 8``. The paper's "horizontal" shifts
(one in-plane axis, the same sd; paired with the default targets): ``--n 50 --sim-shift-axes 0
--out bench/results/refinement_motion_horizontal_detrend``. The estimate without the trend taken out
(``--no-detrend``) gave ``refinement_motion/`` and ``refinement_motion_horizontal/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refinement import (
    PAPER,
    STRUCTS,
    add_lr_simulation_args,
    add_target_args,
    bench_bank,
    lr_simulation,
    lr_target,
    scores,
)

from ssll.motion import MotionConfig, shift_slices
from ssll.nn.infer import default_weights, landmark_points, load_model, predict
from ssll.phantom import require_bank
from ssll.refine import RefineConfig, acquired_slices, breath_hold_shifts, refine, stack_slab


def figure(path: Path, centre: np.ndarray, panels: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    """PNG: per panel ``(title, image, labels)`` a short-axis slice and a long-axis cut (j-k plane) through ``centre``
    (working voxels), labels over the image in the QC colours; the long-axis cut shows each slice's shift."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssll.qc import overlay_rgb

    i, _j, k = (int(round(v)) for v in centre)
    fig, axes = plt.subplots(2, len(panels), figsize=(3.4 * len(panels), 6.4))
    for col, (title, image, lab) in enumerate(panels):
        axes[0, col].imshow(overlay_rgb(image[:, :, k], lab[:, :, k]), origin="lower")
        axes[0, col].set_title(f"{title}\nshort axis, slice {k}", fontsize=8)
        axes[1, col].imshow(overlay_rgb(image[i], lab[i]), origin="lower", aspect=2.0 / 1.25)
        axes[1, col].set_title("long-axis cut (j-k plane)", fontsize=8)
        for ax in axes[:, col]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(a: argparse.Namespace) -> None:
    out, bank_dir, bank = bench_bank(a)
    model = load_model(a.weights_lr or default_weights("sslln_lr"))
    shapes = require_bank(a.biv_me)
    cfg = RefineConfig.from_mapping({"motion": {"detrend": a.detrend}})

    def segment(img: np.ndarray, rec) -> tuple[np.ndarray, np.ndarray]:
        lab, lmap = predict(model, img[None])[:2]
        return lab[0], landmark_points(lmap[0], rec)

    rows, est_rows = [], []
    for n, seed in enumerate(range(a.first_seed, a.first_seed + a.n)):
        t = lr_target(shapes, seed, lr_simulation(a))
        img, rec, truth, sp = t.image.array, t.record, t.truth, t.spacing
        waff = rec.working_affine
        ks, slab = acquired_slices(rec), stack_slab(rec)
        seg, pts = segment(img, rec)
        refined, _ = refine(img, seg, waff, pts, bank, cfg, slices=ks, stack=slab)
        t0 = time.perf_counter()
        corrected, mrec = breath_hold_shifts(img, seg, waff, pts, bank, rec, cfg)
        t_est = time.perf_counter() - t0
        seg2, pts2 = segment(corrected, rec)
        moved, _ = refine(corrected, seg2, waff, pts2, bank, cfg, slices=ks, stack=slab)
        t_all = time.perf_counter() - t0
        models = {"refined": refined, "motion_refined": moved}
        true = np.asarray(t.sim["record"]["shifts_mm"], float)
        est = mrec["slice_shifts_mm"]
        if len(true) == len(ks):
            s_true = -(true - true.mean(0))  # a slice drawn shifted by +s shows the motion-free heart at v - s
            c_img = shift_slices(img, ks, s_true, sp)
            seg3, pts3 = segment(c_img, rec)
            models["true_shift_refined"] = refine(c_img, seg3, waff, pts3, bank, cfg, slices=ks, stack=slab)[0]
            if est:
                idx = np.searchsorted(ks, est["slices"])
                tr = s_true[idx] - s_true[idx].mean(0)
                err = np.asarray(est["shifts"]) - tr
                est_rows.append({"seed": seed, "slices_acquired": len(ks), "slices_measured": len(idx),
                                 "shift_rms_true_mm": float(np.sqrt((tr ** 2).sum(1).mean())),
                                 "shift_rms_error_mm": float(np.sqrt((err ** 2).sum(1).mean())),
                                 "seconds_estimate": t_est, "seconds_estimate_segment_refine": t_all})
        for name, lab in models.items():
            rows.append({"seed": seed, "method": name, **scores(lab, truth, sp)})
        print(seed, {m: [round(r[f"dice_{s}"], 3) for s in STRUCTS] for m, r in zip(models, rows[-len(models):])},
              est_rows[-1]["shift_rms_error_mm"] if est_rows and est_rows[-1]["seed"] == seed else None, flush=True)
        if n == 0:
            figure(out / "motion_example.png", np.argwhere(truth == 1).mean(0),
                   [("truth (HR), as acquired", img, truth), ("(c) refined, as acquired", img, refined),
                    ("shifts measured: corrected stack, refined", corrected, moved)])
    df = pd.DataFrame(rows)
    df.to_csv(out / "per_target.csv", index=False, float_format="%.4f")
    er = pd.DataFrame(est_rows)
    er.to_csv(out / "shift_estimates.csv", index=False, float_format="%.3f")
    cols = [c for c in df.columns if c.startswith(("dice_", "hd_", "hd2d_")) and "_to_" not in c]
    base = df[df.method == "refined"].set_index("seed")
    summary: dict = {
        "n_targets": a.n, "seeds": [a.first_seed, a.first_seed + a.n - 1], "atlases_in_bank": len(bank),
        "simulation": {"shift_mm": a.sim_shift_mm, "shift_axes": list(a.sim_shift_axes)},
        "motion_config": vars(cfg.motion), "paper": PAPER,
        "rows": {m: {c: [round(float(g[c].mean()), 4), round(float(g[c].std()), 4)] for c in cols}
                 for m, g in df.groupby("method", sort=False)},
        "wilcoxon_vs_refined": {}, "better_than_refined": {},
        "shift_estimate": {c: round(float(er[c].mean()), 3) for c in er.columns if c != "seed"} if len(er) else {},
    }
    for m in ("motion_refined", "true_shift_refined"):
        o = df[df.method == m].set_index("seed")
        if o.empty:
            continue
        common = o.index.intersection(base.index)
        summary["wilcoxon_vs_refined"][m] = {c: float(stats.wilcoxon(o.loc[common, c], base.loc[common, c]).pvalue)
                                             for c in cols if not np.allclose(o.loc[common, c], base.loc[common, c])}
        summary["better_than_refined"][m] = {c: int((o.loc[common, c] > base.loc[common, c]).sum())
                                             for c in cols if c.startswith("dice_")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["rows"], indent=1))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_args(ap, 50)
    ap.add_argument("--out", default="bench/results/refinement_motion")
    ap.add_argument("--detrend", action=argparse.BooleanOptionalAction, default=MotionConfig().detrend,
                    help="take a linear trend along the slices out of the measured shifts (motion: detrend; "
                         "default: the product's, on; --no-detrend for the committed refinement_motion/ and "
                         "refinement_motion_horizontal/ rows)")
    add_lr_simulation_args(ap)
    main(ap.parse_args())
