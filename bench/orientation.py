"""Does SSLLN-LR depend on how the short-axis slices lie in the voxel grid?

ACDC's NIfTI files (the training data) put every heart the same way round in the voxel grid; a DICOM
study read as ``[column, row, slice]`` (Sunnybrook, UK Biobank) need not. This presents each input in
the eight in-plane orientations of the working grid (four quarter turns, each also mirrored by swapping
the in-plane axes), maps the network's labels and probabilities back, and scores them:

* the 20 held-out ACDC patients (config/train_lr.yaml) at ED (``--phases``): Dice against the expert labels on
  the working grid (raw arg-max, no post-processing, inside the input's field of view), and the
  network's expected Dice (:func:`ssll.nn.confidence.expected_dice`);
* the Sunnybrook DICOM cine (SCD0000101, frames 0 and 7): expected Dice and volumes only (its expert
  contours are LV only).

A label-free choice is scored too: of the eight, the orientation whose mean expected Dice over LV
cavity, LV wall and RV cavity is highest. The eight presentations of an input are the same set
whichever way round it came, so that choice gives the same answer for every input orientation.

Run:  python bench/orientation.py --out bench/results/orientation   (about 10 min on 2 cores: 3 s per
      volume and orientation)
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from ssll.evaluate import dice
from ssll.ingest import frame, read_dicom_cine
from ssll.io import load_image, load_labels
from ssll.nn.confidence import expected_dice
from ssll.nn.data import acdc_cases
from ssll.nn.infer import load_model, predict
from ssll.preprocess import input_fov_mask, labels_to_working, preprocess_volume

STRUCTS = ["lv_cavity", "lv_wall", "rv_cavity"]
ORIENTS = [(m, r) for m in (False, True) for r in range(4)]


def name(m: bool, r: int) -> str:
    return f"{'mirror+' if m else ''}rot{90 * r}"


def forward(a: np.ndarray, m: bool, r: int) -> np.ndarray:
    """In-plane orientation ``(m, r)`` of ``a`` (axes 0, 1 in-plane): swap them if ``m``, then ``r`` quarter turns."""
    a = np.swapaxes(a, 0, 1) if m else a
    return np.rot90(a, r, axes=(0, 1))


def backward(a: np.ndarray, m: bool, r: int) -> np.ndarray:
    a = np.rot90(a, -r, axes=(0, 1))
    return np.swapaxes(a, 0, 1) if m else a


def eight(model, image: np.ndarray, fov: np.ndarray) -> list[dict]:
    """Labels and expected Dice of each orientation, back on the input's own grid."""
    imgs = np.stack([np.ascontiguousarray(forward(image, m, r)) for m, r in ORIENTS])
    lab, _, _, prob = predict(model, imgs, return_prob=True)
    out = []
    for i, (m, r) in enumerate(ORIENTS):
        lab_i = backward(lab[i], m, r)
        prob_i = np.moveaxis(backward(np.moveaxis(prob[i].astype(np.float32), 0, -1), m, r), -1, 0)
        out.append({"orientation": name(m, r), "labels": lab_i,
                    "expected": expected_dice(prob_i, lab_i, fov)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="ssll/weights/sslln_lr.pt")
    ap.add_argument("--data", default="../shared/data/acdc/training")
    ap.add_argument("--sunnybrook", default="../shared/data/sunnybrook/dicoms/SCD0000101")
    ap.add_argument("--config", default="config/train_lr.yaml")
    ap.add_argument("--phases", nargs="+", default=["ED"], choices=["ED", "ES"])
    ap.add_argument("--out", default="bench/results/orientation")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(a.weights)
    val = set(yaml.safe_load(Path(a.config).read_text())["validation_patients"])
    rows = []
    for c in acdc_cases(a.data):
        if c["patient"] not in val or c["phase"] not in a.phases:
            continue
        work, rec = preprocess_volume(load_image(c["image"]))
        fov = input_fov_mask(rec)
        truth = labels_to_working(load_labels(c["labels"], "acdc").array, rec)
        for o in eight(model, work.array.astype(np.float32), fov):
            r = {"set": "acdc", "case": c["patient"], "phase": c["phase"], "orientation": o["orientation"]}
            for k, s in enumerate(STRUCTS, 1):
                r[f"dice_{s}"] = dice((o["labels"] == k) & fov, (truth == k) & fov)
                r[f"expected_{s}"] = o["expected"][s]
            rows.append(r)
        print(c["patient"], c["phase"], flush=True)
    cine = read_dicom_cine(a.sunnybrook)
    for t in (0, 7):
        work, rec = preprocess_volume(frame(cine, t))
        fov = input_fov_mask(rec)
        ml = float(np.prod(np.linalg.norm(work.affine[:3, :3], axis=0))) / 1000
        for o in eight(model, work.array.astype(np.float32), fov):
            r = {"set": "sunnybrook", "case": "SCD0000101", "phase": f"frame{t}", "orientation": o["orientation"]}
            for k, s in enumerate(STRUCTS, 1):
                r[f"ml_{s}"] = float((o["labels"] == k).sum()) * ml
                r[f"expected_{s}"] = o["expected"][s]
            rows.append(r)
    df = pd.DataFrame(rows)
    df["expected_mean"] = df[[f"expected_{s}" for s in STRUCTS]].mean(axis=1)
    df.to_csv(out / "per_volume.csv", index=False, float_format="%.4f")
    acdc = df[df["set"] == "acdc"]
    by_orient = acdc.groupby("orientation", sort=False)[[f"dice_{s}" for s in STRUCTS]].mean().round(3)
    vols = acdc.groupby(["case", "phase"], sort=False)
    chosen = acdc.loc[vols["expected_mean"].idxmax()]
    native = acdc[acdc["orientation"] == "rot0"]
    worst = acdc.loc[vols["dice_rv_cavity"].idxmin()]
    summary = {
        "weights": a.weights,
        "acdc_volumes": len(native),
        "acdc_mean_dice_by_orientation": by_orient.to_dict(orient="index"),
        "acdc_native_rot0": {s: round(float(native[f"dice_{s}"].mean()), 3) for s in STRUCTS},
        "acdc_worst_orientation_per_volume_by_rv_cavity": {s: round(float(worst[f"dice_{s}"].mean()), 3)
                                                           for s in STRUCTS},
        "acdc_chosen_by_expected_dice": {s: round(float(chosen[f"dice_{s}"].mean()), 3) for s in STRUCTS},
        "acdc_chosen_orientations": chosen["orientation"].value_counts().to_dict(),
        "sunnybrook": df[df["set"] == "sunnybrook"][["phase", "orientation", "expected_mean"]
                                                      + [f"ml_{s}" for s in STRUCTS]
                                                      + [f"expected_{s}" for s in STRUCTS]]
        .round(3).to_dict(orient="records"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "sunnybrook"}, indent=2))


if __name__ == "__main__":
    main()
