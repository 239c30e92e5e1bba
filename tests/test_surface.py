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
    vols = run_surface(labels=path, out_dir=tmp_path / "mesh", prefix="ED", ply=True)
    assert set(vols) == {"lv_cavity", "lv_wall", "rv_cavity", "rv_wall"}
    voxel_ml = 1.5 * 1.5 * 4.0 / 1000
    assert vols["lv_cavity"] == pytest.approx((lab == 1).sum() * voxel_ml, rel=0.08)
    ply = (tmp_path / "mesh" / "ED_lv_cavity.ply").read_bytes()
    assert ply.startswith(b"ply\nformat binary_little_endian 1.0")
    points, cells, labels = _read_binary_vtk(tmp_path / "mesh" / "ED.vtk")
    assert sorted(set(labels.tolist())) == [1, 2, 3, 4]
    ply_v, ply_t = _read_ply(tmp_path / "mesh" / "ED_lv_cavity.ply")
    # the VTK holds the structures in label order: the LV cavity's vertices and triangles come first
    np.testing.assert_array_equal(points[: len(ply_v)], ply_v)
    np.testing.assert_array_equal(cells[labels == 1], ply_t)
    assert mesh_volume(points.astype(float), cells[labels == 1]) / 1000 == pytest.approx(vols["lv_cavity"], rel=1e-5)


def test_surface_writes_ply_only_when_asked(tmp_path) -> None:
    from ssll.cli import main

    lab = biv_phantom((48, 48, 12), spacing=(1.5, 1.5, 4.0))
    path = write_nifti(tmp_path / "lab.nii.gz", lab, spacing=(1.5, 1.5, 4.0))
    assert main(["surface", "--labels", str(path), "--out-vtk", str(tmp_path / "a" / "ED.vtk")]) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["ED.vtk", "ED.vtk.prov.json"]
    assert main(["surface", "--labels", str(path), "--out-vtk", str(tmp_path / "b" / "ED.vtk"), "--ply"]) == 0
    names = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert names == ["ED.vtk", "ED.vtk.prov.json"] + [f"ED_{s}.ply" for s in ("lv_cavity", "lv_wall", "rv_cavity",
                                                                            "rv_wall")]
    assert (tmp_path / "a" / "ED.vtk").read_bytes() == (tmp_path / "b" / "ED.vtk").read_bytes()


def _read_ply(path) -> tuple[np.ndarray, np.ndarray]:
    data = path.read_bytes()
    head, body = data.split(b"end_header\n", 1)
    words = head.decode().split()
    nv, nf = int(words[words.index("vertex") + 1]), int(words[words.index("face") + 1])
    v = np.frombuffer(body[: 12 * nv], "<f4").reshape(nv, 3)
    f = np.frombuffer(body[12 * nv:], dtype=[("n", "u1"), ("idx", "<i4", (3,))], count=nf)
    assert (f["n"] == 3).all()
    return v, f["idx"]


def _read_binary_vtk(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Legacy binary VTK polydata as the format defines it (ASCII keyword lines, big-endian arrays)."""
    data = path.read_bytes()
    lines = data.split(b"\n", 5)
    assert lines[0] == b"# vtk DataFile Version 3.0" and lines[2] == b"BINARY" and lines[3] == b"DATASET POLYDATA"
    kw, n, kind = lines[4].split()
    assert kw == b"POINTS" and kind == b"float"
    n = int(n)
    rest = lines[5]
    points = np.frombuffer(rest[: 12 * n], ">f4").reshape(n, 3)
    rest = rest[12 * n:]
    head, rest = rest[1:].split(b"\n", 1)
    kw, m, size = head.split()
    assert kw == b"POLYGONS" and int(size) == 4 * int(m)
    m = int(m)
    cells = np.frombuffer(rest[: 16 * m], ">i4").reshape(m, 4)
    assert (cells[:, 0] == 3).all()
    rest = rest[16 * m:]
    head = rest[1:].split(b"\n", 3)
    assert head[0] == f"CELL_DATA {m}".encode() and head[1] == b"SCALARS label int 1"
    assert head[2] == b"LOOKUP_TABLE default"
    labels = np.frombuffer(head[3][: 4 * m], ">i4")
    assert head[3][4 * m:] == b"\n"
    return points, cells[:, 1:], labels
