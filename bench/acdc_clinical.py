"""Clinical measures on the 20 held-out ACDC patients against the expert labels, with QC flags.

For each validation patient (config/train_lr.yaml), ED and ES, as the workflow does it: preprocess,
shipped SSLLN-LR (labels on the input grid, landmarks), then LVEDV, LVESV, LVEF, LV mass and
RVEDV from the network's labels and from the expert labels (both on the input grid, canonical
labels, 1.05 g/ml); agreement as mean difference +- sd, 95% limits and Pearson r; the automatic
QC flags (``ssll.qc.qc_flags``, the checks that need no refinement, the network's expected Dice included) that
fired and why.

Run:  python bench/acdc_clinical.py --out bench/results/acdc_clinical
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402
from held_out import held_out_parser, start  # noqa: E402

from ssll.io import load_image, load_labels  # noqa: E402
from ssll.measures import cardiac_measures, phase_measures  # noqa: E402
from ssll.nn.confidence import expected_dice  # noqa: E402
from ssll.nn.data import held_out_cases  # noqa: E402
from ssll.nn.infer import finish_segmentation, landmark_points, predict  # noqa: E402
from ssll.preprocess import preprocess_volume  # noqa: E402
from ssll.qc import qc_flags  # noqa: E402
from ssll.report import _agreement_plots, measure_agreement  # noqa: E402

COLS = ["ed_lv_cavity_ml", "es_lv_cavity_ml", "lv_ef_pct", "ed_lv_mass_g", "ed_rv_cavity_ml"]


def main() -> None:
    ap = held_out_parser(__doc__, "bench/results/acdc_clinical")
    a = ap.parse_args()
    out, model = start(a)
    auto_rows, gt_rows, flag_rows = [], [], []
    by_patient: dict[str, dict] = {}
    for c in held_out_cases(a.data, a.config):
        by_patient.setdefault(c["patient"], {})[c["phase"]] = c
    for patient, phases in sorted(by_patient.items()):
        auto_ph, gt_ph, segs, lms, scores = {}, {}, {}, {}, {}
        for ph, c in phases.items():
            img = load_image(c["image"])
            gt = load_labels(c["labels"], "acdc")
            work, rec = preprocess_volume(img)
            lab, lmap, _, prob = predict(model, work.array[None], return_prob=True)
            seg = finish_segmentation(lab[0], lmap[0], prob[0], rec)
            scores[ph] = expected_dice(prob[0], seg.labels, seg.fov)
            auto_ph[ph] = phase_measures(seg.original, gt.spacing)
            gt_ph[ph] = phase_measures(gt.array, gt.spacing)
            segs[ph] = seg.labels
            lms[ph] = landmark_points(lmap[0], rec, fov=seg.fov)
        auto = {"patient": patient, "group": phases["ED"]["group"], **cardiac_measures(auto_ph["ED"], auto_ph["ES"])}
        truth = {"patient": patient, **cardiac_measures(gt_ph["ED"], gt_ph["ES"])}
        auto_rows.append(auto)
        gt_rows.append(truth)
        for f in qc_flags(segmentations=segs, refined=None, landmarks_mm=lms, measures=auto, expected_dice=scores):
            flag_rows.append({"patient": patient, **f})
        print(patient, {k: round(auto[k], 1) for k in COLS}, "truth", {k: round(truth[k], 1) for k in COLS}, flush=True)
    auto_df, gt_df = pd.DataFrame(auto_rows), pd.DataFrame(gt_rows)
    merged = auto_df.merge(gt_df, on="patient", suffixes=("", "_expert"))
    merged.to_csv(out / "per_patient.csv", index=False, float_format="%.2f")
    flags = pd.DataFrame(flag_rows, columns=["patient", "flag", "phase", "reason"])
    flags.to_csv(out / "qc_flags.csv", index=False)
    summary = {"n_patients": len(merged), "weights": a.weights,
               "agreement_auto_minus_expert": {c: {k: round(v, 3) for k, v in
                                                   measure_agreement(merged[c], merged[f"{c}_expert"]).items()}
                                               for c in COLS},
               "qc_flags_fired": flags.groupby("flag").size().to_dict() if not flags.empty else {},
               "patients_flagged": int(flags["patient"].nunique()) if not flags.empty else 0}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    html_img = _agreement_plots(merged[COLS], merged[[f"{c}_expert" for c in COLS]].set_axis(COLS, axis=1), COLS)
    import base64

    (out / "agreement.png").write_bytes(base64.b64decode(html_img.split("base64,")[1].split('"')[0]))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
