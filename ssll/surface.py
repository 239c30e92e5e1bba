"""Surface meshes of segmented structures (``ssll surface``): one VTK file, and on request a PLY per structure.

Each structure's surface is the boundary between its voxels and the rest (the voxel faces, a
closed and consistently oriented triangle mesh whose enclosed volume equals the voxel volume
exactly), then Taubin lambda/mu smoothing (which removes the staircase without shrinking) in
world coordinates (mm, RAS+). Vertices are shared between faces, triangles face outwards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse

from ssll.labels import Label
from ssll.types import Array, PathLike

__all__ = ["boundary_mesh", "mesh_volume", "run_surface", "taubin_smooth", "write_ply", "write_vtk"]

# the 4 corners (offsets from the voxel's lower corner) of the face on the + side of each axis,
# ordered counter-clockwise seen from outside (normal +axis)
_FACE = {
    0: np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 0, 1]]),
    1: np.array([[0, 1, 0], [0, 1, 1], [1, 1, 1], [1, 1, 0]]),
    2: np.array([[0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]]),
}


def boundary_mesh(mask: Array, affine: Array) -> tuple[Array, Array]:
    """Closed triangle mesh of a voxel mask's boundary.

    Args:
        mask: ``(I, J, K)`` bool.
        affine: 4x4 voxel -> world mm.

    Returns:
        ``vertices`` ``(V, 3)`` world mm and ``triangles`` ``(T, 3)`` int, outward oriented.
    """
    m = np.pad(np.asarray(mask, bool), 1)
    quads = []
    for axis in range(3):
        nxt = np.roll(m, -1, axis=axis)
        prv = np.roll(m, 1, axis=axis)
        plus = np.argwhere(m & ~nxt)  # face on the + side
        minus = np.argwhere(m & ~prv)  # face on the - side: the + face of the previous voxel, reversed
        face = _FACE[axis]
        if plus.size:
            quads.append(plus[:, None, :] + face[None])
        if minus.size:
            shift = np.zeros(3, int)
            shift[axis] = -1
            quads.append((minus + shift)[:, None, :] + face[None, ::-1])
    if not quads:
        return np.zeros((0, 3)), np.zeros((0, 3), int)
    q = np.concatenate(quads)  # (F, 4, 3) corner grid indices in the padded grid
    corners, inv = np.unique(q.reshape(-1, 3), axis=0, return_inverse=True)
    inv = inv.reshape(-1, 4)
    tris = np.concatenate([inv[:, [0, 1, 2]], inv[:, [0, 2, 3]]])
    # corner (c) of the padded grid is at voxel coordinate c - 1 - 0.5
    vox = corners - 1.5
    verts = vox @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]
    if np.linalg.det(np.asarray(affine)[:3, :3]) < 0:  # a mirroring affine flips the orientation
        tris = tris[:, ::-1]
    return verts, tris


def taubin_smooth(vertices: Array, triangles: Array, *, iterations: int = 20, lam: float = 0.5,
                  mu: float = -0.53) -> Array:
    """Taubin smoothing (alternating shrink ``lam`` and inflate ``mu`` umbrella steps)."""
    v = np.asarray(vertices, float).copy()
    if len(v) == 0:
        return v
    t = np.asarray(triangles)
    i = np.concatenate([t[:, 0], t[:, 1], t[:, 2], t[:, 1], t[:, 2], t[:, 0]])
    j = np.concatenate([t[:, 1], t[:, 2], t[:, 0], t[:, 0], t[:, 1], t[:, 2]])
    adj = scipy.sparse.coo_matrix((np.ones(len(i)), (i, j)), shape=(len(v), len(v))).tocsr()
    adj.data[:] = 1.0
    deg = np.asarray(adj.sum(1)).ravel()
    for _ in range(iterations):
        for f in (lam, mu):
            v = v + f * (adj @ v / deg[:, None] - v)
    return v


def mesh_volume(vertices: Array, triangles: Array) -> float:
    """Enclosed volume (mm^3) of a closed, outward-oriented mesh (divergence theorem)."""
    a, b, c = (np.asarray(vertices)[np.asarray(triangles)[:, n]] for n in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def write_ply(path: PathLike, vertices: Array, triangles: Array) -> None:
    """Binary little-endian PLY (float32 vertices, int32 faces), written atomically."""
    from ssll.io import atomic_path

    v = np.asarray(vertices, "<f4")
    f = np.empty(len(triangles), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    f["n"] = 3
    f["idx"] = triangles
    header = (f"ply\nformat binary_little_endian 1.0\ncomment ssll surface, world RAS+ mm\nelement vertex {len(v)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(v.tobytes())
        fh.write(f.tobytes())


def write_vtk(path: PathLike, meshes: dict[int, tuple[Array, Array]]) -> None:
    """Legacy binary VTK polydata (version 3.0, big-endian as that format requires) of several structures,
    with a ``label`` cell scalar (canonical labels), written atomically.

    Args:
        path: the ``.vtk`` file.
        meshes: per canonical label, ``(vertices (N, 3) world RAS+ mm, triangles (M, 3) vertex indices)``.
    """
    from ssll.io import atomic_path

    verts, tris, labels, off = [], [], [], 0
    for lab, (v, t) in meshes.items():
        verts.append(np.asarray(v))
        tris.append(np.asarray(t) + off)
        labels.append(np.full(len(t), lab))
        off += len(v)
    v = np.concatenate(verts) if verts else np.zeros((0, 3))
    t = np.concatenate(tris) if tris else np.zeros((0, 3), int)
    lab = np.concatenate(labels) if labels else np.zeros(0, int)
    cells = np.empty((len(t), 4), ">i4")
    cells[:, 0] = 3
    cells[:, 1:] = t
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(("# vtk DataFile Version 3.0\nssll surfaces, world RAS+ mm\nBINARY\nDATASET POLYDATA\n"
                  f"POINTS {len(v)} float\n").encode("ascii"))
        fh.write(np.ascontiguousarray(v, ">f4").tobytes())
        fh.write(f"\nPOLYGONS {len(t)} {4 * len(t)}\n".encode("ascii"))
        fh.write(cells.tobytes())
        fh.write(f"\nCELL_DATA {len(t)}\nSCALARS label int 1\nLOOKUP_TABLE default\n".encode("ascii"))
        fh.write(np.ascontiguousarray(lab, ">i4").tobytes())
        fh.write(b"\n")


def run_surface(*, labels: PathLike, out_dir: PathLike, prefix: str, smooth_iterations: int = 20,
                ply: bool = False) -> dict[str, float]:
    """I/O layer of ``ssll surface``: ``<prefix>.vtk`` (every structure, ``label`` cell scalar) and, with ``ply``,
    ``<prefix>_<structure>.ply`` per structure present: the same surfaces again, for tools that want one file a
    structure (about as large as the VTK, so off unless asked for).

    Returns:
        Enclosed volume (ml) of each smoothed surface.
    """
    from ssll.io import load_labels

    lab = load_labels(labels)
    meshes, volumes = {}, {}
    for c in range(1, len(Label)):
        mask = lab.array == c
        if not mask.any():
            continue
        v, t = boundary_mesh(mask, lab.affine)
        v = taubin_smooth(v, t, iterations=smooth_iterations)
        name = Label(c).name.lower()
        if ply:
            write_ply(Path(out_dir) / f"{prefix}_{name}.ply", v, t)
        meshes[c] = (v, t)
        volumes[name] = mesh_volume(v, t) / 1000.0
    write_vtk(Path(out_dir) / f"{prefix}.vtk", meshes)
    return volumes
