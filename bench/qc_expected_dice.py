"""Does the network's expected Dice tell a good segmentation from a poor one, without ground truth?

``ssll segment`` writes, per volume, the Dice the network expects of its own labels under its class
probabilities (:func:`ssll.nn.confidence.expected_dice`), and ``ssll qc-flags`` flags a volume whose LV
cavity, LV wall or RV cavity expects less than :data:`ssll.qc.MIN_EXPECTED_DICE`. This compares the
estimate with the true Dice, volume by volume:

* the 20 held-out ACDC patients (config/train_lr.yaml) at ED and ES: the true Dice against the expert
  labels on the input grid (as ``ssll segment`` writes them, as in ``bench/sslln_validation.py``), the
  estimate from the working-grid output;
* the first ``--n-phantoms`` simulated-LR phantoms of Table III (seeds 30000 on, never trained on; the
  RV wall has a truth here): both on the working grid, truth voxelised from the phantom's mesh.

Per structure: Spearman's rank correlation, mean error (estimate - true) and mean absolute error; for
ACDC also what the flag catches among the volumes with a true Dice below the same line (any of the LV
cavity, LV wall and RV cavity), what other lines (the workflow's ``qc: min_expected_dice``) would flag and
catch, and which volumes rank lowest.

Run:  python bench/qc_expected_dice.py --out bench/results/qc_expected_dice   (about 6 min on 2 cores)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from held_out import held_out_parser, start  # noqa: E402
from refinement import lr_target  # noqa: E402

from ssll.evaluate import dice  # noqa: E402
from ssll.io import load_image, load_labels  # noqa: E402
from ssll.nn.confidence import expected_dice  # noqa: E402
from ssll.nn.data import held_out_cases  # noqa: E402
from ssll.nn.infer import finish_segmentation, predict  # noqa: E402
from ssll.phantom import require_bank  # noqa: E402
from ssll.preprocess import preprocess_volume  # noqa: E402
from ssll.qc import MIN_EXPECTED_DICE  # noqa: E402
from ssll.types import Volume  # noqa: E402

STRUCTS = ["lv_cavity", "lv_wall", "rv_cavity", "rv_wall"]
FLAGGED = ["lv_cavity", "lv_wall", "rv_cavity"]


def one_volume(model, image):
    """Network output as ``ssll segment`` writes it, and its expected Dice (working grid)."""
    work, rec = preprocess_volume(image)
    lab, lmap, _, prob = predict(model, work.array[None], return_prob=True)
    seg = finish_segmentation(lab[0], lmap[0], prob[0], rec)
    return seg, rec, expected_dice(prob[0], seg.labels, seg.fov)


def agreement(df: pd.DataFrame, structs: list[str]) -> dict:
    out = {}
    for s in structs:
        d = df[[f"dice_{s}", f"expected_{s}"]].dropna()
        if len(d) < 3:
            continue
        err = d[f"expected_{s}"] - d[f"dice_{s}"]
        out[s] = {"n": len(d), "spearman_rho": round(float(spearmanr(d[f"dice_{s}"], d[f"expected_{s}"])[0]), 3),
                  "mean_error": round(float(err.mean()), 3), "mean_abs_error": round(float(err.abs().mean()), 3),
                  "mean_true_dice": round(float(d[f"dice_{s}"].mean()), 3),
                  "mean_expected_dice": round(float(d[f"expected_{s}"].mean()), 3)}
    return out


def main() -> None:
    ap = held_out_parser(__doc__, "bench/results/qc_expected_dice")
    ap.add_argument("--biv-me", default="../shared/data/biv-me")
    ap.add_argument("--n-phantoms", type=int, default=20)
    a = ap.parse_args()
    out, model = start(a)
    rows = []
    for c in held_out_cases(a.data, a.config):
        gt = load_labels(c["labels"], "acdc")
        seg, _, exp = one_volume(model, load_image(c["image"]))
        r = {"set": "acdc", "case": c["patient"], "phase": c["phase"], "group": c["group"]}
        for k, s in enumerate(FLAGGED, 1):
            r[f"dice_{s}"] = dice(seg.original == k, gt.array == k)
        r.update({f"expected_{s}": exp[s] for s in STRUCTS})
        rows.append(r)
        print(r["case"], r["phase"], {s: (round(r[f"dice_{s}"], 3), round(exp[s], 3)) for s in FLAGGED}, flush=True)
    shapes = require_bank(a.biv_me)
    for seed in range(30000, 30000 + a.n_phantoms):
        t = lr_target(shapes, seed)
        seg, _, exp = one_volume(model, Volume(t.sim["image"], t.sim["affine"]))
        r = {"set": "phantom", "case": str(seed), "phase": "ED", "group": "phantom"}
        for k, s in enumerate(STRUCTS, 1):
            r[f"dice_{s}"] = dice(seg.labels == k, t.truth == k)
        r.update({f"expected_{s}": exp[s] for s in STRUCTS})
        rows.append(r)
        print(seed, {s: (round(r[f"dice_{s}"], 3), round(exp[s], 3)) for s in STRUCTS}, flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "per_volume.csv", index=False, float_format="%.4f")
    acdc, ph = df[df["set"] == "acdc"], df[df["set"] == "phantom"]
    worst_true = acdc[[f"dice_{s}" for s in FLAGGED]].min(axis=1)
    worst_exp = acdc[[f"expected_{s}" for s in FLAGGED]].min(axis=1)
    failed, flagged = worst_true < MIN_EXPECTED_DICE, worst_exp < MIN_EXPECTED_DICE
    ranked = acdc.assign(lowest_expected=worst_exp, lowest_true=worst_true).nsmallest(8, "lowest_expected")
    summary = {
        "weights": a.weights, "threshold": MIN_EXPECTED_DICE,
        "acdc_held_out": agreement(acdc, FLAGGED),
        "acdc_lowest_of_three": {"spearman_rho": round(float(spearmanr(worst_true, worst_exp)[0]), 3)},
        "acdc_flag": {"volumes": len(acdc), "true_dice_below_threshold": int(failed.sum()),
                      "flagged": int(flagged.sum()), "flagged_and_below": int((flagged & failed).sum()),
                      "flagged_volumes": [f"{r.case} {r.phase}" for r in acdc[flagged].itertuples()],
                      "below_volumes": [f"{r.case} {r.phase}" for r in acdc[failed].itertuples()]},
        # the workflow's line is a setting (qc: min_expected_dice): what other lines flag and catch, the
        # poor volumes still those truly below MIN_EXPECTED_DICE
        "acdc_flag_by_line": [{"line": line, "flagged": int((worst_exp < line).sum()),
                               "flagged_and_below": int(((worst_exp < line) & failed).sum()),
                               "true_dice_below_threshold": int(failed.sum())}
                              for line in (0.60, 0.65, 0.70, 0.72, 0.74, 0.76, 0.78, 0.80, 0.85)],
        "acdc_lowest_expected": [{"volume": f"{r.case} {r.phase}", "lowest_expected": round(r.lowest_expected, 3),
                                  "lowest_true": round(r.lowest_true, 3)} for r in ranked.itertuples()],
        "phantoms": agreement(ph, STRUCTS),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.3))
    for ax, s in zip(axes, STRUCTS):
        for sub, mark, colour, label in ((acdc[acdc.phase == "ED"], "o", "tab:blue", "ACDC held out, ED"),
                                         (acdc[acdc.phase == "ES"], "^", "tab:orange", "ACDC held out, ES"),
                                         (ph, "s", "tab:green", "LR phantoms")):
            if f"dice_{s}" in sub and sub[f"dice_{s}"].notna().any():
                ax.scatter(sub[f"dice_{s}"], sub[f"expected_{s}"], marker=mark, c=colour, s=22, label=label)
        ax.plot([0, 1], [0, 1], "k-", lw=0.8)
        if s in FLAGGED:
            ax.axhline(MIN_EXPECTED_DICE, color="r", ls="--", lw=0.8)
            ax.axvline(MIN_EXPECTED_DICE, color="grey", ls=":", lw=0.8)
        ax.set(xlim=(0.15, 1), ylim=(0.15, 1), xlabel="true Dice", ylabel="expected Dice", title=s.replace("_", " "))
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("SSLLN-LR: expected Dice (from its own probabilities) against the true Dice; red: the QC flag's line")
    fig.tight_layout()
    fig.savefig(out / "expected_vs_true.png", dpi=90)


if __name__ == "__main__":
    main()
