"""Does Table III measure what ``ssll segment`` + ``ssll refine`` do? The network's output as the benches feed it
against the product's.

``bench/refinement.py`` (Table III) and ``bench/refinement_motion.py`` refine :func:`ssll.nn.infer.predict`'s raw
working-grid labels and landmarks. ``ssll segment`` writes more than that (:func:`ssll.nn.infer.segment_volume`):
it searches the sixteen orientations of the voxel grid, zeroes labels outside the input's field of view (a
simulated stack that lost an end slice has none there), keeps each structure's largest component, and drops
landmark voxels beyond the acquired slices. This bench runs both on the same Table III targets (``lr_target``,
seeds 30000.., the same bank) and refines each with the default settings:

* ``raw``: the benches' input, ``predict`` and ``landmark_points``;
* ``product``: ``segment_volume(orientation="search")`` and ``landmark_points(..., fov=...)``, as the workflow's
  ``segment`` and ``landmarks`` stages give them.

Per target (``per_target.csv``): the orientation the search chose, the working-grid label voxels that differ, the
largest landmark difference (mm), the refined models' differing voxels, and both refined models' Dice and
slice-wise HD against the HR truth; ``summary.json``: the means and the largest per-target difference of every
score.

Run (after ``bench/refinement.py`` has built its bank; about a minute a target on 2 cores):
    python bench/table3_product_path.py --n 10 --out bench/results/table3_product_path
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
from refinement import STRUCTS, add_lr_simulation_args, add_target_args, bench_bank, lr_simulation, lr_target, scores  # noqa: E402

from ssll.nn.infer import default_weights, landmark_points, load_model, predict, segment_volume  # noqa: E402
from ssll.phantom import require_bank  # noqa: E402
from ssll.refine import RefineConfig, acquired_slices, refine, stack_slab  # noqa: E402

#: the scores compared, per structure: Dice and slice-wise HD (mm)
KEYS = [f"dice_{x}" for x in STRUCTS] + [f"hd2d_{x}_mm" for x in STRUCTS]


def main(a: argparse.Namespace) -> None:
    out, _bank_dir, bank = bench_bank(a)
    model = load_model(a.weights_lr or default_weights("sslln_lr"))
    shapes = require_bank(a.biv_me)
    cfg, lr = RefineConfig(), lr_simulation(a)
    rows = []
    for seed in range(a.first_seed, a.first_seed + a.n):
        t = lr_target(shapes, seed, lr)
        img, rec, truth, sp = t.image.array, t.record, t.truth, t.spacing
        waff, ks, slab = rec.working_affine, acquired_slices(rec), stack_slab(rec)
        lab, lmap = predict(model, img[None])[:2]
        raw, raw_pts = lab[0], landmark_points(lmap[0], rec)
        res = segment_volume(model, img, rec, orientation="search")
        seg = res.segmentation
        prod, prod_pts = seg.labels, landmark_points(seg.landmark_map, rec, fov=seg.fov)
        r_raw, _ = refine(img, raw, waff, raw_pts, bank, cfg, slices=ks, stack=slab)
        r_prod, _ = refine(img, prod, waff, prod_pts, bank, cfg, slices=ks, stack=slab)
        row = {"seed": seed, "orientation": res.orientation["orientation"],
               "network_voxels_differing": int((raw != prod).sum()),
               "landmark_max_difference_mm": float(np.linalg.norm(raw_pts - prod_pts, axis=1).max()),
               "refined_voxels_differing": int((r_raw != r_prod).sum())}
        for name, labels in (("raw", r_raw), ("product", r_prod)):
            s = scores(labels, truth, sp)
            row.update({f"{name}_{k}": s[k] for k in KEYS})
        rows.append(row)
        print(seed, row["orientation"], row["network_voxels_differing"], row["refined_voxels_differing"],
              [round(row[f"product_dice_{x}"] - row[f"raw_dice_{x}"], 4) for x in STRUCTS], flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "per_target.csv", index=False, float_format="%.4f")
    summary = {
        "n_targets": a.n, "seeds": [a.first_seed, a.first_seed + a.n - 1], "atlases_in_bank": len(bank),
        "simulation": {"shift_mm": a.sim_shift_mm, "shift_axes": list(a.sim_shift_axes)},
        "orientations_chosen": df.orientation.value_counts().to_dict(),
        "targets_network_labels_differ": int((df.network_voxels_differing > 0).sum()),
        "network_voxels_differing_max": int(df.network_voxels_differing.max()),
        "landmark_max_difference_mm": round(float(df.landmark_max_difference_mm.max()), 3),
        "mean": {name: {k: round(float(df[f"{name}_{k}"].mean()), 4) for k in KEYS} for name in ("raw", "product")},
        "largest_abs_difference": {k: round(float((df[f"product_{k}"] - df[f"raw_{k}"]).abs().max()), 4) for k in KEYS},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_args(ap, 10)
    ap.add_argument("--out", default="bench/results/table3_product_path")
    add_lr_simulation_args(ap)
    main(ap.parse_args())
