"""ssll: shape-refined bi-ventricular segmentation of cardiac MR (Duan et al., IEEE TMI 2019).

Public API: label conventions (:mod:`ssll.labels`), geometry-correct I/O (:mod:`ssll.io`),
study ingest (:mod:`ssll.ingest`) and the paper's preprocessing (:mod:`ssll.preprocess`).
"""

from __future__ import annotations

__version__ = "0.1.0"

from ssll.errors import SsllError
from ssll.labels import Label, Landmark
from ssll.types import Volume

__all__ = ["Label", "Landmark", "SsllError", "Volume", "__version__"]
