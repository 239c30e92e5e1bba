"""SSLLN-LR's generalisation gap on ACDC: Dice on patients it was trained on against held-out ones.

For 20 training patients (every 4th of the 80 not held out, so all five groups) and the 20 validation
patients, ED and ES, the network segments the working grid; Dice per structure is pooled over
(a) the working slice nearest each acquired slice's centre (:func:`ssll.refine.acquired_slices`, the
slices the refinement reads: the image there is one acquired slice and the expert label exact) and (b) the working slices between two acquired
slices (at least 0.3 of a spacing from both: the image there is a blend of two slices, the
nearest-neighbour label a staircase). A large train-minus-validation gap at (a) means the network
fits patients it has seen far better than new ones (more data or stronger augmentation helps); a
small one with low Dice means it lacks capacity.

Run:  python bench/sslln_generalisation.py --weights ssll/weights/sslln_lr.pt --out bench/results/sslln_generalisation.json
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

from ssll.io import load_image, load_labels
from ssll.labels import Label
from ssll.nn.data import acdc_cases
from ssll.nn.infer import load_model, predict
from ssll.preprocess import GridRecord, labels_to_working, preprocess_volume
from ssll.refine import acquired_slices

STRUCTS = (Label.LV_CAVITY, Label.LV_WALL, Label.RV_CAVITY)


def slice_position(record: GridRecord) -> np.ndarray:
    """Distance (in input slice spacings, 0-0.5) of each working slice from the nearest acquired slice centre."""
    t = np.linalg.inv(record.input_affine) @ record.working_affine
    i, j = (np.asarray(record.working_shape[:2]) - 1) / 2
    u = t[2, 2] * np.arange(record.working_shape[2]) + t[2, 0] * i + t[2, 1] * j + t[2, 3]
    return np.abs(u - np.round(u))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="ssll/weights/sslln_lr.pt")
    ap.add_argument("--data", default="../shared/data/acdc/training")
    ap.add_argument("--config", default="config/train_lr.yaml", help="for the validation patient list")
    ap.add_argument("--out", default="bench/results/sslln_generalisation.json")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(a.threads)
    val = set(yaml.safe_load(Path(a.config).read_text())["validation_patients"])
    cases = acdc_cases(a.data)
    train_patients = sorted({c["patient"] for c in cases if c["patient"] not in val})[::4]
    model = load_model(a.weights)
    # counts[set][position][struct] = (overlap, predicted, expert) voxels
    counts = {s: {p: np.zeros((len(STRUCTS), 3)) for p in ("centre", "between")} for s in ("train", "validation")}
    per_volume = []
    for c in cases:
        group = "validation" if c["patient"] in val else ("train" if c["patient"] in train_patients else None)
        if group is None:
            continue
        work, rec = preprocess_volume(load_image(c["image"]))
        truth = labels_to_working(load_labels(c["labels"], "acdc").array, rec)
        lab = predict(model, work.array[None])[0][0]
        row = {"patient": c["patient"], "phase": c["phase"], "set": group}
        for pos, ks in (("centre", acquired_slices(rec)), ("between", slice_position(rec) > 0.3)):
            p, t = lab[:, :, ks], truth[:, :, ks]
            for n, s in enumerate(STRUCTS):
                ov, np_, nt = float(((p == s) & (t == s)).sum()), float((p == s).sum()), float((t == s).sum())
                counts[group][pos][n] += (ov, np_, nt)
                row[f"dice_{pos}_{s.name.lower()}"] = 2 * ov / (np_ + nt) if np_ + nt else None
        per_volume.append(row)
        print(row, flush=True)
    pooled = {g: {pos: {s.name.lower(): round(2 * c[n, 0] / (c[n, 1] + c[n, 2]), 4) for n, s in enumerate(STRUCTS)}
                  for pos, c in cs.items()} for g, cs in counts.items()}
    summary = {"weights": a.weights, "train_patients": train_patients, "validation_patients": sorted(val),
               "phases": ["ED", "ES"], "dice_pooled": pooled,
               "gap_train_minus_validation_at_centres": {s.name.lower(): round(
                   pooled["train"]["centre"][s.name.lower()] - pooled["validation"]["centre"][s.name.lower()], 4)
                   for s in STRUCTS},
               "per_volume": per_volume}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "per_volume"}, indent=1))


if __name__ == "__main__":
    main()
