"""How long `snakemake -n` takes to plan the full rule graph for large subject sheets.

Each sheet lists N subjects (every row points at the bundled demo study, so inputs exist); the
dry run plans every stage (ingest .. refine, measures, cohort table) with --forceall. Wall time
and peak memory of the snakemake process are recorded.

Run:  python bench/dryrun_scale.py --sizes 1000 10000 50000 --out bench/results/dryrun_scale.csv
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
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            sheet = Path(tmp) / f"subjects_{n}.tsv"
            with sheet.open("w") as fh:
                fh.write("subject\timage\ted_image\tes_image\n")
                for i in range(n):
                    fh.write(f"s{i:06d}\t\t{ROOT}/demo/acdc/patient020/patient020_frame01.nii.gz\t"
                             f"{ROOT}/demo/acdc/patient020/patient020_frame11.nii.gz\n")
            cfg = Path(tmp) / f"config_{n}.yaml"
            cfg.write_text(f"subjects: {sheet}\nresults: {tmp}/results_{n}\n")
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--quiet", "all",
                                "--configfile", str(cfg)], cwd=ROOT, capture_output=True, text=True)
            secs = time.perf_counter() - t0
            if r.returncode != 0:
                raise SystemExit(f"{n} subjects: snakemake failed:\n{r.stderr[-2000:]}")
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            jobs = next((ln.split()[-1] for ln in r.stdout.splitlines() if ln.startswith("total")), "")
            rows.append({"subjects": n, "jobs": jobs, "seconds": round(secs, 1),
                         "peak_rss_mb": round(max(peak, before) / 1024, 0)})
            print(rows[-1], flush=True)
    out = ROOT / a.out
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
