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
* ``<phase>_orientation.json`` - the orientation of the voxel grid the volume was segmented in
  (:mod:`ssll.nn.orientation`; ``rot0`` = as stored) and, when searched, each orientation's mean
  expected Dice. All outputs are on the input's own grids whatever the orientation.
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
from ssll.nn.device import batch_size_for, select_device
from ssll.nn.network import SSLLN
from ssll.nn.orientation import (
    DEFAULT_MARGIN,
    ORIENTATIONS,
    STORED,
    Orientation,
    orientation_by_name,
    same_shape_groups,
    search_orientation,
)
from ssll.postprocess import keep_largest_components
from ssll.preprocess import GridRecord, grow_along_slices, input_fov_mask, original_header, probabilities_to_original
from ssll.types import Array, PathLike, Volume

__all__ = ["LoadedModel", "SegmentItem", "Segmentation", "VolumeResult", "default_weights", "finish_segmentation",
           "forward", "forward_segmentation", "input_fov_mask", "landmark_logits", "landmark_points", "load_model",
           "merge_untrained", "network_input", "outputs_from_scores", "predict", "predict_oriented",
           "resolve_orientation", "run_segment", "segment_volume", "volume_result"]

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
def forward(model: LoadedModel, images: Array) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass of working-grid volumes, on the model's device (bf16 autocast on CUDA).

    Args:
        model: the loaded network.
        images: ``(B, I, J, K)`` float images in [0, 1] (the slices K become the input channels).

    Returns:
        Segmentation scores ``(B, 5, K, I, J)`` and landmark logits ``(B, 7, K, I, J)``, float32 on the
        model's device: the network's own layout, slice axis first. A softmax over axis 1 gives the class
        probabilities; classes the network never learned are folded into the background
        (:func:`merge_untrained`).
    """
    seg, features = forward_segmentation(model, images)
    return seg, landmark_logits(model, features)


@torch.no_grad()
def forward_segmentation(model: LoadedModel, images: Array) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`forward` without the landmark head: segmentation scores ``(B, 5, K, I, J)`` as :func:`forward`
    gives them, and the fused features ``(B, F, I, J)`` from which :func:`landmark_logits` gives the landmark
    logits of any volume of the batch later (the orientation search runs it for the chosen orientation only).
    """
    x = network_input(model, images)
    with _autocast(model):
        f = model.net.features(x)
        seg = model.net.segment(f)
    return merge_untrained(seg.float(), model.card.get("untrained_classes", [])), f


@torch.no_grad()
def landmark_logits(model: LoadedModel, features: torch.Tensor) -> torch.Tensor:
    """Landmark logits ``(B, 7, K, I, J)`` float32 of :func:`forward_segmentation`'s ``features`` ``(B, F, I, J)``:
    the same as :func:`forward`'s."""
    with _autocast(model):
        return model.net.landmarks(features).float()


def network_input(model: LoadedModel, images: Array) -> torch.Tensor:
    """``(B, I, J, K)`` working-grid images as the network's ``(B, K, I, J)`` float32 input on the model's device."""
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(images, np.float32).transpose(0, 3, 1, 2)))
    return x.to(model.device, non_blocking=True)


def _autocast(model: LoadedModel) -> torch.autocast:
    """bf16 autocast on CUDA; nothing elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=model.device.type == "cuda")


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
    for s in range(0, n, batch_size):
        seg, lmk = forward(model, images[s : s + batch_size])
        out = outputs_from_scores(seg, lmk, return_prob=return_prob)
        labels[s : s + batch_size], lmap[s : s + batch_size], conf[s : s + batch_size] = out[:3]
        if sprob is not None:
            sprob[s : s + batch_size] = out[3]
    if sprob is not None:
        return labels, lmap, conf, sprob
    return labels, lmap, conf


@torch.no_grad()
def outputs_from_scores(seg: torch.Tensor, lmk: torch.Tensor, *, return_prob: bool = True) -> tuple[Array, ...]:
    """:func:`predict`'s outputs from :func:`forward`'s scores ``(B, 5, K, I, J)`` and ``(B, 7, K, I, J)``:
    labels ``(B, I, J, K)`` uint8, landmark map ``(B, I, J, K)`` uint8 (every landmark present: one that
    no voxel's arg-max selects is put at its peak-probability voxel), landmark confidence ``(B, 6)``
    float32 (peak probability) and, with ``return_prob``, class probabilities ``(B, 5, I, J, K)`` float16."""
    # (B, C, S=k, H=i, W=j) -> (B, [C,] i, j, k)
    # max(1).indices, not argmax(1): the same first-maximum index, but torch's CPU argmax over a
    # non-last dimension took 0.9 s per volume against 0.05 s (2 cores, torch 2.13)
    labels = seg.max(1).indices.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()
    p = torch.softmax(lmk, 1)
    am = p.max(1).indices  # (B, S, H, W)
    flat = p[:, 1:].flatten(2)
    peak, where = flat.max(2)  # (B, 6)
    for b in range(am.shape[0]):
        for n_l in range(6):
            if not bool((am[b] == n_l + 1).any()):
                am[b].view(-1)[where[b, n_l]] = n_l + 1
    lmap = am.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()
    conf = peak.float().cpu().numpy()
    if not return_prob:
        return labels, lmap, conf
    return labels, lmap, conf, torch.softmax(seg, 1).permute(0, 1, 3, 4, 2).to(torch.float16).cpu().numpy()


def predict_oriented(model: LoadedModel, images: list[Array], orientations: list[Orientation], *,
                     batch_size: int = 4) -> list[tuple[Array, Array, Array, Array]]:
    """:func:`predict` (with probabilities) of each volume ``(I, J, K)`` presented in its orientation,
    the outputs turned back onto the volume's own grid.

    Returns:
        Per volume: labels ``(I, J, K)`` uint8, landmark map ``(I, J, K)`` uint8, landmark confidence
        ``(6,)`` and class probabilities ``(5, I, J, K)`` float16.
    """
    if len(images) != len(orientations):
        raise ValueError(f"predict_oriented: {len(images)} volumes, {len(orientations)} orientations")
    out: list[tuple[Array, Array, Array, Array]] = [None] * len(images)  # type: ignore[list-item]
    for members in same_shape_groups([img.shape for img in images], orientations):
        x = np.stack([orientations[n].apply(images[n]) for n in members])
        labels, lmap, conf, prob = predict(model, x, batch_size=batch_size, return_prob=True)
        for q, n in enumerate(members):
            o = orientations[n]
            out[n] = (np.ascontiguousarray(o.undo(labels[q])), np.ascontiguousarray(o.undo(lmap[q])), conf[q],
                      np.ascontiguousarray(o.undo(prob[q])))
    return out


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


def finish_segmentation(labels: Array, lmap: Array, prob: Array, record: GridRecord, *,
                        fov: Array | None = None) -> Segmentation:
    """Post-process one volume of :func:`predict` output (``labels``, ``lmap`` ``(I, J, K)``,
    ``prob`` ``(5, I, J, K)``) the way ``ssll segment`` writes it; see :class:`Segmentation`. ``fov``:
    :func:`input_fov_mask` of ``record`` when the caller has it already."""
    fov = input_fov_mask(record) if fov is None else fov
    return Segmentation(
        labels=keep_largest_components(np.where(fov, labels, 0).astype(np.uint8)),
        original=keep_largest_components(probabilities_to_original(np.asarray(prob, np.float32), record)),
        landmark_map=restrict_landmark_map(lmap, grow_along_slices(fov, record, LANDMARK_FOV_MARGIN_MM)),
        fov=fov,
    )


@dataclass
class VolumeResult:
    """Everything ``ssll segment`` writes for one volume, in memory.

    Attributes:
        segmentation: labels on the working and input grids, landmark map, field of view
            (:class:`Segmentation`).
        confidence: ``(6,)`` peak probability of each landmark (:data:`ssll.labels.LANDMARK_NAMES` order).
        expected_dice: per structure name, the Dice the network expects of its own working-grid labels
            (:func:`ssll.nn.confidence.expected_dice`; None for a class it was never trained on).
        orientation: the orientation record: ``orientation`` (its name, ``rot0`` = as stored), ``searched``
            and, when searched, ``margin`` and every orientation's ``mean_expected_dice``.
    """

    segmentation: Segmentation
    confidence: Array
    expected_dice: dict[str, float | None]
    orientation: dict[str, Any]


def volume_result(labels: Array, lmap: Array, conf: Array, prob: Array, record: GridRecord,
                  orientation: dict[str, Any], fov: Array | None = None) -> VolumeResult:
    """:class:`VolumeResult` of one volume's :func:`predict_oriented` output (``labels``, ``lmap`` ``(I, J, K)``,
    ``conf`` ``(6,)``, ``prob`` ``(5, I, J, K)``, on the volume's own grid) and its orientation record."""
    seg = finish_segmentation(labels, lmap, prob, record, fov=fov)
    return VolumeResult(seg, np.asarray(conf, np.float32), expected_dice(prob, seg.labels, seg.fov), orientation)


def resolve_orientation(orientation: str | Orientation) -> Orientation | None:
    """``search`` -> None (search each volume), ``stored`` -> :data:`STORED`, an orientation's name -> that
    orientation; an :class:`Orientation` is returned as it is. Raises SsllError naming the choices."""
    if isinstance(orientation, Orientation):
        return orientation
    try:
        return None if orientation == "search" else STORED if orientation == "stored" else orientation_by_name(orientation)
    except ValueError as exc:
        raise SsllError(f"segment: orientation must be 'search', 'stored' or an orientation's name: {exc}") from None


def segment_volume(model: LoadedModel, image: Array, record: GridRecord, *, orientation: str | Orientation = "search",
                   margin: float = DEFAULT_MARGIN, batch_size: int = 0) -> VolumeResult:
    """Segment one working-grid volume in memory, as ``ssll segment`` does (nothing is written).

    Args:
        model: the loaded network (:func:`load_model`).
        image: ``(I, J, K)`` float working-grid image in [0, 1] (``ssll preprocess``'s output).
        record: its grid record.
        orientation: ``search`` (the default: score all sixteen orientations of the voxel grid and segment
            in the one the network trusts most, reusing that orientation's forward pass), ``stored``, or an
            orientation's name or :class:`Orientation`.
        margin: with ``search``, how much higher another orientation's mean expected Dice must be than the
            stored one's for it to be used.
        batch_size: volumes per forward pass; 0: the device's (:func:`ssll.nn.device.batch_size_for`: 1 on a
            CPU, 4 on a GPU).

    Returns:
        :class:`VolumeResult`; every array on the input's own grids whatever the orientation.
    """
    batch_size = batch_size_for(model.device, batch_size)
    fixed = resolve_orientation(orientation)
    fov = input_fov_mask(record)
    if fixed is not None:
        labels, lmap, conf, prob = predict_oriented(model, [image], [fixed], batch_size=batch_size)[0]
        return volume_result(labels, lmap, conf, prob, record, {"orientation": fixed.name, "searched": False}, fov)
    found = search_orientation(model, image, fov, margin=margin, batch_size=batch_size)
    o = found.chosen
    labels, lmap, conf, prob = (a[0] for a in outputs_from_scores(found.seg_scores[None], found.landmark_logits[None]))
    info = {"orientation": o.name, "searched": True, "margin": margin,
            "mean_expected_dice": {c.name: round(float(v), 4) for c, v in zip(ORIENTATIONS, found.scores)}}
    return volume_result(np.ascontiguousarray(o.undo(labels)), np.ascontiguousarray(o.undo(lmap)), conf,
                   np.ascontiguousarray(o.undo(prob)), record, info, fov)


def _write_outputs(item: SegmentItem, record: GridRecord, result: VolumeResult) -> None:
    from ssll.io import save_nifti, write_json  # NIfTI only where files are written (predict() needs no nibabel)

    out = item.out_dir
    w_aff = record.working_affine
    seg = result.segmentation
    header = original_header(record)
    save_nifti(out / f"{item.phase}_labels.nii.gz", Volume(seg.labels, w_aff), dtype=np.uint8)
    save_nifti(out / f"{item.phase}_labels_original.nii.gz", Volume(seg.original, record.input_affine, header=header),
               dtype=np.uint8)
    save_nifti(out / f"{item.phase}_landmarkmap.nii.gz", Volume(seg.landmark_map, w_aff), dtype=np.uint8)
    write_json(out / f"{item.phase}_landmark_confidence.json",
               {name: float(c) for name, c in zip(LANDMARK_NAMES, result.confidence)})
    write_json(out / f"{item.phase}_expected_dice.json", result.expected_dice)
    write_json(out / f"{item.phase}_orientation.json", result.orientation)


def run_segment(items: list[SegmentItem], weights: PathLike, *, batch_size: int = 0, orientation: str = "search",
                margin: float = DEFAULT_MARGIN) -> dict[str, str]:
    """Segment many volumes with one model load; isolate each subject's errors.

    Args:
        items: the volumes.
        weights: network weights (model card beside them).
        batch_size: volumes per forward pass; 0: the device's (:func:`ssll.nn.device.batch_size_for`: 1 on a
            CPU, 4 on a GPU).
        orientation: ``search``: segment each volume in the orientation of the voxel grid the network
            trusts most (:mod:`ssll.nn.orientation`; 16 forward passes per volume, the chosen one's
            outputs kept); ``stored``: as stored; an orientation's name (e.g. ``rot90+reversed``): every
            volume in that one (a cohort from one protocol, once a search on a few subjects has shown which),
            volumes then batched across items.
        margin: with ``search``, how much higher another orientation's mean expected Dice must be than
            the stored one's for it to be used.

    Returns:
        ``{"<subject>/<phase>": error message}`` for the items that failed (empty when all passed).
    """
    from ssll.io import load_image, read_json

    fixed = resolve_orientation(orientation)
    model = load_model(weights)
    batch_size = batch_size_for(model.device, batch_size)
    expected = tuple(model.card["preprocessing"]["shape"])
    failures: dict[str, str] = {}

    def write(it: SegmentItem, rec: GridRecord, result: VolumeResult) -> None:
        try:
            _write_outputs(it, rec, result)
        except (SsllError, OSError, ValueError) as exc:
            failures[f"{it.subject}/{it.phase}"] = f"{type(exc).__name__}: {exc}"
            log.debug(traceback.format_exc())

    pending: list[tuple[SegmentItem, GridRecord, Array]] = []  # fixed orientation: batched across items

    def flush() -> None:
        """Segment the volumes waiting for a fixed-orientation batch, write them and let them go."""
        try:
            outputs = predict_oriented(model, [c[2] for c in pending], [fixed] * len(pending), batch_size=batch_size)  # type: ignore[list-item]
        except (RuntimeError, SsllError) as exc:  # e.g. out of memory: report every member
            for it, *_ in pending:
                failures[f"{it.subject}/{it.phase}"] = f"inference failed: {exc}"
            pending.clear()
            return
        for (it, rec, _), (labels, lmap, conf, prob) in zip(pending, outputs):
            try:
                result = volume_result(labels, lmap, conf, prob, rec, {"orientation": fixed.name, "searched": False})  # type: ignore[union-attr]
            except (SsllError, ValueError) as exc:
                failures[f"{it.subject}/{it.phase}"] = f"{type(exc).__name__}: {exc}"
                continue
            write(it, rec, result)
        pending.clear()

    for it in items:
        key = f"{it.subject}/{it.phase}"
        try:
            vol = load_image(it.image)
            rec = GridRecord.from_dict(read_json(it.record))
            if vol.shape3 != expected:
                raise SsllError(f"{it.image}: shape {vol.shape3} is not the model's working shape {expected}")
            if fixed is not None:
                pending.append((it, rec, vol.array))
                if len(pending) == batch_size:  # one batch in memory at a time, however long the manifest
                    flush()
                continue
            result = segment_volume(model, vol.array, rec, orientation="search", margin=margin, batch_size=batch_size)
        except SsllError as exc:
            failures[key] = str(exc)
            continue
        except RuntimeError as exc:  # e.g. out of memory while scoring the orientations
            failures[key] = f"inference failed: {exc}"
            continue
        except ValueError as exc:  # post-processing a malformed grid record
            failures[key] = f"{type(exc).__name__}: {exc}"
            continue
        info = result.orientation
        if info["orientation"] != STORED.name:
            scores = info["mean_expected_dice"]
            log.warning("%s: segmented turned %s (mean expected Dice %.3f against %.3f as stored)", key,
                        info["orientation"], scores[info["orientation"]], scores[STORED.name])
        write(it, rec, result)
    if pending:
        flush()
    for it in items:
        key = f"{it.subject}/{it.phase}"
        err_file = it.out_dir / f"{it.phase}_error.txt"
        if key in failures:
            it.out_dir.mkdir(parents=True, exist_ok=True)
            err_file.write_text(failures[key] + "\n")
            log.error("%s: %s", key, failures[key])
        else:
            err_file.unlink(missing_ok=True)
    return failures
