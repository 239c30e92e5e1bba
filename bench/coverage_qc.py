"""Coverage QC: does ``ssll qc-flags`` tell a heart the scan (or the working grid) cut, or a stack that stops short of the apex?

``ssll.qc.coverage_problems`` flags ``heart_at_edge`` (heart within ``EDGE_BAND_MM`` of the in-plane edge of the scan's field of
view or of a face of the working grid) and ``apex_not_covered`` (the LV cavity on the stack's apical end slice still at least
``MIN_APICAL_CAVITY_FRACTION`` of its largest). This benchmark cuts real scans in known ways and asks whether the
flags fire, on the network's labels as ``ssll segment`` writes them (as stored, no orientation search):

* ``stored``: the scan as it is (a flag here is a false alarm, unless the scan is truly cut);
* ``apex-1``, ``apex-2``: the one or two acquired slices at the apical end taken off (the end from the expert's
  labels, :func:`ssll.landmarks.lv_ends`; the affine moved where the first slices go, so the rest stay in place);
* ``cut-10mm``: the scan cropped in plane 10 mm inside the expert's heart along its first axis (the heart runs on
  beyond the scan's edge);
* ``off-grid-10mm``: the scan padded with zeros on the other side, so that the working grid (centred on the scan)
  ends 10 mm inside the expert's heart.

Volumes: the 20 held-out ACDC patients at ED and ES; and, as stored only, the ``--extra`` training patients (by
default the four whose hearts come nearest the working grid's edge, patient046's cut by it). Per volume and variant: the flags, the network's LV cavity
(ml, working grid) and the expert's LV cavity the cut scan lacks (ml, input grid; the padded scan lacks nothing,
its working grid does), so a flag can be weighed against what it warns of. The expert-label rule (no network) over all 100 patients, 0-2 apical slices off, backs the
constant's comment.

Run:  python bench/coverage_qc.py --out bench/results/coverage_qc       (about 7 minutes on 2 cores)
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from held_out import held_out_parser, start

from ssll.io import load_image, load_labels
from ssll.labels import Label
from ssll.landmarks import lv_ends
from ssll.motion import acquired_slices
from ssll.nn.data import acdc_cases, held_out_cases
from ssll.nn.infer import LoadedModel, segment_volume
from ssll.preprocess import PreprocessConfig, preprocess_volume
from ssll.qc import MIN_APICAL_CAVITY_FRACTION, FieldOfView, coverage_problems
from ssll.types import Array, Volume

VARIANTS = ("stored", "apex-1", "apex-2", "cut-10mm", "off-grid-10mm")
EXTRA = ("patient028", "patient042", "patient046", "patient050")
CUT_MM = 10.0


def apical_end_is_last(gt: Array) -> bool:
    """Whether the apical end of the expert's LV (``gt`` ``(I, J, K)`` canonical labels) is at high ``k``."""
    base, apex = lv_ends(np.isin(gt, (Label.LV_CAVITY, Label.LV_WALL)).sum(axis=(0, 1)))
    return apex > base


def drop_apical(vol: Volume, gt: Array, n: int) -> tuple[Volume, Array]:
    """The scan and labels without their ``n`` acquired slices at the apical end (world positions kept)."""
    if apical_end_is_last(gt):
        return Volume(vol.array[:, :, :-n], vol.affine, vol.header), gt[:, :, :-n]
    aff = vol.affine.copy()
    aff[:3, 3] = aff[:3, :3] @ np.array([0.0, 0.0, n]) + aff[:3, 3]
    return Volume(vol.array[:, :, n:], aff, None), gt[:, :, n:]


def heart_extent(gt: Array) -> tuple[int, int]:
    """First and last index along axis 0 holding heart in ``gt``."""
    i = np.nonzero((gt > 0).any(axis=(1, 2)))[0]
    return int(i[0]), int(i[-1])


def cut_in_plane(vol: Volume, gt: Array) -> tuple[Volume, Array]:
    """The scan and labels cropped along axis 0 to end ``CUT_MM`` inside the expert's heart (at high i)."""
    _, hi = heart_extent(gt)
    keep = hi + 1 - int(round(CUT_MM / vol.spacing[0]))
    return Volume(vol.array[:keep], vol.affine, vol.header), gt[:keep]


def pad_off_grid(vol: Volume, gt: Array, cfg: PreprocessConfig) -> tuple[Volume, Array]:
    """The scan and labels padded with zeros at low i so that the working grid, centred on the padded scan,
    ends ``CUT_MM`` inside the expert's heart at high i."""
    n_i, sp = vol.array.shape[0], vol.spacing[0]
    _, hi = heart_extent(gt)
    half = cfg.shape[0] * cfg.spacing[0] / 2  # the grid's half width (mm)
    # heart edge relative to the scan's centre, then grown by half the padding: solve for the padding
    edge_mm = (hi + 0.5 - n_i / 2) * sp
    pad = max(0, int(np.ceil(2 * (half + CUT_MM - edge_mm) / sp)))
    aff = vol.affine.copy()
    aff[:3, 3] = aff[:3, :3] @ np.array([-pad, 0.0, 0.0]) + aff[:3, 3]
    arr = np.concatenate([np.zeros((pad, *vol.array.shape[1:]), vol.array.dtype), vol.array])
    return Volume(arr, aff, None), np.concatenate([np.zeros((pad, *gt.shape[1:]), gt.dtype), gt])


def variant(vol: Volume, gt: Array, name: str, cfg: PreprocessConfig) -> tuple[Volume, Array]:
    if name == "stored":
        return vol, gt
    if name.startswith("apex-"):
        return drop_apical(vol, gt, int(name[-1]))
    if name == "cut-10mm":
        return cut_in_plane(vol, gt)
    return pad_off_grid(vol, gt, cfg)


def score(model: LoadedModel, case: dict, cfg: PreprocessConfig, variants=VARIANTS) -> list[dict]:
    vol = load_image(case["image"])
    gt = load_labels(case["labels"], "acdc").array
    voxel_ml_in = float(np.prod(vol.spacing)) / 1000
    gt_cav = float((gt == Label.LV_CAVITY).sum()) * voxel_ml_in
    rows = []
    for name in variants:
        v, g = variant(vol, gt, name, cfg)
        img, rec = preprocess_volume(v, cfg)
        seg = segment_volume(model, img.array, rec, orientation="stored").segmentation
        fov = FieldOfView.of_record(rec)
        voxel_ml = float(np.prod(fov.spacing_mm)) / 1000
        flags = coverage_problems(seg.labels, fov, acquired=acquired_slices(rec))
        rows.append({
            "patient": case["patient"], "phase": case["phase"], "variant": name,
            "flags": " ".join(sorted({f for f, _ in flags})),
            "reasons": " | ".join(r for _, r in flags),
            "network_lv_cavity_ml": round(float((seg.labels == Label.LV_CAVITY).sum()) * voxel_ml, 1),
            "expert_lv_cavity_ml_lost": round(gt_cav - float((g == Label.LV_CAVITY).sum()) * voxel_ml_in, 1),
        })
    return rows


def expert_rule(data: str) -> dict:
    """The apical rule on the experts' own labels (input grid, every slice acquired), 0-2 apical slices off."""
    out: dict = {}
    for n in (0, 1, 2):
        fired = []
        for c in acdc_cases(data):
            gt = load_labels(c["labels"], "acdc").array
            if n:
                gt = gt[:, :, :-n] if apical_end_is_last(gt) else gt[:, :, n:]
            fov = FieldOfView(np.ones(gt.shape, bool), (1.0, 1.0, 1.0))
            fired.append(any(f == "apex_not_covered" for f, _ in coverage_problems(gt, fov)))
        out[f"apical_slices_off_{n}"] = {"volumes": len(fired), "flagged": int(np.sum(fired)),
                                         "fraction": round(float(np.mean(fired)), 3)}
    return out


def main() -> None:
    ap = held_out_parser(__doc__, "bench/results/coverage_qc")
    ap.add_argument("--extra", nargs="*", default=list(EXTRA),
                    help="training patients also scored as stored (default: the four whose hearts come nearest the "
                         "working grid's edge, bench/sslln_recentre.py; patient046's is cut by it)")
    a = ap.parse_args()
    out, model = start(a)
    cfg = PreprocessConfig()
    rows = []
    for c in held_out_cases(a.data, a.config):
        rows += score(model, c, cfg)
        print(*(f"{r['patient']} {r['phase']} {r['variant']}: {r['flags'] or '-'}" for r in rows[-len(VARIANTS):]),
              sep="\n", flush=True)
    extra = [c for c in acdc_cases(a.data) if c["patient"] in set(a.extra)]
    for c in extra:
        rows += [{**r, "variant": "stored (training patient)"} for r in score(model, c, cfg, ("stored",))]
        print(f"{c['patient']} {c['phase']}: {rows[-1]['flags'] or '-'}", flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "per_volume.csv", index=False)
    summary = summarise(df, a.data)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


def summarise(df: pd.DataFrame, data: str) -> dict:
    """Per variant: volumes flagged by each flag, and the LV cavity the cut cost the network and the expert."""
    df = df.fillna({"flags": ""})
    stored_ml = df[df.variant == "stored"].set_index(["patient", "phase"])["network_lv_cavity_ml"]
    summary: dict = {"volumes": int((df.variant == "stored").sum()),
                     "min_apical_cavity_fraction": MIN_APICAL_CAVITY_FRACTION, "cut_mm": CUT_MM, "variants": {}}
    for name in VARIANTS:
        d = df[df.variant == name]
        lost = stored_ml.loc[list(zip(d.patient, d.phase))].to_numpy() - d["network_lv_cavity_ml"].to_numpy()
        summary["variants"][name] = {
            "flagged_heart_at_edge": int(d["flags"].str.contains("heart_at_edge").sum()),
            "flagged_apex_not_covered": int(d["flags"].str.contains("apex_not_covered").sum()),
            "flagged_any": int((d["flags"] != "").sum()),
            "flagged_volumes": [f"{p} {ph}: {f}" for p, ph, f in zip(d.patient, d.phase, d["flags"]) if f],
            "network_lv_cavity_ml_lost_mean": round(float(lost.mean()), 1),
            "expert_lv_cavity_ml_lost_mean": round(float(d["expert_lv_cavity_ml_lost"].mean()), 1),
        }
    summary["training_patients_stored"] = [f"{p} {ph}: {f or '-'}" for p, ph, f in
                                           df[df.variant == "stored (training patient)"][["patient", "phase", "flags"]]
                                           .itertuples(index=False)]
    summary["expert_labels_all_100_patients"] = expert_rule(data)
    return summary


if __name__ == "__main__":
    main()
