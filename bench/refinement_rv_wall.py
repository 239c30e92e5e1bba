"""The refined model's RV wall from a segmentation without one: atlases matched with their RV wall as background.

On real scans SSLLN-LR draws only pieces of the RV wall (ACDC, its real training data, labels none;
``ssll.measures.rv_wall_coverage``). Matched label for label, the atlases' RV walls are then pulled away from the
target's background and the refined model gets a fragment of one. With ``atlases: rv_wall_from_atlases`` (the
default) such a target's atlases are selected and registered with their RV wall counted as background, so their
walls follow the target's RV cavity and the fusion gives the model one.

Table III's simulated-LR phantoms (seeds 30000.., ``bench/refinement.py``'s targets) show it against the HR
truth: SSLLN-LR's labels with the RV wall taken out (as on a real scan) are refined (a) matching every label as
it is and (b) with the atlases' RV wall as background; (c) is the refinement of the full segmentation, RV wall
included. Dice and Hausdorff distance per structure, the RV wall's coverage of the RV cavity and its mass
against the truth's.

Run:  python bench/refinement_rv_wall.py --n 10 --bank resources/atlas_bank/bank
      (the demo workflow's default bank of 20 atlases, made by ``snakemake --profile profiles/local``; about 8 min)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from refinement import lr_target, scores  # noqa: E402

from ssll.atlases import AtlasConfig, load_bank  # noqa: E402
from ssll.labels import Label, rv_wall_as_background  # noqa: E402
from ssll.measures import phase_measures  # noqa: E402
from ssll.nn.infer import default_weights, landmark_points, load_model, predict  # noqa: E402
from ssll.phantom import require_bank  # noqa: E402
from ssll.refine import RefineConfig, acquired_slices, refine, stack_slab  # noqa: E402

STRUCTS = [Label(c).name.lower() for c in range(1, 5)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="target phantoms (seeds 30000..)")
    ap.add_argument("--bank", default="resources/atlas_bank/bank")
    ap.add_argument("--biv-me", default="../shared/data/biv-me")
    ap.add_argument("--out", default="bench/results/refinement_rv_wall")
    a = ap.parse_args()
    torch.set_num_threads(2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    bank = load_bank(a.bank)
    model = load_model(default_weights("sslln_lr"))
    shapes = require_bank(a.biv_me)
    runs = {"a_without_rv_wall_matched_as_is": (True, False),
            "b_without_rv_wall_atlas_rv_wall_as_background": (True, True),
            "c_with_rv_wall": (False, True)}
    rows = []
    for seed in range(30000, 30000 + a.n):
        t = lr_target(shapes, seed)
        labels, lmap, _, _ = predict(model, t.image.array[None], return_prob=True)
        seg, waff = labels[0], t.record.working_affine
        pts = landmark_points(lmap[0], t.record)
        truth_m = phase_measures(t.truth, t.spacing)
        for name, (strip, from_atlases) in runs.items():
            target = rv_wall_as_background(seg) if strip else seg
            cfg = RefineConfig(atlases=AtlasConfig(rv_wall_from_atlases=from_atlases))
            refined, info = refine(t.image.array, target, waff, pts, bank, cfg, slices=acquired_slices(t.record),
                                   stack=stack_slab(t.record))
            m = phase_measures(refined, t.spacing)
            rows.append({"seed": seed, "run": name, "matched_without_rv_wall": info["rv_wall_from_atlases"],
                         "rv_wall_coverage": m["rv_wall_coverage"], "rv_wall_ml": float((refined == 4).sum()) *
                         float(np.prod(t.spacing)) / 1000, "truth_rv_wall_ml": float((t.truth == 4).sum()) *
                         float(np.prod(t.spacing)) / 1000, "rv_cavity_ml": m["rv_cavity_ml"],
                         "truth_rv_cavity_ml": truth_m["rv_cavity_ml"], **scores(refined, t.truth, t.spacing)})
            print(seed, name, {k: round(v, 3) for k, v in rows[-1].items()
                               if k.startswith("dice_") or k in ("rv_wall_coverage", "rv_wall_ml")}, flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "per_target.csv", index=False, float_format="%.4f")
    cols = [f"dice_{s}" for s in STRUCTS] + [f"hd_{s}_mm" for s in STRUCTS if f"hd_{s}_mm" in df]
    summary = {"targets": a.n, "bank": a.bank, "atlases": len(bank), "mean": {}}
    for name, g in df.groupby("run", sort=False):
        summary["mean"][name] = {**{c: round(float(g[c].mean()), 4) for c in cols},
                                 "rv_wall_coverage": round(float(g.rv_wall_coverage.mean()), 3),
                                 "rv_wall_ml_minus_truth": round(float((g.rv_wall_ml - g.truth_rv_wall_ml).mean()), 2),
                                 "rv_cavity_ml_minus_truth": round(float((g.rv_cavity_ml - g.truth_rv_cavity_ml).mean()),
                                                                   2)}
    from scipy import stats

    a_, b_ = (df[df.run == r].sort_values("seed") for r in list(runs)[:2])
    summary["wilcoxon_b_vs_a"] = {s: float(stats.wilcoxon(b_[f"dice_{s}"].to_numpy(), a_[f"dice_{s}"].to_numpy()).pvalue)
                                  for s in STRUCTS}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
