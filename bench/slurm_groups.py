"""SLURM jobs a subject, and their summed RunTime, with and without the slurm profile's groups.

Runs the first demo subject (patient020, both phases, segmented as stored, the test overlay's small atlas
bank) through ``profiles/slurm`` with the CI overlay ``tests/workflow/slurm-ci`` on a running SLURM
(``.ci/slurm-cluster start``), twice from scratch: as the profile stands (ingest + preprocess and
landmarks + refine grouped), and with the profile's ``groups`` taken out. Per run: the subject's SLURM jobs (the shared
atlas-bank and cohort jobs left out), the sum of their RunTime (SLURM's, whole seconds) and the wall time of
the submitting snakemake.

Run:  python bench/slurm_groups.py --out bench/results/slurm_groups.json
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from job_startup import bin_env, slurm_runtime_s

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("rule_atlas_phantoms", "rule_atlas_bank", "rule_cohort_table", "rule_report")


def _run(tmp: Path, name: str, *, grouped: bool) -> dict:
    work = tmp / name
    work.mkdir()
    for item in ("Snakefile", "workflow", "config", "profiles", "demo", "envs"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, work / item)
    if not grouped:  # the profile without its groups block (an empty --groups reaches the jobs' command lines)
        prof = work / "profiles/slurm/config.yaml"
        kept = [ln for ln in prof.read_text().splitlines() if not re.match(r"(groups:|  - \w+=\w+)", ln)]
        prof.write_text("\n".join(kept) + "\n")
    lines = (work / "config/subjects.tsv").read_text().splitlines()
    (work / "config/subjects.tsv").write_text("\n".join(lines[:2]) + "\n")
    shutil.copy(ROOT / "tests/workflow/fast.yaml", work / "fast.yaml")
    (work / "stored.yaml").write_text("segment:\n  orientation: stored\n")
    t0 = time.perf_counter()
    r = subprocess.run(["timeout", "-s", "INT", "1200", sys.executable, "-m", "snakemake", "--profile", "profiles/slurm",
                        "--profile", str(ROOT / "tests/workflow/slurm-ci"), "--configfile", "config/config.yaml",
                        "fast.yaml", "stored.yaml"], cwd=work, env=bin_env(), capture_output=True, text=True,
                       check=False)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{name}: snakemake failed:\n{r.stderr[-3000:]}")
    jobs = {}
    for log in (work / ".snakemake/slurm_logs").rglob("*.log"):
        kind = log.relative_to(work / ".snakemake/slurm_logs").parts[0]
        if kind in SHARED:
            continue
        jobs[kind] = slurm_runtime_s(log.stem)
    return {"slurm_jobs": len(jobs), "runtime_sum_s": sum(jobs.values()), "runtime_s": dict(sorted(jobs.items())),
            "submit_wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/slurm_groups.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = {"subject": "patient020 (ED and ES, with ground truth)",
               "grouped": _run(Path(tmp), "grouped", grouped=True),
               "ungrouped": _run(Path(tmp), "ungrouped", grouped=False)}
    print(json.dumps(out, indent=1))
    (ROOT / a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
