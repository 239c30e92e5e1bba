"""One GPU session: train SSLLN-LR and SSLLN-HR with the data resident on the GPU, and time the GPU.

Made for a lent GPU machine with a fixed time budget and no copy of the data: ACDC comes packed
(``bench/gpu/pack_acdc.py``), phantoms are generated there from the biv-me shapes in worker
processes. Steps, each guarded so a failure of one leaves the others' results:

1. rebuild the 200 ACDC working-grid volumes (160x160 heart windows) on the GPU;
2. generate phantoms (seeds 10000..10059 training, 19000..19009 validation; HR and simulated LR);
   meanwhile time the network: batched inference throughput (volumes/s) and peak GPU memory;
3. SSLLN-LR from scratch on ACDC (80 patients, ED and ES) + simulated-LR phantoms: Adam, batch 8,
   eqs. (1)-(3) (RV wall left out of the Dice loss of ACDC samples), GPU augmentation
   (:mod:`ssll.nn.gpu_augment`), bf16 autocast, cosine learning rate over the wall-time budget (so two
   runs can share one GPU and each still anneals and ends in time); validation Dice on the 20 ACDC validation
   patients' windows;
4. SSLLN-HR fine-tuned from it on HR phantoms;
5. shape refinement on the GPU: one subject-phase (selection over 140 HR phantom atlases,
   5 registrations, fusion), timed after a warm-up.

Outputs in ``$OUT``: ``sslln_lr.pt``, ``sslln_hr.pt`` (float16 state dicts), ``log_lr.csv``,
``log_hr.csv``, ``summary.json``.

Run (device, repository root):  PYTHONUNBUFFERED=1 PYTHONPATH=. python3 bench/gpu/train_on_device.py --budget 480
Width and augmentation are options (``--widths``, ``--side-width``, ``--fuse-width``, ``--upsample``;
``--translate-slice-mm``, ``--drop-prob``, ``--elastic-mm``, ``--noise-sd``, ``--slice-jitter-mm``, ``--grid-turns``);
``summary.json`` records both and ``bench/gpu/cards.py`` writes them into the model cards, so
``ssll.nn.infer.load_model`` rebuilds the trained width. ``--swa-start F`` holds the learning rate from the
fraction F of the SSLLN-LR budget on and averages the weights of every later epoch (stochastic weight averaging,
batch-norm statistics recomputed), written as ``sslln_lr_swa.pt`` beside the last epoch's ``sslln_lr.pt``.
Refinement and network timing only, with the shipped weights (about 2 minutes):
    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 bench/gpu/train_on_device.py --only-refine --budget 150 --init ssll/weights/sslln_lr.pt
"""

from __future__ import annotations

import argparse
import csv
import json
import lzma
import math
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, update_bn

from ssll.labels import Label
from ssll.landmarks import landmark_map, points_from_landmark_map, voxel_to_world
from ssll.nn.data import AugmentConfig
from ssll.nn.gpu_augment import augment_batch
from ssll.nn.losses import multitask_loss
from ssll.nn.network import SSLLN
from ssll.nn.train import sample_dice

T0 = time.time()
WINDOW = 160
VALIDATION = {f"patient{i:03d}" for g in range(5) for i in range(20 * g + 17, 20 * g + 21)}
TRAIN_SEEDS = list(range(10000, 10060))
VAL_SEEDS = list(range(19000, 19010))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def log(*a: object) -> None:
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


def window_of(seg: np.ndarray) -> tuple[int, int]:
    """Top-left corner of the 160x160 window centred on the heart's bounding box."""
    ii, jj = np.nonzero((seg > 0).any(2))
    ci, cj = (ii.min() + ii.max()) / 2, (jj.min() + jj.max()) / 2
    return (int(np.clip(round(ci) - WINDOW // 2, 0, seg.shape[0] - WINDOW)),
            int(np.clip(round(cj) - WINDOW // 2, 0, seg.shape[1] - WINDOW)))


def to_sample(image: np.ndarray, seg: np.ndarray, points: np.ndarray, affine: np.ndarray, origin: tuple[int, int],
              name: str, has_rv_wall: bool) -> dict:
    """A window ``[i, j, k]`` as tensors ``(S, H, W)``: float16 image, uint8 seg and landmark map."""
    i0, j0 = origin
    win = (slice(i0, i0 + WINDOW), slice(j0, j0 + WINDOW))
    pts = np.asarray(points, float) - [i0, j0, 0]
    lmk = landmark_map(pts, (WINDOW, WINDOW, seg.shape[2]), affine)
    return {"name": name, "image": torch.from_numpy(np.ascontiguousarray(image[win].transpose(2, 0, 1))).half(),
            "seg": torch.from_numpy(np.ascontiguousarray(seg[win].transpose(2, 0, 1))),
            "lmk": torch.from_numpy(np.ascontiguousarray(lmk.transpose(2, 0, 1))), "rv_wall": has_rv_wall}


def rebuild(g: np.ndarray, glab: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Working-grid window ``(H, W, K)`` image and labels from acquired slices ``(H, W, N)`` and the slice map ``u`` (K,).

    As :func:`ssll.preprocess.resample` along the slice axis: linear (edge value within half a slice of
    the stack, 0 beyond) for the image, then clipped to [0, 1]; nearest neighbour for the labels.
    """
    n = g.shape[2]
    inside = (u >= -0.5) & (u < n - 0.5)
    uc = np.clip(u, 0, n - 1)
    n0 = np.floor(uc).astype(int)
    n1 = np.minimum(n0 + 1, n - 1)
    a = (uc - n0).astype(np.float32)
    img = np.where(inside, np.clip((1 - a) * g[:, :, n0] + a * g[:, :, n1], 0, 1), 0).astype(np.float32)
    lab = np.where(inside, glab[:, :, np.clip(np.floor(u + 0.5).astype(int), 0, n - 1)], 0).astype(np.uint8)
    return img, lab


def load_acdc(pack: Path) -> list[dict]:
    meta = np.load(pack.with_suffix(".meta.npz"))
    n, nmax = len(meta["ids"]), int(meta["n_slices"].max())
    raw = np.frombuffer(lzma.decompress(pack.with_suffix(".xz").read_bytes()), np.uint8)
    q = raw[: n * WINDOW * WINDOW * nmax].reshape(n, WINDOW, WINDOW, nmax)
    glab = raw[n * WINDOW * WINDOW * nmax:].reshape(n, WINDOW, WINDOW, nmax)
    lo, hi = meta["q_range"]
    out = []
    for v in range(n):
        ns = int(meta["n_slices"][v])
        g = q[v, :, :, :ns].astype(np.float32) / 255 * (hi - lo) + lo
        img, seg = rebuild(g, glab[v, :, :, :ns], meta["u"][v])
        s = to_sample(img, seg, meta["points"][v] - [*meta["origin"][v], 0], meta["affine"][v], (0, 0),
                      str(meta["ids"][v]), bool(meta["has_rv_wall"][v]))
        out.append(s)
    return out


def make_phantom_samples(args: tuple[str, int]) -> dict:
    """Worker: one phantom subject as HR and LR samples (windows), plus full grids for refinement."""
    os.environ["OMP_NUM_THREADS"] = "1"
    from ssll.nn.data import phantom_sample
    from ssll.phantom import load_shape_bank, make_phantom

    biv_me, seed = args
    subj = make_phantom(load_shape_bank(biv_me), seed)
    res: dict = {"seed": seed}
    for mode in ("hr", "lr"):
        smp = phantom_sample(subj, seed, mode=mode)
        for phase, s in smp.items():
            res[f"{mode}_{phase}"] = s
    return res


def time_network(device: torch.device, arch: dict) -> dict:
    """Batched inference throughput of SSLLN (``arch``: its keyword arguments) on full 192x192x80
    volumes (random weights: speed only)."""
    net = SSLLN(**arch).to(device).eval()
    out: dict = {}
    for dtype in ("bf16", "fp32"):
        for b in (1, 8, 32, 64):
            x = torch.rand(b, 80, 192, 192, device=device)
            torch.cuda.reset_peak_memory_stats()
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                for _ in range(3):
                    seg, _l = net(x)
                    seg.argmax(1)
                torch.cuda.synchronize()
                n_it = max(3, 64 // b)
                t = time.perf_counter()
                for _ in range(n_it):
                    seg, _l = net(x)
                    lab = seg.argmax(1)
                torch.cuda.synchronize()
                dt = (time.perf_counter() - t) / n_it
            out[f"{dtype}_batch{b}"] = {"volumes_per_s": b / dt, "ms_per_batch": dt * 1e3,
                                        "peak_gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30}
            del x, seg, _l, lab
    # the code path of `ssll segment`: numpy volumes in, labels, landmark maps and confidences out
    try:
        from ssll.nn.infer import LoadedModel, predict
    except ImportError as exc:  # ssll.nn.infer reads NIfTI: nibabel may be missing on a bare GPU machine
        out["predict_numpy"] = f"not measured: {exc}"
        return out
    vols = np.random.default_rng(0).random((32, 192, 192, 80), dtype=np.float32)
    for b in (8, 16):
        predict(LoadedModel(net, {}, device), vols[:b], batch_size=b)
        t = time.perf_counter()
        predict(LoadedModel(net, {}, device), vols, batch_size=b)
        out[f"predict_numpy_batch{b}"] = {"volumes_per_s": len(vols) / (time.perf_counter() - t)}
    return out


def stack(samples: list[dict], device: torch.device) -> dict:
    return {"image": torch.stack([s["image"] for s in samples]).to(device),
            "labels": torch.stack([torch.stack([s["seg"], s["lmk"]]) for s in samples]).to(device),
            "rv_wall": torch.tensor([s["rv_wall"] for s in samples], device=device),
            "names": [s["name"] for s in samples]}


@torch.no_grad()
def validate(net: SSLLN, data: dict, device: torch.device) -> list[float]:
    net.eval()
    scores = []
    for v in range(0, data["image"].shape[0], 8):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            seg, _ = net(data["image"][v: v + 8].float())
        scores += [sample_dice(seg[b], data["labels"][v + b, 0], bool(data["rv_wall"][v + b])) for b in range(seg.shape[0])]
    net.train()
    return [float(x) for x in np.nanmean(np.array(scores, float), axis=0)]


def train_resident(net: SSLLN, train: dict, val: dict, *, seconds: float, lr: float, device: torch.device,
                   log_path: Path, seed: int, batch: int = 8, weight_decay: float = 5e-5, alpha: float = 0.8,
                   cfg: AugmentConfig | None = None, swa_start: float | None = None) -> dict:
    """Train for ``seconds`` of wall time with a cosine learning rate over that time.

    The schedule follows the elapsed fraction of the budget, not an epoch count fixed in advance, so a
    run that shares its GPU with another (``bench/gpu`` runs two at once) still anneals and still stops
    inside its budget; an epoch is not cut short, and validation runs at each eighth of the budget and
    after the last epoch.

    ``swa_start`` (a fraction of the budget, 0-1) switches on stochastic weight averaging: from that
    point the learning rate stays where the cosine had brought it, and the weights after every epoch
    that ends past it are averaged with equal weight. ``net`` keeps the last epoch's weights; the average,
    with its batch-norm statistics recomputed over the training windows (no augmentation), is returned
    under ``"swa_model"`` and validated beside it.
    """
    cfg = cfg or AugmentConfig()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    n = train["image"].shape[0]
    batch = min(batch, n)
    steps = n // batch
    t_start = time.time()
    rows = []
    epoch = 0
    last_per = 0.0
    next_val = 1
    swa_model: AveragedModel | None = None
    swa_lr: float | None = None

    def add_validation(row: dict) -> None:
        d = validate(net, val, device)
        row.update({f"val_dice_{Label(c).name.lower()}": d[c - 1] for c in range(1, 5)})
        log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))

    net.train()
    while True:
        progress = (time.time() - t_start) / seconds
        if epoch >= 1 and progress + last_per / seconds > 1.0:
            break
        epoch += 1
        cur = lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
        if swa_start is not None and progress >= swa_start:
            swa_lr = cur if swa_lr is None else swa_lr
            cur = swa_lr
        for g in opt.param_groups:
            g["lr"] = cur
        perm = torch.randperm(n, generator=gen)
        t = time.time()
        sums = np.zeros(3)
        for s in range(steps):
            idx = perm[s * batch:(s + 1) * batch].to(device)
            img, lab = augment_batch(train["image"][idx].float(), train["labels"][idx], cfg, gen)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                seg, lmk = net(img)
            loss, ld, ll = multitask_loss(seg, lmk, lab[:, 0], lab[:, 1], alpha=alpha, has_rv_wall=train["rv_wall"][idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += [loss.item(), ld.item(), ll.item()]
        last_per = time.time() - t
        row = {"epoch": epoch, "lr": cur, "loss": sums[0] / steps, "dice_loss": sums[1] / steps,
               "landmark_loss": sums[2] / steps, "seconds": last_per}
        if swa_lr is not None:
            if swa_model is None:
                swa_model = AveragedModel(net)
            swa_model.update_parameters(net)  # equal-weight mean of the parameters; batch norm recomputed at the end
            row["swa_epochs"] = int(swa_model.n_averaged)
        done = (time.time() - t_start + last_per) / seconds
        if done * 8 >= next_val or done > 1.0:
            next_val = int(done * 8) + 1
            add_validation(row)
        rows.append(row)
    if "val_dice_lv_cavity" not in rows[-1]:
        add_validation(rows[-1])
    result = {"epochs": epoch, "final": rows[-1], "seconds": time.time() - t_start, "steps_per_epoch": steps,
              "train_volumes": n, "validation_volumes": int(val["image"].shape[0]),
              "schedule": "cosine over wall time" if swa_start is None else
              f"cosine over wall time, held at {swa_lr} from {swa_start} of it (weights averaged)"}
    if swa_model is not None:
        swa_n = int(swa_model.n_averaged)
        averaged = swa_model.module
        recompute_batch_norm(averaged, train["image"], batch, device)
        d = validate(averaged, val, device)
        swa_row = {"epoch": f"swa({swa_n})", **{f"val_dice_{Label(c).name.lower()}": d[c - 1] for c in range(1, 5)}}
        log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in swa_row.items()}))
        rows.append(swa_row)
        result.update({"swa_model": averaged, "swa_epochs": swa_n, "swa_final": swa_row})
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with log_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, restval="")
        w.writeheader()
        w.writerows(rows)
    return result


@torch.no_grad()
def recompute_batch_norm(net: SSLLN, images: torch.Tensor, batch: int, device: torch.device) -> None:
    """Recompute every batch-norm layer's running mean and variance as the plain mean over one pass of ``images``
    ([N, S, H, W] working-grid windows) in batches of ``batch`` (``torch.optim.swa_utils.update_bn``; bf16 autocast
    on CUDA as in training)."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        update_bn((images[v: v + batch].float() for v in range(0, images.shape[0], batch)), net)


def save_weights(net: SSLLN, path: Path) -> None:
    torch.save({k: v.detach().cpu().half() if v.is_floating_point() else v.cpu() for k, v in net.state_dict().items()}, path)


def refine_timing(net_lr: SSLLN, phantoms: list[dict], device: torch.device, n_targets: int, deadline: float) -> dict:
    """Shape refinement of validation LR phantoms on the GPU, bank = every training HR phantom (ED, ES)."""
    from ssll.atlases import Atlas
    from ssll.preprocess import GridRecord
    from ssll.refine import acquired_slices, refine, stack_slab

    bank = []
    for p in phantoms:
        if p["seed"] in VAL_SEEDS:
            continue
        for ph in ("ED", "ES"):
            s = p[f"hr_{ph}"]
            bank.append(Atlas(f"phantom{p['seed']}_{ph}", Path("-"), s["seg"], s["affine"],
                              voxel_to_world(s["points"], s["affine"]), image=s["image"].astype(np.float32)))
    targets = [p["lr_ED"] for p in phantoms if p["seed"] in VAL_SEEDS][: n_targets + 1]
    net_lr.eval()
    times, records = [], []
    for t_i, s in enumerate(targets):
        if time.time() > deadline:
            break
        x = torch.from_numpy(np.ascontiguousarray(s["image"].transpose(2, 0, 1)))[None].float().to(device)
        sync(device)
        t = time.perf_counter()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            seg, lmk = net_lr(x)
        labels = seg.float().argmax(1)[0].permute(1, 2, 0).to(torch.uint8).cpu().numpy()
        lmap = lmk.float().argmax(1)[0].permute(1, 2, 0).to(torch.uint8).cpu().numpy()
        pts = points_from_landmark_map(lmap)
        if np.isnan(pts).any():
            pts = np.where(np.isnan(pts), s["points"], pts)
        t_net = time.perf_counter() - t
        rec = GridRecord.from_dict(s["record"])
        t = time.perf_counter()
        _, r = refine(s["image"], labels, s["affine"], voxel_to_world(pts, s["affine"]), bank,
                      slices=acquired_slices(rec), stack=stack_slab(rec), device=device, what=f"phantom lr {t_i}")
        sync(device)
        wall = time.perf_counter() - t
        if t_i > 0:  # the first is the warm-up
            times.append({"network_s": t_net, "refine_wall_s": wall, **{f"refine_{k}_s": v for k, v in r["seconds"].items()},
                          "fused_fraction": r["fusion"]["computed_fraction"]})
            records.append([a["atlas_id"] for a in r["selected"]])
    return {"atlases": len(bank), "targets": len(times), "per_target": times, "selected": records,
            "mean_refine_wall_s": float(np.mean([x["refine_wall_s"] for x in times])) if times else None}


class _Skip(Exception):
    """A step left out on purpose."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run")
    ap.add_argument("--pack", default=".device/acdc_pack.npz")
    ap.add_argument("--biv-me", default=".device/biv-me")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/ssll_device_out"))
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--hr-seconds", type=float, default=70.0)
    ap.add_argument("--tail-seconds", type=float, default=45.0, help="kept for refinement timing and writing")
    ap.add_argument("--init", default="", help="SSLLN-LR weights to continue from (a warm restart)")
    ap.add_argument("--lr-peak", type=float, default=1e-3, help="SSLLN-LR peak learning rate")
    ap.add_argument("--skip-hr", action="store_true")
    ap.add_argument("--only-refine", action="store_true",
                    help="no training: time the network and the refinement on the GPU with the --init weights")
    ap.add_argument("--skip-refine", action="store_true")
    ap.add_argument("--skip-timing", action="store_true", help="no network throughput timing (a run beside another)")
    ap.add_argument("--n-acdc", type=int, default=0, help="use only the first N ACDC volumes (testing)")
    ap.add_argument("--n-phantoms", type=int, default=0, help="use only N training phantom seeds (testing)")
    default_arch = SSLLN().architecture()
    ap.add_argument("--widths", type=int, nargs=len(default_arch["widths"]), default=default_arch["widths"],
                    help="encoder widths per stage")
    ap.add_argument("--side-width", type=int, default=default_arch["side_width"])
    ap.add_argument("--fuse-width", type=int, default=default_arch["fuse_width"])
    ap.add_argument("--upsample", choices=["bilinear", "aligned"], default=default_arch["upsample"],
                    help="side-branch upsampling (ssll.nn.network; the shipped weights: bilinear)")
    ap.add_argument("--translate-slice-mm", type=float, default=0.0, help="through-plane shift augmentation (mm)")
    ap.add_argument("--drop-prob", type=float, default=0.0, help="chance of a zero-filled slab (the Fig 8 test as training)")
    ap.add_argument("--elastic-mm", type=float, default=0.0, help="smooth in-plane deformation, sd (mm) at control points")
    ap.add_argument("--elastic-spacing-mm", type=float, default=40.0, help="control-point spacing of --elastic-mm")
    ap.add_argument("--noise-sd", type=float, default=0.0, help="Gaussian noise on the [0, 1] image")
    ap.add_argument("--slice-jitter-mm", type=float, default=0.0,
                    help="in-plane shift of each slice, sd (mm) per axis (breath-hold motion; "
                         "AugmentConfig.slice_jitter_mm)")
    ap.add_argument("--slice-jitter-spacing-mm", type=float, default=10.0, help="plane spacing of --slice-jitter-mm")
    ap.add_argument("--grid-turns", action="store_true",
                    help="turn each sample by one of the eight handedness-keeping rotations of the grid "
                         "(AugmentConfig.grid_turns): a network that does not depend on which way round the heart lies")
    ap.add_argument("--swa-start", type=float, default=None,
                    help="fraction of the SSLLN-LR budget after which the learning rate is held and the weights are "
                         "averaged per epoch (stochastic weight averaging; writes sslln_lr_swa.pt beside sslln_lr.pt)")
    a = ap.parse_args()
    arch = {"widths": tuple(a.widths), "side_width": a.side_width, "fuse_width": a.fuse_width, "upsample": a.upsample}
    aug = AugmentConfig(translate_slice_mm=a.translate_slice_mm, drop_prob=a.drop_prob, elastic_mm=a.elastic_mm,
                        elastic_spacing_mm=a.elastic_spacing_mm, noise_sd=a.noise_sd, slice_jitter_mm=a.slice_jitter_mm,
                        slice_jitter_spacing_mm=a.slice_jitter_spacing_mm, grid_turns=a.grid_turns)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    summary: dict = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                     "torch": torch.__version__, "cpu_count": os.cpu_count(),
                     "architecture": SSLLN(**arch).architecture(), "augment": vars(aug),
                     "args": vars(a)}
    log(summary)

    def save_summary() -> None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")

    seeds = (TRAIN_SEEDS[: a.n_phantoms] if a.n_phantoms else TRAIN_SEEDS) + VAL_SEEDS[: 3 if a.n_phantoms else None]
    pool = ProcessPoolExecutor(a.workers)
    futures = [pool.submit(make_phantom_samples, (a.biv_me, s)) for s in seeds]
    acdc = [] if a.only_refine else load_acdc(Path(a.pack))
    if a.n_acdc:
        acdc = acdc[: a.n_acdc // 2] + acdc[-(a.n_acdc - a.n_acdc // 2):]
    log(f"ACDC: {len(acdc)} volumes rebuilt")
    if device.type == "cuda" and not a.skip_timing:
        try:
            summary["network_throughput"] = time_network(device, arch)
            log(json.dumps(summary["network_throughput"]))
        except Exception:  # noqa: BLE001
            summary["network_throughput_error"] = traceback.format_exc()
            log(summary["network_throughput_error"])
        save_summary()
    phantoms, failed = [], []
    wait_until = T0 + (0.8 if a.only_refine else 0.35) * a.budget
    done, _ = wait(futures, timeout=max(1.0, wait_until - time.time()))
    for f in done:
        try:
            phantoms.append(f.result())
        except Exception as exc:  # noqa: BLE001
            failed.append(repr(exc)[:300])
    pool.shutdown(wait=False, cancel_futures=True)
    phantoms.sort(key=lambda p: p["seed"])
    summary["phantoms"] = {"made": len(phantoms), "failed": failed}
    log(f"phantoms: {len(phantoms)} made, {len(failed)} failed")

    def ph_samples(mode: str, val: bool) -> list[dict]:
        res = []
        for p in phantoms:
            if (p["seed"] in VAL_SEEDS) != val:
                continue
            for ph in ("ED", "ES"):
                s = p[f"{mode}_{ph}"]
                res.append(to_sample(s["image"], s["seg"], s["points"], s["affine"], window_of(s["seg"]),
                                     f"phantom{mode}{p['seed']}_{ph}", True))
        return res

    acdc_train = [s for s in acdc if s["name"].split("_")[0] not in VALIDATION]
    acdc_val = [s for s in acdc if s["name"].split("_")[0] in VALIDATION]
    net = SSLLN(**arch).to(device)
    if a.init:
        init = torch.load(a.init, map_location="cpu", weights_only=True)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in init.items()})
        summary["sslln_lr_init"] = a.init
    lr_seconds = T0 + a.budget - time.time() - (0 if a.skip_hr else a.hr_seconds) - a.tail_seconds
    try:
        if a.only_refine:
            raise _Skip
        # ACDC twice per epoch: it is the data the validation measures; phantoms add the RV wall
        tr = stack(acdc_train * 2 + ph_samples("lr", False), device)
        va = stack(acdc_val, device)
        log(f"SSLLN-LR: {tr['image'].shape[0]} training volumes, {va['image'].shape[0]} validation, {lr_seconds:.0f} s")
        summary["sslln_lr"] = train_resident(net, tr, va, seconds=lr_seconds, lr=a.lr_peak, device=device,
                                             log_path=out / "log_lr.csv", seed=0, cfg=aug, swa_start=a.swa_start)
        swa_model = summary["sslln_lr"].pop("swa_model", None)
        summary["sslln_lr"]["training_volumes"] = tr["names"]
        lrp = ph_samples("lr", True)
        if lrp:
            summary["sslln_lr"]["val_dice_lr_phantoms"] = validate(net, stack(lrp, device), device)
            if swa_model is not None:
                summary["sslln_lr"]["swa_val_dice_lr_phantoms"] = validate(swa_model, stack(lrp, device), device)
        save_weights(net, out / "sslln_lr.pt")
        if swa_model is not None:
            save_weights(swa_model, out / "sslln_lr_swa.pt")
        del tr
    except _Skip:
        pass
    except Exception:  # noqa: BLE001
        summary["sslln_lr_error"] = traceback.format_exc()
        log(summary["sslln_lr_error"])
    save_summary()
    net_lr = net
    try:
        hr_train, hr_val = ph_samples("hr", False), ph_samples("hr", True)
        if hr_train and hr_val and (out / "sslln_lr.pt").exists() and not (a.skip_hr or a.only_refine):
            net_hr = SSLLN(**arch).to(device)
            net_hr.load_state_dict(net_lr.state_dict())
            seconds = T0 + a.budget - time.time() - a.tail_seconds
            log(f"SSLLN-HR: {len(hr_train)} training volumes, {seconds:.0f} s")
            summary["sslln_hr"] = train_resident(net_hr, stack(hr_train, device), stack(hr_val, device), seconds=seconds,
                                                 lr=3e-4, device=device, log_path=out / "log_hr.csv", seed=2, cfg=aug)
            save_weights(net_hr, out / "sslln_hr.pt")
    except Exception:  # noqa: BLE001
        summary["sslln_hr_error"] = traceback.format_exc()
        log(summary["sslln_hr_error"])
    save_summary()
    if phantoms and not a.skip_refine:
        torch.backends.cudnn.benchmark = False  # the refinement's shapes change per target and level: no autotuning
        try:
            summary["refine_gpu"] = refine_timing(net_lr, phantoms, device, n_targets=5, deadline=T0 + a.budget + 20)
            log(json.dumps(summary["refine_gpu"])[:2000])
        except Exception:  # noqa: BLE001
            summary["refine_gpu_error"] = traceback.format_exc()
            log(summary["refine_gpu_error"])
    summary["total_s"] = time.time() - T0
    save_summary()
    log("done")


if __name__ == "__main__":
    main()
