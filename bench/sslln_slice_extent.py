"""Where SSLLN-LR's held-out error lies along the long axis: slices labelled beyond the expert's, or missed.

For the 20 held-out ACDC patients at ED and ES, segmented as ``ssll segment`` writes them (input grid, as
``bench/sslln_validation.py`` scores them), each structure's extent along the slice axis is compared with the
expert's: an *extra* slice holds the structure in the network's labels and not in the expert's, a *missed*
slice the other way round; each is basal or apical by the side of the expert's extent it lies on (by the
landmarks' slice order: the mitral-valve centre is basal). Per structure and phase it reports how many volumes
have extra or missed slices, where, the Dice as scored and the Dice with the extra slices' labels taken out (an
oracle: how much of the Dice the slice extent costs, not a method), and the 3D Hausdorff distance likewise.

Run:  python bench/sslln_slice_extent.py --out bench/results/sslln_slice_extent   (about 3 min on 2 cores)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from held_out import held_out_parser, start  # noqa: E402

from ssll.evaluate import dice, hausdorff  # noqa: E402
from ssll.io import load_image, load_labels  # noqa: E402
from ssll.labels import Label  # noqa: E402
from ssll.landmarks import world_to_voxel  # noqa: E402
from ssll.nn.data import held_out_cases  # noqa: E402
from ssll.nn.infer import finish_segmentation, landmark_points, predict  # noqa: E402
from ssll.preprocess import preprocess_volume  # noqa: E402

STRUCTS = (Label.LV_CAVITY, Label.LV_WALL, Label.RV_CAVITY)


def extent_errors(pred: np.ndarray, truth: np.ndarray, base_first: bool) -> dict[str, list[int]]:
    """Input-grid slices (axis 2) a structure is labelled on beyond the expert's extent or missed within it.

    Args:
        pred, truth: ``(I, J, K)`` boolean masks of one structure.
        base_first: True when slice 0 is the basal end.

    Returns:
        ``extra_basal``, ``extra_apical``, ``missed``: slice indices (missed: every truth slice without the
        structure in ``pred``, at either end or inside).
    """
    p, t = pred.any(axis=(0, 1)), truth.any(axis=(0, 1))
    out: dict[str, list[int]] = {"extra_basal": [], "extra_apical": [], "missed": np.flatnonzero(t & ~p).tolist()}
    ks = np.flatnonzero(t)
    for k in np.flatnonzero(p & ~t).tolist():
        below = not ks.size or k < ks[0]
        out["extra_basal" if below == base_first else "extra_apical"].append(k)
    return out


def main() -> None:
    a = held_out_parser(__doc__, "bench/results/sslln_slice_extent").parse_args()
    out, model = start(a)
    rows = []
    for c in held_out_cases(a.data, a.config):
        img = load_image(c["image"])
        gt = load_labels(c["labels"], "acdc")
        work, rec = preprocess_volume(img)
        lab, lmap, _, prob = predict(model, work.array[None], return_prob=True)
        seg = finish_segmentation(lab[0], lmap[0], prob[0], rec)
        # base at the input grid's low or high slice index: the mitral-valve centre against the apex
        pts = landmark_points(lmap[0], rec, fov=seg.fov)
        k_of = world_to_voxel(pts, img.affine)[:, 2]
        base_first = bool(k_of[5] < k_of[4])
        for s in STRUCTS:
            p, t = seg.original == s, gt.array == s
            e = extent_errors(p, t, base_first)
            cut = p.copy()
            cut[:, :, e["extra_basal"] + e["extra_apical"]] = False
            rows.append({"patient": c["patient"], "group": c["group"], "phase": c["phase"],
                         "structure": s.name.lower(), "base_first": base_first,
                         "expert_slices": int(t.any(axis=(0, 1)).sum()),
                         **{k: " ".join(map(str, v)) for k, v in e.items()},
                         "n_extra_basal": len(e["extra_basal"]), "n_extra_apical": len(e["extra_apical"]),
                         "n_missed": len(e["missed"]),
                         "dice": dice(p, t), "dice_without_extra": dice(cut, t),
                         "hd_mm": hausdorff(p, t, gt.spacing), "hd_mm_without_extra": hausdorff(cut, t, gt.spacing)})
        print(c["patient"], c["phase"], [(r["structure"], r["extra_basal"], r["extra_apical"], r["missed"])
                                         for r in rows[-3:]], flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "per_volume.csv", index=False, float_format="%.4f")
    summary = {"weights": a.weights, "volumes": int(len(df) // len(STRUCTS)), "by_structure_and_phase": {}}
    for (s, ph), g in df.groupby(["structure", "phase"], sort=False):
        summary["by_structure_and_phase"][f"{s} {ph}"] = {
            "volumes_with_extra_basal": int((g.n_extra_basal > 0).sum()),
            "volumes_with_extra_apical": int((g.n_extra_apical > 0).sum()),
            "volumes_with_missed": int((g.n_missed > 0).sum()),
            "extra_slices": int(g.n_extra_basal.sum() + g.n_extra_apical.sum()), "missed_slices": int(g.n_missed.sum()),
            "dice": round(float(g.dice.mean()), 4), "dice_without_extra": round(float(g.dice_without_extra.mean()), 4),
            "hd_mm": round(float(g.hd_mm.mean()), 2),
            "hd_mm_without_extra": round(float(g.hd_mm_without_extra.mean()), 2),
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
