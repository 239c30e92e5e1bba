"""The README's "From Python" block runs as written and gives what `ssll segment` writes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ssll.io import load_image
from ssll.labels import LANDMARK_NAMES
from ssll.nn.infer import landmark_points

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_block_segments_the_demo_patient(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### From Python"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    monkeypatch.chdir(ROOT)
    ns: dict = {}
    exec(compile(block, "README.md (From Python)", "exec"), ns)  # noqa: S102 - our own README
    result, record = ns["result"], ns["record"]
    img = load_image(ROOT / "demo/acdc/patient080/patient080_frame01.nii.gz")
    labels = ns["labels"]
    assert labels.shape == img.shape3 and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4} and {1, 2, 3} <= set(np.unique(labels))
    assert result.orientation["orientation"] == "rot0" and result.orientation["searched"]  # ACDC's way round
    assert all(0.7 < result.expected_dice[s] <= 1 for s in ("lv_cavity", "lv_wall", "rv_cavity"))
    pts = landmark_points(result.segmentation.landmark_map, record)
    assert pts.shape == (len(LANDMARK_NAMES), 3) and np.isfinite(pts).all()
