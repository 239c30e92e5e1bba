"""Inference: load shipped weights with their model card, segment many volumes in one process.

The model loads once; volumes go through in batches on the GPU when one is present (CPU
otherwise). Each subject's failure is caught, written to ``<out_dir>/<phase>_error.txt`` and
reported, and does not stop the others.

Outputs per subject and phase in ``out_dir``:

* ``<phase>_labels.nii.gz`` - canonical labels on the working grid (1.25x1.25x2 mm), background
  outside the input's field of view, the largest connected component of each structure kept.
* ``<phase>_labels_original.nii.gz`` - the same on the original image grid (class probabilities
  interpolated linearly, then the most probable class), with the original file's header geometry.
* ``<phase>_landmarkmap.nii.gz`` - landmark labels 0..6 on the working grid.
* ``<phase>_landmark_confidence.json`` - per landmark, the peak softmax probability. A landmark
  that no voxel's argmax selects is marked at its peak-probability voxel, so the map always
  holds all six (their confidence tells how much to trust them).
* ``<phase>_expected_dice.json`` - per structure, the Dice the network expects of its own working-grid
  labels under its class probabilities (:func:`ssll.nn.confidence.expected_dice`; null for a class it
  was never trained on): a quality estimate without ground truth, read by ``ssll qc-flags``.
"""

from __future__ import annotations

import json
import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssll.errors import ModelError, SsllError
from ssll.labels import LANDMARK_NAMES
from ssll.landmarks import points_from_landmark_map, restrict_landmark_map, voxel_to_world
from ssll.nn.confidence import expected_dice
from ssll.nn.device import select_device
from ssll.nn.network import SSLLN
from ssll.postprocess import keep_largest_components
from ssll.preprocess import GridRecord, grow_along_slices, input_fov_mask, original_header, probabilities_to_original
from ssll.types import Array, PathLike, Volume

__all__ = ["LoadedModel", "SegmentItem", "Segmentation", "default_weights", "finish_segmentation", "input_fov_mask",
           "landmark_points", "load_model", "merge_untrained", "predict", "run_segment"]

log = logging.getLogger("ssll.segment")

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def default_weights(name: str = "sslln_lr") -> Path:
    """Path of shipped weights ``name`` inside the package."""
    return WEIGHTS_DIR / f"{name}.pt"


@dataclass
class LoadedModel:
    """A network in eval mode on its device, with its model card."""

    net: SSLLN
    card: dict[str, Any]
    device: torch.device


def load_model(weights: PathLike, *, device: torch.device | None = None) -> LoadedModel:
    """Load weights (``weights_only=True``) and the model card JSON beside them.

    Raises:
        ModelError: weights or card missing, or the card does not match the state dict.
    """
    w = Path(weights)
    card_path = w.with_suffix(".json")
    if not w.is_file():
        raise ModelError(f"{w}: weights file not found")
    if not card_path.is_file():
        raise ModelError(f"{card_path}: model card not found beside the weights")
    card = json.loads(card_path.read_text())
    arch = card.get("architecture", {})
    try:
        net = SSLLN(
            n_slices=int(arch["n_slices"]),
            widths=tuple(arch["widths"]),
            depths=tuple(arch["depths"]),
            side_width=int(arch["side_width"]),
            fuse_width=int(arch["fuse_width"]),
            upsample=str(arch.get("upsample", "bilinear")),  # cards before the option: bilinear
        )
    except KeyError as exc:
        raise ModelError(f"{card_path}: architecture lacks {exc}") from None
    device = device or select_device()
    state = torch.load(w, map_location="cpu", weights_only=True)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{w}: weights do not fit the card's architecture ({str(exc)[:200]})") from None
    net.eval().to(device)
    return LoadedModel(net, card, device)


@torch.no_grad()
def predict(model: LoadedModel, images: Array, *, batch_size: int = 4, return_prob: bool = False):
    """Segment working-grid volumes.

    Args:
        model: the loaded network.
        images: ``(N, I, J, K)`` float images in [0, 1] on the working grid.
        batch_size: volumes per forward pass.

    Returns:
        ``labels`` ``(N, I, J, K)`` uint8 canonical, ``landmark_map`` ``(N, I, J, K)`` uint8,
        ``confidence`` ``(N, 6)`` peak probability of each landmark; with ``return_prob`` also
        the segmentation probabilities ``(N, 5, I, J, K)`` float16.
    """
    n = images.shape[0]
    labels = np.empty(images.shape, np.uint8)
    lmap = np.empty(images.shape, np.uint8)
    conf = np.zeros((n, 6), np.float32)
    sprob = np.empty((n, 5, *images.shape[1:]), np.float16) if return_prob else None
    use_amp = model.device.type == "cuda"
    for s in range(0, n, batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size].transpose(0, 3, 1, 2))).float()
        x = x.to(model.device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            seg, lmk = model.net(x)
        # (B, C, S=k, H=i, W=j) -> (B, [C,] i, j, k)
        # max(1).indices, not argmax(1): the same first-maximum index, but torch's CPU argmax over a
        # non-last dimension took 0.9 s per volume against 0.05 s (2 cores, torch 2.13)
        seg = merge_untrained(seg.float(), model.card.get("untrained_classes", []))
        labels[s : s + batch_size] = seg.max(1).indices.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()
        if sprob is not None:
            sprob[s : s + batch_size] = torch.softmax(seg, 1).permute(0, 1, 3, 4, 2).to(torch.float16).cpu().numpy()
        p = torch.softmax(lmk.float(), 1)
        am = p.max(1).indices  # (B, S, H, W)
        flat = p[:, 1:].flatten(2)
        peak, where = flat.max(2)  # (B, 6)
        for b in range(am.shape[0]):
            for n_l in range(6):
                if not bool((am[b] == n_l + 1).any()):
                    am[b].view(-1)[where[b, n_l]] = n_l + 1
        lmap[s : s + batch_size] = am.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()
        conf[s : s + batch_size] = peak.cpu().numpy()
    if sprob is not None:
        return labels, lmap, conf, sprob
    return labels, lmap, conf


def merge_untrained(seg_logits: torch.Tensor, untrained: list[int]) -> torch.Tensor:
    """Fold classes the network never saw labelled into the background.

    A network trained without RV-wall labels (ACDC) learned nothing that separates RV wall from
    background: its RV-wall score is free inside the background. Returns log-probabilities
    ``(B, C, ...)`` with those classes' probability added to the background and set to zero.
    """
    if not untrained:
        return seg_logits
    p = torch.softmax(seg_logits, 1)
    for c in untrained:
        p[:, 0] += p[:, c]
        p[:, c] = 0.0
    return torch.log(p.clamp_min(1e-12))


@dataclass(frozen=True)
class SegmentItem:
    """One volume to segment: preprocessed image, its grid record, and where outputs go."""

    subject: str
    phase: str
    image: Path
    record: Path
    out_dir: Path


#: how far beyond the acquired slices (mm, along the slice axis) a landmark may lie: the apex and the
#: mitral valve centre sit up to about a slice beyond the last LV slice of a thick-slice stack, more
#: when an end slice was lost (20 mm cut the apex of 16 of 50 simulated-LR phantoms by up to 1.9 mm)
LANDMARK_FOV_MARGIN_MM = 40.0


def landmark_points(lmap: Array, record: GridRecord, *, fov: Array | None = None) -> Array:
    """The six landmarks ``(6, 3)`` in world mm from a working-grid landmark map ``(I, J, K)``, as
    ``ssll segment`` then ``ssll landmarks`` give them: voxels more than ``LANDMARK_FOV_MARGIN_MM``
    beyond the input's field of view dropped (:func:`ssll.landmarks.restrict_landmark_map`),
    centroid of each largest component. ``fov``: :func:`input_fov_mask` of ``record`` when the
    caller has it already."""
    fov = input_fov_mask(record) if fov is None else fov
    keep = grow_along_slices(fov, record, LANDMARK_FOV_MARGIN_MM)
    return voxel_to_world(points_from_landmark_map(restrict_landmark_map(lmap, keep)), record.working_affine)


@dataclass
class Segmentation:
    """One volume's network output as ``ssll segment`` writes it.

    Attributes:
        labels: ``(I, J, K)`` uint8 canonical labels on the working grid, nothing outside the input's
            field of view (the zero padding), largest component per structure.
        original: ``(I', J', K')`` uint8 labels on the input grid (probabilities interpolated
            linearly, arg-max, largest component per structure).
        landmark_map: ``(I, J, K)`` uint8 landmark map, voxels beyond ``LANDMARK_FOV_MARGIN_MM`` of
            the field of view dropped.
        fov: ``(I, J, K)`` bool, the input's field of view on the working grid.
    """

    labels: Array
    original: Array
    landmark_map: Array
    fov: Array


def finish_segmentation(labels: Array, lmap: Array, prob: Array, record: GridRecord) -> Segmentation:
    """Post-process one volume of :func:`predict` output (``labels``, ``lmap`` ``(I, J, K)``,
    ``prob`` ``(5, I, J, K)``) the way ``ssll segment`` writes it; see :class:`Segmentation`."""
    fov = input_fov_mask(record)
    return Segmentation(
        labels=keep_largest_components(np.where(fov, labels, 0).astype(np.uint8)),
        original=keep_largest_components(probabilities_to_original(np.asarray(prob, np.float32), record)),
        landmark_map=restrict_landmark_map(lmap, grow_along_slices(fov, record, LANDMARK_FOV_MARGIN_MM)),
        fov=fov,
    )


def _write_outputs(item: SegmentItem, record: GridRecord, labels: Array, lmap: Array, conf: Array, prob: Array) -> None:
    from ssll.io import save_nifti, write_json  # NIfTI only where files are written (predict() needs no nibabel)

    out = item.out_dir
    w_aff = record.working_affine
    seg = finish_segmentation(labels, lmap, prob, record)
    header = original_header(record)
    save_nifti(out / f"{item.phase}_labels.nii.gz", Volume(seg.labels, w_aff), dtype=np.uint8)
    save_nifti(out / f"{item.phase}_labels_original.nii.gz", Volume(seg.original, record.input_affine, header=header),
               dtype=np.uint8)
    save_nifti(out / f"{item.phase}_landmarkmap.nii.gz", Volume(seg.landmark_map, w_aff), dtype=np.uint8)
    write_json(out / f"{item.phase}_landmark_confidence.json",
               {name: float(c) for name, c in zip(LANDMARK_NAMES, conf)})
    write_json(out / f"{item.phase}_expected_dice.json", expected_dice(prob, seg.labels, seg.fov))


def run_segment(items: list[SegmentItem], weights: PathLike, *, batch_size: int = 4) -> dict[str, str]:
    """Segment many volumes with one model load; isolate each subject's errors.

    Returns:
        ``{"<subject>/<phase>": error message}`` for the items that failed (empty when all passed).
    """
    from ssll.io import load_image, read_json

    model = load_model(weights)
    expected = tuple(model.card["preprocessing"]["shape"])
    failures: dict[str, str] = {}
    ok: list[tuple[SegmentItem, GridRecord, Array]] = []
    for it in items:
        key = f"{it.subject}/{it.phase}"
        err_file = it.out_dir / f"{it.phase}_error.txt"
        try:
            vol = load_image(it.image)
            rec = GridRecord.from_dict(read_json(it.record))
            if vol.shape3 != expected:
                raise SsllError(f"{it.image}: shape {vol.shape3} is not the model's working shape {expected}")
            ok.append((it, rec, vol.array))
            err_file.unlink(missing_ok=True)
        except SsllError as exc:
            failures[key] = str(exc)
    for s in range(0, len(ok), batch_size):
        chunk = ok[s : s + batch_size]
        try:
            labels, lmap, conf, prob = predict(model, np.stack([c[2] for c in chunk]), batch_size=batch_size,
                                              return_prob=True)
        except (RuntimeError, SsllError) as exc:  # e.g. out of memory: report every member
            for it, _, _ in chunk:
                failures[f"{it.subject}/{it.phase}"] = f"inference failed: {exc}"
            continue
        for n, (it, rec, _) in enumerate(chunk):
            try:
                _write_outputs(it, rec, labels[n], lmap[n], conf[n], prob[n])
            except (SsllError, OSError, ValueError) as exc:
                failures[f"{it.subject}/{it.phase}"] = f"{type(exc).__name__}: {exc}"
                log.debug(traceback.format_exc())
    for it in items:
        key = f"{it.subject}/{it.phase}"
        if key in failures:
            it.out_dir.mkdir(parents=True, exist_ok=True)
            (it.out_dir / f"{it.phase}_error.txt").write_text(failures[key] + "\n")
            log.error("%s: %s", key, failures[key])
    return failures
