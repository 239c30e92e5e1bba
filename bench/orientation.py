"""Does SSLLN-LR depend on how the heart lies in the voxel grid, and does ``ssll segment``'s
orientation search (``ssll.nn.orientation``) undo it?

ACDC's NIfTI files (the training data) store every heart the same way round; a DICOM study read as
``[column, row, slice]`` (Sunnybrook, UK Biobank) need not. Each input is presented in the sixteen
orientations of the working grid (four quarter turns, each also with the in-plane axes transposed, each
with the slice order kept or reversed), and for each the bench records

* the Dice of the network's labels (raw arg-max, inside the input's field of view, turned back onto the
  stored grid) against the expert: the 20 held-out ACDC patients (config/train_lr.yaml) at ED and ES on
  the working grid; the Sunnybrook cine (SCD0000101) on its own grid, on the slices the expert
  contoured (LV cavity at frames 7 and 18, LV wall at frame 18: its contours are LV only);
* the score the search ranks by (:func:`ssll.nn.orientation.orientation_scores`).

Then :func:`ssll.nn.orientation.choose_orientation` is scored for several margins, first with each
input as stored and then as if it had been stored in each of the sixteen orientations (the table gives
every candidate for every stored orientation, so nothing is recomputed).

Run:  python bench/orientation.py --out bench/results/orientation   (about 25 min on 2 cores)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from held_out import held_out_parser, start
from sunnybrook_geometry import _contour_to_voxels, _mask

from ssll.evaluate import dice
from ssll.ingest import dicom_layout, frame, read_dicom_cine
from ssll.io import load_image, load_labels
from ssll.nn.data import held_out_cases
from ssll.nn.infer import finish_segmentation, predict_oriented
from ssll.nn.orientation import ORIENTATIONS, choose_orientation, orientation_scores
from ssll.preprocess import input_fov_mask, labels_to_working, preprocess_volume

STRUCTS = ["lv_cavity", "lv_wall", "rv_cavity"]
MARGINS = [0.0, 0.01, 0.03, 0.05]


def sixteen(model, image: np.ndarray, fov: np.ndarray):
    """Per orientation: the search's score, and the network's outputs turned back onto the stored grid."""
    scores = orientation_scores(model, image, fov)
    outs = predict_oriented(model, [image] * len(ORIENTATIONS), list(ORIENTATIONS))
    return scores, outs


def sunnybrook_truth(dicom: Path, contours: Path, affine: np.ndarray, shape: tuple[int, int]) -> dict:
    """Expert masks on the input grid: ``{frame: {slice: {"endo": mask, "epi": mask or None}}}``."""
    layout, _ = dicom_layout(dicom)
    where = {p.name: (k, t) for k, row in enumerate(layout) for t, p in enumerate(row)}
    truth: dict[int, dict[int, dict]] = {}
    for kind, key in (("i", "endo"), ("o", "epi")):
        for f in sorted((contours / f"{kind}-contours").glob("*.txt")):
            dcm = dicom / f"{int(f.name.split('-')[2])}.dcm"
            k, t = where[dcm.name]
            vox = _contour_to_voxels(np.loadtxt(f), dcm, affine)
            truth.setdefault(t, {}).setdefault(k, {"endo": None, "epi": None})[key] = _mask(vox[:, :2], shape)
    return truth


def choices(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """For each volume, each margin, and each orientation ``s`` it might have been stored in: the
    orientation chosen and its Dice. Stored as ``s``, the sixteen candidates of the search are the same
    sixteen presentations with the same scores; only which of them counts as "stored" changes (``s``)."""
    rows = []
    names = [o.name for o in ORIENTATIONS]
    dice_cols = [c for c in df.columns if c.startswith("dice_")]
    for vol_key, g in df.groupby(keys, sort=False):
        g = g.set_index("orientation").loc[names]
        scores = g["score"].to_numpy()
        for margin in MARGINS:
            for s in range(len(names)):
                perm = [s] + [c for c in range(len(names)) if c != s]  # position 0: the stored one
                chosen = perm[ORIENTATIONS.index(choose_orientation(scores[perm], margin=margin))]
                rows.append({**dict(zip(keys, vol_key)), "margin": margin, "stored_as": names[s],
                             "chosen": names[chosen], **{c: g[c].iloc[chosen] for c in dice_cols}})
    return pd.DataFrame(rows)


def main() -> None:
    ap = held_out_parser(__doc__, "bench/results/orientation")
    ap.add_argument("--sunnybrook", default="../shared/data/sunnybrook/dicoms/SCD0000101")
    ap.add_argument("--contours", default="../shared/data/sunnybrook/contourfiles/SC-HF-I-1")
    ap.add_argument("--phases", nargs="+", default=["ED", "ES"], choices=["ED", "ES"])
    a = ap.parse_args()
    out, model = start(a)
    rows = []
    for c in held_out_cases(a.data, a.config, phases=a.phases):
        work, rec = preprocess_volume(load_image(c["image"]))
        fov = input_fov_mask(rec)
        truth = labels_to_working(load_labels(c["labels"], "acdc").array, rec)
        scores, outs = sixteen(model, work.array, fov)
        for o, score, (labels, *_) in zip(ORIENTATIONS, scores, outs):
            r = {"set": "acdc", "case": c["patient"], "phase": c["phase"], "orientation": o.name, "score": score}
            for k, s in enumerate(STRUCTS, 1):
                r[f"dice_{s}"] = dice((labels == k) & fov, (truth == k) & fov)
            rows.append(r)
        print(c["patient"], c["phase"], flush=True)
    cine = read_dicom_cine(a.sunnybrook)
    expert = sunnybrook_truth(Path(a.sunnybrook), Path(a.contours), cine.affine, cine.array.shape[:2])
    for t in sorted(expert):
        work, rec = preprocess_volume(frame(cine, t))
        fov = input_fov_mask(rec)
        scores, outs = sixteen(model, work.array, fov)
        ml = float(np.prod(work.spacing)) / 1000
        for o, score, (labels, lmap, _, prob) in zip(ORIENTATIONS, scores, outs):
            orig = finish_segmentation(labels, lmap, prob, rec).original  # (256, 256, 12) on the DICOM grid
            slices = sorted(expert[t])
            r = {"set": "sunnybrook", "case": "SCD0000101", "phase": f"frame{t}", "orientation": o.name,
                 "score": score, "ml_rv_cavity_working": float((labels == 3).sum()) * ml,
                 "dice_lv_cavity": dice(np.stack([orig[:, :, k] == 1 for k in slices]),
                                        np.stack([expert[t][k]["endo"] for k in slices]))}
            walls = [k for k in slices if expert[t][k]["epi"] is not None]
            if walls:
                r["dice_lv_wall"] = dice(np.stack([orig[:, :, k] == 2 for k in walls]),
                                         np.stack([expert[t][k]["epi"] & ~expert[t][k]["endo"] for k in walls]))
            rows.append(r)
        print("SCD0000101 frame", t, flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "per_volume.csv", index=False, float_format="%.4f")
    acdc, sb = df[df["set"] == "acdc"], df[df["set"] == "sunnybrook"]
    ch_acdc = choices(acdc, ["case", "phase"])
    ch_sb = choices(sb.dropna(axis=1, how="all"), ["case", "phase"])
    pd.concat([ch_acdc.assign(set="acdc"), ch_sb.assign(set="sunnybrook")]).to_csv(
        out / "choices.csv", index=False, float_format="%.4f")

    def records(d: pd.DataFrame) -> list[dict]:
        return d.round(3).astype(object).where(d.notna(), None).to_dict(orient="records")

    def mean(d: pd.DataFrame, cols: list[str]) -> dict[str, float]:
        return {c: round(float(d[c].mean()), 3) for c in cols}

    acols, scols = [f"dice_{s}" for s in STRUCTS], ["dice_lv_cavity", "dice_lv_wall"]
    summary = {
        "weights": a.weights,
        "acdc_volumes": int(len(acdc) / 16),
        "acdc_mean_dice_by_orientation": {o: mean(g, acols) for o, g in acdc.groupby("orientation", sort=False)},
        "acdc_search_as_stored": {
            str(m): {**mean(g[g["stored_as"] == "rot0"], acols),
                     "volumes_turned": int((g[g["stored_as"] == "rot0"]["chosen"] != "rot0").sum())}
            for m, g in ch_acdc.groupby("margin")},
        "acdc_search_over_all_16_stored_orientations": {
            str(m): {"mean": mean(g, acols),
                     "worst_stored_orientation": mean(g[g["stored_as"] == g.groupby("stored_as")["dice_rv_cavity"]
                                                       .mean().idxmin()], acols),
                     "volumes_not_back_to_acdc_orientation": int((g["chosen"] != "rot0").sum()),
                     "of": len(g)}
            for m, g in ch_acdc.groupby("margin")},
        "sunnybrook_by_orientation": records(sb[["phase", "orientation", "score", "ml_rv_cavity_working", *scols]]),
        "sunnybrook_search_as_stored": records(ch_sb[ch_sb["stored_as"] == "rot0"][["phase", "margin", "chosen", *scols]]),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if not k.startswith("sunnybrook_by")}, indent=2))


if __name__ == "__main__":
    main()
