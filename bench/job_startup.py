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
``--slurm`` (a running SLURM, as ``.ci/slurm-cluster start`` gives) also runs one real job, the first demo
subject's ingest, through ``profiles/slurm`` (with the CI overlay ``tests/workflow/slurm-ci``) from a sheet of
the two demo subjects followed by N-2 copies, and records SLURM's RunTime of that job (whole seconds: both of
its Snakemake processes and the ingest itself) and the wall time of the submitting snakemake.
``--before REV`` times the workflow of git revision REV too (its Snakefile, workflow/ and config/,
with the installed ssll package), for a before/after table. Wall time and the process's peak memory.
Run it with a SLURM answering (``.ci/slurm-cluster start``) or without the slurm plugin: where it is installed
and no SLURM answers, importing it waits about 9 s in every Snakemake process (10.4 s against 1.5 s here).

Run:  python bench/job_startup.py --sizes 1000 10000 100000 --before 4cf0b9a --out bench/results/job_startup.csv
      python bench/job_startup.py --sizes 100000 --before 4cf0b9a --slurm --out bench/results/job_startup_slurm.csv
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from dryrun_scale import ROOT, write_sheet


def bin_env() -> dict[str, str]:
    """This interpreter's bin folder first on PATH, where the jobs' ``ssll`` is."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _run(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one process run to its end, the child's own peak (os.wait4, before Popen
    reaps it); exits on failure."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=bin_env())
    assert p.stderr is not None
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{err.decode(errors='replace')[-3000:]}")
    return secs, usage.ru_maxrss / 1024


def _workflow_of(rev: str, dest: Path) -> Path:
    """Snakefile, workflow/, config/, profiles/ and envs/ of git revision ``rev`` under ``dest`` (demo/ linked
    in)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev, "Snakefile", "workflow", "config", "profiles", "envs"], cwd=ROOT,
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "x", "-C", str(dest)], input=archive, check=True)
    (dest / "demo").symlink_to(ROOT / "demo")
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--before", default="", help="also time the workflow of this git revision")
    ap.add_argument("--chunk", type=int, default=2000)
    ap.add_argument("--slurm", action="store_true", help="one real SLURM job per size instead of the dry runs")
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
            if a.slurm:
                for n in a.sizes:
                    rows.append({"workflow": label, "subjects": n, **_slurm_job(tree, Path(tmp), n)})
                    print(rows[-1], flush=True)
                    _save(rows, ROOT / a.out)
                continue
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


def _slurm_job(tree: Path, tmp: Path, n: int) -> dict:
    """Run patient020's ingest as a SLURM job from a sheet of ``n`` subjects; its RunTime and the submitting
    snakemake's wall time."""
    sheet = tmp / f"slurm_{n}.tsv"
    demo = pd.read_csv(ROOT / "config/subjects.tsv", sep="\t", dtype=str).fillna("")
    for col in ("ed_image", "es_image", "gt_ed", "gt_es"):
        demo[col] = [str(ROOT / p) if p else "" for p in demo[col]]
    copies = pd.read_csv(write_sheet(tmp / f"copies_{n}.tsv", n - len(demo)), sep="\t", dtype=str).fillna("")
    pd.concat([demo, copies], ignore_index=True).fillna("").to_csv(sheet, sep="\t", index=False)
    results = tmp / f"slurm_results_{tree.name}_{n}"
    t0 = time.perf_counter()
    r = subprocess.run(["timeout", "-s", "INT", "1200", sys.executable, "-m", "snakemake", "--profile", "profiles/slurm",
                        "--profile", str(ROOT / "tests/workflow/slurm-ci"), "--config", f"subjects={sheet}",
                        f"results={results}", "--", str(results / "ingest/patient020/ED.nii.gz")],
                       cwd=tree, capture_output=True, text=True, check=False, env=bin_env())
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"SLURM run failed in {tree}:\n{r.stderr[-3000:]}")
    job = re.search(r"SLURM jobid (\d+)", r.stdout + r.stderr)
    if not job:
        raise SystemExit(f"no SLURM job id in the output:\n{r.stderr[-3000:]}")
    return {"what": "SLURM job (ingest): RunTime; submitting snakemake: wall", "seconds": slurm_runtime_s(job.group(1)),
            "submit_wall_s": round(wall, 1)}


def slurm_runtime_s(job_id: str) -> int:
    """SLURM's RunTime of a job (``scontrol show job``; whole seconds, ``[D-]HH:MM:SS``)."""
    info = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    d, h, m, s = re.search(r"RunTime=(?:(\d+)-)?(\d+):(\d+):(\d+)", info).groups()
    return 86400 * int(d or 0) + 3600 * int(h) + 60 * int(m) + int(s)


def _save(rows: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)


if __name__ == "__main__":
    main()
