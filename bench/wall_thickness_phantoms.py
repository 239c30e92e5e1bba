"""LV wall thickness per AHA segment from thick-slice stacks, against the HR truth: Table III's question for thickness.

On real hearts there is only the expert's per-slice contours (``bench/wall_thickness.py``). On simulated-LR
phantoms the HR anatomy is known, so this asks what the paper's smooth model is for: from a 10 mm, breath-hold-shifted
stack, which output gives the regional thickness of the true heart? For Table III's first targets (seeds 30000..,
ED, never trained on, the bank of ``bench/refinement.py``: 60 HR phantoms x ED/ES), the 16 segments' thickness
(:func:`ssll.thickness.segment_thickness`) of

* ``truth``: the phantom's mesh voxelised on the working grid, with the exact landmarks from the mesh;
* ``nearest``: SSLLN-LR's labels on the input grid (10 mm slices), as ``ssll measures`` reads them, with the
  network's landmarks;
* ``working``: SSLLN-LR's labels on the working grid (2 mm slices);
* ``refined``: the refined HR model (``ssll.refine``, default settings), as ``ssll measures`` reads ``refined_*``,

each against the truth: mean difference (mm), sd, mean absolute difference and Pearson r over targets x segments.

Run (the bank as in bench/wall_thickness.py's docstring):
    python bench/wall_thickness_phantoms.py --bank /tmp/wtbank/bank --n 20 --out bench/results/wall_thickness_phantoms
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from refinement import lr_target
from scipy.stats import wilcoxon

from ssll.atlases import load_bank
from ssll.nn.infer import default_weights, finish_segmentation, landmark_points, load_model, predict
from ssll.phantom import require_bank
from ssll.refine import RefineConfig, acquired_slices, refine, stack_slab
from ssll.thickness import AHA_SEGMENTS, segment_thickness


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", required=True, help="atlas bank folder (ssll atlas build)")
    ap.add_argument("--biv-me", default="../shared/data/biv-me")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--out", default="bench/results/wall_thickness_phantoms")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model, bank, shapes = load_model(default_weights("sslln_lr")), load_bank(a.bank), require_bank(a.biv_me)
    rows = []
    for seed in range(30000, 30000 + a.n):
        t = lr_target(shapes, seed)
        rec, waff = t.record, t.record.working_affine
        labels, lmap, _, prob = predict(model, t.image.array[None], return_prob=True)
        seg = finish_segmentation(labels[0], lmap[0], prob[0], rec)
        pts = landmark_points(lmap[0], rec, fov=seg.fov)
        refined, _ = refine(t.image.array, seg.labels, waff, pts, bank, RefineConfig(), slices=acquired_slices(rec),
                            stack=stack_slab(rec, fov=seg.fov))
        sources = {"truth": (t.truth, waff, np.asarray(t.ed["landmarks"], float)),
                   "nearest": (seg.original, rec.input_affine, pts), "working": (seg.labels, waff, pts),
                   "refined": (refined, waff, pts)}
        for name, (lab, aff, p) in sources.items():
            per = segment_thickness(lab, aff, p)
            rows.append({"seed": seed, "source": name, **{f"aha{n:02d}_mm": v for n, v in per.items()}})
        print(seed, {r["source"]: round(float(np.nanmean([r[f"aha{n:02d}_mm"] for n in AHA_SEGMENTS])), 2)
                     for r in rows[-4:]}, flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "per_target.csv", index=False, float_format="%.3f")
    cols = [f"aha{n:02d}_mm" for n in AHA_SEGMENTS]
    truth = df[df.source == "truth"].set_index("seed")[cols].stack()
    summary: dict = {"n_targets": a.n, "seeds": [30000, 30000 + a.n - 1], "bank": f"{a.bank} ({len(bank)} atlases)",
                     "against_truth_all_segments": {}}
    abs_err = {}
    for name in ("nearest", "working", "refined"):
        auto = df[df.source == name].set_index("seed")[cols].stack()
        x, y = auto.align(truth, join="inner")
        ok = x.notna() & y.notna()
        d = x[ok] - y[ok]
        abs_err[name] = d.abs()
        summary["against_truth_all_segments"][name] = {
            "n": int(ok.sum()), "truth_mean": float(y[ok].mean()), "auto_mean": float(x[ok].mean()),
            "mean_diff": float(d.mean()), "sd_diff": float(d.std()), "mean_abs_diff": float(d.abs().mean()),
            "pearson_r": float(np.corrcoef(x[ok], y[ok])[0, 1])}
    a_, b_ = abs_err["refined"].align(abs_err["nearest"], join="inner")
    summary["wilcoxon_p_abs_error_refined_vs_nearest"] = float(wilcoxon(a_, b_).pvalue)
    a_, b_ = abs_err["refined"].align(abs_err["working"], join="inner")
    summary["wilcoxon_p_abs_error_refined_vs_working"] = float(wilcoxon(a_, b_).pvalue)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
