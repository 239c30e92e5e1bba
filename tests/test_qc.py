from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import biv_phantom, image_from_labels
from ssll.qc import COLOURS, montage, overlay_rgb


def test_overlay_colours_labels() -> None:
    img = np.zeros((4, 3), np.float32)
    lab = np.zeros((4, 3), np.uint8)
    lab[1, 2] = 1
    rgb = overlay_rgb(img, lab, alpha=1.0)
    assert rgb.shape == (3, 4, 3)  # shown transposed: rows are j
    np.testing.assert_allclose(rgb[2, 1], COLOURS[1])
    np.testing.assert_allclose(rgb[0, 0], 0.0)


def test_montage_writes_png(tmp_path: Path) -> None:
    lab = biv_phantom((64, 60, 12))
    img = image_from_labels(lab) / 400.0
    pts = np.array([[40, 30, 6], [20, 40, 6], [20, 20, 6], [5, 30, 6], [31, 30, 1], [31, 30, 10.0]])
    montage(img, lab, (1.5, 1.5, 8.0), tmp_path / "qc.png", landmarks_vox=pts, title="phantom")
    data = (tmp_path / "qc.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
