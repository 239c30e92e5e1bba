"""The ``ssll`` command line: one subcommand per pipeline stage.

Subcommands only parse arguments and call the stage's ``run_*`` function. Domain errors
(:class:`~ssll.errors.SsllError`) become one line on stderr, ``ssll <command>: [<subject>:] <message>``,
and exit code 2; bad settings (``ValueError``) exit with 3.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from ssll import __version__
from ssll.allocator import reuse_large_blocks
from ssll.errors import SsllError
from ssll.subjects import validate_subject_id

__all__ = ["build_parser", "main", "split_groups", "write_provenance"]

# Set before torch (imported lazily by the subcommands) starts its OpenMP runtime, which reads it once.
# With the default policy, OpenMP threads spin between parallel regions; the registration's many small
# steps then ran 2-30x slower whenever another process held a core (a refine job beside any other job on
# a shared node). PASSIVE lets an idle thread sleep. A value the user exported is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

log = logging.getLogger("ssll")






def _git_commit() -> str | None:
    """The commit of the ssll source tree when it is a git checkout (editable install), else None."""
    import subprocess
    from pathlib import Path

    try:
        r = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
                           capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None


def write_provenance(args: argparse.Namespace, argv: Sequence[str]) -> list[str]:
    """Write ``<output>.prov.json`` beside every output file of a successful command (and
    ``provenance.json`` in an output folder): ssll version, git commit, command, subject, the
    config section it used (``--params``) and the full argument list.

    Returns:
        The provenance files written.
    """
    import datetime
    from pathlib import Path

    from ssll.io import write_json

    outs = [v for k, v in sorted(vars(args).items()) if k.startswith("out_") and isinstance(v, str) and v]
    if not outs:
        return []
    try:
        params = _params(getattr(args, "params", None))
    except ValueError:
        params = {}
    record = {"ssll_version": __version__, "git_commit": _git_commit(), "command": args.command,
              "subject": args.subject, "params": params, "argv": list(argv),
              "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    written = []
    for o in outs:
        path = Path(o)
        if path.is_dir():
            dest = path / "provenance.json"
        elif path.is_file():
            dest = path.with_name(path.name + ".prov.json")
        else:
            continue
        write_json(dest, {**record, "output": str(path)})
        written.append(str(dest))
    return written


def _params(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--params is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("--params must be a JSON object")
    return value


# ---------------------------------------------------------------- ingest
def _add_ingest(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--image", help="4D cine NIfTI, a folder holding one DICOM cine series (or one series per slice "
                   "position), or a zip archive of such a folder")
    g.add_argument("--ed-image", help="3D ED volume (with --es-image)")
    p.add_argument("--es-image", help="3D ES volume (with --ed-image)")
    p.add_argument("--ed", type=int, default=None, help="ED frame index (0-based); default 0")
    p.add_argument("--es", type=int, default=None, help="ES frame index (0-based); default: largest change from ED")
    p.add_argument("--frames-from", default=None,
                   help="ssll cycle's JSON of the same cine: ED / ES not given by --ed / --es are the volume curve's "
                        "(largest and smallest LV cavity)")
    p.add_argument("--out-ed", required=True)
    p.add_argument("--out-es", required=True)
    p.add_argument("--out-record", required=True, help="JSON: chosen frames and how")


def _run_ingest(a: argparse.Namespace) -> None:
    from ssll.ingest import run_ingest

    ph = run_ingest(
        image=a.image, ed_image=a.ed_image, es_image=a.es_image, ed=a.ed, es=a.es, frames_from=a.frames_from,
        out_ed=a.out_ed, out_es=a.out_es, out_record=a.out_record,
    )
    log.info("ED frame %d (%s), ES frame %d (%s)", ph.ed, ph.ed_method, ph.es, ph.es_method)


# ---------------------------------------------------------------- preprocess
def _add_preprocess(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="3D short-axis NIfTI")
    p.add_argument("--out-image", required=True, help="working-grid image (NIfTI)")
    p.add_argument("--out-record", required=True, help="grid record JSON (transform back to the input grid)")
    p.add_argument("--labels", help="optional label map on the image grid")
    p.add_argument("--labels-convention", default="canonical", help="acdc, ukbb, mnms, 4dsegment or canonical")
    p.add_argument("--out-labels", help="canonical labels on the working grid")
    p.add_argument("--params", help="JSON object: the preprocess config section")


def _run_preprocess(a: argparse.Namespace) -> None:
    from ssll.preprocess import PreprocessConfig, run_preprocess

    run_preprocess(
        image=a.image, out_image=a.out_image, out_record=a.out_record,
        cfg=PreprocessConfig.from_mapping(_params(a.params)),
        labels=a.labels, labels_convention=a.labels_convention, out_labels=a.out_labels,
    )


# ---------------------------------------------------------------- segment
def _add_network_args(p: argparse.ArgumentParser) -> None:
    """The SSLLN-LR inference settings ``segment`` and ``cycle`` share."""
    p.add_argument("--weights", default=None, help="weights .pt with its model card .json beside it; default: shipped SSLLN-LR")
    p.add_argument("--batch-size", type=int, default=0,
                   help="volumes (or, searching, orientations of one volume) per forward pass; 0 (default): 1 on a "
                        "CPU, 4 on a GPU")
    p.add_argument("--orientation", default="search",
                   help="search (default): segment each volume in the orientation of its voxel grid that the network "
                        "trusts most, of 16 (turns, transposes, reversed slices; outputs stay on the input's grids); "
                        "stored: as stored; or one orientation's name for every volume (e.g. rot90+reversed, as a "
                        "search on a few subjects of the cohort chose)")
    p.add_argument("--orientation-margin", type=float, default=None,
                   help="how much higher another orientation's mean expected Dice must be than the stored one's "
                        "(default 0.03)")


def _add_segment(p: argparse.ArgumentParser) -> None:
    _add_network_args(p)
    p.add_argument("--manifest", help="TSV with columns subject, phase, image, record, out_dir (many volumes, one model load)")
    p.add_argument("--image", action="append", help="preprocessed working-grid image (repeat for several)")
    p.add_argument("--record", action="append", help="its grid record JSON (one per --image)")
    p.add_argument("--phase", action="append", help="phase name for output file names, ED or ES (one per --image)")
    p.add_argument("--out-dir", help="output folder")
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 when some volumes failed (their <phase>_error.txt says why)")


def _run_segment(a: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from ssll.errors import SsllError
    from ssll.nn.infer import SegmentItem, default_weights, run_segment

    if a.manifest:
        df = pd.read_csv(a.manifest, sep="\t", dtype=str)
        missing = {"subject", "phase", "image", "record", "out_dir"} - set(df.columns)
        if missing:
            raise SsllError(f"{a.manifest}: manifest lacks columns {sorted(missing)}")
        items = [SegmentItem(validate_subject_id(r.subject), r.phase, Path(r.image), Path(r.record), Path(r.out_dir))
                 for r in df.itertuples()]
    else:
        if not (a.image and a.record and a.out_dir):
            raise SsllError("segment: give --manifest, or --image, --record and --out-dir")
        phases = a.phase or ["ED"] * len(a.image)
        if not (len(a.image) == len(a.record) == len(phases)):
            raise SsllError("segment: give one --record and one --phase per --image")
        items = [SegmentItem(a.subject or "subject", ph, Path(im), Path(rc), Path(a.out_dir))
                 for im, rc, ph in zip(a.image, a.record, phases)]
    margin = {} if a.orientation_margin is None else {"margin": a.orientation_margin}
    failures = run_segment(items, a.weights or default_weights("sslln_lr"), batch_size=a.batch_size,
                           orientation=a.orientation, **margin)
    log.info("segmented %d of %d volumes", len(items) - len(failures), len(items))
    return 0 if not failures or a.allow_failures else 2


# ---------------------------------------------------------------- landmarks
def _add_landmarks(p: argparse.ArgumentParser) -> None:
    p.add_argument("--landmark-map", required=True, help="landmark map NIfTI from ssll segment")
    p.add_argument("--confidence", help="landmark confidence JSON from ssll segment")
    p.add_argument("--out-json", required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-map", required=True, help="NIfTI with a small ball at each landmark")
    p.add_argument("--stack-maps", nargs="+", help="landmark maps of every phase of the same stack (this one "
                   "included): one handedness; a phase with the other gets its RV inserts swapped back")
    p.add_argument("--stack-labels", nargs="+", help="working-grid segmentations of those phases, same order")


def _run_landmarks(a: argparse.Namespace) -> None:
    from ssll.landmarks import run_landmarks

    run_landmarks(landmark_map_path=a.landmark_map, confidence_path=a.confidence, out_json=a.out_json,
                  out_csv=a.out_csv, out_map=a.out_map, stack_maps=a.stack_maps, stack_labels=a.stack_labels,
                  subject=a.subject or "subject")


# ---------------------------------------------------------------- landmarks-from-labels
def _add_landmarks_from_labels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", required=True, help="label map NIfTI")
    p.add_argument("--convention", default="canonical", help="label convention of the file")
    p.add_argument("--out-json", required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-map", required=True)


def _run_landmarks_from_labels(a: argparse.Namespace) -> None:
    from ssll.landmarks import run_landmarks_from_labels

    run_landmarks_from_labels(labels=a.labels, convention=a.convention, out_json=a.out_json, out_csv=a.out_csv,
                              out_map=a.out_map)


# ---------------------------------------------------------------- convert-labels
def _add_convert_labels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", required=True, help="label map NIfTI")
    p.add_argument("--from", dest="from_convention", default="canonical", help="its convention (default canonical)")
    p.add_argument("--to", dest="to_convention", required=True, help="acdc, ukbb, mnms, 4dsegment or canonical")
    p.add_argument("--out", required=True, help="output NIfTI (same grid and header geometry)")
    p.add_argument("--drop-unmapped", action="store_true",
                   help="write labels the target lacks (the RV wall in acdc/ukbb/mnms) as background")


def _run_convert_labels(a: argparse.Namespace) -> None:
    from ssll.labels import run_convert_labels

    run_convert_labels(labels=a.labels, out=a.out, to_convention=a.to_convention, from_convention=a.from_convention,
                       drop_unmapped=a.drop_unmapped)


# ---------------------------------------------------------------- cycle
def _add_cycle(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="cine: 4D NIfTI, DICOM cine folder or zip of one")
    p.add_argument("--out-tsv", required=True, help="per-frame volumes (ml) and masses (g)")
    p.add_argument("--out-json", required=True, help="ED / ES frames by the LV cavity, EF and stroke volumes")
    p.add_argument("--out-png", default=None, help="plot of the volume curve and the mean LV wall thickness")
    _add_network_args(p)  # the orientation is searched on the first frame and used for every frame
    p.add_argument("--preprocess", default=None, help="preprocessing settings as JSON (the workflow's preprocess:)")


def _run_cycle(a: argparse.Namespace) -> None:
    from ssll.nn.cycle import run_cycle
    from ssll.preprocess import PreprocessConfig

    margin = {} if a.orientation_margin is None else {"margin": a.orientation_margin}
    run_cycle(image=a.image, out_tsv=a.out_tsv, out_json=a.out_json, subject=a.subject, out_png=a.out_png,
              weights=a.weights, orientation=a.orientation, batch_size=a.batch_size,
              cfg=PreprocessConfig.from_mapping(_params(a.preprocess)), **margin)


# ---------------------------------------------------------------- train
def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="training YAML (see config/train_lr.yaml)")
    p.add_argument("--export-only", action="store_true",
                   help="write the weights and model card from the run's latest checkpoint without training "
                        "(a run in progress or interrupted; the card gives the checkpoint's epoch and last validation)")


def _run_train(a: argparse.Namespace) -> None:
    import yaml

    from ssll.errors import ModelError
    from ssll.nn.train import TrainConfig, export, train

    with open(a.config) as fh:
        cfg = TrainConfig.from_mapping(yaml.safe_load(fh) or {})
    if a.export_only:
        if not os.path.isfile(os.path.join(cfg.out_dir, "checkpoint.pt")):
            raise ModelError(f"{a.config}: no checkpoint in {cfg.out_dir} to export")
        log.info("weights written to %s", export(cfg))
        return
    log.info("weights written to %s", train(cfg))


# ---------------------------------------------------------------- phantom / simulate-lr
def _add_phantom(p: argparse.ArgumentParser) -> None:
    p.add_argument("--biv-me", required=True, help="biv-me data folder (model/, fitted_patient1/, tests_reference/)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--n", type=int, default=1, help="number of subjects")
    p.add_argument("--first-seed", type=int, default=0, help="seed of the first subject (subject i has seed first+i)")
    p.add_argument("--lr", action="store_true", help="also write the simulated low-resolution version")


def _run_phantom(a: argparse.Namespace) -> None:
    from ssll.phantom import run_phantom

    if a.n < 1:
        raise ValueError("--n must be at least 1")
    out = run_phantom(biv_me=a.biv_me, out_dir=a.out_dir, n=a.n, first_seed=a.first_seed, lr=a.lr)
    log.info("wrote %d phantom subjects to %s", len(out), a.out_dir)


def _add_simulate_lr(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="HR image")
    p.add_argument("--labels", required=True, help="HR canonical labels")
    p.add_argument("--out-image", required=True)
    p.add_argument("--out-labels", required=True)
    p.add_argument("--out-record", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slice-mm", type=float, default=10.0, help="LR slice spacing and thickness (mm)")
    p.add_argument("--shift-mm", type=float, default=2.0, help="sd of the in-plane inter-slice shifts (mm)")
    p.add_argument("--max-lost", type=int, default=1, help="at most this many slices lost at each end")
    p.add_argument("--shift-axes", type=int, nargs="+", choices=(0, 1), default=[0, 1],
                   help="in-plane axes the shifts move along (0 = i, 1 = j; the paper's 'horizontal' is 0)")


def _run_simulate_lr(a: argparse.Namespace) -> None:
    from ssll.simulate import LRConfig, run_simulate_lr

    if a.slice_mm <= 0 or a.shift_mm < 0 or a.max_lost < 0:
        raise ValueError("--slice-mm must be positive, --shift-mm and --max-lost non-negative")
    run_simulate_lr(image=a.image, labels=a.labels, out_image=a.out_image, out_labels=a.out_labels,
                    out_record=a.out_record, seed=a.seed,
                    cfg=LRConfig(slice_mm=a.slice_mm, shift_mm=a.shift_mm, max_lost=a.max_lost,
                                 shift_axes=tuple(a.shift_axes)))


# ---------------------------------------------------------------- measures / cohort-table
def _add_measures(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ed-labels", required=True, help="canonical labels at ED (any grid; its spacing is used)")
    p.add_argument("--es-labels", required=True, help="canonical labels at ES")
    p.add_argument("--ed-refined", help="refined HR model at ED (ssll refine), adds refined_* columns")
    p.add_argument("--es-refined", help="refined HR model at ES")
    p.add_argument("--ed-landmarks", help="landmarks JSON at ED (ssll landmarks): adds LV wall thickness per AHA segment")
    p.add_argument("--es-landmarks", help="landmarks JSON at ES")
    p.add_argument("--out-tsv", required=True)


def _run_measures(a: argparse.Namespace) -> None:
    from ssll.measures import run_measures

    run_measures(subject=a.subject or "subject", ed_labels=a.ed_labels, es_labels=a.es_labels, out_tsv=a.out_tsv,
                 ed_refined=a.ed_refined, es_refined=a.es_refined, ed_landmarks=a.ed_landmarks,
                 es_landmarks=a.es_landmarks)


def _add_cohort_table(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-parquet", help="the same table as Parquet")
    p.add_argument("--flags", nargs="*", default=[], help="per-subject QC flag JSON files (ssll qc-flags)")
    p.add_argument("--sheet", help="subject sheet: take every subject with results/measures/<subject>.tsv "
                   "(and results/qc/<subject>/flags.json) instead of listing files")
    p.add_argument("--results", help="the results folder (with --sheet)")
    p.add_argument("inputs", nargs="*", help="per-subject measures TSV files")


def _run_cohort_table(a: argparse.Namespace) -> None:
    from ssll.measures import run_cohort_table

    if bool(a.sheet) == bool(a.inputs) or bool(a.sheet) != bool(a.results):
        raise SsllError("cohort-table: give --sheet with --results, or the measures files")
    run_cohort_table(inputs=a.inputs, out_csv=a.out_csv, out_parquet=a.out_parquet, flags=a.flags,
                     sheet=a.sheet, results=a.results)


# ---------------------------------------------------------------- evaluate
def _add_evaluate(p: argparse.ArgumentParser) -> None:
    for ph in ("ed", "es"):
        p.add_argument(f"--{ph}-truth", required=True, help=f"ground-truth labels at {ph.upper()}")
        p.add_argument(f"--{ph}-labels", required=True, help=f"SSLLN labels at {ph.upper()} on the truth's grid")
        p.add_argument(f"--{ph}-refined", help=f"refined model at {ph.upper()} on the truth's grid")
    p.add_argument("--convention", default="canonical", help="label convention of the ground truth")
    p.add_argument("--out-json", required=True)


def _run_evaluate(a: argparse.Namespace) -> None:
    from ssll.evaluate import run_evaluate

    preds = {"sslln": {"ED": a.ed_labels, "ES": a.es_labels}}
    if a.ed_refined and a.es_refined:
        preds["refined"] = {"ED": a.ed_refined, "ES": a.es_refined}
    run_evaluate(subject=a.subject or "subject", predictions=preds, truth={"ED": a.ed_truth, "ES": a.es_truth},
                 convention=a.convention, out_json=a.out_json)


# ---------------------------------------------------------------- sheet
def _add_sheet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="folder with one study per entry: ACDC patient folders (Info.cfg), "
                   "DICOM cine folders, zipped DICOM cines (UK Biobank), 4D NIfTI cines")
    p.add_argument("--out-tsv", required=True, help="the subject sheet to write (config: subjects)")


def _run_sheet(a: argparse.Namespace) -> None:
    from ssll.subjects import run_sheet

    n, skipped = run_sheet(data=a.data, out_tsv=a.out_tsv)
    for line in skipped:
        log.warning("left out: %s", line)
    log.info("%d subject(s) written to %s, %d entr%s left out", n, a.out_tsv, len(skipped),
             "y" if len(skipped) == 1 else "ies")


# ---------------------------------------------------------------- report
def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sheet", required=True, help="the subject sheet (TSV)")
    p.add_argument("--results", required=True)
    p.add_argument("--logs", default="logs")
    p.add_argument("--benchmarks", default="benchmarks")
    p.add_argument("--out-html", required=True)
    p.add_argument("--out-failed", help="TSV of failed subjects with the stage and reason")


def _run_report(a: argparse.Namespace) -> None:
    from ssll.report import NOT_RUN, run_report

    d = run_report(sheet=a.sheet, results=a.results, logs=a.logs, benchmarks=a.benchmarks, out_html=a.out_html,
                   out_failed=a.out_failed)
    f = d["failed"]
    todo = int((f["stage"] == NOT_RUN).sum()) if not f.empty else 0
    log.info("report: %d subjects, %d done, %d failed, %d not run yet", len(d["subjects"]), len(d["measures"]),
             len(f) - todo, todo)


# ---------------------------------------------------------------- qc
def _add_qc(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="working-grid image")
    p.add_argument("--labels", required=True, help="canonical labels on the same grid")
    p.add_argument("--landmarks", help="landmarks JSON from ssll landmarks")
    p.add_argument("--refined", help="refined model on the same grid (ssll refine): a second row")
    p.add_argument("--orientation", help="ssll segment's orientation JSON: show the volume the way it was segmented")
    p.add_argument("--out-png", required=True)


def _run_qc(a: argparse.Namespace) -> None:
    from ssll.qc import run_qc

    run_qc(image=a.image, labels=a.labels, landmarks_json=a.landmarks, out_png=a.out_png, title=a.subject or "",
           refined=a.refined, orientation_json=a.orientation)


# ---------------------------------------------------------------- qc-flags
def _add_qc_flags(p: argparse.ArgumentParser) -> None:
    for ph in ("ed", "es"):
        up = ph.upper()
        p.add_argument(f"--{ph}-labels", required=True, help=f"SSLLN labels at {up}, working grid")
        p.add_argument(f"--{ph}-refined", help=f"refined model at {up}, working grid")
        p.add_argument(f"--{ph}-landmarks", required=True, help=f"landmarks JSON at {up}")
        p.add_argument(f"--{ph}-refine-record", help=f"ssll refine record JSON at {up}")
        p.add_argument(f"--{ph}-record", help=f"grid record JSON at {up} (acquired slices)")
        p.add_argument(f"--{ph}-expected-dice", help=f"ssll segment's expected-Dice JSON at {up}")
        p.add_argument(f"--{ph}-orientation", help=f"ssll segment's orientation JSON at {up}")
    p.add_argument("--measures", required=True, help="the subject's measures TSV")
    p.add_argument("--frames", help="ssll ingest's frames.json (with --cycle: is ED/ES where the volume curve says?)")
    p.add_argument("--cycle", help="ssll cycle's cycle.json of the same cine (with --frames)")
    p.add_argument("--min-expected-dice", type=float, default=None,
                   help="flag an LV cavity, LV wall or RV cavity whose expected Dice is below this (default 0.70)")
    p.add_argument("--out-json", required=True)


def _run_qc_flags(a: argparse.Namespace) -> None:
    from ssll.qc import MIN_EXPECTED_DICE, run_qc_flags

    def pick(kind: str) -> dict[str, str]:
        return {ph.upper(): v for ph in ("ed", "es") if (v := getattr(a, f"{ph}_{kind}"))}

    flags = run_qc_flags(subject=a.subject or "subject", segmentations=pick("labels"), refined=pick("refined"),
                         landmarks=pick("landmarks"), measures_tsv=a.measures, refine_records=pick("refine_record"),
                         records=pick("record"), out_json=a.out_json, expected_dice=pick("expected_dice"),
                         orientations=pick("orientation"), frames=a.frames, cycle=a.cycle,
                         min_expected_dice=MIN_EXPECTED_DICE if a.min_expected_dice is None else a.min_expected_dice)
    log.info("%d QC flag(s)", len(flags))


# ---------------------------------------------------------------- surface
def _add_surface(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", required=True, help="canonical labels (e.g. the refined HR model)")
    p.add_argument("--out-vtk", required=True, help="all structures in one legacy binary VTK polydata (label cell scalar)")
    p.add_argument("--ply", action="store_true",
                   help="also a PLY per structure beside it, <stem>_<structure>.ply (the same surfaces again)")
    p.add_argument("--smooth-iterations", type=int, default=20)


def _run_surface(a: argparse.Namespace) -> None:
    from pathlib import Path

    from ssll.surface import run_surface

    out = Path(a.out_vtk)
    if out.suffix != ".vtk":
        raise ValueError(f"--out-vtk must end in .vtk, got {out.name}")
    vols = run_surface(labels=a.labels, out_dir=out.parent, prefix=out.stem, smooth_iterations=a.smooth_iterations,
                       ply=a.ply)
    log.info("surfaces: %s", ", ".join(f"{k} {v:.1f} ml" for k, v in vols.items()))


# ---------------------------------------------------------------- atlas
def _add_atlas(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["build"], help="build: segment HR volumes with SSLLN-HR into an atlas bank")
    p.add_argument("--sheet", help="TSV with columns atlas_id, image (HR volumes)")
    p.add_argument("--atlas", action="append", default=[], metavar="ID=IMAGE", help="one HR volume (repeatable)")
    p.add_argument("--weights", default=None, help="SSLLN-HR weights; default: shipped sslln_hr")
    p.add_argument("--out-dir", required=True, help="the bank folder (atlases.tsv and one .npz per atlas)")
    p.add_argument("--params", help="JSON: {margin_mm}")


def _run_atlas(a: argparse.Namespace) -> None:
    from pathlib import Path

    from ssll.atlases import read_sheet, run_atlas_build
    from ssll.nn.infer import default_weights

    sources = read_sheet(a.sheet) if a.sheet else []
    for item in a.atlas:
        aid, sep, img = item.partition("=")
        if not sep:
            raise ValueError(f"--atlas {item!r}: expected ID=IMAGE")
        sources.append((validate_subject_id(aid), Path(img)))
    if not sources:
        raise SsllError("atlas build: give --sheet or --atlas ID=IMAGE")
    margin = float(_params(a.params).get("margin_mm", 20.0))
    path = run_atlas_build(sources=sources, out_dir=a.out_dir, weights=a.weights or default_weights("sslln_hr"),
                           margin_mm=margin)
    log.info("atlas bank written: %s", path)


# ---------------------------------------------------------------- refine
def _add_refine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="working-grid image (ssll preprocess)")
    p.add_argument("--labels", required=True, help="working-grid segmentation (ssll segment)")
    p.add_argument("--landmarks", required=True, help="landmarks JSON (ssll landmarks)")
    p.add_argument("--record", required=True, help="grid record JSON (ssll preprocess)")
    p.add_argument("--bank", required=True, help="atlas bank folder (ssll atlas build)")
    p.add_argument("--out-labels", required=True, help="refined labels, working grid")
    p.add_argument("--out-original", required=True, help="refined labels, input grid")
    p.add_argument("--out-record", required=True, help="JSON: selected atlases, registration, timings")
    p.add_argument("--params", help='JSON: {"atlases": {...}, "ffd": {...}, "fusion": {...}, "motion": {...}}')
    p.add_argument("--weights", help="SSLLN-LR weights for the corrected stack (motion: estimate; default: shipped)")
    p.add_argument("--orientation", help="ssll segment's <phase>_orientation.json: the orientation to segment the "
                                         "corrected stack in (motion: estimate; default: as stored)")


def _run_refine(a: argparse.Namespace) -> None:
    from ssll.refine import RefineConfig, run_refine

    cfg = RefineConfig.from_mapping(_params(a.params))
    info = run_refine(subject=a.subject or "subject", image=a.image, labels=a.labels, landmarks=a.landmarks,
                      record=a.record, bank=a.bank, out_labels=a.out_labels, out_original=a.out_original,
                      out_record=a.out_record, cfg=cfg, weights=a.weights, orientation=a.orientation)
    log.info("refined with %d atlases in %.1f s%s", len(info["selected"]), info["seconds"]["total"],
             " (mirrored into the target: its landmarks are the atlases' mirror image, as where a header lacks the "
             "patient's true orientation; ACDC's do)" if info.get("mirrored") else "")
    if info.get("init_fallback"):
        log.warning("%s: %s", a.subject or "subject", info["init_fallback"])


_REGISTRY: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], Any]]] = [
    ("sheet", "the subject sheet of a data folder (ACDC folders, DICOM folders or zips, 4D NIfTI)", _add_sheet,
     _run_sheet),
    ("ingest", "study (4D NIfTI, DICOM cine or ED/ES files) -> ED and ES volumes", _add_ingest, _run_ingest),
    ("preprocess", "resample to 1.25x1.25x2 mm, fit to 192x192x80, clip and scale intensities", _add_preprocess, _run_preprocess),
    ("segment", "SSLLN: segmentation (5 classes) and landmark maps for many volumes, one model load", _add_segment, _run_segment),
    ("landmarks", "landmark map -> 6 landmarks in world mm (JSON, CSV, NIfTI)", _add_landmarks, _run_landmarks),
    ("landmarks-from-labels", "the 6 landmarks derived geometrically from a segmentation", _add_landmarks_from_labels,
     _run_landmarks_from_labels),
    ("cycle", "every frame of a cine segmented: the volume curve, ED / ES by the LV cavity", _add_cycle, _run_cycle),
    ("convert-labels", "a label map from one label convention to another (canonical to acdc, ukbb, ...)",
     _add_convert_labels, _run_convert_labels),
    ("measures", ("LV/RV volumes (ml), masses (g), stroke volumes, ejection fractions and LV wall thickness per "
                  "AHA segment (mm) of one subject"), _add_measures, _run_measures),
    ("cohort-table", "one row per subject: the cohort's measures table (CSV)", _add_cohort_table, _run_cohort_table),
    ("qc", "QC montage PNG: short-axis slices and long-axis cuts with labels and landmarks", _add_qc, _run_qc),
    ("phantom", "HR bi-ventricular phantoms from real biv-me shapes, exact landmarks", _add_phantom, _run_phantom),
    ("simulate-lr", "LR artefacts from an HR volume: thick slices, inter-slice shifts, lost coverage", _add_simulate_lr,
     _run_simulate_lr),
    ("train", "train SSLLN from a YAML config (checkpointed, resumable)", _add_train, _run_train),
    ("evaluate", "Dice, HD, HD95 (mm) per structure and ground-truth measures of one subject", _add_evaluate,
     _run_evaluate),
    ("report", "the cohort report: one self-contained HTML file", _add_report, _run_report),
    ("surface", "surface meshes (one VTK; --ply: a PLY per structure too) of a segmentation, world mm", _add_surface,
     _run_surface),
    ("qc-flags", "automatic QC flags of one subject (missing/broken structures, ranges, landmarks, refinement)",
     _add_qc_flags, _run_qc_flags),
    ("atlas", "atlas bank: `ssll atlas build` segments HR volumes with SSLLN-HR", _add_atlas, _run_atlas),
    ("refine", "shape refinement: landmark affine, NMI atlas selection, B-spline FFD, patch fusion", _add_refine,
     _run_refine),
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="ssll", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ssll {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text, add, run in _REGISTRY:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--subject", default=None, help="subject id, named in error messages")
        add(p)
        p.set_defaults(_run=run)
    return parser


AND = "--and"

#: the commands that run the network or the registration: their large tensors reuse the allocator's heap
#: (:func:`ssll.allocator.reuse_large_blocks`; a subject's segment 25.8 -> 17.5 s on 2 cores, bench/cpu_allocator.py)
HEAVY_COMMANDS = frozenset({"segment", "cycle", "train", "atlas", "refine"})


def split_groups(argv: Sequence[str]) -> list[list[str]]:
    """``COMMAND [common args] --and [args 1] --and [args 2] ...`` -> one argument list per group,
    each ``[COMMAND, *common, *group]``; without ``--and``, the argument list itself.

    One process then runs the command once per group (for example a subject's ED and ES volumes):
    the interpreter, torch and the inputs shared by the groups (an atlas bank) load once.
    """
    argv = list(argv)
    if AND not in argv:
        return [argv]
    head = argv[: argv.index(AND)]
    groups, cur = [], None
    for tok in argv[len(head):]:
        if tok == AND:
            cur = []
            groups.append(cur)
        else:
            cur.append(tok)
    return [[*head, *g] for g in groups]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ssll`` console script. Returns the process exit code.

    ``ssll COMMAND [common] --and [group 1] --and [group 2]`` runs COMMAND once per group in
    this process (see :func:`split_groups`); it stops at the first group that fails.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    groups = split_groups(argv)
    parsed = [parser.parse_args(g) for g in groups]
    logging.basicConfig(
        level=logging.DEBUG if any(a.verbose for a in parsed) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    if parsed[0].command in HEAVY_COMMANDS:
        reuse_large_blocks()
    for args, group in zip(parsed, groups):
        code = _run_one(args, group)
        if code:
            return code
    return 0


def _run_one(args: argparse.Namespace, argv: Sequence[str]) -> int:
    prefix = f"ssll {args.command}: "
    try:
        if args.subject is not None:
            validate_subject_id(args.subject)
            prefix += f"{args.subject}: "
        result = args._run(args)
        if not result:
            write_provenance(args, argv)
    except SsllError as exc:
        print(f"{prefix}error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"{prefix}invalid setting: {exc}", file=sys.stderr)
        return 3
    return int(result) if isinstance(result, int) else 0
