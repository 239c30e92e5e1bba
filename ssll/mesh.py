"""The biv-me bi-ventricular template: closed surfaces from control points, and voxelisation.

The biv-me subdivision-surface model (Auckland / Cardiac Atlas Project, Apache-2.0) maps 388
control points (patient coordinates, mm) to 5810 surface nodes with a sparse matrix ``S``. Its
11760 triangles carry a surface name. Four closed shells (as in biv-me's ``compute_volume.py``):

* LV endocardium = LV_ENDOCARDIAL + MITRAL_VALVE + AORTA_VALVE
* RV endocardium = RV_FREEWALL + RV_SEPTUM + TRICUSPID_VALVE + PULMONARY_VALVE
* LV epicardium = LV_EPICARDIAL + RV_SEPTUM + thru-wall + MITRAL_VALVE(+_CUT) + AORTA_VALVE(+_CUT)
  (so the septum belongs to the LV wall)
* RV epicardium = RV_EPICARDIAL + RV_SEPTUM + thru-wall + TRICUSPID_VALVE(+_CUT) + PULMONARY_VALVE(+__CUT)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse

from ssll.errors import InputImageError
from ssll.labels import Label
from ssll.types import Array, PathLike

__all__ = ["BivTemplate", "label_shells", "load_control_points", "load_template", "voxelise"]

_SHELLS = {
    "lv_endo": ("LV_ENDOCARDIAL", "MITRAL_VALVE", "AORTA_VALVE"),
    "rv_endo": ("RV_FREEWALL", "RV_SEPTUM", "TRICUSPID_VALVE", "PULMONARY_VALVE"),
    "lv_epi": ("LV_EPICARDIAL", "RV_SEPTUM", "THRU_WALL", "MITRAL_VALVE", "MITRAL_VALVE_CUT", "AORTA_VALVE",
               "AORTA_VALVE_CUT"),
    "rv_epi": ("RV_EPICARDIAL", "RV_SEPTUM", "THRU_WALL", "TRICUSPID_VALVE", "TRICUSPID_VALVE_CUT",
               "PULMONARY_VALVE", "PULMONARY_VALVE__CUT"),
}


@dataclass(frozen=True)
class BivTemplate:
    """The template topology.

    Attributes:
        S: sparse ``(5810, 388)`` subdivision matrix (nodes = S @ control points).
        triangles: ``(T, 3)`` 0-based node indices.
        material: ``(T,)`` surface name per triangle (``THRU_WALL`` for the septum closures).
    """

    S: scipy.sparse.csr_matrix
    triangles: Array
    material: Array

    def nodes(self, control_points: Array) -> Array:
        """Surface nodes ``(5810, 3)`` in mm from control points ``(388, 3)``."""
        return np.asarray(self.S @ np.asarray(control_points, dtype=np.float64))

    def shell(self, name: str) -> Array:
        """Triangles ``(T, 3)`` of the closed shell ``name`` (lv_endo, rv_endo, lv_epi, rv_epi)."""
        return self.triangles[np.isin(self.material, _SHELLS[name])]

    def surface_nodes(self, *materials: str) -> Array:
        """Indices of the nodes used by triangles of the given surfaces."""
        return np.unique(self.triangles[np.isin(self.material, materials)])


def load_template(root: PathLike) -> BivTemplate:
    """Read ``model/`` of the biv-me data folder.

    Raises:
        InputImageError: a file is missing or malformed.
    """
    m = Path(root) / "model"
    try:
        S = scipy.sparse.csr_matrix(scipy.io.loadmat(str(m / "subdivision_matrix_sparse.mat"))["S"])
        tri = np.loadtxt(m / "ETIndicesSorted.txt", dtype=np.int64) - 1
        mat = np.loadtxt(m / "ETIndicesMaterials.txt", dtype=str, usecols=1)
        thru = np.loadtxt(m / "thru_wall_et_indices.txt", dtype=np.int64) - 1
    except (OSError, ValueError, KeyError) as exc:
        raise InputImageError(f"{m}: cannot read the biv-me template ({exc})") from None
    if tri.shape[0] != mat.shape[0]:
        raise InputImageError(f"{m}: {tri.shape[0]} triangles but {mat.shape[0]} materials")
    triangles = np.concatenate([tri, thru])
    material = np.concatenate([mat, np.full(len(thru), "THRU_WALL")])
    return BivTemplate(S, triangles, material)


def load_control_points(path: PathLike) -> Array:
    """Control points ``(388, 3)`` (mm) from a biv-me model CSV (columns x, y, z, Frame)."""
    try:
        arr = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(0, 1, 2))
    except (OSError, ValueError) as exc:
        raise InputImageError(f"{path}: cannot read control points ({exc})") from None
    if arr.shape != (388, 3):
        raise InputImageError(f"{path}: expected 388x3 control points, got {arr.shape}")
    return arr


def voxelise(nodes: Array, triangles: Array, affine: Array, shape: tuple[int, int, int]) -> Array:
    """Inside mask of a closed triangle mesh on a grid (ray parity along axis 2).

    Args:
        nodes: ``(N, 3)`` world coordinates (mm).
        triangles: ``(T, 3)`` node indices of a closed, watertight surface.
        affine: 4x4 voxel -> world of the grid.
        shape: grid shape ``(I, J, K)``.

    Returns:
        Boolean ``(I, J, K)`` mask of voxel centres inside the surface.
    """
    inv = np.linalg.inv(affine)
    v = nodes @ inv[:3, :3].T + inv[:3, 3]
    # nudge ray positions off the lattice so rays never graze a vertex or an edge exactly
    v = v + np.array([1.234567e-4, 7.654321e-5, 0.0])
    tri = v[triangles]  # (T, 3, 3)
    crossings = np.zeros((shape[0], shape[1], shape[2] + 1), np.int32)
    lo = np.ceil(tri[:, :, :2].min(axis=1)).astype(int)
    hi = np.floor(tri[:, :, :2].max(axis=1)).astype(int)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, np.array(shape[:2]) - 1)
    keep = np.all(hi >= lo, axis=1)
    tri, lo, hi = tri[keep], lo[keep], hi[keep]
    # every (triangle, ray) candidate pair, vectorised
    ni = hi[:, 0] - lo[:, 0] + 1
    nj = hi[:, 1] - lo[:, 1] + 1
    count = ni * nj
    t_idx = np.repeat(np.arange(len(tri)), count)
    start = np.cumsum(count) - count
    local = np.arange(int(count.sum())) - np.repeat(start, count)
    pi = lo[t_idx, 0] + local // nj[t_idx]
    pj = lo[t_idx, 1] + local % nj[t_idx]
    t = tri[t_idx]
    x0, y0 = t[:, 0, 0], t[:, 0, 1]
    x1, y1 = t[:, 1, 0], t[:, 1, 1]
    x2, y2 = t[:, 2, 0], t[:, 2, 1]
    d = (y1 - y2) * (x0 - x2) + (x2 - x1) * (y0 - y2)
    ok = np.abs(d) > 1e-12
    d = np.where(ok, d, 1.0)
    w0 = ((y1 - y2) * (pi - x2) + (x2 - x1) * (pj - y2)) / d
    w1 = ((y2 - y0) * (pi - x2) + (x0 - x2) * (pj - y2)) / d
    w2 = 1.0 - w0 - w1
    hit = ok & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    z = w0 * t[:, 0, 2] + w1 * t[:, 1, 2] + w2 * t[:, 2, 2]
    kz = np.clip(np.ceil(z[hit]).astype(int), 0, shape[2])
    np.add.at(crossings, (pi[hit], pj[hit], kz), 1)
    return (np.cumsum(crossings, axis=2)[:, :, : shape[2]] % 2).astype(bool)


def label_shells(template: BivTemplate, nodes: Array, affine: Array, shape: tuple[int, int, int]) -> Array:
    """Canonical label map (uint8) of a bi-ventricular model on a grid."""
    m = {name: voxelise(nodes, template.shell(name), affine, shape) for name in _SHELLS}
    lab = np.zeros(shape, np.uint8)
    lab[m["rv_epi"]] = Label.RV_WALL
    lab[m["rv_endo"]] = Label.RV_CAVITY
    lab[m["lv_epi"]] = Label.LV_WALL
    lab[m["lv_endo"]] = Label.LV_CAVITY
    return lab
