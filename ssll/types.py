"""Domain type aliases and the :class:`Volume` container.

Conventions used everywhere in ``ssll``:

* Arrays are indexed ``[i, j, k]`` (and ``[i, j, k, t]`` for cine) in NIfTI voxel order;
  axis 2 (``k``) is the short-axis slice-stacking direction.
* ``affine`` is the 4x4 NIfTI matrix from voxel index ``(i, j, k, 1)`` to world coordinates
  in millimetres, RAS+: x increases towards the patient's Right, y towards Anterior, z towards
  Superior. DICOM positions (LPS+) are converted on reading by negating x and y.
* Spacing is in millimetres, volumes in millilitres (ml), masses in grams (g).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import numpy.typing as npt

__all__ = ["Array", "PathLike", "Volume", "config_kwargs"]

PathLike = Union[str, "os.PathLike[str]"]
Array = npt.NDArray[Any]


def voxel_size(affine: Array) -> Array:
    """The voxel size of a grid, ``(3,)`` float64 in mm along i, j, k: the column norms of the
    ``(4, 4)`` (or ``(3, 3)``) voxel -> world affine's linear part."""
    return np.linalg.norm(np.asarray(affine, np.float64)[:3, :3], axis=0)


@dataclass
class Volume:
    """An image or label map on a grid in world space.

    Attributes:
        array: voxel data, shape ``(I, J, K)`` or ``(I, J, K, T)``, NIfTI voxel order.
        affine: float64 ``(4, 4)`` voxel index -> world RAS+ coordinates in mm.
        header: optional source NIfTI header, kept so that outputs on the original grid carry
            exactly the input's geometry fields (sform and qform) and land where the input was
            for any reader.
    """

    array: Array
    affine: Array
    header: Any = field(default=None, repr=False)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along i, j, k in mm (column norms of the affine)."""
        s = voxel_size(self.affine)
        return (float(s[0]), float(s[1]), float(s[2]))

    @property
    def shape3(self) -> tuple[int, int, int]:
        """The spatial shape ``(I, J, K)``."""
        return tuple(int(n) for n in self.array.shape[:3])  # type: ignore[return-value]


def config_kwargs(cls: type, m: dict[str, Any] | None, *, tuples: tuple[str, ...] = ()) -> dict[str, Any]:
    """Keyword arguments for the frozen config dataclass ``cls`` from a YAML/JSON mapping.

    Lists named in ``tuples`` become tuples (dataclass defaults are tuples).

    Raises:
        ValueError: a key that ``cls`` does not have (named, with the class).
    """
    from dataclasses import fields

    kw = dict(m or {})
    unknown = set(kw) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    for k in tuples:
        if k in kw:
            kw[k] = tuple(kw[k])
    return kw
