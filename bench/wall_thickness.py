"""LV wall thickness per AHA segment (``ssll measures`` with landmarks) against the expert's, on the held-out ACDC patients.

For each of the 20 held-out patients at ED and ES: the thickness of the 16 AHA segments
(:func:`ssll.thickness.segment_thickness`) from SSLLN-LR's labels on the input grid with its own landmarks, as
the workflow's ``measures`` stage reads them (``ssll segment`` as stored, then ``ssll landmarks``), and from the
expert's labels with the landmarks the training rules derive from them. With ``--bank`` (an atlas bank, ``ssll atlas
build``) also from the refined HR model (``ssll.refine`` with the workflow's default settings, on the working grid, as
``ssll measures`` reads ``refined_*``). Per segment and source: mean difference (automatic - expert, mm), sd of the
differences and Pearson r over the 40 volumes; the same for the systolic thickening (%).
Pictures: the segments of the first held-out patient at ED on the image, both sources; the network's mean
thickness at ED and thickening as the cohort report's bull's eyes (``bullseye_sslln.png``).

Run:  python bench/wall_thickness.py --out bench/results/wall_thickness   (about 3 min on 2 cores)
With the refined model, on the bank of bench/refinement.py (60 HR phantoms x ED/ES, seeds 20000..20059), about 10 min:
    ssll phantom --biv-me ../shared/data/biv-me --n 60 --first-seed 20000 --out-dir /tmp/wtbank/phantoms
    ssll atlas build --sheet /tmp/wtbank/phantoms/atlas_sheet.tsv --out-dir /tmp/wtbank/bank
    python bench/wall_thickness.py --bank /tmp/wtbank/bank --out bench/results/wall_thickness
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from held_out import held_out_parser, start

from ssll.io import load_image, load_labels
from ssll.landmarks import landmarks_from_labels, voxel_to_world
from ssll.nn.data import held_out_cases
from ssll.nn.infer import finish_segmentation, landmark_points, predict
from ssll.preprocess import labels_to_working, preprocess_volume
from ssll.refine import RefineConfig, acquired_slices, refine, stack_slab
from ssll.report import aha_bullseyes
from ssll.thickness import AHA_SEGMENTS, aha_segments, segment_thickness


def _agreement(a: pd.Series, b: pd.Series) -> dict[str, float]:
    ok = a.notna() & b.notna()
    d = a[ok] - b[ok]
    return {"n": int(ok.sum()), "expert_mean": float(b[ok].mean()), "auto_mean": float(a[ok].mean()),
            "mean_diff": float(d.mean()), "sd_diff": float(d.std()), "mean_abs_diff": float(d.abs().mean()),
            "pearson_r": float(np.corrcoef(a[ok], b[ok])[0, 1]) if ok.sum() > 2 else float("nan")}


def _picture(path, image, sources: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> None:
    """Three short-axis slices (basal, mid, apical third) of each source's segments over the image."""
    fig, axes = plt.subplots(len(sources), 3, figsize=(7.5, 2.7 * len(sources)), squeeze=False)
    for row, (name, (lab, seg)) in enumerate(sources.items()):
        ks = [k for k in range(seg.shape[2]) if seg[:, :, k].any()]
        for ax, k in zip(axes[row], (ks[len(ks) // 6], ks[len(ks) // 2], ks[-1 - len(ks) // 6])):
            nz = np.argwhere(lab[:, :, k] > 0)
            lo, hi = nz.min(0) - 8, nz.max(0) + 8
            ax.imshow(image[lo[0]:hi[0], lo[1]:hi[1], k].T, cmap="gray", origin="lower")
            s = seg[lo[0]:hi[0], lo[1]:hi[1], k]
            ax.imshow(np.ma.masked_equal(s, 0).T, cmap="tab20", vmin=1, vmax=20, origin="lower", alpha=0.75,
                      interpolation="nearest")
            for n in np.unique(s[s > 0]):
                c = np.argwhere(s == n).mean(0)
                ax.text(c[0], c[1], str(n), fontsize=7, ha="center", va="center")
            ax.set_title(f"{name}, slice {k}", fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = held_out_parser(__doc__, "bench/results/wall_thickness")
    ap.add_argument("--bank", help="an atlas bank folder (ssll atlas build): also score the refined HR model")
    a = ap.parse_args()
    out, model = start(a)
    bank = None
    if a.bank:
        from ssll.atlases import load_bank

        bank = load_bank(a.bank)
    rows = []
    for n, c in enumerate(held_out_cases(a.data, a.config)):
        img, gt = load_image(c["image"]), load_labels(c["labels"], "acdc")
        work, rec = preprocess_volume(img)
        labels, lmap, _, prob = predict(model, work.array[None], return_prob=True)
        seg = finish_segmentation(labels[0], lmap[0], prob[0], rec)
        auto_pts = landmark_points(lmap[0], rec, fov=seg.fov)
        gt_w = labels_to_working(gt.array, rec)
        gt_pts = voxel_to_world(landmarks_from_labels(gt_w, rec.working_affine), rec.working_affine)
        sources = [("sslln", seg.original, gt.affine, auto_pts), ("expert", gt.array, gt.affine, gt_pts)]
        if bank is not None:
            refined, _ = refine(work.array, seg.labels, rec.working_affine, auto_pts, bank, RefineConfig(),
                                slices=acquired_slices(rec), stack=stack_slab(rec, fov=seg.fov))
            sources.append(("refined", refined, rec.working_affine, auto_pts))
        for source, lab, aff, pts in sources:
            per = segment_thickness(lab, aff, pts)
            rows.append({"patient": c["patient"], "phase": c["phase"], "source": source,
                         **{f"aha{k:02d}_mm": v for k, v in per.items()}})
        if n == 0:
            _picture(out / f"segments_{c['patient']}_{c['phase']}.png", img.array,
                     {"SSLLN-LR": (seg.original, aha_segments(seg.original, gt.affine, auto_pts)),
                      "expert": (gt.array, aha_segments(gt.array, gt.affine, gt_pts))},
                     f"{c['patient']} {c['phase']}: AHA segments (1-6 basal, 7-12 mid, 13-16 apical)")
        print(c["patient"], c["phase"], flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "per_volume.csv", index=False, float_format="%.3f")
    cols = [f"aha{k:02d}_mm" for k in AHA_SEGMENTS]
    frames = {name: g.set_index(["patient", "phase"])[cols] for name, g in df.groupby("source")}
    auto, expert = frames["sslln"], frames["expert"]
    thick = {name: 100.0 * (f.xs("ES", level="phase") - f.xs("ED", level="phase")) / f.xs("ED", level="phase")
             for name, f in frames.items()}
    summary = {
        "weights": a.weights, "n_patients": int(df["patient"].nunique()),
        "thickness_mm_per_segment": {c[:5]: _agreement(auto[c], expert[c]) for c in cols},
        "thickness_mm_all_segments": _agreement(auto.stack(), expert.stack()),
        "thickening_pct_per_segment": {c[:5]: _agreement(thick["sslln"][c], thick["expert"][c]) for c in cols},
        "thickening_pct_all_segments": _agreement(thick["sslln"].stack(), thick["expert"].stack()),
    }
    if "refined" in frames:
        ref = frames["refined"]
        summary["refined"] = {
            "bank": f"{a.bank} ({len(bank)} atlases)",
            "thickness_mm_per_segment": {c[:5]: _agreement(ref[c], expert[c]) for c in cols},
            "thickness_mm_all_segments": _agreement(ref.stack(), expert.stack()),
            "thickening_pct_per_segment": {c[:5]: _agreement(thick["refined"][c], thick["expert"][c]) for c in cols},
            "thickening_pct_all_segments": _agreement(thick["refined"].stack(), thick["expert"].stack()),
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    # the cohort report's bull's eyes of the network's thickness at ED and thickening
    ed = auto.xs("ED", level="phase")
    cohort = pd.concat([ed.set_axis([f"ed_wall_thickness_{c}" for c in cols], axis=1),
                        thick["sslln"].set_axis([f"wall_thickening_{c[:5]}_pct" for c in cols], axis=1)], axis=1)
    fig = aha_bullseyes(cohort)
    fig.savefig(out / "bullseye_sslln.png", dpi=100)
    print(json.dumps({k: v for k, v in summary.items() if k.endswith("all_segments") or k == "refined"}, indent=1))


if __name__ == "__main__":
    main()
