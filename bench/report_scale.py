"""How long the cohort table and the cohort report take for large cohorts.

Every workflow run (every chunk of a large sheet) rewrites ``cohort/measures.csv`` and
``cohort/report.html`` over every subject of the sheet with results so far, so their cost is paid
once per chunk. This builds a results tree of N subjects from one finished demo run: each subject
is a copy of a demo subject's measures, QC flags and evaluation (the subject id rewritten), with its QC
montages, per-stage benchmark files and logs hard-linked; the first ``--done`` share of the sheet has
results, the rest is "not run yet" (as while the chunks of a sheet are under way). Then it runs
``ssll cohort-table --sheet`` and ``ssll report`` as the workflow's rules do and records wall time,
peak memory and the size of what they write.

Run (after the README's main command, from the repository root; results/ and benchmarks/ of that run):
    python bench/report_scale.py --sizes 1000 10000 --out bench/results/report_scale.csv
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def build_tree(src_results: Path, src_bench: Path, src_logs: Path, templates: list[str], dst: Path, n: int,
               done: float) -> Path:
    """A results / benchmarks / logs tree of ``n`` subjects under ``dst``, subject i a copy of
    ``templates[i % len(templates)]``; returns the sheet's path."""
    res, bench, logs = dst / "results", dst / "benchmarks", dst / "logs"
    src = {}
    for t in templates:
        ev_path = src_results / "evaluate" / f"{t}.json"
        src[t] = {"measures": (src_results / "measures" / f"{t}.tsv").read_text(),
                  "flags": json.loads((src_results / "qc" / t / "flags.json").read_text()),
                  "evaluation": json.loads(ev_path.read_text()) if ev_path.is_file() else None,
                  "pngs": sorted((src_results / "qc" / t).glob("*.png")),
                  "stages": sorted(p.parent.name for p in src_bench.glob(f"*/{t}.tsv")),
                  "log_stages": sorted(p.parent.name for p in src_logs.glob(f"*/{t}.log"))}
        for d in [res / "measures", res / "evaluate", *(bench / s for s in src[t]["stages"]),
                  *(logs / s for s in src[t]["log_stages"])]:
            d.mkdir(parents=True, exist_ok=True)
    sheet = dst / "subjects.tsv"
    n_done = round(n * done)
    with sheet.open("w") as fh:
        fh.write("subject\timage\ted_image\tes_image\n")
        for i in range(n):
            s, t = f"s{i:06d}", templates[i % len(templates)]
            fh.write(f"{s}\t\t{ROOT}/demo/acdc/{t}/{t}_frame01.nii.gz\t{ROOT}/demo/acdc/{t}/{t}_frame11.nii.gz\n")
            if i >= n_done:
                continue
            c = src[t]
            (res / "measures" / f"{s}.tsv").write_text(c["measures"].replace(t, s))
            q = res / "qc" / s
            q.mkdir(parents=True)
            (q / "flags.json").write_text(json.dumps({**c["flags"], "subject": s}))
            for p in c["pngs"]:
                _link(_pooled(p, dst / "pool", i // LINKS_PER_FILE), q / p.name)
            if c["evaluation"] is not None:
                (res / "evaluate" / f"{s}.json").write_text(json.dumps({**c["evaluation"], "subject": s}))
            for st in c["stages"]:
                _link(_pooled(src_bench / st / f"{t}.tsv", dst / "pool", i // LINKS_PER_FILE), bench / st / f"{s}.tsv")
            for st in c["log_stages"]:
                _link(_pooled(src_logs / st / f"{t}.log", dst / "pool", i // LINKS_PER_FILE), logs / st / f"{s}.log")
    return sheet


#: hard links made to one file (ext4 allows 65,000; 100,000 subjects link each demo file 50,000 times)
LINKS_PER_FILE = 20000


def _pooled(src: Path, pool: Path, k: int) -> Path:
    """The k-th copy of ``src`` in ``pool`` (made on first use), to link at most LINKS_PER_FILE times."""
    copy = pool / str(k) / src.parent.parent.name / src.parent.name / src.name
    if not copy.exists():
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, copy)
    return copy


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copyfile(src, dst)


#: runs a command and prints the peak resident memory (kB) of its process tree alone
_PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
         "sys.stderr.write(r.stderr); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and the peak resident memory (MB) of one command."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _PEAK, *cmd], check=False, capture_output=True, text=True, cwd=ROOT)
    secs = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return secs, float(r.stdout.split()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--done", type=float, nargs="+", default=[1.0, 0.1],
                    help="shares of the sheet with results (1.0: all done; 0.1: the first chunk of ten)")
    ap.add_argument("--results", default="results", help="a finished run's results folder")
    ap.add_argument("--benchmarks", default="benchmarks")
    ap.add_argument("--logs", default="logs")
    ap.add_argument("--subjects", nargs="+", default=["patient020", "patient080"],
                    help="the demo subjects the copies are made of, in turn (patient020 carries one QC flag)")
    ap.add_argument("--work", default=None, help="where the trees are built (default: the system's temporary folder)")
    ap.add_argument("--out", default="bench/results/report_scale.csv")
    a = ap.parse_args()
    ssll = [sys.executable, "-m", "ssll"]
    out = ROOT / a.out
    rows = []
    for n in a.sizes:
        for done in a.done:
            with tempfile.TemporaryDirectory(dir=a.work) as tmp:
                t0 = time.perf_counter()
                sheet = build_tree(ROOT / a.results, ROOT / a.benchmarks, ROOT / a.logs, a.subjects, Path(tmp), n, done)
                built = time.perf_counter() - t0
                res = Path(tmp) / "results"
                t_table, m_table = timed([*ssll, "cohort-table", "--sheet", str(sheet), "--results", str(res),
                                          "--out-csv", str(res / "cohort/measures.csv"),
                                          "--out-parquet", str(res / "cohort/measures.parquet")])
                t_report, m_report = timed([*ssll, "report", "--sheet", str(sheet), "--results", str(res),
                                            "--logs", str(Path(tmp) / "logs"),
                                            "--benchmarks", str(Path(tmp) / "benchmarks"),
                                            "--out-html", str(res / "cohort/report.html"),
                                            "--out-failed", str(res / "cohort/failed.tsv")])
                rows.append({"subjects": n, "with_results": round(n * done), "cohort_table_s": round(t_table, 1),
                             "cohort_table_peak_mb": round(m_table), "report_s": round(t_report, 1),
                             "report_peak_mb": round(m_report),
                             "report_html_mb": round((res / "cohort/report.html").stat().st_size / 2**20, 2),
                             "measures_csv_mb": round((res / "cohort/measures.csv").stat().st_size / 2**20, 2),
                             "tree_build_s": round(built, 1)})
                print(rows[-1], flush=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                pd.DataFrame(rows).to_csv(out, index=False)  # after every size: a later failure keeps these


if __name__ == "__main__":
    main()
