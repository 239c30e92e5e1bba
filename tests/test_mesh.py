from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA

from ssll.labels import Label
from ssll.mesh import label_shells, load_control_points, load_template, voxelise


def _sphere(radius: float, n_lat: int = 40, n_lon: int = 80) -> tuple[np.ndarray, np.ndarray]:
    nodes = [[0, 0, radius]]
    for i in range(1, n_lat):
        th = np.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * np.pi * j / n_lon
            nodes.append([radius * np.sin(th) * np.cos(ph), radius * np.sin(th) * np.sin(ph), radius * np.cos(th)])
    nodes.append([0, 0, -radius])
    tris = []
    for j in range(n_lon):
        tris.append([0, 1 + j, 1 + (j + 1) % n_lon])
    for i in range(n_lat - 2):
        a, b = 1 + i * n_lon, 1 + (i + 1) * n_lon
        for j in range(n_lon):
            j2 = (j + 1) % n_lon
            tris += [[a + j, b + j, b + j2], [a + j, b + j2, a + j2]]
    last = len(nodes) - 1
    base = 1 + (n_lat - 2) * n_lon
    for j in range(n_lon):
        tris.append([base + j, last, base + (j + 1) % n_lon])
    return np.array(nodes, float), np.array(tris)


def test_voxelised_sphere_volume() -> None:
    nodes, tris = _sphere(20.0)
    aff = np.diag([1.0, 1.25, 2.0, 1.0])
    aff[:3, 3] = [-30.3, -30.1, -30.7]
    mask = voxelise(nodes, tris, aff, (62, 50, 32))
    vol = mask.sum() * 1.0 * 1.25 * 2.0
    assert vol == pytest.approx(4 / 3 * np.pi * 20.0**3, rel=0.02)
    # the centre is inside and a corner is outside
    assert mask[30, 24, 15] and not mask[0, 0, 0]


@pytest.mark.real_data
def test_bivme_patient1_volumes() -> None:
    root = SHARED_DATA / "biv-me"
    if not root.is_dir():
        pytest.skip("biv-me data absent")
    t = load_template(root)
    nodes = t.nodes(load_control_points(root / "fitted_patient1/patient1_model_frame_000.txt"))
    lo = nodes.min(0) - 5
    aff = np.diag([1.25, 1.25, 2.0, 1.0])
    aff[:3, 3] = lo
    shape = tuple(int(v) for v in np.ceil((nodes.max(0) - lo + 5) / [1.25, 1.25, 2.0]))
    lab = label_shells(t, nodes, aff, shape)
    ml = 1.25 * 1.25 * 2.0 / 1000
    # biv-me data README: LV cavity ~174 ml, LV wall ~133 g, RV cavity ~170 ml, RV wall ~54 g
    assert (lab == Label.LV_CAVITY).sum() * ml == pytest.approx(174, abs=3)
    assert (lab == Label.LV_WALL).sum() * ml * 1.05 == pytest.approx(133, abs=4)
    assert (lab == Label.RV_CAVITY).sum() * ml == pytest.approx(170, abs=4)
    assert (lab == Label.RV_WALL).sum() * ml * 1.05 == pytest.approx(54, abs=3)
