"""Shape refinement on real thick-slice data: does the refined model still match the expert on the acquired slices?

Table III measures the refinement on phantoms, where the HR truth is known. On real data there is
no HR truth, but the expert drew every acquired slice: a refined model that is faithful to the
image must agree with those contours where they exist. For the 20 ACDC validation patients (ED and/or
ES) this compares, on the original image grid against the expert labels (Dice; Hausdorff distance
slice-wise, mm):

* ``network``: the shipped SSLLN-LR segmentation as ``ssll segment`` writes it (probabilities to
  the original grid, largest component per structure);
* ``refined_<grid>``: ``ssll.refine`` of it (landmark affine, NMI selection over the phantom atlas
  bank, B-spline FFD, patch fusion), taken to the original grid by nearest neighbour as
  ``ssll refine`` writes it — once per FFD control grid in ``--grids`` (``+sS``: with per-slice
  shifts fitted, the model moved back onto each slice as acquired, as ``ssll refine`` writes it;
  ``+labels``: the label-only start, ``atlases: init: labels``, instead of the landmark affine;
  ``+motion``: each slice's breath-hold shift measured from the image first, ``ssll.refine.breath_hold_shifts``,
  the corrected stack segmented again and refined, the model moved back by the measured shifts, without the
  trend taken out; ``+motion+detrend``: with a linear trend along the slices taken out of the measured shifts,
  ``motion: detrend``, the product's default with ``motion: estimate``).
  ``init`` and ``mirrored`` in ``per_volume.csv`` say which start each refinement used and whether the
  atlases were mirrored into the target (ACDC's headers show every heart as its mirror image).

The refinement replaces each slice's contour by a smooth 3D shape, so some loss against per-slice
expert contours is expected; the question is how much, and whether the default grid costs more
than a finer one on real shapes. ACDC has no RV-wall label: three structures.

Two more views separate *shape* from *slice shifts* (each slice is its own breath-hold, and the
expert's contours carry its shift, which a smooth model is meant to remove):

* ``dice_sc_<structure>``: Dice after moving each slice of the output in-plane onto the expert's
  (the best whole-voxel shift within 6 mm, ``ssll.evaluate.dice_shift_compensated``);
* volumes (ml; LV wall in ml, x 1.05 for grams): ``ml_<structure>`` of the output on the original
  grid (slice summation, as the expert's), and for refined outputs ``ml_hr_<structure>`` of the
  smooth model on the working grid (what ``ssll measures`` reports as ``refined_*``), cut at the
  base of the imaged slab as ``ssll refine`` does (``atlases: beyond_stack``), and
  ``ml_hr_uncut_<structure>`` before that cut; ``expert_ml_<structure>`` beside them.

``--add-shift-mm SD`` tests motion correction on real anatomy: each acquired slice of the input
image is shifted in-plane by a known random vector (Gaussian, SD mm per axis, clipped at 3 SD, as
``ssll.simulate`` does for phantoms; seeded per patient and phase) before segmentation, while the
expert's contours stay where they were drawn. The truth is then the unshifted heart, and refined
outputs are compared as the motion-free model (not moved back onto the shifted slices).

Run (after ``bench/refinement.py`` has built its bank; the committed results, ~35 min on 2 cores):
    python bench/refinement_acdc.py --phases ED ES --grids 30_15 50_40 30_15_100_80 --out bench/results/refinement_acdc
The landmark start against the label-only start (the committed ``refinement_acdc_init/``, ~30 min):
    python bench/refinement_acdc.py --phases ED ES --grids 30_15 30_15+labels 50_40 50_40+labels --picture "" \
        --out bench/results/refinement_acdc_init
The picture ``beyond_stack_patient017_ED.png`` (the model before and after the cut at the base)
comes from the same script: ``--phases ED --grids 30_15 --limit 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refinement import add_fusion_args, bench_bank, fusion_config

from ssll.atlases import AtlasConfig
from ssll.evaluate import dice, dice_shift_compensated, hausdorff_slicewise
from ssll.io import load_image, load_labels
from ssll.labels import Label
from ssll.motion import MotionConfig, shift_slices
from ssll.nn.data import held_out_cases
from ssll.nn.infer import default_weights, finish_segmentation, landmark_points, load_model, predict
from ssll.preprocess import preprocess_volume, to_original
from ssll.qc import overlay_rgb
from ssll.refine import (
    RefineConfig,
    acquired_slices,
    clip_beyond_stack,
    labels_as_acquired,
    motion_corrected,
    refine,
    stack_slab,
)
from ssll.register import FFDConfig
from ssll.types import Volume

STRUCTS = (Label.LV_CAVITY, Label.LV_WALL, Label.RV_CAVITY)
# Named grids: in-plane control spacing per level, through-plane doubled (the phantom benches' pairs).
GRIDS = {"30_15": ((30.0, 15.0), (60.0, 40.0)), "50_40": ((50.0, 40.0), (100.0, 80.0)),
         "80_60": ((80.0, 60.0), (160.0, 120.0))}


def parse_grid(spec: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """FFD control spacing (mm) of a grid name: a name of ``GRIDS``, or ``I1_I2_T1_T2``.

    ``I1_I2_T1_T2`` gives the in-plane spacing of the coarse and fine level, then the
    through-plane spacing of each (what ``bench/refinement.py`` takes as ``--control-spacing-mm
    I1 I2 --through-plane-mm T1 T2``). A suffix ``+sS`` (e.g. ``30_15+s10``) is the same grid
    with per-slice shifts fitted (``ffd: slice_shift_mm: S``; see :func:`parse_variant`), ``+labels`` the
    label-only start (:func:`variant_init`).

    Raises:
        argparse.ArgumentTypeError: neither a named grid nor four positive numbers.
    """
    spec = spec.split("+", 1)[0]
    if spec in GRIDS:
        return GRIDS[spec]
    try:
        v = [float(x) for x in spec.split("_")]
    except ValueError:
        v = []
    if len(v) != 4 or min(v) <= 0:
        raise argparse.ArgumentTypeError(f"grid {spec!r}: expected one of {sorted(GRIDS)} or I1_I2_T1_T2 in mm")
    return (v[0], v[1]), (v[2], v[3])


FLAGS = ("labels", "motion", "detrend")  # the ``--grids`` suffixes that are switches (the others are ``+sS``)


def suffixes(spec: str) -> list[str]:
    """The suffixes of a ``--grids`` entry: ``"30_15+motion+detrend"`` -> ``["motion", "detrend"]``."""
    return spec.split("+")[1:]


def parse_variant(spec: str) -> FFDConfig:
    """The FFD settings of a ``--grids`` entry: :func:`parse_grid`'s control spacing, and the
    per-slice shift prior (mm) after ``+s`` (0, none fitted, without the suffix)."""
    ip, tp = parse_grid(spec)
    shift = 0.0
    for suffix in suffixes(spec):
        if suffix in FLAGS:
            continue
        try:
            shift = float(suffix.removeprefix("s")) if suffix.startswith("s") else -1.0
        except ValueError:
            shift = -1.0
        if shift <= 0:
            raise argparse.ArgumentTypeError(f"grid {spec!r}: a suffix must be +sS with S > 0 (mm) or one of "
                                             + ", ".join(f"+{f}" for f in FLAGS))
    return FFDConfig(control_spacing_mm=ip, through_plane_mm=tp, slice_shift_mm=shift)


def variant_motion(spec: str) -> bool:
    """Whether a ``--grids`` entry measures the breath-hold shifts first (suffix ``+motion``: the stack corrected by
    :func:`ssll.refine.breath_hold_shifts`, segmented again and refined; ``motion: estimate``)."""
    return "motion" in suffixes(spec)


def variant_detrend(spec: str) -> bool:
    """Whether a ``--grids`` entry takes a linear trend along the slices out of the measured shifts (suffix
    ``+detrend``, with ``+motion``; ``motion: detrend``)."""
    return "detrend" in suffixes(spec)


def variant_init(spec: str) -> str:
    """The atlas start of a ``--grids`` entry: ``labels`` with the suffix ``+labels``, else ``landmarks``."""
    return "labels" if "labels" in suffixes(spec) else "landmarks"


def with_slice_shifts(img: Volume, sd_mm: float, patient: int, phase: str) -> tuple[Volume, np.ndarray]:
    """``img`` with each slice (axis 2) shifted in-plane by a random vector (mm; Gaussian, ``sd_mm``
    per axis, clipped at 3 sd; linear interpolation, edge values outside), seeded by patient and phase.

    Returns:
        ``(shifted image, shifts (K, 2) mm)``: slice ``k`` shows the original at ``v - shifts[k] / spacing``.
    """
    rng = np.random.default_rng([11, patient, 0 if phase == "ED" else 1])
    arr = np.asarray(img.array, np.float32)
    shifts = np.clip(rng.normal(0.0, sd_mm, size=(arr.shape[2], 2)), -3 * sd_mm, 3 * sd_mm)
    return Volume(shift_slices(arr, np.arange(arr.shape[2]), shifts, img.spacing), img.affine, header=img.header), shifts


def long_axis_picture(image: np.ndarray, models: dict[str, np.ndarray], slab: tuple[int, int] | None, path: Path,
                      title: str) -> None:
    """PNG: one long-axis cut (working grid, through the LV centre along axis 0) per model over the
    image, in the QC montages' colours (:func:`ssll.qc.overlay_rgb`), slice axis upwards."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(models.values()))
    i = int(np.argwhere(first == Label.LV_CAVITY)[:, 0].mean())
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 4.2))
    for ax, (name, lab) in zip(np.atleast_1d(axes), models.items()):
        ax.imshow(overlay_rgb(image[i], lab[i]), origin="lower", aspect=2.0 / 1.25, interpolation="nearest")
        if slab is not None:
            for k in (slab[0] - 0.5, slab[1] + 0.5):
                ax.axhline(k, color="c", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def main(a: argparse.Namespace) -> None:
    warnings.simplefilter("ignore")
    out, bank_dir, bank = bench_bank(a)
    cases = held_out_cases(a.data, a.config, phases=a.phases)
    if a.limit:
        cases = cases[: a.limit]
    model = load_model(a.weights_lr or default_weights("sslln_lr"))
    fusion = fusion_config(a)
    atlases = AtlasConfig(rv_wall_from_atlases=a.rv_wall_from_atlases)
    cfgs = {g: RefineConfig(atlases=replace(atlases, init=variant_init(g)), ffd=parse_variant(g), fusion=fusion,
                            motion=MotionConfig(estimate=variant_motion(g), detrend=variant_detrend(g)))
            for g in a.grids}
    rows = []
    for c in cases:
        img = load_image(c["image"])
        gt = load_labels(c["labels"], "acdc")
        if a.add_shift_mm > 0:
            img, _added = with_slice_shifts(img, a.add_shift_mm, int(c["patient"].removeprefix("patient")), c["phase"])
        work, rec = preprocess_volume(img)
        lab, lmap, _conf, prob = predict(model, work.array[None], return_prob=True)
        seg = finish_segmentation(lab[0], lmap[0], prob[0], rec)
        pts = landmark_points(lmap[0], rec, fov=seg.fov)
        ks, slab = acquired_slices(rec), stack_slab(rec, fov=seg.fov)
        outs = {"network": seg.original}
        hr, hr_whole = {}, {}
        secs, infos = {}, {}
        for g, cfg in cfgs.items():
            t0 = time.perf_counter()
            v_img, v_labels, v_pts, motion = work.array, seg.labels, pts, None
            if cfg.motion.estimate:  # shifts measured and taken out, the corrected stack segmented again
                v_img, v_labels, v_pts, motion = motion_corrected(work.array, seg.labels, rec.working_affine, pts, bank,
                                                                  rec, cfg, model)
            # the model before and after the cut at the base of the imaged slab (refine(..., stack=) does
            # the same cut; done here so that one registration gives both volumes)
            whole, info = refine(v_img, v_labels, rec.working_affine, v_pts, bank, cfg, slices=ks)
            if motion is not None and motion["slice_shifts_mm"] is not None:
                info["slice_shifts_mm"] = motion["slice_shifts_mm"]
            refined, _cut = clip_beyond_stack(whole, rec.working_affine, v_pts, slab, keep=cfg.atlases.beyond_stack)
            secs[g] = time.perf_counter() - t0
            infos[g] = info
            # on the input grid as `ssll refine` writes it: back on each slice as acquired (with added
            # shifts the truth is the unshifted heart: the motion-free model)
            acq = refined if a.add_shift_mm > 0 else labels_as_acquired(refined, rec.working_affine, info)
            outs[f"refined_{g}"] = to_original(acq, rec, order=0)
            hr[f"refined_{g}"] = refined
            hr_whole[f"refined_{g}"] = whole
        if a.picture and c["patient"] == a.picture and hr:
            g0 = next(iter(hr))
            long_axis_picture(work.array, {"SSLLN-LR": seg.labels, f"{g0}, before the cut": hr_whole[g0],
                                           f"{g0}, cut at the slab's base": hr[g0]}, slab,
                              out / f"beyond_stack_{c['patient']}_{c['phase']}.png",
                              f"ACDC {c['patient']} {c['phase']}: long-axis cut through the LV; cyan lines: the imaged slab")
        ml_orig = float(np.prod(gt.spacing)) / 1000.0
        ml_work = float(abs(np.linalg.det(np.asarray(rec.working_affine)[:3, :3]))) / 1000.0
        for name, o in outs.items():
            g = name.removeprefix("refined_")
            row = {"patient": c["patient"], "group": c["group"], "phase": c["phase"], "method": name,
                   "seconds": secs.get(g), "init": infos.get(g, {}).get("init"),
                   "mirrored": infos.get(g, {}).get("mirrored")}
            sc, _shifts = dice_shift_compensated(o, gt.array, tuple(int(s) for s in STRUCTS), gt.spacing)
            for s in STRUCTS:
                n = s.name.lower()
                row[f"dice_{n}"] = dice(o == s, gt.array == s)
                row[f"dice_sc_{n}"] = sc[int(s)]
                row[f"hd2d_mm_{n}"] = hausdorff_slicewise(o == s, gt.array == s, gt.spacing)
                row[f"ml_{n}"] = float((o == s).sum()) * ml_orig
                row[f"ml_hr_{n}"] = float((hr[name] == s).sum()) * ml_work if name in hr else float("nan")
                row[f"ml_hr_uncut_{n}"] = float((hr_whole[name] == s).sum()) * ml_work if name in hr else float("nan")
                row[f"expert_ml_{n}"] = float((gt.array == s).sum()) * ml_orig
            rows.append(row)
        print(c["patient"], c["phase"], {r["method"]: [round(r[f"dice_{s.name.lower()}"], 3) for s in STRUCTS]
                                         for r in rows[-len(outs):]}, flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "per_volume.csv", index=False, float_format="%.4f")
    cols = [c for c in df.columns if c.startswith(("dice_", "hd2d_"))]
    for n in (s.name.lower() for s in STRUCTS):  # volume differences, automatic - expert (ml)
        df[f"diff_ml_{n}"] = df[f"ml_{n}"] - df[f"expert_ml_{n}"]
        df[f"diff_ml_hr_{n}"] = df[f"ml_hr_{n}"] - df[f"expert_ml_{n}"]
        df[f"diff_ml_hr_uncut_{n}"] = df[f"ml_hr_uncut_{n}"] - df[f"expert_ml_{n}"]
        cols += [f"diff_ml_{n}", f"diff_ml_hr_{n}", f"diff_ml_hr_uncut_{n}"]
    summary = {
        "added_slice_shift_sd_mm": a.add_shift_mm,
        "n_volumes": len(cases), "atlas_bank": f"{bank_dir} ({len(bank)} HR phantom atlases, SSLLN-HR labels)",
        "grids_mm": {g: {"control_spacing_mm": list(c.ffd.control_spacing_mm), "through_plane_mm": list(c.ffd.through_plane_mm),
                         "slice_shift_mm": c.ffd.slice_shift_mm} for g, c in cfgs.items()},
        "fusion": vars(fusion),
        "mean_sd": {ph: {m: {c: [round(float(g[c].mean()), 4), round(float(g[c].std()), 4)] for c in cols
                             if g[c].notna().any()}
                         for m, g in d.groupby("method", sort=False)} for ph, d in df.groupby("phase")},
        "refine_seconds_mean": {m: round(float(g.seconds.mean()), 2) for m, g in df.groupby("method") if g.seconds.notna().any()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["mean_sd"], indent=1))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/acdc/training")
    ap.add_argument("--config", default="config/train_lr.yaml", help="for the validation patient list")
    ap.add_argument("--weights-lr", default=None)
    ap.add_argument("--work", default="resources/bench/refinement", help="bench/refinement.py's work folder (its bank)")
    ap.add_argument("--grids", nargs="+", default=["30_15", "50_40"],
                    help=f"FFD grids to compare: names {sorted(GRIDS)} or I1_I2_T1_T2 (mm; in-plane then through-plane per level)")
    ap.add_argument("--phases", nargs="+", default=["ED", "ES"], choices=["ED", "ES"])
    ap.add_argument("--add-shift-mm", type=float, default=0.0,
                    help="shift each input slice by a known random in-plane vector of this sd (mm); see the docstring")
    ap.add_argument("--limit", type=int, default=0, help="only the first N volumes (a quick check)")
    ap.add_argument("--rv-wall-from-atlases", action=argparse.BooleanOptionalAction, default=True,
                    help="atlases: rv_wall_from_atlases (ACDC targets have no RV wall; --no-... matches it as it is)")
    ap.add_argument("--picture", default="patient017", help="patient whose long-axis cut is drawn (first grid)")
    add_fusion_args(ap)
    ap.add_argument("--out", default="bench/results/refinement_acdc")
    args = ap.parse_args()
    for spec in args.grids:
        try:
            parse_variant(spec)
        except argparse.ArgumentTypeError as e:
            ap.error(str(e))
    main(args)
