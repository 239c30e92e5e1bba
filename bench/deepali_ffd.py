"""hf-deepali against ssll.register for the B-spline part of the FFD registration (issue 5, item 7).

What deepali would replace is the transform and its regulariser: evaluating the cubic B-spline
displacement from the control points and the bending energy, each with its gradient. The
objective (label consistency of the warped atlas one-hot maps, eq. 4) is ours either way. This
benchmark takes real registration problems (simulated-LR phantom targets segmented by the
shipped SSLLN-LR, landmark affine to the top atlas of the refinement bank) and, per FFD level:

* checks that deepali's ``evaluate_cubic_bspline`` (MIRTK-style separable convolution on the
  level's regular grid) gives our displacement (``ssll.register._dense``, separable products
  with per-axis bases evaluated only at the voxels the level samples: the acquired slices);
* times one optimiser step's transform work, forward and backward: ours (sampled voxels) against
  deepali's (dense grid over every working-grid slice, then the acquired slices picked out), and
  the bending energy (ours: finite differences of the control grid; deepali: ``bending_loss`` in
  its B-spline mode);
* times the rest of the step (trilinear sampling of the atlas maps at the band points), the same
  for both, and a whole registration with ssll.register.

Run (deepali is not a dependency of ssll; install it beside it first):
    pip install hf-deepali
    python bench/deepali_ffd.py --out bench/results/deepali_ffd.json
Needs the refinement bank of ``bench/refinement.py`` (resources/bench/refinement/bank).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from deepali.core.bspline import cubic_bspline_interpolation_weights, evaluate_cubic_bspline  # noqa: E402
from deepali.losses.functional import bending_loss  # noqa: E402

from ssll.atlases import AtlasConfig, crop, crop_box, load_bank, select_atlases  # noqa: E402
from ssll.landmarks import points_from_landmark_map, voxel_to_world  # noqa: E402
from ssll.nn.infer import default_weights, load_model, predict  # noqa: E402
from ssll.phantom import make_phantom, require_bank  # noqa: E402
from ssll.preprocess import preprocess_volume  # noqa: E402
from ssll.refine import acquired_slices  # noqa: E402
from ssll.register import (  # noqa: E402
    FFDConfig,
    _atlas_maps,
    _bending,
    _boundary_band,
    _dense,
    _n_ctrl,
    _pack,
    _sample_indices,
    _trilinear,
    bspline_basis,
    register_labels,
)
from ssll.simulate import LRConfig, simulate_lr  # noqa: E402
from ssll.types import Volume, voxel_size  # noqa: E402


def timed(fn, reps: int) -> float:
    """Median seconds of ``fn()`` over ``reps`` calls after one warm-up."""
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def problem(seed: int, bank: list, model) -> dict:
    """A registration problem: cropped target labels and grid, acquired slices, top atlas and its affine."""
    shapes = require_bank(ARGS.biv_me)
    ph = make_phantom(shapes, seed)
    p = ph["ED"]
    sim = simulate_lr(p["image"], p["labels"], ph["affine"], LRConfig(), np.random.default_rng([7, seed, 2]))
    work, rec = preprocess_volume(Volume(sim["image"], sim["affine"]))
    labels, lmap, _ = predict(model, work.array[None])
    pts = voxel_to_world(points_from_landmark_map(lmap[0]), rec.working_affine)
    cfg = AtlasConfig()
    box = crop_box(labels[0], rec.working_affine, cfg.margin_mm)
    tl, taff = crop(labels[0], rec.working_affine, box)
    ks = acquired_slices(rec) - box[2].start
    ks = ks[(ks >= 0) & (ks < tl.shape[2])]
    top = select_atlases(tl, taff, pts, bank, cfg)[0]
    return {"seed": seed, "target": tl, "affine": taff, "slices": ks, "atlas": top["atlas"], "init": top["affine"]}


def compare_level(pb: dict, lev: int, cfg: FFDConfig, reps: int) -> dict:
    """Transform and bending timings (forward + backward) of one level, ours vs deepali."""
    tl, taff, ks = pb["target"], pb["affine"], pb["slices"]
    spacing = voxel_size(taff)
    ds = cfg.downsample[lev]
    cs = (cfg.control_spacing_mm[lev], cfg.control_spacing_mm[lev], max(cfg.control_spacing_mm[lev], cfg.through_plane_mm[lev]))
    extent = (np.asarray(tl.shape) - 1) * spacing
    idx = _sample_indices(tl.shape, ds, ks)  # ours: in-plane every ds-th voxel, the acquired slices
    pos = [ix * sp for ix, sp in zip(idx, spacing)]
    # deepali needs a whole number of grid points between control points: its grid is in-plane every
    # ds-th voxel and every working-grid slice (2 mm); the control spacing is the same in mm
    stride = [round(cs[a] / (spacing[a] * (ds if a < 2 else 1))) for a in range(3)]
    dense_shape = [len(np.arange(0, tl.shape[0], ds)), len(np.arange(0, tl.shape[1], ds)), tl.shape[2]]
    n_dl = [int(np.ceil(dense_shape[a] / stride[a])) + 3 for a in range(3)]  # a whole control grid over the box
    n_ours = [_n_ctrl(e, c) for e, c in zip(extent, cs)]
    n = [max(a, b) for a, b in zip(n_dl, n_ours)]
    gen = torch.Generator().manual_seed(lev)
    ctrl0 = torch.randn((*n, 3), generator=gen) * 2.0  # mm
    bases = tuple(bspline_basis(p, c, m) for p, c, m in zip(pos, cs, n))
    # the same function: deepali on its dense grid at our sampled voxels
    kernel = cubic_bspline_interpolation_weights(stride=tuple(stride), dtype=torch.float32)  # order (x, y, z) = (i, j, k)
    data0 = ctrl0.permute(3, 2, 1, 0)[None].contiguous()  # (1, 3, C, B, A): deepali's (N, D, Z, Y, X)

    def dl_dense(d: torch.Tensor) -> torch.Tensor:
        u = evaluate_cubic_bspline(d, shape=tuple(reversed(dense_shape)), kernel=kernel)  # (1, 3, K, J', I')
        return u[0].permute(3, 2, 1, 0)  # (I', J', K, 3)

    ours = _dense(ctrl0, bases)
    theirs = dl_dense(data0)[:, :, torch.from_numpy(idx[2])]
    max_diff = float((ours - theirs).abs().max())

    ctrl = ctrl0.clone().requires_grad_(True)
    data = data0.clone().requires_grad_(True)
    ks_t = torch.from_numpy(idx[2])

    def ours_step() -> None:
        ctrl.grad = None
        u = _dense(ctrl, bases)
        (u.square().mean() + _bending(ctrl[None], cs).sum()).backward()

    def dl_step() -> None:
        data.grad = None
        u = dl_dense(data)[:, :, ks_t]
        (u.square().mean() + bending_loss(data, mode="bspline", stride=tuple(stride))).backward()

    def ours_spline() -> None:
        ctrl.grad = None
        _dense(ctrl, bases).square().mean().backward()

    def dl_spline() -> None:
        data.grad = None
        dl_dense(data)[:, :, ks_t].square().mean().backward()

    # the shared rest of a step: trilinear samples of the atlas maps at the (band) points, with gradient
    a = pb["atlas"]
    flat, dims, offsets = _pack([_atlas_maps(a.labels, cfg.smooth_vox[lev], torch.device("cpu"))])
    tgt = tl[np.ix_(*idx)]
    if lev == len(cfg.downsample) - 1 and cfg.band_mm > 0:
        mask = _boundary_band(tgt, spacing * np.array([ds, ds, float(np.median(np.diff(idx[2])))]), cfg.band_mm)
    else:
        mask = np.ones(tgt.shape, bool)
    grid = torch.stack(torch.meshgrid(*[torch.from_numpy(ix.astype(np.float32)) for ix in idx], indexing="ij"), -1)
    v2a = torch.from_numpy((np.linalg.inv(a.affine) @ pb["init"] @ taff).astype(np.float32))
    pts0 = (grid.reshape(-1, 3)[torch.from_numpy(np.flatnonzero(mask))] @ v2a[:3, :3].T + v2a[:3, 3])[None]
    pts = pts0.clone().requires_grad_(True)

    def sample_step() -> None:
        pts.grad = None
        _trilinear(flat, dims, offsets, pts).mean().backward()

    return {
        "level": lev + 1, "control_points_ours": [int(v) for v in n], "deepali_stride": stride,
        "points_ours": int(np.prod([len(i) for i in idx])), "points_deepali_dense": int(np.prod(dense_shape)),
        "band_points": int(mask.sum()), "max_abs_difference_mm": max_diff,
        "ms_spline_ours": 1e3 * timed(ours_spline, reps), "ms_spline_deepali": 1e3 * timed(dl_spline, reps),
        "ms_spline_and_bending_ours": 1e3 * timed(ours_step, reps),
        "ms_spline_and_bending_deepali": 1e3 * timed(dl_step, reps),
        "ms_sampling_shared": 1e3 * timed(sample_step, reps),
    }


def main() -> None:
    torch.set_num_threads(ARGS.threads)
    bank = load_bank(ARGS.bank)
    model = load_model(ARGS.weights or default_weights("sslln_lr"))
    cfg = FFDConfig()
    rows, regs = [], []
    for seed in range(ARGS.seed, ARGS.seed + ARGS.n):
        pb = problem(seed, bank, model)
        for lev in range(len(cfg.downsample)):
            r = {"seed": seed, **compare_level(pb, lev, cfg, ARGS.reps)}
            rows.append(r)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
        a = pb["atlas"]
        register_labels(pb["target"], pb["affine"], a.labels, a.affine, pb["init"], cfg, slices=pb["slices"])  # warm
        t0 = time.perf_counter()
        res = register_labels(pb["target"], pb["affine"], a.labels, a.affine, pb["init"], cfg, slices=pb["slices"])
        regs.append({"seed": seed, "seconds": time.perf_counter() - t0,
                     "steps": int(sum(h["iterations"] for h in res.history))})
    out: dict = {"threads": ARGS.threads, "targets": ARGS.n, "levels": rows, "registrations_ssll": regs}
    steps = sum(r["steps"] for r in regs) / len(regs)
    per_level = {}
    for lev in sorted({r["level"] for r in rows}):
        g = [r for r in rows if r["level"] == lev]
        per_level[lev] = {k: round(float(np.mean([r[k] for r in g])), 3) for k in g[0] if k.startswith(("ms_", "max_abs"))}
    out["mean_per_level"] = per_level
    out["registration_seconds_mean"] = round(float(np.mean([r["seconds"] for r in regs])), 3)
    out["steps_per_registration"] = steps
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    Path(ARGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ARGS.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["mean_per_level"], indent=1), out["registration_seconds_mean"])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5, help="target phantoms (seeds from --seed)")
    ap.add_argument("--seed", type=int, default=30000)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bank", default="resources/bench/refinement/bank")
    ap.add_argument("--biv-me", default="../shared/data/biv-me")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--out", default="bench/results/deepali_ffd.json")
    ARGS = ap.parse_args()
    main()
