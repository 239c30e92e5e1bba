"""How long `snakemake -n` takes to plan the full rule graph for large subject sheets.

Each sheet lists N subjects (every row points at the bundled demo study, so inputs exist); the
dry run plans every stage (ingest .. refine, measures, cohort table) with --forceall. Wall time
and peak memory of the snakemake process are recorded.

``--floor`` adds, for each size, Snakemake's own floor: a minimal workflow with the same number
of jobs per subject (a chain of one-input, one-output rules with a one-word shell command), i.e.
what any workflow with that many jobs per subject costs to plan on this machine.

Run:  python bench/dryrun_scale.py --sizes 1000 10000 50000 --out bench/results/dryrun_scale.csv
      python bench/dryrun_scale.py --sizes 1000 10000 --floor --out bench/results/dryrun_floor.csv
"""

from __future__ import annotations

import argparse
import csv
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    ap.add_argument("--out", default="bench/results/dryrun_scale.csv")
    ap.add_argument("--floor", action="store_true", help="a minimal chain of --jobs-per-subject rules instead")
    ap.add_argument("--jobs-per-subject", type=int, default=8)
    a = ap.parse_args()
    if a.floor:
        return _floor(a)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            sheet = write_sheet(Path(tmp) / f"subjects_{n}.tsv", n)
            cfg = Path(tmp) / f"config_{n}.yaml"
            cfg.write_text(f"subjects: {sheet}\nresults: {tmp}/results_{n}\n")
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--quiet", "all",
                                "--configfile", str(cfg)], check=False, cwd=ROOT, capture_output=True, text=True)
            secs = time.perf_counter() - t0
            if r.returncode != 0:
                raise SystemExit(f"{n} subjects: snakemake failed:\n{r.stderr[-2000:]}")
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            jobs = next((ln.split()[-1] for ln in r.stdout.splitlines() if ln.startswith("total")), "")
            rows.append({"subjects": n, "jobs": jobs, "seconds": round(secs, 1),
                         "peak_rss_mb": round(max(peak, before) / 1024, 0)})
            print(rows[-1], flush=True)
    _write(ROOT / a.out, rows)


def write_sheet(sheet: Path, n: int) -> Path:
    """A subject sheet of ``n`` subjects ``s000000``, ... , each pointing at the bundled demo study."""
    with sheet.open("w") as fh:
        fh.write("subject\timage\ted_image\tes_image\n")
        for i in range(n):
            fh.write(f"s{i:06d}\t\t{ROOT}/demo/acdc/patient020/patient020_frame01.nii.gz\t"
                     f"{ROOT}/demo/acdc/patient020/patient020_frame11.nii.gz\n")
    return sheet


FLOOR_SNAKEFILE = """
N = int(config["nsub"])
R = int(config["nrules"])
S = [f"s{i:06d}" for i in range(N)]
rule all:
    input: expand("out/r{r}/{s}.txt", s=S, r=R - 1)
rule r0:
    output: "out/r0/{s}.txt"
    shell: "touch {output}"
for r in range(1, R):
    rule:
        name: f"r{r}"
        input: f"out/r{r - 1}/{{s}}.txt"
        output: f"out/r{r}/{{s}}.txt"
        shell: "touch {output}"
"""


def _floor(a: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "Snakefile").write_text(FLOOR_SNAKEFILE)
        for n in a.sizes:
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--quiet", "all", "-c1",
                                "--config", f"nsub={n}", f"nrules={a.jobs_per_subject}"], check=False, cwd=tmp,
                               capture_output=True, text=True)
            secs = time.perf_counter() - t0
            if r.returncode != 0:
                raise SystemExit(f"floor {n}: snakemake failed:\n{r.stderr[-2000:]}")
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            rows.append({"subjects": n, "jobs": n * a.jobs_per_subject + 1, "seconds": round(secs, 1),
                         "peak_rss_mb": round(max(peak, before) / 1024, 0)})
            print(rows[-1], flush=True)
    _write(ROOT / a.out, rows)


def _write(out: Path, rows: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
