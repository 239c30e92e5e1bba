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
    data: str,
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
    if data == "acdc":
        card["training_data"] = (
            "ACDC training set (MICCAI 2017), ED and ES frames, expert labels mapped from the ACDC convention; "
            "landmarks derived from the labels by ssll.landmarks.landmarks_from_labels. ACDC has no RV-wall label: "
            "RV wall is left out of each sample's loss (its probability merged with background), so this network "
            "does not learn to segment the RV wall."
        )
        card["untrained_classes"] = [int(Label.RV_WALL)]
        card["licence"] = (
            "CC BY-NC-SA 4.0, inherited from the ACDC data: non-commercial use only, with attribution, "
            "share-alike. Cite: " + ACDC_CITATION
        )
    else:
        card["training_data"] = data
        card["licence"] = "Apache-2.0"
    return card
