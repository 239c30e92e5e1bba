"""Which frames are ED and ES on the one real cine (Sunnybrook SCD0000101), by each rule we have?

Every frame of the cine is segmented as ``ssll segment`` does by default (orientation searched, labels on
the DICOM grid: :func:`ssll.nn.infer.segment_volume`), and its LV and RV cavity
volumes (ml) measured on that grid (:func:`ssll.measures.phase_measures`). Compared:

* the expert's frames: those with contours (SCD0000101: ED 18, ES 7, 0-based; read as
  ``bench/orientation.py`` reads them);
* ``ssll ingest``'s default: ED = frame 0, ES = the frame that differs most from it in intensity
  (:func:`ssll.ingest.choose_phases`);
* the network's volume curve: ED = largest LV cavity, ES = smallest (:func:`ssll.ingest.es_from_lv_volumes`);
  and the EF each pair gives.

Then the same cine through ``ssll cycle``'s :func:`ssll.nn.cycle.volume_curve` (the orientation searched on the first
frame only and used for every frame): its curve against the per-frame one above, the time of each, and its plot
(``sunnybrook_cycle.png`` beside the results file).

Run:  python bench/sunnybrook_phases.py --out bench/results/sunnybrook_phases.json   (about 4 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ssll.ingest import choose_phases, es_from_lv_volumes, frame, read_dicom_cine
from ssll.measures import phase_measures
from ssll.nn.cycle import plot_curve, volume_curve
from ssll.nn.infer import load_model, segment_volume
from ssll.preprocess import preprocess_volume

sys.path.insert(0, str(Path(__file__).resolve().parent))
from orientation import sunnybrook_truth  # noqa: E402  (bench/orientation.py: the expert's contours per frame)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sunnybrook", default="../shared/data/sunnybrook/dicoms/SCD0000101")
    ap.add_argument("--contours", default="../shared/data/sunnybrook/contourfiles/SC-HF-I-1")
    ap.add_argument("--weights", default="ssll/weights/sslln_lr.pt")
    ap.add_argument("--out", default="bench/results/sunnybrook_phases.json")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    model = load_model(a.weights)
    cine = read_dicom_cine(a.sunnybrook)
    spacing = cine.spacing
    n = cine.array.shape[3]
    rows = []
    for t in range(n):
        vol = frame(cine, t)
        work, rec = preprocess_volume(vol)
        res = segment_volume(model, work.array, rec)
        m = phase_measures(res.segmentation.original, spacing)
        rows.append({"frame": t, "orientation": res.orientation["orientation"], "lv_cavity_ml": round(float(m["lv_cavity_ml"]), 1),
                     "rv_cavity_ml": round(float(m["rv_cavity_ml"]), 1)})
        print(rows[-1], flush=True)
    lv = np.array([r["lv_cavity_ml"] for r in rows])

    def ef(ed: int, es: int) -> float:
        return round(float(100.0 * (lv[ed] - lv[es]) / lv[ed]), 1)

    expert = sorted(sunnybrook_truth(Path(a.sunnybrook), Path(a.contours), cine.affine, cine.array.shape[:2]))
    default = choose_phases(cine.array)
    curve_ed, curve_es = int(np.argmax(lv)), es_from_lv_volumes(lv)
    exp_ed, exp_es = max(expert, key=lambda f: lv[f]), min(expert, key=lambda f: lv[f])  # of the contoured two
    summary = {
        "study": "Sunnybrook SCD0000101 (heart failure), 20 frames",
        "weights": a.weights,
        "per_frame": rows,
        "expert_contoured_frames": expert,
        "rules": {
            "ingest_default": {"ed": default.ed, "es": default.es, "lv_ef_pct": ef(default.ed, default.es)},
            "network_volume_curve": {"ed": curve_ed, "es": curve_es, "lv_ef_pct": ef(curve_ed, curve_es)},
            "expert_frames": ({"ed": exp_ed, "es": exp_es, "lv_ef_pct": ef(exp_ed, exp_es)} if len(expert) == 2 else None),
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
    t1 = time.perf_counter()
    cycle = volume_curve(model, cine)
    summary["ssll_cycle"] = {
        "orientation": cycle.orientation["orientation"], "ed": cycle.ed_frame, "es": cycle.es_frame,
        "lv_ef_pct": cycle.summary()["lv_ef_pct"],
        "max_abs_difference_from_per_frame_search_ml": {
            k: round(float(max(abs(r[k] - round(c[k], 1)) for r, c in zip(rows, cycle.frames))), 3)
            for k in ("lv_cavity_ml", "rv_cavity_ml")},
        "seconds": round(time.perf_counter() - t1, 1),
    }
    plot_curve(cycle, Path(a.out).with_name("sunnybrook_cycle.png"), title="Sunnybrook SCD0000101: ssll cycle")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary["rules"], indent=1), summary["expert_contoured_frames"])


if __name__ == "__main__":
    main()
