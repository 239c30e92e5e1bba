"""Which way round the heart lies in the voxel grid: the sixteen presentations of a volume that keep
the slice axis the slice axis (the eight symmetries of the in-plane square, each with the slice order
kept or reversed), as exact permutations of voxels.

``ssll segment`` searches them with the network (:mod:`ssll.nn.orientation`, where the reason is told);
this module holds the permutations themselves, without torch, so the QC can show a volume the way it was
segmented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ssll.types import Array

__all__ = ["ORIENTATIONS", "STORED", "Orientation", "orientation_by_name", "same_shape_groups"]


@dataclass(frozen=True)
class Orientation:
    """A permutation of a volume's voxels that keeps the slice axis: optionally transpose the in-plane
    axes (i, j), then turn ``quarter_turns`` times in the (i, j) plane (``numpy.rot90`` sense), then
    optionally reverse the slice axis k.

    Arrays are oriented on their last three axes ``(..., I, J, K)``, so one orientation serves an image
    ``(I, J, K)``, a batch ``(N, I, J, K)`` and class probabilities ``(C, I, J, K)`` alike.
    """

    transpose: bool = False
    quarter_turns: int = 0
    reverse_slices: bool = False

    @property
    def name(self) -> str:
        """``rot0`` for the stored orientation; e.g. ``transpose+rot90+reversed``."""
        return (("transpose+" if self.transpose else "") + f"rot{90 * (self.quarter_turns % 4)}"
                + ("+reversed" if self.reverse_slices else ""))

    def apply(self, a: Array) -> Array:
        """The array ``(..., I, J, K)`` seen in this orientation (a view where numpy allows)."""
        a = np.swapaxes(a, -3, -2) if self.transpose else a
        a = np.rot90(a, self.quarter_turns, axes=(-3, -2))
        return a[..., ::-1] if self.reverse_slices else a

    def undo(self, a: Array) -> Array:
        """The inverse of :meth:`apply`: an array in this orientation back on the stored grid."""
        a = a[..., ::-1] if self.reverse_slices else a
        a = np.rot90(a, -self.quarter_turns, axes=(-3, -2))
        return np.swapaxes(a, -3, -2) if self.transpose else a

    def points(self, points: Array, shape: tuple[int, int, int]) -> Array:
        """Voxel coordinates ``(N, 3)`` (i, j, k; fractional allowed) on a stored grid of ``shape`` ->
        where :meth:`apply` puts them: the same point of the volume, in this orientation's grid."""
        p = np.array(points, dtype=np.float64, ndmin=2, copy=True)
        i_len, j_len, k_len = shape
        if self.transpose:
            p[:, [0, 1]] = p[:, [1, 0]]
            i_len, j_len = j_len, i_len
        for _ in range(self.quarter_turns % 4):  # numpy.rot90 in (i, j): (i, j) -> (J - 1 - j, i)
            p[:, [0, 1]] = np.stack([j_len - 1 - p[:, 1], p[:, 0]], axis=1)
            i_len, j_len = j_len, i_len
        if self.reverse_slices:
            p[:, 2] = k_len - 1 - p[:, 2]
        return p

    @property
    def swaps_in_plane(self) -> bool:
        """Whether the in-plane axes I and J trade places (a transpose or an odd turn, not both)."""
        return self.transpose != bool(self.quarter_turns % 2)

    def shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Grid shape ``(I, J, K)`` after :meth:`apply`: I and J swap when :attr:`swaps_in_plane`."""
        i, j, k = shape
        return (j, i, k) if self.swaps_in_plane else (i, j, k)


#: the stored orientation (the identity)
STORED = Orientation()
#: all sixteen, the stored one first
ORIENTATIONS: tuple[Orientation, ...] = tuple(
    Orientation(t, r, k) for k in (False, True) for t in (False, True) for r in range(4))


def same_shape_groups(volumes: Sequence[tuple[int, int, int]], orientations: Sequence[Orientation]) -> list[list[int]]:
    """Indices of the volumes (grid shapes ``(I, J, K)``) that have the same shape in their orientation,
    in first-seen order: what can be stacked into one batch (a non-square grid turned a quarter cannot
    batch with the rest)."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for n, (shape, o) in enumerate(zip(volumes, orientations, strict=True)):
        groups.setdefault(o.shape(shape), []).append(n)
    return list(groups.values())


def orientation_by_name(name: str) -> Orientation:
    """The orientation called ``name`` (:attr:`Orientation.name`, e.g. ``rot90+reversed``).

    Raises:
        ValueError: no orientation has that name (the message lists them).
    """
    for o in ORIENTATIONS:
        if o.name == name:
            return o
    raise ValueError(f"no orientation {name!r}; one of: {', '.join(o.name for o in ORIENTATIONS)}")
