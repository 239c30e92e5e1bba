"""How far the shape refinement goes from a perfect thick-slice segmentation (Table III, upper bound).

Table III's row (c) refines the shipped SSLLN-LR's segmentation of each simulated-LR phantom. To tell
what limits it, the network or the refinement, this benchmark gives the refinement the true LR
labels instead: the phantom truth as the simulated acquisition saw it (10 mm slices, the same
in-plane slice shifts, the same lost end slices; ``ssll.simulate``), taken to the working grid by
nearest neighbour, with the exact mesh landmarks. Everything else is Table III's: the same targets
(seeds 30000..), the same atlas bank (``bench/refinement.py`` builds it), ``RefineConfig()``
settings (FFD grid an option), scores against the HR truth on the working grid.

Rows per target: ``true_lr_nearest`` (the perfect LR labels upsampled, Table III's (a) for a perfect
network), ``true_lr_refined`` (refinement of them) and ``true_hr_refined`` (refinement of the HR truth
itself, every 2 mm slice, no shifts: the ceiling of the atlas bank, the FFD and the fusion). Also, per target, the shipped SSLLN-LR's Dice
against the true LR labels on the acquired slices only, i.e. the error of the target the
registration fits. Paired with ``bench/results/refinement/table3_per_target.csv`` (row (c)) by seed.

Run (after ``bench/refinement.py`` has built its bank); the committed results used the stiffer grid,
paired with ``bench/results/refinement_grid50_40``:
    python bench/refinement_oracle.py --n 50 --control-spacing-mm 50 40 --through-plane-mm 100 80 \
        --table3 bench/results/refinement_grid50_40/table3_per_target.csv --out bench/results/refinement_oracle_exact_truth
(``refinement_oracle/``: the same before the truth was the mesh.)
With the default grid, with and without the simulated breath-hold shifts (first 20 targets):
    python bench/refinement_oracle.py --n 20 --no-hr-ceiling --out bench/results/refinement_oracle_default_grid_exact_truth
    python bench/refinement_oracle.py --n 20 --sim-shift-mm 0 \
        --table3 bench/results/refinement_no_shifts_exact_truth/table3_per_target.csv \
        --out bench/results/refinement_oracle_no_shifts_exact_truth
(``refinement_oracle_default_grid/`` and ``refinement_oracle_no_shifts/``: the same before the truth was the mesh.)
With the paper's horizontal shifts only (``--sim-shift-axes 0``), paired with bench/refinement.py's run of them:
    python bench/refinement_oracle.py --n 20 --no-hr-ceiling --sim-shift-axes 0 \
        --table3 bench/results/refinement_horizontal_shifts/table3_per_target.csv \
        --out bench/results/refinement_oracle_horizontal_shifts
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

from ssll.evaluate import dice
from ssll.interpolate import nearest_upsample
from ssll.nn.infer import default_weights, load_model, predict
from ssll.phantom import require_bank
from ssll.refine import RefineConfig, acquired_slices, refine, stack_slab
from ssll.register import FFDConfig


def main(a: argparse.Namespace) -> None:
    out, bank_dir, bank = bench_bank(a)
    model = load_model(a.weights_lr or default_weights("sslln_lr"))
    shapes = require_bank(a.biv_me)
    cfg = RefineConfig(ffd=FFDConfig(control_spacing_mm=tuple(a.control_spacing_mm), through_plane_mm=tuple(a.through_plane_mm)))
    lr_sim = lr_simulation(a)
    rows, inp = [], []
    for seed in range(30000, 30000 + a.n):
        t = lr_target(shapes, seed, lr_sim)  # the same targets as bench/refinement.py
        p, sim, work_img, rec, truth, sp = t.ed, t.sim, t.image, t.record, t.truth, t.spacing
        shape, waff = rec.working_shape, rec.working_affine
        true_lr = nearest_upsample(sim["labels"], rec.input_affine, shape, waff)
        ks = acquired_slices(rec)
        t0 = time.perf_counter()
        refined, info = refine(work_img.array, true_lr, waff, np.asarray(p["landmarks"], float), bank, cfg, slices=ks,
                               stack=stack_slab(rec))
        secs = time.perf_counter() - t0
        rows.append({"seed": seed, "method": "true_lr_nearest", **scores(true_lr, truth, sp)})
        rows.append({"seed": seed, "method": "true_lr_refined", **scores(refined, truth, sp), "seconds": secs,
                     "init": info["init"]})
        if a.hr_ceiling:
            ceiling, _ = refine(work_img.array, truth, waff, np.asarray(p["landmarks"], float), bank, cfg)
            rows.append({"seed": seed, "method": "true_hr_refined", **scores(ceiling, truth, sp)})
        net_lab = predict(model, work_img.array[None])[0][0]
        inp.append({"seed": seed, **{f"dice_{s}": dice(net_lab[:, :, ks] == c, true_lr[:, :, ks] == c)
                                     for c, s in enumerate(STRUCTS, 1)}})
        print(seed, f"{secs:.1f}s", {r["method"]: [round(r[f"dice_{s}"], 3) for s in STRUCTS] for r in rows if r["seed"] == seed}, flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "per_target.csv", index=False, float_format="%.4f")
    ip = pd.DataFrame(inp)
    ip.to_csv(out / "sslln_lr_vs_true_lr_on_acquired_slices.csv", index=False, float_format="%.4f")
    cols = [c for c in df.columns if c.startswith(("dice_", "hd_", "hd2d_"))]
    summary: dict = {
        "n_targets": a.n, "atlases_in_bank": len(bank), "refine_config": {"atlases": vars(cfg.atlases), "ffd": vars(cfg.ffd), "fusion": vars(cfg.fusion)},
        "lr_simulation": vars(lr_sim),
        "input": "true LR labels (simulated acquisition of the phantom truth, nearest to the working grid) and exact landmarks",
        "rows": {m: {c: [round(float(g[c].mean()), 4), round(float(g[c].std()), 4)] for c in cols}
                 for m, g in df.groupby("method", sort=False)},
        "sslln_lr_dice_vs_true_lr_on_acquired_slices": {c: round(float(ip[c].mean()), 4) for c in ip.columns if c != "seed"},
        "paper": PAPER,
    }
    t3 = Path(a.table3)
    if t3.exists():
        t = pd.read_csv(t3)
        c_row = t[t.method == "refined"].set_index("seed")
        o_row = df[df.method == "true_lr_refined"].set_index("seed")
        common = o_row.index.intersection(c_row.index)
        both = [c for c in cols if c in c_row.columns]  # a Table III run older than a score has no column for it
        summary["table3_c_same_targets"] = {c: round(float(c_row.loc[common, c].mean()), 4) for c in both}
        summary["wilcoxon_true_lr_refined_vs_table3_c"] = {
            c: float(stats.wilcoxon(o_row.loc[common, c], c_row.loc[common, c]).pvalue) for c in both
            if o_row.loc[common, c].notna().all() and c_row.loc[common, c].notna().all()}
    summary["seconds_per_target_mean"] = round(float(df.seconds.dropna().mean()), 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["rows"], indent=1))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_args(ap, 50, first_seed=False, what="target phantoms (seeds 30000..)")
    ap.add_argument("--control-spacing-mm", type=float, nargs=2, default=list(FFDConfig().control_spacing_mm))
    ap.add_argument("--through-plane-mm", type=float, nargs=2, default=list(FFDConfig().through_plane_mm))
    ap.add_argument("--no-hr-ceiling", dest="hr_ceiling", action="store_false",
                    help="skip the refinement of the HR truth itself")
    add_lr_simulation_args(ap)
    ap.add_argument("--table3", default="bench/results/refinement/table3_per_target.csv")
    ap.add_argument("--out", default="bench/results/refinement_oracle")
    main(ap.parse_args())
