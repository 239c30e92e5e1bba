"""What every workflow job pays before its command runs, against the size of the subject sheet.

On a cluster each job is a Snakemake process of its own (under SLURM two: the job's and the one its
``srun`` starts), and each reads the Snakefile again: the whole sheet, and whatever the Snakefile does
with it. So a cost per subject of the sheet at parse time is paid once per job, 8 jobs per subject.

For N subjects (every row the bundled demo study, so inputs exist) this times, as separate processes:

* ``job``: the command a cluster job runs for one subject's ingest (``--mode remote --target-jobs``),
  as a dry run, so only Snakemake's start-up, the Snakefile and the one-job DAG are timed;
* ``plan``: planning one chunk of 2,000 subjects (``-n --config chunk_size=2000 chunk_index=1``), the
  README's recipe for large sheets;

and, once, ``job`` with the two-subject demo sheet: Snakemake's own start-up on this machine.
``--before REV`` times the workflow of git revision REV too (its Snakefile, workflow/ and config/,
with the installed ssll package), for a before/after table. Wall time and the process's peak memory.

Run:  python bench/job_startup.py --sizes 1000 10000 100000 --before 4cf0b9a --out bench/results/job_startup.csv
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from dryrun_scale import ROOT, write_sheet


def _run(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one process run to its end, the child's own peak (os.wait4, before Popen
    reaps it); exits on failure."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert p.stderr is not None
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{err.decode(errors='replace')[-3000:]}")
    return secs, usage.ru_maxrss / 1024


def _workflow_of(rev: str, dest: Path) -> Path:
    """Snakefile, workflow/ and config/ of git revision ``rev`` under ``dest`` (demo/ linked in)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev, "Snakefile", "workflow", "config"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "x", "-C", str(dest)], input=archive, check=True)
    (dest / "demo").symlink_to(ROOT / "demo")
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--before", default="", help="also time the workflow of this git revision")
    ap.add_argument("--chunk", type=int, default=2000)
    ap.add_argument("--out", default="bench/results/job_startup.csv")
    a = ap.parse_args()
    smk = [sys.executable, "-m", "snakemake"]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this": ROOT}
        if a.before:
            trees[a.before] = _workflow_of(a.before, Path(tmp) / "before")
        sheets = {n: write_sheet(Path(tmp) / f"subjects_{n}.tsv", n) for n in a.sizes}
        for label, tree in trees.items():
            cases = [("demo sheet", ROOT / "config/subjects.tsv", "patient020")]
            cases += [(n, sheets[n], "s000001") for n in a.sizes]
            for n, sheet, subject in cases:
                conf = ["--config", f"subjects={sheet}", f"results={tmp}/results"]
                secs, mb = _run([*smk, "--mode", "remote", "-n", "--target-jobs", f"ingest:subject={subject}",
                                 "--allowed-rules", "ingest", "--cores", "1", *conf], tree)
                rows.append({"workflow": label, "subjects": n, "what": "job", "seconds": round(secs, 1),
                             "peak_rss_mb": round(mb)})
                print(rows[-1], flush=True)
                _save(rows, ROOT / a.out)
                if n == "demo sheet" or n <= a.chunk:
                    continue
                secs, mb = _run([*smk, "-n", "--quiet", "rules", *conf, f"chunk_size={a.chunk}", "chunk_index=1"],
                                tree)
                rows.append({"workflow": label, "subjects": n, "what": f"plan a chunk of {a.chunk}",
                             "seconds": round(secs, 1), "peak_rss_mb": round(mb)})
                print(rows[-1], flush=True)
                _save(rows, ROOT / a.out)


def _save(rows: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)


if __name__ == "__main__":
    main()
