"""Surface meshes: closed, outward, the voxel volume exactly before smoothing, files readable."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import biv_phantom, write_nifti

from ssll.surface import boundary_mesh, mesh_volume, run_surface, taubin_smooth


def _ball(r=8.0, n=24):
    ii, jj, kk = np.meshgrid(*[np.arange(n) - (n - 1) / 2] * 3, indexing="ij")
    return np.sqrt(ii**2 + jj**2 + (kk * 2) ** 2) <= r


@pytest.mark.parametrize("affine", [np.diag([1.25, 1.25, 2.0, 1.0]), np.diag([-1.25, 1.25, 2.0, 1.0])])
def test_boundary_mesh_is_closed_outward_and_exact(affine) -> None:
    mask = _ball()
    v, t = boundary_mesh(mask, affine)
    assert mesh_volume(v, t) == pytest.approx(mask.sum() * 1.25 * 1.25 * 2.0)
    edges = np.sort(np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()  # every edge between exactly two triangles: closed
    s = taubin_smooth(v, t)
    assert mesh_volume(s, t) == pytest.approx(mask.sum() * 1.25 * 1.25 * 2.0, rel=0.05)  # no shrinking


def test_run_surface_writes_ply_and_vtk(tmp_path) -> None:
    lab = biv_phantom((48, 48, 12), spacing=(1.5, 1.5, 4.0))
    path = write_nifti(tmp_path / "lab.nii.gz", lab, spacing=(1.5, 1.5, 4.0))
    vols = run_surface(labels=path, out_dir=tmp_path / "mesh", prefix="ED")
    assert set(vols) == {"lv_cavity", "lv_wall", "rv_cavity", "rv_wall"}
    voxel_ml = 1.5 * 1.5 * 4.0 / 1000
    assert vols["lv_cavity"] == pytest.approx((lab == 1).sum() * voxel_ml, rel=0.08)
    ply = (tmp_path / "mesh" / "ED_lv_cavity.ply").read_bytes()
    assert ply.startswith(b"ply\nformat binary_little_endian 1.0")
    vtk = (tmp_path / "mesh" / "ED.vtk").read_text().splitlines()
    assert vtk[3] == "DATASET POLYDATA" and "SCALARS label int 1" in vtk
