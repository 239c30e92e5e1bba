"""Could ``ssll segment`` skip the orientation search when the stored orientation already scores high?

A shortcut a CPU-bound cohort would want: accept the volume as stored, without the sixteen forward passes,
whenever its own mean expected Dice (the search's score) reaches a line T. This reads what
``bench/orientation.py`` measured (``bench/results/orientation/per_volume.csv``: the 40 held-out ACDC
volumes, each presented in all sixteen orientations, with the score and the true Dice of each) and asks,
for each line T and each of the 640 presentations taken as the way a study might be stored: is it accepted,
and if so how much mean Dice (LV cavity, LV wall, RV cavity) does it lose against the volume's best
presentation? The search itself, at its default margin, is in ``choices.csv``.

Run:  python bench/orientation_shortcut.py   (seconds; writes bench/results/orientation/shortcut.json)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

LINES = (0.70, 0.75, 0.80, 0.82, 0.85, 0.88)
DICE = ["dice_lv_cavity", "dice_lv_wall", "dice_rv_cavity"]


def shortcut_table(per_volume: pd.DataFrame, lines: tuple[float, ...] = LINES) -> list[dict]:
    """Per line T: presentations accepted as stored (score >= T), how many of them are ACDC's own way round
    (``rot0``, the right one) and how many are another, and the mean Dice lost by accepting (mean, max)."""
    a = per_volume[per_volume["set"] == "acdc"].copy()
    a["mean_dice"] = a[DICE].mean(axis=1)
    a["loss"] = a.groupby(["case", "phase"])["mean_dice"].transform("max") - a["mean_dice"]
    rows = []
    for t in lines:
        acc = a[a["score"] >= t]
        wrong = acc[acc["orientation"] != "rot0"]
        rows.append({"line": t, "presentations": len(a), "accepted": len(acc),
                     "accepted_as_acdc_stores_them": int((acc["orientation"] == "rot0").sum()),
                     "of_acdc_stored": int((a["orientation"] == "rot0").sum()),
                     "accepted_turned_or_mirrored": len(wrong),
                     "mean_dice_lost_mean": round(float(acc["loss"].mean()), 4) if len(acc) else None,
                     "mean_dice_lost_max": round(float(acc["loss"].max()), 4) if len(acc) else None,
                     "accepted_turned_losing_over_0.05": int((wrong["loss"] > 0.05).sum())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-volume", default="bench/results/orientation/per_volume.csv")
    ap.add_argument("--out", default="bench/results/orientation/shortcut.json")
    a = ap.parse_args()
    table = shortcut_table(pd.read_csv(a.per_volume))
    Path(a.out).write_text(json.dumps({"source": a.per_volume, "by_line": table}, indent=1) + "\n")
    print(pd.DataFrame(table).to_string(index=False))


if __name__ == "__main__":
    main()
