"""Landmarks from SSLLN-LR's landmark head against the geometric rules applied to its own labels.

``ssll landmarks`` takes the six landmarks from the network's landmark head. The same rules that made the
training targets (:func:`ssll.landmarks.landmarks_from_labels`) can instead be applied to the network's
segmentation (``ssll landmarks-from-labels``). Which is closer to the truth, landmark by landmark?

* 30 simulated-LR phantoms (Table III's first targets: seeds 30000.., 10 mm slices with breath-hold shifts,
  never trained on) against the exact landmarks from the mesh: the fair test, since neither source defines
  the truth there.
* The 40 held-out ACDC volumes (20 patients, ED and ES) against the rules applied to the expert's labels:
  the rules share the truth's definition here, so this favours them; it shows how the two compare on real
  hearts.

Both sources read the same working-grid labels ``ssll segment`` writes (field of view, largest component per
structure), as stored (no orientation search; the held-out volumes and the phantoms are stored as trained).

Run:  python bench/landmark_sources.py --out bench/results/landmark_sources   (about 6 min on 2 cores)
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from held_out import held_out_parser, start
from scipy.stats import wilcoxon

from ssll.errors import SsllError
from ssll.io import load_image, load_labels
from ssll.labels import LANDMARK_NAMES
from ssll.landmarks import landmarks_from_labels, voxel_to_world
from ssll.nn.data import held_out_cases
from ssll.nn.infer import finish_segmentation, landmark_points, predict
from ssll.phantom import require_bank
from ssll.preprocess import labels_to_working, preprocess_volume


def both_sources(model, image: np.ndarray, rec) -> tuple[np.ndarray, np.ndarray]:
    """``(6, 3)`` world mm landmarks from the landmark head and from the rules on the labels (NaN rows when
    the rules cannot run on these labels)."""
    labels, lmap, _, prob = predict(model, image[None], return_prob=True)
    seg = finish_segmentation(labels[0], lmap[0], prob[0], rec)
    head = landmark_points(lmap[0], rec, fov=seg.fov)
    try:
        rules = voxel_to_world(landmarks_from_labels(seg.labels, rec.working_affine), rec.working_affine)
    except SsllError:
        rules = np.full((6, 3), np.nan)
    return head, rules


def _rows(name: str, head: np.ndarray, rules: np.ndarray, truth: np.ndarray) -> list[dict]:
    out = []
    for source, pts in (("head", head), ("rules", rules)):
        d = np.linalg.norm(pts - truth, axis=1)
        out.append({"case": name, "source": source, **dict(zip(LANDMARK_NAMES, d.astype(float)))})
    return out


def summarise(df: pd.DataFrame) -> dict:
    """Per landmark: mean and sd of each source's error (mm), the number of cases where the rules are closer,
    and the paired Wilcoxon p."""
    h = df[df.source == "head"].set_index("case")
    r = df[df.source == "rules"].set_index("case")
    out = {}
    for name in LANDMARK_NAMES:
        a, b = h[name].align(r[name], join="inner")
        ok = a.notna() & b.notna()
        out[name] = {"head_mm": f"{a[ok].mean():.2f} ± {a[ok].std():.2f}", "rules_mm": f"{b[ok].mean():.2f} ± {b[ok].std():.2f}",
                     "n": int(ok.sum()), "rules_closer": int((b[ok] < a[ok]).sum()),
                     "wilcoxon_p": float(wilcoxon(a[ok], b[ok]).pvalue) if ok.sum() > 1 else None}
    return out


def main() -> None:
    ap = held_out_parser(__doc__, "bench/results/landmark_sources")
    ap.add_argument("--biv-me", default="../shared/data/biv-me")
    ap.add_argument("--n-phantoms", type=int, default=30)
    a = ap.parse_args()
    out, model = start(a)
    from refinement import lr_target  # the Table III targets (bench/refinement.py)

    rows_ph = []
    shapes = require_bank(a.biv_me)
    for seed in range(30000, 30000 + a.n_phantoms):
        t = lr_target(shapes, seed)
        head, rules = both_sources(model, t.image.array, t.record)
        rows_ph += _rows(str(seed), head, rules, np.asarray(t.ed["landmarks"], float))
        print("phantom", seed, flush=True)
    rows_acdc = []
    for c in held_out_cases(a.data, a.config):
        img, gt = load_image(c["image"]), load_labels(c["labels"], "acdc")
        work, rec = preprocess_volume(img)
        truth = voxel_to_world(landmarks_from_labels(labels_to_working(gt.array, rec), rec.working_affine),
                               rec.working_affine)
        head, rules = both_sources(model, work.array, rec)
        rows_acdc += _rows(f"{c['patient']}_{c['phase']}", head, rules, truth)
        print(c["patient"], c["phase"], flush=True)
    ph, acdc = pd.DataFrame(rows_ph), pd.DataFrame(rows_acdc)
    ph.to_csv(out / "phantoms.csv", index=False, float_format="%.3f")
    acdc.to_csv(out / "acdc.csv", index=False, float_format="%.3f")
    summary = {"weights": a.weights,
               "phantoms_vs_mesh_landmarks": {"n": len(ph) // 2, "seeds": [30000, 30000 + a.n_phantoms - 1],
                                              "per_landmark": summarise(ph)},
               "acdc_held_out_vs_rules_on_expert_labels": {"n": len(acdc) // 2, "per_landmark": summarise(acdc)}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(summary, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
