"""Model cards: the JSON that travels with every weights file.

A card states what the network expects (preprocessing, grid, slices), what it outputs (label
and landmark conventions), how it was trained (data, epochs, settings), how well it did on
held-out data, and under which licence the weights may be used.
"""

from __future__ import annotations

from typing import Any

from ssll.labels import Label, Landmark
from ssll.preprocess import PreprocessConfig

__all__ = ["ACDC_CITATION", "build_card"]

ACDC_CITATION = (
    "O. Bernard, A. Lalande, C. Zotti, F. Cervenansky, et al., 'Deep Learning Techniques for Automatic MRI "
    "Cardiac Multi-structures Segmentation and Diagnosis: Is the Problem Solved?', IEEE TMI 37(11):2514-2525, "
    "2018, doi:10.1109/TMI.2018.2837502"
)


def build_card(
    *,
    name: str,
    architecture: dict[str, Any],
    training: dict[str, Any],
    validation: dict[str, Any],
    data: str | tuple[str, ...],
) -> dict[str, Any]:
    """Assemble a model card dictionary (see module docstring)."""
    pre = PreprocessConfig()
    card: dict[str, Any] = {
        "name": name,
        "method": "SSLLN, Duan et al., IEEE TMI 2019 (2.5D multi-task FCN)",
        "architecture": architecture,
        "preprocessing": {
            "spacing_mm": list(pre.spacing),
            "shape": list(pre.shape),
            "percentiles": list(pre.percentiles),
            "interpolation_order": pre.order,
            "orientation": "input axis directions kept; axis 2 = slice axis; centred on the input field of view",
            "tensor_layout": "(B, S=k, H=i, W=j)",
        },
        "labels": {str(int(v)): v.name.lower() for v in Label},
        "landmarks": {str(int(v)): v.name.lower() for v in Landmark},
        "training": training,
        "validation": validation,
    }
    parts, untrained = [], []
    sources = (data,) if isinstance(data, str) else tuple(data)
    if "acdc" in sources:
        parts.append(
            "ACDC training set (MICCAI 2017), ED and ES frames, expert labels mapped from the ACDC convention; "
            "landmarks derived from the labels by ssll.landmarks.landmarks_from_labels. ACDC has no RV-wall label: "
            "RV wall is left out of each ACDC sample's loss (its probability merged with background)."
        )
    if "phantom_lr" in sources:
        parts.append(
            "Simulated low-resolution phantoms (ssll phantom + ssll simulate-lr: 10 mm slices, in-plane slice "
            "shifts, lost end slices) from the biv-me shapes (Apache-2.0), LR labels with all four structures, "
            "exact landmarks from the mesh."
        )
    if "phantom_hr" in sources:
        parts.append(
            "High-resolution phantoms (ssll phantom, 1.25x1.25x2 mm) from the biv-me shapes (Apache-2.0), all four "
            "structures labelled, exact landmarks from the mesh."
        )
    if sources == ("acdc",):
        parts.append("This network does not learn to segment the RV wall.")
        untrained.append(int(Label.RV_WALL))
    card["training_data"] = " ".join(parts)
    card["untrained_classes"] = untrained
    if "acdc" in sources:
        card["licence"] = (
            "CC BY-NC-SA 4.0, inherited from the ACDC data: non-commercial use only, with attribution, "
            "share-alike. Cite: " + ACDC_CITATION
        )
    else:
        card["licence"] = "Apache-2.0 (trained only on phantoms made from the Apache-2.0 biv-me shapes)"
    return card
