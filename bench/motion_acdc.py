"""Does the image-based breath-hold shift estimate find known shifts on real hearts?

:func:`ssll.refine.breath_hold_shifts` measures each acquired slice's in-plane shift against a stiff
motion-free model made from the phantom atlas bank (``motion: estimate``; ``bench/refinement_motion.py``
scores it on Table III's phantoms). Real hearts differ from the bank's shapes, and real images from the
phantoms', so the question here is whether the estimate still finds real shifts. Real ACDC stacks carry
their own, unknown breath-hold shifts; this bench adds a known random shift to every acquired slice
(``bench/refinement_acdc.py``'s ``with_slice_shifts``: Gaussian, 2 mm sd per axis, seeded per patient and
phase) and measures the shifts of the stack as it is and of the shifted stack. Their difference, slice by
slice, must be the added shift whatever the real ones are: its error (RMS over the slices measured in both,
both centred, mm, in-plane vector) is the estimate's error on real anatomy, beside the RMS of the added
shifts and of the shifts measured on the stack as it is (the real breath-hold shifts as the estimate sees
them).

20 held-out ACDC patients (``config/train_lr.yaml``'s validation patients), ED and ES, the shipped
SSLLN-LR, the bank of ``bench/refinement.py``. Run (~15 min on 2 cores):
    python bench/motion_acdc.py --out bench/results/motion_acdc
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refinement import bench_bank
from refinement_acdc import with_slice_shifts

from ssll.io import load_image
from ssll.nn.data import held_out_cases
from ssll.nn.infer import default_weights, finish_segmentation, landmark_points, load_model, predict
from ssll.preprocess import preprocess_volume
from ssll.refine import RefineConfig, acquired_slices, breath_hold_shifts
from ssll.types import voxel_size


def main(a: argparse.Namespace) -> None:
    warnings.simplefilter("ignore")
    out, bank_dir, bank = bench_bank(a)
    model = load_model(a.weights_lr or default_weights("sslln_lr"))
    cfg = RefineConfig()
    cases = held_out_cases(a.data, a.config, phases=a.phases)[: a.limit or None]

    def measure(img) -> tuple[dict[int, np.ndarray], np.ndarray, object]:
        work, rec = preprocess_volume(img)
        lab, lmap, _c, prob = predict(model, work.array[None], return_prob=True)
        seg = finish_segmentation(lab[0], lmap[0], prob[0], rec)
        pts = landmark_points(lmap[0], rec, fov=seg.fov)
        _img, info = breath_hold_shifts(work.array, seg.labels, rec.working_affine, pts, bank, rec, cfg)
        ks = acquired_slices(rec)
        ss = info["slice_shifts_mm"] or {"slices": [], "shifts": []}
        # input slice index -> shift (mm, working axes 0 and 1)
        return {int(np.searchsorted(ks, k)): np.asarray(s) for k, s in zip(ss["slices"], ss["shifts"])}, ks, rec

    rows = []
    for c in cases:
        img = load_image(c["image"])
        base, ks, rec = measure(img)
        shifted, added = with_slice_shifts(img, a.add_shift_mm, int(c["patient"].removeprefix("patient")), c["phase"])
        moved, ks2, rec2 = measure(shifted)
        # the working grid keeps the input's in-plane axes (checked): the added shifts are along the same axes
        cols_in = np.asarray(rec.input_affine)[:3, :2] / voxel_size(rec.input_affine)[:2]
        cols_w = np.asarray(rec.working_affine)[:3, :2] / voxel_size(rec.working_affine)[:2]
        if not np.allclose(cols_in, cols_w, atol=1e-6) or len(ks) != img.array.shape[2] or list(ks) != list(ks2):
            print(c["patient"], c["phase"], "skipped: working axes or slices differ from the input's", flush=True)
            continue
        both = sorted(set(base) & set(moved))
        if len(both) < 2:
            continue
        diff = np.array([moved[j] - base[j] for j in both])
        truth = -added[both]  # a slice shifted by +s shows the stack as it was at v - s
        diff -= diff.mean(0)
        truth -= truth.mean(0)
        real = np.array([base[j] for j in both])
        rows.append({"patient": c["patient"], "group": c["group"], "phase": c["phase"], "slices": len(ks),
                     "slices_measured_both": len(both),
                     "added_rms_mm": float(np.sqrt((truth ** 2).sum(1).mean())),
                     "error_rms_mm": float(np.sqrt(((diff - truth) ** 2).sum(1).mean())),
                     "measured_real_rms_mm": float(np.sqrt(((real - real.mean(0)) ** 2).sum(1).mean())),
                     "correlation": float(np.corrcoef(diff.ravel(), truth.ravel())[0, 1])})
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "per_volume.csv", index=False, float_format="%.4f")
    num = [c for c in df.columns if c not in ("patient", "group", "phase")]
    summary = {"added_shift_sd_mm": a.add_shift_mm, "n_volumes": len(df), "motion_config": vars(cfg.motion),
               "atlas_bank": f"{bank_dir} ({len(bank)} atlases)",
               "mean": {ph: {c: round(float(g[c].mean()), 3) for c in num} for ph, g in df.groupby("phase")},
               "median_error_rms_mm": {ph: round(float(g.error_rms_mm.median()), 3) for ph, g in df.groupby("phase")}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/acdc/training")
    ap.add_argument("--config", default="config/train_lr.yaml", help="for the validation patient list")
    ap.add_argument("--weights-lr", default=None)
    ap.add_argument("--work", default="resources/bench/refinement", help="bench/refinement.py's work folder (its bank)")
    ap.add_argument("--phases", nargs="+", default=["ED", "ES"], choices=["ED", "ES"])
    ap.add_argument("--add-shift-mm", type=float, default=2.0, help="sd (mm, per axis) of the added shifts")
    ap.add_argument("--limit", type=int, default=0, help="only the first N volumes")
    ap.add_argument("--out", default="bench/results/motion_acdc")
    main(ap.parse_args())
