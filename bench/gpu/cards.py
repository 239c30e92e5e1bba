"""Model cards for weights trained by ``bench/gpu/train_on_device.py`` (from the runs' summary.json files).

SSLLN-LR was trained in two runs of that script on one H100 (the second continues from the first's
weights with a new cosine cycle: a warm restart); SSLLN-HR was fine-tuned from the first run's LR weights.

Run:  python bench/gpu/cards.py --lr-runs bench/results/gpu_session/run1 bench/results/gpu_session/run2 \
          --hr-run bench/results/gpu_session/run1 --weights-dir ssll/weights

Without ``--hr-run`` only ``sslln_lr.json`` is written: a new LR network from a run with ``--skip-hr``
(the README's prepared call) leaves the shipped SSLLN-HR and its card as they are.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from ssll.nn.modelcard import ACDC_CITATION, build_card
from ssll.nn.network import SSLLN


def stored_architecture(summary: dict) -> dict:
    """The card's ``architecture`` of a run: its recorded network (runs older than the ``--widths``
    options trained the defaults), stored in float16."""
    return {**summary.get("architecture", SSLLN().architecture()), "stored_dtype": "float16"}


def run_schedule(i: int, summary: dict, run: dict) -> str:
    """One run's learning-rate schedule in words. Runs 1 and 2 of the first GPU session predate the
    ``args`` record and used 1e-3 from scratch, then 5e-4 from run 1's weights."""
    args = summary.get("args")
    if args is None:
        return ("run 1: cosine from 1e-3 over its epochs" if i == 1
                else f"run {i}: from run {i - 1}'s weights, cosine from 5e-4 (warm restart)")
    start = f"from run {i - 1}'s weights ({args['init']}), " if args.get("init") else "from scratch, "
    return (f"run {i}: {start}cosine from {args['lr_peak']:g} over {run['seconds']:.0f} s of wall time "
            f"({run['epochs']} epochs, {summary['device']}), side-branch upsampling "
            f"{summary['architecture'].get('upsample', 'bilinear')}")


AUGMENT = ("GPU (ssll.nn.gpu_augment): rotation about one random axis +-15 deg (+-7.5 for in-plane axes), "
           "isotropic scale 0.9-1.1, in-plane translation +-15 mm, gamma 0.7-1.4, intensity scale 0.9-1.1")


def _clean(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _clean(v) for k, v in d.items() if k != "training_volumes"}
    if isinstance(d, float) and math.isnan(d):
        return None
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lr-runs", nargs="+", type=Path, required=True)
    ap.add_argument("--hr-run", type=Path, help="the run that trained SSLLN-HR; omitted: its card is left alone")
    ap.add_argument("--weights-dir", type=Path, default=Path("ssll/weights"))
    a = ap.parse_args()
    runs = [json.loads((r / "summary.json").read_text()) for r in a.lr_runs]
    lr_runs = [_clean(r["sslln_lr"]) for r in runs]
    last = lr_runs[-1]["final"]
    augment = AUGMENT + "".join(f", {k} {v}" for k, v in runs[-1].get("augment", {}).items()
                                if k in ("translate_slice_mm", "drop_prob", "elastic_mm", "elastic_spacing_mm",
                                         "noise_sd", "slice_jitter_mm", "slice_jitter_spacing_mm", "grid_turns") and v
                                and (k != "elastic_spacing_mm" or runs[-1]["augment"].get("elastic_mm"))
                                and (k != "slice_jitter_spacing_mm" or runs[-1]["augment"].get("slice_jitter_mm")))
    card = build_card(
        name="sslln_lr", architecture=stored_architecture(runs[-1]), data=("acdc", "phantom_lr"),
        training={"script": "bench/gpu/train_on_device.py", "device": runs[-1]["device"],
                  "runs": [{"epochs": r["epochs"], "seconds": r["seconds"], "log": f"{p.name}/log_lr.csv"}
                           for r, p in zip(lr_runs, a.lr_runs)],
                  "epochs": sum(r["epochs"] for r in lr_runs),
                  "schedule": "Adam, batch 8, weight decay 5e-5, alpha 0.8; " + "; ".join(
                      run_schedule(i, s, r) for i, (s, r) in enumerate(zip(runs, lr_runs), 1)),
                  "augmentation": augment,
                  "n_train_volumes": lr_runs[-1]["train_volumes"],
                  "train_data": "80 ACDC patients x ED/ES (each twice per epoch) + 60 simulated-LR phantoms x ED/ES "
                                "(seeds 10000-10059)",
                  "input_window": "160x160 in-plane windows around the heart (the network is fully convolutional)"},
        validation={"dice_working_grid_mean_acdc_20_patients_ed_es": {k: v for k, v in last.items() if k.startswith("val_")},
                    "dice_lr_phantoms_19000_19009": lr_runs[-1].get("val_dice_lr_phantoms"),
                    "benchmark": "bench/results/sslln_validation/summary.json (original grid, per phase)",
                    "patients": sorted({f"patient{i:03d}" for g in range(5) for i in range(20 * g + 17, 20 * g + 21)})},
    )
    (a.weights_dir / "sslln_lr.json").write_text(json.dumps(card, indent=2) + "\n")
    if a.hr_run is None:
        return
    hr_summary = json.loads((a.hr_run / "summary.json").read_text())
    hr = _clean(hr_summary["sslln_hr"])
    card = build_card(
        name="sslln_hr", architecture=stored_architecture(hr_summary), data=("phantom_hr",),
        training={"script": "bench/gpu/train_on_device.py", "device": hr_summary["device"], "epochs": hr["epochs"],
                  "seconds": hr["seconds"], "log": f"{a.hr_run.name}/log_hr.csv",
                  "schedule": "Adam, batch 8, cosine from 3e-4, weight decay 5e-5, alpha 0.8",
                  "augmentation": AUGMENT, "n_train_volumes": hr["train_volumes"],
                  "train_data": "60 HR phantoms x ED/ES (seeds 10000-10059)"},
        validation={"dice_working_grid_mean_hr_phantoms_19000_19009": {k: v for k, v in hr["final"].items()
                                                                       if k.startswith("val_")}},
    )
    card["initialised_from"] = {"weights": "sslln_lr after run 1 (see sslln_lr.json)", "name": "sslln_lr"}
    card["licence"] = ("CC BY-NC-SA 4.0, inherited from the ACDC data through its initialisation (fine-tuned from "
                       "weights trained on ACDC): non-commercial use only, with attribution, share-alike. Cite: "
                       + ACDC_CITATION)
    (a.weights_dir / "sslln_hr.json").write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
