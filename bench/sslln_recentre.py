"""A heart-centred working grid for SSLLN-LR: does cropping round the heart beat cropping round the image centre?

The paper's preprocessing (and ``ssll preprocess``) centres the 192x192x80 working grid (240 x 240 x 160 mm) on
the centre of the input's field of view, with no heart detection, so a heart far off centre is seen near the
edge of the grid or cut by it (ACDC patient046 at ED: its RV reaches 14 mm beyond the edge). This asks whether a
second pass would do better: each volume is segmented as ``ssll segment`` segments it (as stored, no orientation
search), then the working grid is moved in plane (whole voxels; the slice axis is left as it is) so that the
first pass's heart labels are at its centre, and the volume is segmented again on the moved grid. Both are
scored on the original grid (probabilities taken back linearly, largest component per structure, as ``ssll
segment`` writes them) against the expert labels.

Volumes: the 20 held-out ACDC patients at ED and ES, and, with ``--extra`` (default: the four training patients
whose hearts come closest to the grid's edge, patient046 cut by it), more patients' (the network was fitted to
those: they show what the move does where the edge is near, not how well it generalises).
``margin_mm`` is how far the expert's labels stay inside the centred grid's in-plane edge (negative: cut).

Run:  python bench/sslln_recentre.py --out bench/results/sslln_recentre      (about 8 minutes on 2 cores)
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from held_out import held_out_parser, start
from scipy.stats import wilcoxon

from ssll.evaluate import dice
from ssll.io import load_image, load_labels
from ssll.labels import Label
from ssll.nn.data import acdc_cases, held_out_cases
from ssll.nn.infer import LoadedModel, segment_volume
from ssll.preprocess import GridRecord, PreprocessConfig, labels_to_working, preprocess_volume
from ssll.types import Array

STRUCTS = (Label.LV_CAVITY, Label.LV_WALL, Label.RV_CAVITY)
EXTRA = ("patient028", "patient042", "patient046", "patient050")


def moved_grid(w_aff: Array, labels: Array, shape: tuple[int, int, int]) -> tuple[Array, float]:
    """The working grid ``w_aff`` moved in plane by whole voxels so that the centroid of ``labels > 0``
    ``(I, J, K)`` is at its centre; and how far it moved (mm, the larger in-plane component)."""
    c = (np.asarray(shape, float) - 1) / 2
    shift = np.round(np.argwhere(labels > 0).mean(0) - c)
    shift[2] = 0.0
    out = w_aff.copy()
    out[:3, 3] = w_aff[:3, :3] @ shift + w_aff[:3, 3]
    return out, float(np.abs(w_aff[:3, :3] @ shift).max())


def margin_mm(gt_work: Array, spacing_mm: float) -> float:
    """How far the labelled voxels of ``gt_work`` ``(I, J, K)`` (labels on the working grid) stay inside its
    in-plane edge (mm). A cut heart touches the edge (0); :func:`_inside` counts what the grid lost."""
    ijk = np.argwhere(gt_work > 0)
    n = np.asarray(gt_work.shape)
    return float(min(ijk[:, 0].min(), n[0] - 1 - ijk[:, 0].max(), ijk[:, 1].min(), n[1] - 1 - ijk[:, 1].max())
                 * spacing_mm)


def score(model: LoadedModel, case: dict, cfg: PreprocessConfig) -> dict:
    """One volume: Dice per structure centred (``c_``) and heart-centred (``r_``), the move and the margin."""
    vol = load_image(case["image"])
    gt = load_labels(case["labels"], "acdc")
    img0, rec0 = preprocess_volume(vol, cfg)
    first = segment_volume(model, img0.array, rec0, orientation="stored").segmentation
    w1, moved = moved_grid(rec0.working_affine, first.labels, cfg.shape)
    img1, rec1 = preprocess_volume(vol, cfg, grid_affine=w1)
    second = segment_volume(model, img1.array, rec1, orientation="stored").segmentation
    gt_w = labels_to_working(gt.array, rec0)
    row = {"patient": case["patient"], "phase": case["phase"], "held_out": case["held_out"],
           "margin_mm": round(margin_mm(gt_w, cfg.spacing[0]), 1),
           "gt_voxels_outside_grid": int((gt.array > 0).sum()) - _inside(gt.array, rec0),
           "moved_mm": round(moved, 1)}
    for name, seg in (("c", first), ("r", second)):
        for s in STRUCTS:
            row[f"{name}_dice_{s.name.lower()}"] = round(dice(seg.original == s, gt.array == s), 4)
    return row


def _inside(labels: Array, rec: GridRecord) -> int:
    """How many labelled voxels of ``labels`` (input grid) have their centre inside the working grid of ``rec``."""
    ijk = np.argwhere(labels > 0).astype(float)
    w = np.linalg.inv(rec.working_affine) @ rec.input_affine
    v = ijk @ w[:3, :3].T + w[:3, 3]
    n = np.asarray(rec.working_shape, float)
    return int(np.all((v > -0.5) & (v < n - 0.5), axis=1).sum())


def main() -> None:
    ap = held_out_parser(__doc__, "bench/results/sslln_recentre")
    ap.add_argument("--extra", nargs="*", default=list(EXTRA), help="training patients scored as well")
    a = ap.parse_args()
    out, model = start(a)
    cfg = PreprocessConfig()
    cases = [{**c, "held_out": True} for c in held_out_cases(a.data, a.config)]
    cases += [{**c, "held_out": False} for c in acdc_cases(a.data) if c["patient"] in set(a.extra)]
    rows = []
    for c in cases:
        rows.append(score(model, c, cfg))
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "per_volume.csv", index=False)
    summary: dict = {"volumes": len(df), "held_out": {}, "extra": {}}
    for ph in ("ED", "ES"):
        h = df[df.held_out & (df.phase == ph)]
        summary["held_out"][ph] = {
            s.name.lower(): {"centred": round(float(h[f"c_dice_{s.name.lower()}"].mean()), 4),
                             "heart_centred": round(float(h[f"r_dice_{s.name.lower()}"].mean()), 4),
                             "wilcoxon_p": round(float(wilcoxon(h[f"c_dice_{s.name.lower()}"],
                                                                h[f"r_dice_{s.name.lower()}"]).pvalue), 4)}
            for s in STRUCTS}
    summary["held_out_moved_mm"] = {"median": float(df[df.held_out].moved_mm.median()),
                                    "max": float(df[df.held_out].moved_mm.max())}
    summary["extra"] = df[~df.held_out].to_dict(orient="records")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["held_out"], indent=1))


if __name__ == "__main__":
    main()
