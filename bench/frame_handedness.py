"""Whose world frame is a mirror image: the handedness of the six landmarks in ACDC, the phantom atlases and DICOM.

A heart has one handedness: with the landmarks of ``ssll.labels.Landmark`` (world RAS+ mm), the sign of
``((RV insert anterior - RV insert inferior) x (apex - mitral valve centre)) . (LV lateral wall - RV lateral
turning point)`` is the same for every heart drawn in a true patient frame. A file whose header lacks the
patient's true orientation can show it mirrored, and then the sign flips. The refinement's landmark affine from
such a target to an atlas is a reflection (``ssll.atlases.select_atlases`` mirrors the atlases into it).

Measured here:

* ACDC: the landmarks the training rules derive from the expert's labels (``ssll.landmarks.landmarks_from_labels``)
  of every training patient at ED, in the world frame of ACDC's own headers;
* the default atlas bank's phantoms (``resources/atlas_bank/bank``, built by the workflow; SSLLN-HR landmarks)
  and, if present, the benchmark bank (``resources/bench/refinement/bank``);
* the Sunnybrook DICOM cine (patient coordinates from ImagePositionPatient / ImageOrientationPatient): the shipped
  network's landmarks at the expert's ED frame (18), with the orientation search as ``ssll segment`` runs it.

Run (about 2 min):  python bench/frame_handedness.py -> bench/results/frame_handedness.json
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssll.atlases import load_bank  # noqa: E402
from ssll.ingest import frame, read_dicom_cine  # noqa: E402
from ssll.io import load_labels  # noqa: E402
from ssll.landmarks import handedness, landmarks_from_labels, voxel_to_world  # noqa: E402
from ssll.nn.data import acdc_cases  # noqa: E402
from ssll.nn.infer import default_weights, landmark_points, load_model, segment_volume  # noqa: E402
from ssll.preprocess import preprocess_volume  # noqa: E402


def _counts(signs: list[int]) -> dict[str, int]:
    return {"plus": signs.count(1), "minus": signs.count(-1), "degenerate": signs.count(0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--acdc", default="../shared/data/acdc/training")
    ap.add_argument("--sunnybrook", default="../shared/data/sunnybrook/dicoms/SCD0000101")
    ap.add_argument("--banks", nargs="+", default=["resources/atlas_bank/bank", "resources/bench/refinement/bank"])
    ap.add_argument("--out", default="bench/results/frame_handedness.json")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    out: dict = {}
    signs = []
    for case in (c for c in acdc_cases(a.acdc) if c["phase"] == "ED"):
        lab = load_labels(case["labels"], "acdc")
        vox = landmarks_from_labels(lab.array, lab.affine, what=str(case["patient"]))
        signs.append(handedness(voxel_to_world(vox, lab.affine)))
    out["acdc_ed_expert_labels"] = _counts(signs)
    for bank in a.banks:
        if (Path(bank) / "atlases.tsv").exists():
            out[f"atlases {bank}"] = _counts([handedness(at.landmarks) for at in load_bank(bank)])
    if Path(a.sunnybrook).is_dir():
        work, record = preprocess_volume(frame(read_dicom_cine(a.sunnybrook), 18))
        res = segment_volume(load_model(default_weights("sslln_lr")), work.array, record)
        pts = landmark_points(res.segmentation.landmark_map, record)
        out["sunnybrook_ed_frame18_network"] = {"handedness": handedness(pts), "orientation": res.orientation["orientation"],
                                                "landmarks_mm": np.round(pts, 1).tolist()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
