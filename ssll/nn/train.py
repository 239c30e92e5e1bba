"""Training of SSLLN (``ssll train``): config-driven, checkpointed every epoch, resumable.

The output folder holds ``checkpoint.pt`` (model, optimiser, epoch, RNG state; a rerun resumes
from it), ``log.csv`` (losses and validation Dice per epoch), and, at the end, the shipped
weights ``<name>.pt`` (state dict only, loadable with ``weights_only=True``) with the model card
``<name>.json`` beside them.
"""

from __future__ import annotations

import csv
import json
import random
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ssll.labels import Label
from ssll.nn.data import AugmentConfig, VolumeDataset, cache_acdc, cache_phantoms
from ssll.nn.device import select_device
from ssll.nn.losses import multitask_loss
from ssll.nn.modelcard import build_card
from ssll.nn.network import SSLLN

SOURCES = ("acdc", "phantom_hr", "phantom_lr")

__all__ = ["TrainConfig", "dice_per_class", "export", "freeze_batchnorm", "sample_dice", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (Duan et al. 2019 defaults where they apply).

    Attributes:
        name: weights name, e.g. ``sslln_lr``.
        data: training sources, any of ``acdc`` (the ACDC training folder in ``data_dir``),
            ``phantom_hr`` and ``phantom_lr`` (HR phantoms or their simulated-LR versions,
            generated from the biv-me shapes in ``phantom_dir``); a string or a list.
        data_dir: ACDC training folder.
        phantom_dir: biv-me data folder for phantom sources.
        phantom_seeds: ``(first, count)`` phantom seeds for training.
        phantom_validation_seeds: ``(first, count)`` phantom seeds kept for validation.
        init_weights: weights to start from (fine-tuning), or empty for a random start.
        freeze_batchnorm: keep every batch-norm layer's statistics and affine parameters as they are
            (fine-tuning with small CPU batches, whose statistics would drift from those the
            initial weights were trained with). Defaults to False.
        cache_dir: where preprocessed samples are cached.
        out_dir: checkpoint, log and final weights.
        validation_patients: patient ids kept out of training.
        epochs: epochs. Defaults to 50 (the paper's).
        batch_size: volumes per step. Defaults to 8 (the paper's).
        lr: Adam learning rate. Defaults to 1e-3.
        weight_decay: the weight-decay coefficient of eq. (1). Defaults to 5e-5.
        alpha: landmark-loss weight of eq. (1). Defaults to 0.8.
        widths: encoder widths. Defaults to the paper's public code.
        upsample: side-branch upsampling, ``bilinear`` or ``aligned`` (:mod:`ssll.nn.network`).
            Defaults to ``bilinear``, as the shipped weights.
        lr_drops: epochs after which the learning rate is divided by 10. Defaults to none.
        val_every: validate every N epochs (and after the last). Defaults to 5.
        num_workers: data-loading worker processes. Defaults to 1.
        resident: keep every training volume on the compute device and augment whole batches there
            (:mod:`ssll.nn.gpu_augment`) instead of SimpleITK in CPU workers: the choice for a GPU
            (an epoch of 440 volumes in ~2 s on an H100), needs ~6 MB of device memory per volume.
            Defaults to False.
        seed: random seed. Defaults to 0.
        augment: augmentation ranges.
    """

    name: str = "sslln_lr"
    data: tuple[str, ...] = ("acdc",)
    data_dir: str = "../shared/data/acdc/training"
    phantom_dir: str = "../shared/data/biv-me"
    phantom_seeds: tuple[int, int] = (10000, 60)
    phantom_validation_seeds: tuple[int, int] = (19000, 10)
    init_weights: str = ""
    freeze_batchnorm: bool = False
    cache_dir: str = "resources/cache/train"
    out_dir: str = "resources/train/sslln_lr"
    validation_patients: tuple[str, ...] = ()
    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 5e-5
    alpha: float = 0.8
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    upsample: str = "bilinear"
    lr_drops: tuple[int, ...] = ()
    val_every: int = 5
    num_workers: int = 1
    resident: bool = False
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @classmethod
    def from_mapping(cls, m: dict[str, Any]) -> TrainConfig:
        """Build from a YAML mapping; unknown keys raise ``ValueError`` naming them."""
        names = {f.name for f in fields(cls)}
        unknown = set(m) - names
        if unknown:
            raise ValueError(f"TrainConfig: unknown keys {sorted(unknown)}")
        kw = dict(m)
        if "augment" in kw:
            aug = dict(kw["augment"])
            for k in ("scale", "gamma", "intensity_scale", "drop_slices"):
                if k in aug:
                    aug[k] = tuple(aug[k])
            kw["augment"] = AugmentConfig(**aug)
        if isinstance(kw.get("data"), str):
            kw["data"] = (kw["data"],)
        for k in ("validation_patients", "widths", "lr_drops", "data", "phantom_seeds", "phantom_validation_seeds"):
            if k in kw:
                kw[k] = tuple(kw[k])
        cfg = cls(**kw)
        if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
            raise ValueError("TrainConfig: epochs, batch_size and lr must be positive")
        bad = set(cfg.data) - set(SOURCES)
        if bad or not cfg.data:
            raise ValueError(f"TrainConfig: data must be some of {list(SOURCES)}, got {list(cfg.data)}")
        return cfg

    def validation_ids(self) -> tuple[str, ...]:
        """Patient ids kept out of training: the ACDC list plus the phantom validation seeds."""
        first, count = self.phantom_validation_seeds
        ids = list(self.validation_patients)
        for src in self.data:
            if src.startswith("phantom_"):
                ids += [f"phantom{src[8:]}{s:05d}" for s in range(first, first + count)]
        return tuple(ids)

    def cached_files(self) -> list[Path]:
        """Cache every source (skipping what is cached) and list the samples."""
        files: list[Path] = []
        for src in self.data:
            if src == "acdc":
                files += cache_acdc(self.data_dir, self.cache_dir)
            else:
                seeds = [*range(self.phantom_seeds[0], sum(self.phantom_seeds)),
                         *range(self.phantom_validation_seeds[0], sum(self.phantom_validation_seeds))]
                files += cache_phantoms(self.phantom_dir, self.cache_dir, seeds, mode=src[8:])
        return files


def dice_per_class(pred: torch.Tensor, target: torch.Tensor, n_classes: int = 5) -> list[float]:
    """Dice of classes 1..n-1 between two integer label tensors (NaN where both are empty)."""
    out = []
    for c in range(1, n_classes):
        a, b = pred == c, target == c
        s = int(a.sum() + b.sum())
        out.append(float("nan") if s == 0 else 2.0 * float((a & b).sum()) / s)
    return out


def sample_dice(seg_logits: torch.Tensor, target: torch.Tensor, has_rv_wall: bool) -> list[float]:
    """Dice of classes 1..4 for one volume: logits ``(C, S, H, W)``, integer target ``(S, H, W)``.

    Where the sample's labels have no RV wall (ACDC) the RV wall is not scored as a prediction: that
    class is never predicted for it (not learned from such data), as at validation.
    """
    seg = seg_logits.float()
    if not has_rv_wall:
        seg = seg.clone()
        seg[int(Label.RV_WALL)] = -1e4
    return dice_per_class(seg.max(0).indices.cpu(), target.cpu())


def _split(files: list[Path], validation_patients: tuple[str, ...]) -> tuple[list[Path], list[Path]]:
    """Cached samples (``<patient>_<phase>.npz``) split into training and validation by patient."""
    val_set = set(validation_patients)
    return ([f for f in files if f.name.split("_")[0] not in val_set],
            [f for f in files if f.name.split("_")[0] in val_set])


def _progress(epoch: int, step: int, n: int, loss: float, t0: float) -> None:
    done = int(30 * step / n)
    sys.stderr.write(f"\repoch {epoch:3d} [{'#' * done}{'.' * (30 - done)}] {step}/{n} loss {loss:.4f} {time.time() - t0:6.0f}s")
    sys.stderr.flush()


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) training; returns the path of the final weights."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    device = select_device()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = cfg.cached_files()
    train_files, val_files = _split(files, cfg.validation_ids())
    ds = VolumeDataset(train_files, cfg.augment, seed=cfg.seed)
    vds = VolumeDataset(val_files, None)
    model = SSLLN(widths=cfg.widths, upsample=cfg.upsample).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ckpt = out / "checkpoint.pt"
    start = 0
    if cfg.init_weights and not ckpt.exists():
        init = torch.load(cfg.init_weights, map_location=device, weights_only=True)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in init.items()})
        print(f"starting from {cfg.init_weights}", file=sys.stderr)
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
        torch.set_rng_state(state["torch_rng"])
        print(f"resuming after epoch {start}", file=sys.stderr)
    log_path = out / "log.csv"
    new_log = not log_path.exists() or start == 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    last_val: dict[str, float] = {}
    resident = _load_resident(train_files, device) if cfg.resident else None
    for epoch in range(start + 1, cfg.epochs + 1):
        ds.epoch = epoch
        if resident is not None:
            loader: Any = _ResidentBatches(resident, cfg, epoch)
        else:
            loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                                drop_last=True, generator=torch.Generator().manual_seed(cfg.seed + epoch),
                                persistent_workers=False)
        lr = cfg.lr * 0.1 ** sum(1 for e in cfg.lr_drops if epoch > e)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        if cfg.freeze_batchnorm:
            freeze_batchnorm(model)
        t0 = time.time()
        sums = np.zeros(3)
        for step, b in enumerate(loader, start=1):
            x = b["image"].to(device)
            with autocast:
                seg, lmk = model(x)
            loss, ld, ll = multitask_loss(seg, lmk, b["seg"].to(device), b["lmk"].to(device), alpha=cfg.alpha,
                                          has_rv_wall=b["has_rv_wall"].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += [loss.item(), ld.item(), ll.item()]
            _progress(epoch, step, len(loader), sums[0] / step, t0)
        sys.stderr.write("\n")
        n = max(len(loader), 1)
        row: dict[str, Any] = {"epoch": epoch, "lr": lr, "loss": sums[0] / n, "dice_loss": sums[1] / n,
                               "landmark_loss": sums[2] / n, "seconds": time.time() - t0}
        if val_files and (epoch % cfg.val_every == 0 or epoch == cfg.epochs):
            last_val = validate(model, vds, device)
            row.update(last_val)
        _append_log(log_path, row, fresh=new_log)
        new_log = False
        print(json.dumps(row), file=sys.stderr)
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                    "torch_rng": torch.get_rng_state()}, tmp)
        tmp.replace(ckpt)
    return export(cfg, validation=last_val)


def freeze_batchnorm(model: torch.nn.Module) -> None:
    """Batch-norm layers to evaluation mode (running statistics used, not updated) with their scale
    and shift excluded from the gradient; the rest of ``model`` is untouched."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)


def _load_resident(files: list[Path], device: torch.device) -> dict[str, torch.Tensor]:
    """Every cached sample on ``device``: ``image`` ``(N, S, H, W)`` float16, ``labels`` ``(N, 2, S, H, W)``
    uint8 (segmentation, landmark map), ``has_rv_wall`` ``(N,)`` bool."""
    images, labels, rv = [], [], []
    for f in files:
        with np.load(f) as z:
            images.append(torch.from_numpy(np.ascontiguousarray(z["image"].transpose(2, 0, 1))).half())
            labels.append(torch.from_numpy(np.ascontiguousarray(np.stack([z["seg"], z["lmk"]]).transpose(0, 3, 1, 2))))
            rv.append(bool(z["has_rv_wall"]))
    return {"image": torch.stack(images).to(device), "labels": torch.stack(labels).to(device),
            "has_rv_wall": torch.tensor(rv, device=device)}


class _ResidentBatches:
    """One epoch of augmented batches from device-resident samples (the DataLoader's dict keys).

    The draws come from a generator seeded by (seed, epoch), so a resumed run repeats the epoch.
    """

    def __init__(self, data: dict[str, torch.Tensor], cfg: TrainConfig, epoch: int) -> None:
        self.data, self.cfg = data, cfg
        self.gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        self.n = int(data["image"].shape[0])

    def __len__(self) -> int:
        return self.n // self.cfg.batch_size

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        from ssll.nn.gpu_augment import augment_batch

        perm = torch.randperm(self.n, generator=self.gen)
        bs, crop = self.cfg.batch_size, self.cfg.augment.crop
        h, w = self.data["image"].shape[-2:]
        for s in range(len(self)):
            idx = perm[s * bs:(s + 1) * bs].to(self.data["image"].device)
            window = None
            if crop < min(h, w):  # only the crop is augmented (the same voxels as cropping afterwards)
                o = torch.randint(0, min(h, w) - crop + 1, (2,), generator=self.gen).tolist()
                window = (o[0], o[1], crop)
            img, lab = augment_batch(self.data["image"][idx].float(), self.data["labels"][idx], self.cfg.augment,
                                     self.gen, window=window)
            yield {"image": img, "seg": lab[:, 0], "lmk": lab[:, 1], "has_rv_wall": self.data["has_rv_wall"][idx]}


def export(cfg: TrainConfig, *, validation: dict[str, Any] | None = None) -> Path:
    """Write ``<name>.pt`` (state dict) and the model card ``<name>.json`` from the checkpoint."""
    out = Path(cfg.out_dir)
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    model = SSLLN(widths=cfg.widths, upsample=cfg.upsample)
    model.load_state_dict(state["model"])
    train_files, val_files = _split(cfg.cached_files(), cfg.validation_ids())
    last_val = validation if validation is not None else _last_validation(out / "log.csv")
    weights = out / f"{cfg.name}.pt"
    # stored as float16 (half the size; load_state_dict casts back to the float32 parameters)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, weights)
    arch = {**model.architecture(), "stored_dtype": "float16"}
    card = build_card(
        name=cfg.name,
        architecture=arch,
        training={"config": _jsonable(asdict(cfg)), "epochs": int(state["epoch"]), "n_train_volumes": len(train_files),
                  "n_validation_volumes": len(val_files), "log": "log.csv"},
        validation={"dice_working_grid_mean": last_val, "patients": list(cfg.validation_ids())},
        data=cfg.data,
    )
    if cfg.init_weights:
        # fine-tuned: the card names the weights it started from, and their licence carries over
        init_card_path = Path(cfg.init_weights).with_suffix(".json")
        init_card = json.loads(init_card_path.read_text()) if init_card_path.is_file() else {}
        card["initialised_from"] = {"weights": cfg.init_weights, "name": init_card.get("name"),
                                    "training_data": init_card.get("training_data"),
                                    "epochs": init_card.get("training", {}).get("epochs"),
                                    "config": init_card.get("training", {}).get("config")}
        if "CC BY-NC-SA" in init_card.get("licence", ""):
            card["licence"] = init_card["licence"] + (" (fine-tuned from weights trained on ACDC, so ACDC's terms apply)"
                                                      if "acdc" not in cfg.data else "")
    (out / f"{cfg.name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return weights



_LOG_FIELDS = ["epoch", "lr", "loss", "dice_loss", "landmark_loss", "seconds", "val_dice_lv_cavity",
               "val_dice_lv_wall", "val_dice_rv_cavity", "val_dice_rv_wall"]


def _last_validation(log_path: Path) -> dict[str, float]:
    """The latest validated epoch's ``val_dice_*`` from the CSV log (empty without one)."""
    if not log_path.exists():
        return {}
    with log_path.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val_dice_lv_cavity")]
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("val_dice_") and v} if rows else {}


def _append_log(path: Path, row: dict[str, Any], *, fresh: bool) -> None:
    """Append one epoch to the CSV log (rewritten whole, so a resumed run keeps one header)."""
    rows: list[dict[str, Any]] = []
    if not fresh and path.exists():
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    rows = [r for r in rows if int(r["epoch"]) < int(row["epoch"])] + [row]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=_LOG_FIELDS, restval="", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def _jsonable(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    return d


@torch.no_grad()
def validate(model: SSLLN, ds: VolumeDataset, device: torch.device) -> dict[str, float]:
    """Mean validation Dice per structure on full working grids."""
    model.eval()
    scores = []
    for i in range(len(ds)):
        b = ds[i]
        seg, _ = model(b["image"][None].to(device))
        scores.append(sample_dice(seg[0], b["seg"], bool(b["has_rv_wall"])))
    with warnings.catch_warnings():  # a structure absent from every volume gives NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        m = np.nanmean(np.array(scores, dtype=float), axis=0)
    names = [Label(c).name.lower() for c in range(1, 5)]
    return {f"val_dice_{n}": float(v) for n, v in zip(names, m)}
