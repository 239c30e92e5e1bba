"""The whole cardiac cycle: every frame of a cine segmented, the volume curve, and ED / ES by the LV cavity.

The workflow segments two frames per subject (ED and ES, chosen by ``ssll ingest``). A cohort study often
wants the whole curve (filling and ejection rates, or ED and ES found from the volumes instead of an
intensity rule: on the Sunnybrook cine the network's smallest LV cavity is the expert's ES frame, the
intensity rule is one frame early, ``bench/sunnybrook_phases.py``). Every frame is segmented as ``ssll segment``
segments a volume (:func:`ssll.nn.infer.segment_volume`); the orientation of the voxel grid is searched on
the first frame only, since every frame of a cine shares one grid, and used for the others (16 forward
passes more per cine, not per frame). Volumes are measured on the input grid as ``ssll measures`` measures them
(:func:`ssll.measures.phase_measures`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ssll.errors import InputImageError
from ssll.ingest import es_from_lv_volumes, frame
from ssll.measures import cardiac_measures, phase_measures
from ssll.nn.device import batch_size_for
from ssll.nn.infer import (
    LoadedModel,
    VolumeResult,
    landmark_points,
    predict_oriented,
    resolve_orientation,
    segment_volume,
    volume_result,
)
from ssll.nn.orientation import DEFAULT_MARGIN
from ssll.preprocess import PreprocessConfig, check_cine_spacing, preprocess_volume
from ssll.thickness import mean_thickness, segment_thickness
from ssll.types import Array, PathLike, Volume

__all__ = ["CycleResult", "plot_curve", "run_cycle", "volume_curve"]

STRUCTURES = ("lv_cavity", "lv_wall", "rv_cavity")


@dataclass
class CycleResult:
    """The volume curve of one cine.

    Attributes:
        frames: one row per frame: ``frame`` (0-based), ``lv_cavity_ml``, ``lv_mass_g``, ``rv_cavity_ml``,
            ``rv_mass_g`` (NaN unless an RV wall covers the RV cavity, :func:`ssll.measures.rv_wall_coverage`),
            ``lv_wall_thickness_mm`` (the mean over the 16 AHA segments, with the frame's own landmarks, as
            ``ssll measures`` takes it: :mod:`ssll.thickness`) and
            ``expected_dice_min`` (the lowest of the network's expected Dice of its LV cavity, LV wall and RV
            cavity: a quality estimate per frame).
        orientation: the orientation record of the first frame (searched or given), used for every frame.
        ed_frame: the frame of largest LV cavity.
        es_frame: the frame of smallest LV cavity (:func:`ssll.ingest.es_from_lv_volumes`).
    """

    frames: list[dict[str, float]]
    orientation: dict[str, Any]
    ed_frame: int
    es_frame: int

    def summary(self) -> dict[str, Any]:
        """ED / ES frames by the LV cavity with the measures between them (stroke volumes ml, EF %)."""
        ed, es = self.frames[self.ed_frame], self.frames[self.es_frame]
        keys = ("lv_cavity_ml", "lv_mass_g", "rv_cavity_ml", "rv_mass_g")
        row = cardiac_measures({k: ed[k] for k in keys}, {k: es[k] for k in keys})
        return {"n_frames": len(self.frames), "ed_frame": self.ed_frame, "es_frame": self.es_frame,
                "orientation": self.orientation,
                **{k: (None if isinstance(v, float) and math.isnan(v) else round(float(v), 3)) for k, v in row.items()}}


def _row(t: int, result: VolumeResult, cine: Volume, record: Any) -> dict[str, float]:
    seg = result.segmentation
    m = phase_measures(seg.original, cine.spacing, what=f"frame {t}")
    points = landmark_points(seg.landmark_map, record, fov=seg.fov)
    wall = mean_thickness(segment_thickness(seg.original, cine.affine, points))
    eds = [result.expected_dice[s] for s in STRUCTURES if result.expected_dice.get(s) is not None]
    return {"frame": t, **{k: float(v) for k, v in m.items()},
            "lv_wall_thickness_mm": wall,
            "expected_dice_min": float(min(eds)) if eds else math.nan}


def volume_curve(model: LoadedModel, cine: Volume, *, orientation: str = "search", margin: float = DEFAULT_MARGIN,
                 batch_size: int = 4, cfg: PreprocessConfig | None = None) -> CycleResult:
    """Segment every frame of ``cine`` and measure it.

    Args:
        model: the loaded network (:func:`ssll.nn.infer.load_model`).
        cine: ``(I, J, K, T)`` cine, affine RAS+ mm (:func:`ssll.ingest.read_cine`).
        orientation: ``search`` (on the first frame, then used for all), ``stored`` or an orientation's name.
        margin: the search's margin (:func:`ssll.nn.orientation.choose_orientation`).
        batch_size: frames per forward pass.
        cfg: preprocessing settings (the paper's, the shipped networks', by default).

    Returns:
        :class:`CycleResult`.
    """
    if cine.array.ndim != 4 or cine.array.shape[3] < 2:
        raise ValueError(f"volume_curve: need a cine (I, J, K, T) with T >= 2, got {cine.array.shape}")
    n = cine.array.shape[3]
    image0, record0 = _prepared(cine, 0, cfg)
    first = segment_volume(model, image0, record0, orientation=orientation, margin=margin, batch_size=batch_size)
    chosen = resolve_orientation(first.orientation["orientation"])
    rows = [_row(0, first, cine, record0)]
    for s in range(1, n, batch_size):
        ts = list(range(s, min(s + batch_size, n)))
        prepared = [_prepared(cine, t, cfg) for t in ts]
        outs = predict_oriented(model, [w for w, _ in prepared], [chosen] * len(ts), batch_size=batch_size)  # type: ignore[list-item]
        for t, (_, rec), (labels, lmap, conf, prob) in zip(ts, prepared, outs):
            rows.append(_row(t, volume_result(labels, lmap, conf, prob, rec, first.orientation), cine, rec))
    lv = np.array([r["lv_cavity_ml"] for r in rows])
    return CycleResult(rows, first.orientation, int(np.argmax(lv)), es_from_lv_volumes(lv))


def _prepared(cine: Volume, t: int, cfg: PreprocessConfig | None) -> tuple[Array, Any]:
    try:
        work, rec = preprocess_volume(frame(cine, t), cfg)
    except InputImageError as exc:  # name the frame: one blank frame is a common fault of a cine
        raise InputImageError(f"frame {t}: {exc}") from None
    return work.array, rec


def run_cycle(*, image: PathLike, out_tsv: PathLike, out_json: PathLike, subject: str | None = None,
              weights: PathLike | None = None,
              out_png: PathLike | None = None, orientation: str = "search", margin: float = DEFAULT_MARGIN,
              batch_size: int = 0, cfg: PreprocessConfig | None = None) -> CycleResult:
    """I/O layer of ``ssll cycle``: a cine (4D NIfTI, DICOM folder or zip) -> per-frame volumes (TSV), ED / ES by
    the LV cavity with the measures between them (JSON) and, with ``out_png``, a plot of the curve. ``batch_size``
    0: the device's (:func:`ssll.nn.device.batch_size_for`)."""
    import pandas as pd

    from ssll.ingest import read_cine
    from ssll.io import atomic_path, write_json
    from ssll.nn.infer import default_weights, load_model

    cine = read_cine(image)
    check_cine_spacing(cine.affine, image)
    model = load_model(weights or default_weights("sslln_lr"))
    batch_size = batch_size_for(model.device, batch_size)
    try:
        result = volume_curve(model, cine, orientation=orientation, margin=margin, batch_size=batch_size, cfg=cfg)
    except InputImageError as exc:
        raise InputImageError(f"{image}: {exc}") from None
    with atomic_path(out_tsv) as tmp:
        pd.DataFrame(result.frames).to_csv(tmp, sep="\t", index=False, float_format="%.3f")
    write_json(out_json, {**({"subject": subject} if subject else {}), "source": str(image), **result.summary()})
    if out_png is not None:
        plot_curve(result, out_png, title=str(image))
    return result


def plot_curve(result: CycleResult, path: PathLike, *, title: str) -> None:
    """Write a PNG of the cycle against the frame, ED and ES marked: above, the LV and RV cavity volumes
    (ml); below, the mean LV wall thickness (mm; the panel is left out when no frame has one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssll.io import atomic_path

    t = [r["frame"] for r in result.frames]
    wall = [r.get("lv_wall_thickness_mm", math.nan) for r in result.frames]
    with_wall = any(math.isfinite(w) for w in wall)
    fig, axes = plt.subplots(2 if with_wall else 1, 1, sharex=True, squeeze=False, dpi=100,
                             figsize=(6.4, 5.4 if with_wall else 3.6), height_ratios=[2, 1] if with_wall else [1])
    ax = axes[0, 0]
    ax.plot(t, [r["lv_cavity_ml"] for r in result.frames], "o-", color="tab:red", label="LV cavity")
    ax.plot(t, [r["rv_cavity_ml"] for r in result.frames], "s-", color="tab:blue", label="RV cavity")
    for f, name in ((result.ed_frame, "ED"), (result.es_frame, "ES")):
        for a in axes[:, 0]:
            a.axvline(f, color="grey", ls="--", lw=0.8)
        ax.annotate(name, (f, ax.get_ylim()[1]), ha="center", va="bottom", fontsize=8, annotation_clip=False)
    ax.set_ylabel("volume (ml)")
    ax.set_title(title[-60:], fontsize=8, pad=14)
    ax.legend(fontsize=8)
    if with_wall:
        axes[1, 0].plot(t, wall, "^-", color="tab:brown", label="LV wall, mean of 16 AHA segments")
        axes[1, 0].set_ylabel("thickness (mm)")
        axes[1, 0].legend(fontsize=8)
    axes[-1, 0].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
