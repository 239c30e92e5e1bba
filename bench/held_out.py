"""Set-up shared by the benchmarks that score SSLLN-LR on the held-out ACDC patients (the
``validation_patients`` of config/train_lr.yaml, listed by :func:`ssll.nn.data.held_out_cases`)."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

from ssll.nn.infer import LoadedModel, load_model


def held_out_parser(doc: str, out: str) -> argparse.ArgumentParser:
    """An argument parser described by ``doc``'s first line, with ``--weights``, ``--data`` (the ACDC
    training folder), ``--config`` (whose validation patients are scored) and ``--out`` (default ``out``)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--weights", default="ssll/weights/sslln_lr.pt")
    ap.add_argument("--data", default="../shared/data/acdc/training")
    ap.add_argument("--config", default="config/train_lr.yaml")
    ap.add_argument("--out", default=out)
    return ap


def start(a: argparse.Namespace) -> tuple[Path, LoadedModel]:
    """Warnings off, 2 threads (the 2-core figures), the output folder ``a.out`` made and the model
    ``a.weights`` loaded."""
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    return out, load_model(a.weights)
