"""A stack that stops short of the apex: does the refined model complete the LV where the segmentation cannot?

``ssll refine`` cuts the refined model at the base of the imaged slab but lets it go on past the stack at the apex
(``atlases: beyond_stack: apex``), so that a stack which stops short of the apex is completed from the atlases
(README, "Shape refinement", step 5). This measures that on real scans. Each of the 20 held-out ACDC patients' ED and
ES scans is segmented and refined twice, as stored and with its ``--drop`` acquired slices at the apical end taken
off (the end from the expert's labels; ``bench/coverage_qc.py``'s cut), and the LV cavity and LV wall volumes (ml)
of each output are compared:

* ``network``: SSLLN-LR's labels on the working grid (``ssll segment``; as stored, no orientation search);
* ``refined_apex``: the refined model cut at the base only, as ``ssll refine`` writes it (the default);
* ``refined_none``: the same model cut at both ends of the slab (``beyond_stack: none``), the control;
* ``expert``: the expert's labels on the input grid (the cut scan's labels for the cut scan).

Per volume, what the cut cost each (stored - cut, ml) against what the expert's labels lost with the slices; and
where the network put the apex landmark: how far past the slab's apical end (mm along the slice axis, positive:
beyond it), since the landmark affine places the atlases' apex there.

Needs an atlas bank: the workflow's default (``resources/atlas_bank/bank`` after ``snakemake --profile
profiles/local``) or ``bench/refinement.py``'s.

Run:  python bench/refinement_short_stack.py --bank resources/atlas_bank/bank --out bench/results/refinement_short_stack
      (about 25 minutes on 2 cores)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from coverage_qc import drop_apical  # noqa: E402
from held_out import held_out_parser, start  # noqa: E402
from scipy.stats import wilcoxon  # noqa: E402

from ssll.atlases import load_bank  # noqa: E402
from ssll.io import load_image, load_labels  # noqa: E402
from ssll.labels import Label, Landmark  # noqa: E402
from ssll.nn.data import held_out_cases  # noqa: E402
from ssll.nn.infer import landmark_points, segment_volume  # noqa: E402
from ssll.preprocess import GridRecord, preprocess_volume  # noqa: E402
from ssll.refine import RefineConfig, acquired_slices, clip_beyond_stack, refine, stack_slab  # noqa: E402
from ssll.types import Volume  # noqa: E402

STRUCTS = (Label.LV_CAVITY, Label.LV_WALL)


def apex_beyond_slab_mm(pts_mm: np.ndarray, affine: np.ndarray, slab: tuple[int, int]) -> float:
    """How far the apex landmark lies past the slab's apical end along the slice axis (mm; negative: inside)."""
    inv = np.linalg.inv(affine)
    k_apex, k_mv = ((inv[:3, :3] @ pts_mm[i - 1] + inv[:3, 3])[2] for i in (Landmark.APEX, Landmark.MITRAL_VALVE_CENTRE))
    step = float(np.linalg.norm(affine[:3, 2]))
    return float((k_apex - slab[1]) * step if k_apex > k_mv else (slab[0] - k_apex) * step)


@dataclass
class Run:
    """One scan (``drop`` apical slices off) segmented and refined: the scan and the expert's labels as cut, the
    expert's labels of the whole stack, the working grid, and each output on it (``outs``: network, refined_apex,
    refined_none)."""

    vol: Volume
    gt: np.ndarray
    gt_full: np.ndarray
    full_affine: np.ndarray
    work: np.ndarray
    rec: GridRecord
    slab: tuple[int, int]
    pts: np.ndarray
    outs: dict[str, np.ndarray]
    init: str | None


def run_case(model, bank, case: dict, drop: int, cfg: RefineConfig) -> Run:
    full = load_image(case["image"])
    gt_full = load_labels(case["labels"], "acdc").array
    vol, gt = drop_apical(full, gt_full, drop) if drop else (full, gt_full)
    work, rec = preprocess_volume(vol)
    seg = segment_volume(model, work.array, rec, orientation="stored").segmentation
    pts = landmark_points(seg.landmark_map, rec, fov=seg.fov)
    slab = stack_slab(rec, fov=seg.fov)
    whole, info = refine(work.array, seg.labels, rec.working_affine, pts, bank, cfg, slices=acquired_slices(rec))
    outs = {"network": seg.labels, "refined_apex": clip_beyond_stack(whole, rec.working_affine, pts, slab, keep="apex")[0],
            "refined_none": clip_beyond_stack(whole, rec.working_affine, pts, slab, keep="none")[0]}
    return Run(vol, gt, gt_full, full.affine, work.array, rec, slab, pts, outs, info.get("init"))


def volumes(r: Run) -> dict:
    """The row of one :class:`Run`: where the apex landmark lay, and each output's LV cavity and wall (ml)."""
    ml_w = abs(float(np.linalg.det(r.rec.working_affine[:3, :3]))) / 1000
    ml_in = float(np.prod(r.vol.spacing)) / 1000
    row = {"apex_beyond_slab_mm": round(apex_beyond_slab_mm(r.pts, r.rec.working_affine, r.slab), 1), "init": r.init}
    for s in STRUCTS:
        n = s.name.lower()
        for name, lab in r.outs.items():
            row[f"{name}_{n}_ml"] = round(float((lab == s).sum()) * ml_w, 2)
        row[f"expert_{n}_ml"] = round(float((r.gt == s).sum()) * ml_in, 2)
    return row


def picture(r: Run, case: dict, drop: int, path) -> None:
    """PNG: long-axis cuts of the scan with ``drop`` apical slices off: the network, the refined model cut at both
    ends of the slab, as written (cut at the base only), and the expert's labels of the whole stack."""
    from refinement_acdc import long_axis_picture

    from ssll.preprocess import resample

    expert = resample(r.gt_full, r.full_affine, r.rec.working_affine, r.rec.working_shape, order=0)
    long_axis_picture(r.work, {
        "SSLLN-LR": r.outs["network"], "refined, cut at both ends": r.outs["refined_none"],
        "refined (as written: cut at the base)": r.outs["refined_apex"], "expert, whole stack": expert}, r.slab, path,
        f"ACDC {case['patient']} {case['phase']}, {drop} apical slices off: long-axis cut; cyan: the imaged slab")


def main() -> None:
    ap = held_out_parser(__doc__, "bench/results/refinement_short_stack")
    ap.add_argument("--bank", default="resources/atlas_bank/bank", help="atlas bank folder (atlases.tsv)")
    ap.add_argument("--drop", type=int, default=2, help="acquired slices taken off at the apical end")
    ap.add_argument("--limit", type=int, default=0, help="only the first N volumes (a quick check)")
    ap.add_argument("--margin-mm", type=float, default=None,
                    help="atlases: margin_mm, the refinement box past the segmentation (default: the config's)")
    ap.add_argument("--picture", default="patient017", help="patient whose long-axis cut at ED is drawn ('' none)")
    a = ap.parse_args()
    out, model = start(a)
    bank = load_bank(a.bank)
    cfg = RefineConfig()
    if a.margin_mm is not None:
        cfg = replace(cfg, atlases=replace(cfg.atlases, margin_mm=a.margin_mm))
    cases = held_out_cases(a.data, a.config)[: a.limit or None]
    rows = []
    for c in cases:
        for drop in (0, a.drop):
            r = run_case(model, bank, c, drop, cfg)
            rows.append({"patient": c["patient"], "phase": c["phase"], "apical_slices_off": drop, **volumes(r)})
            if drop and c["patient"] == a.picture and c["phase"] == "ED":
                picture(r, c, drop, out / f"apex_{a.picture}_ED.png")
        full, cut = rows[-2], rows[-1]
        print(c["patient"], c["phase"], {k: round(full[k] - cut[k], 1) for k in full if k.endswith("lv_cavity_ml")},
              "apex past the slab (mm):", full["apex_beyond_slab_mm"], cut["apex_beyond_slab_mm"], flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "per_volume.csv", index=False)
    summary = {**summarise(df, a.drop, len(bank)), "margin_mm": cfg.atlases.margin_mm}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


def summarise(df: pd.DataFrame, drop: int, n_atlases: int) -> dict:
    """What the cut cost each output (mean, sd over the volumes; ml), the share of the network's loss the refined
    model (cut at the base only) makes up, its paired Wilcoxon p against the network's loss, and where the apex
    landmark lay."""
    full = df[df.apical_slices_off == 0].reset_index(drop=True)
    cut = df[df.apical_slices_off == drop].reset_index(drop=True)
    summary: dict = {"volumes": len(full), "apical_slices_off": drop, "atlases": n_atlases,
                     "lost_ml_mean_sd": {}, "recovered_fraction_of_network_loss": {}, "wilcoxon_p_refined_vs_network": {}}
    for s in STRUCTS:
        n = s.name.lower()
        lost = {name: full[f"{name}_{n}_ml"] - cut[f"{name}_{n}_ml"]
                for name in ("expert", "network", "refined_apex", "refined_none")}
        for name, v in lost.items():
            summary["lost_ml_mean_sd"][f"{name}_{n}"] = [round(float(v.mean()), 2), round(float(v.std()), 2)]
        net, ref = float(lost["network"].mean()), float(lost["refined_apex"].mean())
        summary["recovered_fraction_of_network_loss"][n] = round(1 - ref / net, 3) if net else None
        summary["wilcoxon_p_refined_vs_network"][n] = float(f"{wilcoxon(lost['refined_apex'], lost['network']).pvalue:.3g}")
    summary["apex_beyond_slab_mm_median"] = {"stored": float(full.apex_beyond_slab_mm.median()),
                                             "cut": float(cut.apex_beyond_slab_mm.median())}
    return summary


if __name__ == "__main__":
    main()
