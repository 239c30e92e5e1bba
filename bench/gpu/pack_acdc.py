"""Pack the ACDC training set compactly for a GPU machine that has no copy of it.

The working-grid volume of an ACDC stack (10 mm slices on a 2 mm grid) is, along the slice axis,
a linear interpolation of the acquired slices. So each volume is stored as its acquired slices
resampled in-plane onto the working grid (``g``: intensities scaled by the volume's 1st-99th
percentile range, quantised to uint8 over [-0.5, 2]) plus the slice-axis map (for every working
slice the continuous acquired-slice coordinate); the device rebuilds the working volume exactly as
:func:`ssll.preprocess.preprocess_volume` does (linear along the slice axis, nearest for labels,
clip to [0, 1]). The in-plane grid is kept to a 160x160 window around the heart. Landmarks come from
the expert labels by the current rules (:func:`ssll.landmarks.landmarks_from_labels`).

Every volume is rebuilt here and compared with ``preprocess_volume``; the worst errors are printed
and stored in the pack (``check_*``).

Run:  python bench/gpu/pack_acdc.py --acdc ../shared/data/acdc/training --out .device/acdc_pack.npz
"""

from __future__ import annotations

import argparse
import lzma
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ssll.io import load_image, load_labels
from ssll.labels import Label
from ssll.landmarks import landmarks_from_labels
from ssll.nn.data import acdc_cases
from ssll.preprocess import labels_to_working, preprocess_volume, resample

sys.path.insert(0, str(Path(__file__).parent))
from train_on_device import WINDOW, rebuild, window_of

LO_Q, HI_Q = -0.5, 2.0


def pack_case(case: dict) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vol = load_image(case["image"])
        lab = load_labels(case["labels"], "acdc")
    work, rec = preprocess_volume(vol)
    seg = labels_to_working(lab.array, rec)
    pts = landmarks_from_labels(seg, rec.working_affine, what=str(case["labels"]))
    t = np.linalg.inv(rec.input_affine) @ rec.working_affine
    off = np.abs(t[:3, :3] - np.diag(np.diag(t[:3, :3])))
    if off.max() > 1e-6:
        raise ValueError(f"{case['patient']}: working grid not axis-aligned with the input ({off.max()})")
    n = rec.input_shape[2]
    # grid G: working in-plane positions, acquired slice positions
    m = np.eye(4)
    m[0, 0], m[0, 3] = t[0, 0], t[0, 3]
    m[1, 1], m[1, 3] = t[1, 1], t[1, 3]
    g_aff = rec.input_affine @ m
    shape_g = (rec.working_shape[0], rec.working_shape[1], n)
    lo, hi = rec.intensity_range
    graw = resample(vol.array, rec.input_affine, g_aff, shape_g, order=1, cval=lo)
    g = (graw - lo) / (hi - lo)
    glab = resample(np.asarray(lab.array, np.uint8), rec.input_affine, g_aff, shape_g, order=0)
    u = t[2, 2] * np.arange(rec.working_shape[2]) + t[2, 3]
    i0, j0 = window_of(seg)
    win = (slice(i0, i0 + WINDOW), slice(j0, j0 + WINDOW))
    q = np.round((np.clip(g[win], LO_Q, HI_Q) - LO_Q) / (HI_Q - LO_Q) * 255).astype(np.uint8)
    gq = q.astype(np.float32) / 255 * (HI_Q - LO_Q) + LO_Q
    img_r, lab_r = rebuild(gq, glab[win], u)
    err = np.abs(img_r - work.array[win])
    return {"id": f"{case['patient']}_{case['phase']}", "group": case["group"], "q": q, "glab": glab[win], "u": u,
            "origin": (i0, j0), "points": pts, "affine": rec.working_affine,
            "has_rv_wall": bool((seg == Label.RV_WALL).any()),
            "err_max": float(err.max()), "err_mean": float(err.mean()), "lab_mismatch": int((lab_r != seg[win]).sum()),
            "heart_outside": int((seg > 0).sum() - (seg[win] > 0).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--acdc", default="../shared/data/acdc/training")
    ap.add_argument("--out", default=".device/acdc_pack.npz")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    cases = acdc_cases(a.acdc)
    with ProcessPoolExecutor(a.workers) as ex:
        rows = list(ex.map(pack_case, cases, chunksize=4))
    nmax = max(r["q"].shape[2] for r in rows)
    n = len(rows)
    q = np.zeros((n, WINDOW, WINDOW, nmax), np.uint8)
    glab = np.zeros((n, WINDOW, WINDOW, nmax), np.uint8)
    for i, r in enumerate(rows):
        q[i, :, :, : r["q"].shape[2]] = r["q"]
        glab[i, :, :, : r["q"].shape[2]] = r["glab"]
    arrays = {
        "ids": np.array([r["id"] for r in rows]), "groups": np.array([r["group"] for r in rows]),
        "n_slices": np.array([r["q"].shape[2] for r in rows]), "u": np.stack([r["u"] for r in rows]),
        "origin": np.array([r["origin"] for r in rows]), "points": np.stack([r["points"] for r in rows]),
        "affine": np.stack([r["affine"] for r in rows]), "has_rv_wall": np.array([r["has_rv_wall"] for r in rows]),
        "q_range": np.array([LO_Q, HI_Q]),
        "check_err_max": np.array([r["err_max"] for r in rows]), "check_err_mean": np.array([r["err_mean"] for r in rows]),
        "check_lab_mismatch": np.array([r["lab_mismatch"] for r in rows]),
        "check_heart_outside": np.array([r["heart_outside"] for r in rows]),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out.with_suffix(".meta.npz"), **arrays)
    # the voxel data, xz-compressed (the slice-interleaved uint8 compresses ~2x better than zip's deflate)
    blob = lzma.compress(q.tobytes() + glab.tobytes(), preset=6)
    out.with_suffix(".xz").write_bytes(blob)
    print(f"{n} volumes, up to {nmax} slices, {len(blob) / 2**20:.1f} MiB; rebuild error max "
          f"{arrays['check_err_max'].max():.4f} mean {arrays['check_err_mean'].mean():.5f}; label mismatches "
          f"{arrays['check_lab_mismatch'].sum()}; heart voxels outside window {arrays['check_heart_outside'].sum()}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
