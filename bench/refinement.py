"""Duan et al. 2019, Table III on simulated-LR phantoms: does shape refinement recover the HR truth?

For each target phantom (seeds 30000.., never used in training or in the atlas bank) at ED:

* simulate the LR acquisition (10 mm slices, 2 mm sd in-plane slice shifts, up to one slice lost
  per end; ``ssll.simulate``), keep the HR truth out;
* run the shipped SSLLN-LR on it (labels and landmarks), as ``ssll segment`` does;
* upsample its LR-grid segmentation to the 1.25 x 1.25 x 2 mm working grid by (a) nearest
  neighbour and (b) shape-based (signed-distance) interpolation, and (c) refine it
  (``ssll.refine``: landmark affine, NMI selection over the bank, B-spline FFD, patch fusion);
* compare each with the HR truth on the working grid (the phantom's mesh voxelised there, not the HR
  label map interpolated, which loses a third of the RV wall): Dice and Hausdorff distance (mm; 3D, and
  slice-wise 2D averaged over the slices holding both, the paper's group's convention) per
  structure; and the SSLLN-LR landmarks with the exact mesh landmarks (mm).

The atlas bank: HR phantoms (seeds 20000..) at ED and ES, segmented by the shipped SSLLN-HR
(``ssll atlas build``, network labels and landmarks, not the phantom truth).
Also: Fig. 12 ablation (landmark vs label-only affine initialisation) on the first targets;
SimpleITK's B-spline registration (LBFGSB) on the same atlas-target pairs (time and Dice);
refinement time per target and peak memory. Paired Wilcoxon tests (c) vs (a) and (c) vs (b).

Run:  python bench/refinement.py --n 50 --atlas-subjects 60 --out bench/results/refinement
A stiffer FFD grid (``bench/results/refinement_grid50_40``):
      python bench/refinement.py --n 50 --atlas-subjects 60 --control-spacing-mm 50 40 --through-plane-mm 100 80 \
          --out bench/results/refinement_grid50_40
The same targets without the breath-hold shifts (``bench/results/refinement_no_shifts``, first 20):
      python bench/refinement.py --n 20 --ablation 0 --sitk 0 --sim-shift-mm 0 --out bench/results/refinement_no_shifts
and with the paper's horizontal shifts only (``bench/results/refinement_horizontal_shifts``, first 20):
      python bench/refinement.py --n 20 --ablation 0 --sitk 0 --sim-shift-axes 0 \
          --out bench/results/refinement_horizontal_shifts
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path
from typing import Any, NamedTuple

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

from ssll.atlases import AtlasConfig, crop, crop_box, load_bank, run_atlas_build, select_atlases  # noqa: E402
from ssll.evaluate import dice, overlap_metrics  # noqa: E402
from ssll.fusion import FusionConfig  # noqa: E402
from ssll.interpolate import nearest_upsample, shape_based_upsample  # noqa: E402
from ssll.labels import LANDMARK_NAMES, Label  # noqa: E402
from ssll.nn.infer import default_weights, landmark_points, load_model, predict  # noqa: E402
from ssll.phantom import anatomy_labels, make_phantom, phantom_anatomy, require_bank, run_phantom  # noqa: E402
from ssll.preprocess import preprocess_volume, probabilities_to_original, resample  # noqa: E402
from ssll.qc import overlay_rgb  # noqa: E402
from ssll.refine import RefineConfig, acquired_slices, refine, stack_slab  # noqa: E402
from ssll.register import FFDConfig, register_labels, warp_volume  # noqa: E402
from ssll.simulate import LRConfig, simulate_lr  # noqa: E402
from ssll.types import Volume, voxel_size  # noqa: E402

STRUCTS = [Label(c).name.lower() for c in range(1, 5)]
PAPER = {"LR+SR": {"dice": [0.940, 0.863, 0.914, 0.557], "hd_mm": [4.0, 4.4, 5.0, 6.1]},
         "HR": {"dice": [0.960, 0.879, 0.929, 0.662]}}


class Target(NamedTuple):
    """Table III's target of one seed: ``ed`` the HR phantom's ED phase (``image``, ``labels``,
    ``landmarks`` in world mm), ``sim`` its simulated LR acquisition (:func:`ssll.simulate.simulate_lr`),
    ``image``/``record`` that acquisition on the working grid, ``truth`` the phantom's labels voxelised
    from its mesh on the working grid (exact; the working grid is half a slice off the HR grid) and
    ``spacing`` the working grid's voxel size (mm)."""

    ed: dict
    sim: dict
    image: Volume
    record: Any
    truth: np.ndarray
    spacing: tuple[float, ...]


def add_lr_simulation_args(ap: argparse.ArgumentParser) -> None:
    """The LR simulation's options (``--sim-shift-mm``, ``--sim-shift-axes``), shared with
    ``bench/refinement_oracle.py`` so that both benches make the same targets; see :func:`lr_simulation`."""
    ap.add_argument("--sim-shift-mm", type=float, default=LRConfig().shift_mm,
                    help="sd (mm) of the simulated breath-hold shift of each LR slice (LRConfig.shift_mm); 0: none, "
                         "paired with the same targets")
    ap.add_argument("--sim-shift-axes", type=int, nargs="+", choices=(0, 1), default=list(LRConfig().shift_axes),
                    help="in-plane axes of the simulated shifts (LRConfig.shift_axes); 0 alone: the paper's 'horizontal'")


def add_target_args(ap: argparse.ArgumentParser, n: int, *, first_seed: bool = True, what: str = "target phantoms") -> None:
    """The options of the benches that refine Table III's targets with this bench's bank: ``--n`` (default ``n``),
    ``--first-seed`` (where ``first_seed``; Table III's targets start at 30000), ``--biv-me``, ``--weights-lr`` and
    ``--work`` (this bench's work folder, which holds the bank)."""
    ap.add_argument("--n", type=int, default=n, help=what)
    if first_seed:
        ap.add_argument("--first-seed", type=int, default=30000, help="first target seed (Table III's: 30000)")
    ap.add_argument("--biv-me", default="../shared/data/biv-me")
    ap.add_argument("--weights-lr", default=None)
    ap.add_argument("--work", default="resources/bench/refinement", help="bench/refinement.py's work folder (its bank)")


def add_fusion_args(ap: argparse.ArgumentParser) -> None:
    """The patch fusion's options (``--fusion-search``, ``--fusion-h``; :class:`ssll.fusion.FusionConfig`), shared
    with ``bench/refinement_acdc.py``; see :func:`fusion_config`."""
    ap.add_argument("--fusion-search", type=int, nargs=3, default=list(FusionConfig().search),
                    help="search window of the patch fusion, voxels (i j k; the paper's 7 7 3)")
    ap.add_argument("--fusion-h", type=float, default=FusionConfig().h, help="bandwidth h of the patch fusion")
    ap.add_argument("--fusion-largest-component", action=argparse.BooleanOptionalAction,
                    default=FusionConfig().largest_component,
                    help="keep each structure's largest component after fusion (FusionConfig.largest_component)")


def fusion_config(args: argparse.Namespace) -> FusionConfig:
    """The :class:`ssll.fusion.FusionConfig` of :func:`add_fusion_args`' options."""
    return FusionConfig.from_mapping({"search": list(args.fusion_search), "h": args.fusion_h,
                                      "largest_component": args.fusion_largest_component})


def lr_simulation(args: argparse.Namespace) -> LRConfig:
    """The :class:`ssll.simulate.LRConfig` of :func:`add_lr_simulation_args`' options."""
    return LRConfig(shift_mm=args.sim_shift_mm, shift_axes=tuple(args.sim_shift_axes))


def lr_target(shapes: Any, seed: int, lr: LRConfig | None = None) -> Target:
    """Make Table III's target ``seed`` (one draw per seed, shared by every benchmark that pairs with it).

    ``lr``: the LR simulation (default :class:`ssll.simulate.LRConfig`). The random draws do not depend
    on it, so ``LRConfig(shift_mm=0)`` gives the same stack (the same lost end slices) without the
    breath-hold shifts: a paired target."""
    ph = make_phantom(shapes, seed)
    p = ph["ED"]
    sim = simulate_lr(p["image"], p["labels"], ph["affine"], lr or LRConfig(), np.random.default_rng([7, seed, 2]))
    work_img, rec = preprocess_volume(Volume(sim["image"], sim["affine"]))
    waff = rec.working_affine
    truth = anatomy_labels(phantom_anatomy(shapes, seed), "ED", waff, rec.working_shape)
    return Target(p, sim, work_img, rec, truth, tuple(float(v) for v in voxel_size(waff)))


def scores(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    """Dice and Hausdorff distance (mm) per structure (the columns of Table III), and the slice-wise HD's two
    directions (``hd2d_<structure>_pred_to_truth_mm``, ``_truth_to_pred_mm``; :func:`ssll.evaluate.overlap_metrics`)."""
    return {k: v for k, v in overlap_metrics(pred, truth, spacing, directed=True).items() if not k.startswith("hd95_")}


def shift_error(info: dict, sim_record: dict) -> dict[str, float]:
    """RMS (mm, in-plane vector) of the simulated breath-hold shifts and of the error of the fitted ones
    (``ffd: slice_shift_mm``), both centred over the slices; empty when none were fitted or the
    fitted slices are not the simulated ones one to one."""
    ss = info.get("slice_shifts_mm")
    true = np.asarray(sim_record["shifts_mm"], float)
    if not ss or len(ss["shifts"]) != len(true):
        return {}
    truth = -(true - true.mean(0))  # a slice drawn shifted by +s shows the motion-free model at v - s
    est = np.asarray(ss["shifts"], float)
    return {"shift_rms_true_mm": float(np.sqrt((truth ** 2).sum(1).mean())),
            "shift_rms_error_mm": float(np.sqrt(((est - truth) ** 2).sum(1).mean()))}


def bench_bank(a: argparse.Namespace) -> tuple[Path, Path, list]:
    """Start of the benches that pair with this one: torch on 2 threads, the output folder ``a.out`` made, and the atlas
    bank :func:`build_bank` left in ``a.work`` (its folder and :func:`ssll.atlases.load_bank` of it); exits with a
    message when the bank has not been built. Returns ``(out, bank_dir, bank)``."""
    torch.set_num_threads(2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    bank_dir = Path(a.work) / "bank"
    if not (bank_dir / "atlases.tsv").exists():
        raise SystemExit(f"no atlas bank at {bank_dir}: run bench/refinement.py first (it builds the bank)")
    return out, bank_dir, load_bank(bank_dir)


def build_bank(work: Path, n_subjects: int, weights: Path) -> Path:
    bank_dir = work / "bank"
    if (bank_dir / "atlases.tsv").exists():
        return bank_dir
    ph_dir = work / "atlas_phantoms"
    todo = [s for s in range(20000, 20000 + n_subjects) if not (ph_dir / f"phantom_{s:04d}" / "ES_image.nii.gz").exists()]
    for s in todo:
        run_phantom(biv_me=ARGS.biv_me, out_dir=ph_dir, n=1, first_seed=s)
    sources = [(f"phantom{s}_{ph}", ph_dir / f"phantom_{s:04d}" / f"{ph}_image.nii.gz")
               for s in range(20000, 20000 + n_subjects) for ph in ("ED", "ES")]
    t = time.perf_counter()
    run_atlas_build(sources=sources, out_dir=bank_dir, weights=weights)
    print(f"atlas bank: {len(sources)} atlases in {time.perf_counter() - t:.1f} s", flush=True)
    return bank_dir


def hr_network_accuracy(work: Path, bank: list) -> pd.DataFrame:
    """SSLLN-HR on the bank's HR phantoms, i.e. the atlases' labels: :func:`scores` per structure against the
    phantom truth on its own grid and landmark distance (mm) against the exact mesh landmarks."""
    from ssll.io import load_labels
    from ssll.landmarks import read_landmarks

    rows = []
    for a in bank:
        seed, phase = a.atlas_id.removeprefix("phantom").split("_")
        d = work / "atlas_phantoms" / f"phantom_{int(seed):04d}"
        truth = load_labels(d / f"{phase}_labels.nii.gz")
        pred = resample(a.labels, a.affine, truth.affine, truth.array.shape, order=0)
        lm = np.linalg.norm(a.landmarks - read_landmarks(d / f"{phase}_landmarks.json"), axis=1)
        rows.append({"atlas": a.atlas_id, **scores(pred, truth.array, truth.spacing),
                     **{f"landmark_{n}_mm": v for n, v in zip(LANDMARK_NAMES, lm)}})
    return pd.DataFrame(rows)


def sitk_image(arr: np.ndarray, aff: np.ndarray) -> sitk.Image:
    """A SimpleITK image (LPS) of an (I, J, K) array with a RAS+ affine."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(arr, np.float32).transpose(2, 1, 0)))
    lps = np.diag([-1.0, -1.0, 1.0]) @ aff[:3, :3]
    sp = np.linalg.norm(lps, axis=0)
    img.SetSpacing(sp.tolist())
    img.SetDirection((lps / sp).ravel().tolist())
    img.SetOrigin((np.diag([-1.0, -1.0, 1.0]) @ aff[:3, 3]).tolist())
    return img


def sitk_bspline(tl: np.ndarray, taff: np.ndarray, atlas, init: np.ndarray, slices: np.ndarray,
                 spacing_mm: tuple[float, float, float]) -> tuple[np.ndarray, float]:
    """SimpleITK B-spline FFD (LBFGSB, mean squares on Gaussian-smoothed label maps, the same landmark
    affine start, metric on the acquired slices); returns the warped atlas labels and seconds."""
    t0 = time.perf_counter()
    fixed = sitk.SmoothingRecursiveGaussian(sitk_image(tl, taff), 1.5)
    moving = sitk.SmoothingRecursiveGaussian(sitk_image(atlas.labels, atlas.affine), 1.5)
    mask = np.zeros(tl.shape, np.uint8)
    mask[:, :, slices] = 1
    fmask = sitk.Cast(sitk_image(mask, taff), sitk.sitkUInt8)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    a = flip @ init @ flip
    aff_t = sitk.AffineTransform(3)
    aff_t.SetMatrix(a[:3, :3].ravel().tolist())
    aff_t.SetTranslation(a[:3, 3].tolist())
    extent = np.array(fixed.GetSize()) * np.array(fixed.GetSpacing())
    mesh = [max(1, int(round(e / s))) for e, s in zip(extent, spacing_mm)]
    bs = sitk.BSplineTransformInitializer(fixed, mesh)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    reg.SetMetricFixedMask(fmask)
    reg.SetMetricSamplingStrategy(reg.RANDOM)  # the usual SimpleITK practice: a random 20% of the voxels
    reg.SetMetricSamplingPercentage(0.2, seed=1)
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=50)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SetMovingInitialTransform(aff_t)
    reg.SetInitialTransform(bs, inPlace=True)
    reg.Execute(fixed, moving)
    comp = sitk.CompositeTransform([aff_t, bs])
    warped = sitk.Resample(sitk_image(atlas.labels, atlas.affine), sitk_image(tl, taff), comp, sitk.sitkNearestNeighbor, 0.0)
    secs = time.perf_counter() - t0
    return sitk.GetArrayFromImage(warped).transpose(2, 1, 0).astype(np.uint8), secs


def picture(path: Path, image: np.ndarray, panels: dict[str, np.ndarray], lv_centre: np.ndarray) -> None:
    i, j, k = (int(round(v)) for v in lv_centre)
    fig, axes = plt.subplots(2, len(panels), figsize=(3.2 * len(panels), 6.4))
    for col, (name, lab) in enumerate(panels.items()):
        axes[0, col].imshow(overlay_rgb(image[:, :, k], lab[:, :, k]), origin="lower")
        axes[0, col].set_title(f"{name}\nshort axis, slice {k}", fontsize=9)
        la = overlay_rgb(image[i, :, :], lab[i, :, :])
        axes[1, col].imshow(la, origin="lower", aspect=2.0 / 1.25)
        axes[1, col].set_title("long-axis cut (j-k plane)", fontsize=9)
        for ax in axes[:, col]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    out = Path(ARGS.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(ARGS.work)
    torch.set_num_threads(2)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
    w_lr = Path(ARGS.weights_lr or default_weights("sslln_lr"))
    w_hr = Path(ARGS.weights_hr or default_weights("sslln_hr"))
    bank_dir = build_bank(work, ARGS.atlas_subjects, w_hr)
    bank = load_bank(bank_dir)
    hr = hr_network_accuracy(work, bank)
    hr.to_csv(out / "sslln_hr_on_hr_phantoms.csv", index=False, float_format="%.4f")
    print("SSLLN-HR on the bank's HR phantoms:", hr.drop(columns="atlas").mean().round(3).to_dict(), flush=True)
    model = load_model(w_lr)
    shapes = require_bank(ARGS.biv_me)
    ffd = FFDConfig(control_spacing_mm=tuple(ARGS.control_spacing_mm), through_plane_mm=tuple(ARGS.through_plane_mm),
                    slice_shift_mm=ARGS.slice_shift_mm)
    cfg = RefineConfig(ffd=ffd, fusion=fusion_config(ARGS))
    cfg_labels = RefineConfig(atlases=AtlasConfig(init="labels"), ffd=ffd, fusion=cfg.fusion)
    lr_sim = lr_simulation(ARGS)
    rows, lm_rows, abl_rows, sitk_rows = [], [], [], []
    for n, seed in enumerate(range(30000, 30000 + ARGS.n)):
        t = lr_target(shapes, seed, lr_sim)
        p, work_img, rec, truth, sp = t.ed, t.image, t.record, t.truth, t.spacing
        labels, lmap, _conf, prob = predict(model, work_img.array[None], return_prob=True)
        seg_w, lmap = labels[0], lmap[0]
        seg_lr = probabilities_to_original(prob[0].astype(np.float32), rec)
        pts = landmark_points(lmap, rec)
        shape, waff = rec.working_shape, rec.working_affine
        methods = {
            "sslln_lr_working_grid": seg_w,
            "nearest": nearest_upsample(seg_lr, rec.input_affine, shape, waff),
            "shape_based": shape_based_upsample(seg_lr, rec.input_affine, shape, waff),
        }
        ks = acquired_slices(rec)
        slab = stack_slab(rec)
        t0 = time.perf_counter()
        refined, info = refine(work_img.array, seg_w, waff, pts, bank, cfg, slices=ks, stack=slab)
        t_ref = time.perf_counter() - t0
        methods["refined"] = refined
        for name, lab in methods.items():
            rows.append({"seed": seed, "method": name, **scores(lab, truth, sp)})
        rows[-1].update({"init": info["init"], "seconds_total": t_ref, **{f"seconds_{k}": v for k, v in info["seconds"].items()},
                         "fused_fraction": info["fusion"]["computed_fraction"],
                         "nmi_top": info["selected"][0]["nmi"], **shift_error(info, t.sim["record"])})
        d = np.linalg.norm(pts - np.asarray(p["landmarks"]), axis=1)
        lm_rows.append({"seed": seed, **dict(zip(LANDMARK_NAMES, d))})
        msg = {m: round(r["dice_lv_wall"], 3) for m, r in zip(methods, rows[-4:])}
        print(seed, f"refine {t_ref:.1f}s", "LV wall Dice", msg, flush=True)
        if n < ARGS.ablation:
            t0 = time.perf_counter()
            lab_init, _ = refine(work_img.array, seg_w, waff, pts, bank, cfg_labels, slices=ks, stack=slab)
            abl_rows.append({"seed": seed, "init": "labels", "seconds": time.perf_counter() - t0,
                             **scores(lab_init, truth, sp)})
            abl_rows.append({"seed": seed, "init": "landmarks", "seconds": t_ref, **scores(refined, truth, sp)})
        if n < ARGS.sitk:
            box = crop_box(seg_w, waff, cfg.atlases.margin_mm)
            tl, taff = crop(seg_w, waff, box)
            tt, _ = crop(truth, waff, box)
            kk = ks - box[2].start
            kk = kk[(kk >= 0) & (kk < tl.shape[2])]
            top = select_atlases(tl, taff, pts, bank, (cfg if info["init"] == "landmarks" else cfg_labels).atlases)[0]
            t0 = time.perf_counter()
            res = register_labels(tl, taff, top["atlas"].labels, top["atlas"].affine, top["affine"], cfg.ffd, slices=kk)
            ours = warp_volume(res, top["atlas"].labels, top["atlas"].affine, tl.shape, taff, labels=True)
            t_ours = time.perf_counter() - t0
            fin = (cfg.ffd.control_spacing_mm[-1],) * 2 + (cfg.ffd.through_plane_mm[-1],)  # our finest level's grid
            theirs, t_sitk = sitk_bspline(tl, taff, top["atlas"], top["affine"], kk, fin)
            sitk_rows.append({"seed": seed, "atlas": top["atlas"].atlas_id, "seconds_ours": t_ours, "seconds_sitk": t_sitk,
                              **{f"dice_ours_{s}": dice(ours == c, tt == c) for c, s in enumerate(STRUCTS, 1)},
                              **{f"dice_sitk_{s}": dice(theirs == c, tt == c) for c, s in enumerate(STRUCTS, 1)}})
        if n == 0:
            centre = np.argwhere(truth == Label.LV_CAVITY).mean(0)
            picture(out / "table3_example.png", work_img.array,
                    {"truth (HR)": truth, "(a) nearest": methods["nearest"], "(b) shape-based": methods["shape_based"],
                     "(c) refined": refined}, centre)
    df = pd.DataFrame(rows)
    df.to_csv(out / "table3_per_target.csv", index=False, float_format="%.4f")
    pd.DataFrame(lm_rows).to_csv(out / "landmarks_sslln_lr_vs_exact.csv", index=False, float_format="%.3f")
    summary: dict = {"n_targets": ARGS.n, "atlases_in_bank": len(bank), "atlas_bank": "HR phantoms seeds 20000.. ED+ES, "
                     "segmented by SSLLN-HR", "targets": "simulated-LR phantoms seeds 30000.., ED",
                     "lr_simulation": vars(lr_sim),
                     "refine_config": {"atlases": vars(cfg.atlases), "ffd": vars(cfg.ffd), "fusion": vars(cfg.fusion)},
                     "paper": PAPER, "table3": {}, "wilcoxon_refined_vs": {}}
    for m, g in df.groupby("method", sort=False):
        summary["table3"][m] = {c: [round(float(g[c].mean()), 4), round(float(g[c].std()), 4)]
                                for c in g.columns if c.startswith(("dice_", "hd_", "hd2d_"))}
    ref = df[df.method == "refined"].set_index("seed")
    for m in ("nearest", "shape_based", "sslln_lr_working_grid"):
        other = df[df.method == m].set_index("seed")
        summary["wilcoxon_refined_vs"][m] = {
            c: float(stats.wilcoxon(ref[c], other[c]).pvalue) for c in ref.columns if c.startswith(("dice_", "hd_", "hd2d_"))
            and ref[c].notna().all() and other[c].notna().all() and not np.allclose(ref[c], other[c])}
    summary["speed"] = {k: [round(float(ref[k].mean()), 3), round(float(ref[k].max()), 3)]
                        for k in ref.columns if k.startswith("seconds_")}
    summary["speed"]["note"] = "[mean, max] seconds per target on this machine; torch threads 2"
    summary["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    summary["sslln_hr_on_hr_phantoms"] = {c: [round(float(hr[c].mean()), 4), round(float(hr[c].std()), 4)]
                                          for c in hr.columns if c != "atlas"}
    lm = pd.DataFrame(lm_rows)
    summary["landmarks_sslln_lr_vs_exact_mm"] = {k: [round(float(lm[k].mean()), 2), round(float(lm[k].std()), 2)]
                                                 for k in LANDMARK_NAMES}
    if abl_rows:
        ab = pd.DataFrame(abl_rows)
        ab.to_csv(out / "fig12_ablation.csv", index=False, float_format="%.4f")
        summary["fig12_ablation"] = {i: {c: [round(float(g[c].mean()), 4), round(float(g[c].std()), 4)]
                                         for c in g.columns if c.startswith(("dice_", "hd_", "hd2d_"))}
                                     for i, g in ab.groupby("init")}
    if sitk_rows:
        sk = pd.DataFrame(sitk_rows)
        sk.to_csv(out / "sitk_comparison.csv", index=False, float_format="%.4f")
        summary["sitk_bspline_vs_ours"] = {c: round(float(sk[c].mean()), 4) for c in sk.columns if c not in ("seed", "atlas")}
        summary["sitk_bspline_vs_ours"]["time_ratio_sitk_over_ours"] = round(float(sk.seconds_sitk.sum() / sk.seconds_ours.sum()), 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["table3"], indent=1))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="target phantoms")
    ap.add_argument("--atlas-subjects", type=int, default=60, help="HR phantom subjects in the bank (x2 phases)")
    ap.add_argument("--ablation", type=int, default=20, help="targets also refined with label-only initialisation")
    ap.add_argument("--sitk", type=int, default=5, help="targets with a SimpleITK B-spline comparison")
    ap.add_argument("--biv-me", default="../shared/data/biv-me")
    ap.add_argument("--weights-lr", default=None)
    ap.add_argument("--weights-hr", default=None)
    ap.add_argument("--control-spacing-mm", type=float, nargs=2, default=list(FFDConfig().control_spacing_mm),
                    help="FFD in-plane control spacing per level (default: the code's)")
    ap.add_argument("--through-plane-mm", type=float, nargs=2, default=list(FFDConfig().through_plane_mm),
                    help="FFD through-plane control spacing per level (default: the code's)")
    ap.add_argument("--slice-shift-mm", type=float, default=FFDConfig().slice_shift_mm,
                    help="penalty scale (mm) of the per-slice shifts fitted with the FFD (FFDConfig.slice_shift_mm); 0: none (default: the code's)")
    add_lr_simulation_args(ap)
    add_fusion_args(ap)
    ap.add_argument("--work", default="resources/bench/refinement")
    ap.add_argument("--out", default="bench/results/refinement")
    ARGS = ap.parse_args()
    main()
