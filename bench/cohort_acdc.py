"""The whole workflow on real studies: the held-out ACDC patients through the README's command, end to end.

Writes the subject sheet of the ACDC training folder with ``ssll sheet`` (frames from each Info.cfg, the expert
labels as ground truth), keeps the patients a training config holds out (the 20 of config/train_lr.yaml;
``--patients all`` for all 100, 80 of which the network was trained on; ``--subjects`` names them), and runs the workflow on it with
``profiles/local`` and the default config (orientation search, the default 20-atlas phantom bank built first) in
a scratch copy of the repository, as a user would on a cohort. Then reads only what the workflow wrote:

- every subject through or not (``cohort/failed.tsv``), the QC flags (``cohort/measures.csv``);
- Dice and slice-wise HD per structure, network and refined model, from ``evaluate/{subject}.json``, and, per
  volume, the network's Dice beside ``bench/results/sslln_validation/segmentation.csv`` (the same network called
  from Python): the product should score what the benchmarks report;
- per stage, the jobs' wall and CPU seconds and peak memory (``benchmarks/{rule}/{subject}.tsv``), and the
  subject's disk and files in ``results/``: what a cohort of this kind costs.

Run:  python bench/cohort_acdc.py --out bench/results/cohort_acdc      (about 15 minutes on 2 cores)
      python bench/cohort_acdc.py --subjects patient001 patient002 patient003 patient004 patient021 patient022
        patient023 patient024 patient041 patient042 patient043 patient044 patient061 patient062 patient063 patient064
        patient081 patient082 patient083 patient084 --out bench/results/cohort_acdc_training20
        (20 training patients, 4 per group: robustness only, the network has seen them)
      python bench/cohort_acdc.py --patients training --exclude patient001 patient002 patient003 patient004 patient021
        patient022 patient023 patient024 patient041 patient042 patient043 patient044 patient061 patient062 patient063
        patient064 patient081 patient082 patient083 patient084 --out bench/results/cohort_acdc_training60
        (the other 60 training patients; about 45 minutes)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from job_startup import bin_env

ROOT = Path(__file__).resolve().parents[1]
STRUCTURES = ("lv_cavity", "lv_wall", "rv_cavity")
COPIED = ("Snakefile", "workflow", "config", "profiles", "demo", "envs")


def _sheet(work: Path, data: Path, patients: set[str] | None) -> list[str]:
    """Write work/cohort.tsv (``ssll sheet`` of ``data``, only ``patients`` if given); its subjects."""
    full = work / "all.tsv"
    subprocess.run(["ssll", "sheet", "--data", str(data), "--out-tsv", str(full)], check=True, env=bin_env(),
                   capture_output=True)
    sheet = pd.read_csv(full, sep="\t", dtype=str, keep_default_na=False)
    if patients is not None:
        sheet = sheet[sheet["subject"].isin(patients)]
        missing = patients - set(sheet["subject"])
        if missing:
            raise SystemExit(f"{data}: no study for {sorted(missing)}")
    sheet.to_csv(work / "cohort.tsv", sep="\t", index=False)
    return sorted(sheet["subject"])


def _stage_costs(work: Path, subjects: list[str]) -> pd.DataFrame:
    """One row per (stage, subject): wall s, CPU s, peak RSS MB, from the jobs' benchmark files."""
    rows = []
    for tsv in sorted((work / "benchmarks").rglob("*.tsv")):
        b = pd.read_csv(tsv, sep="\t").iloc[0]
        rel = tsv.relative_to(work / "benchmarks")
        stage, subject = (rel.parts[0], tsv.stem) if len(rel.parts) == 2 else (tsv.stem, "")
        if subject and subject not in subjects:
            continue
        rows.append({"stage": stage, "subject": subject, "wall_s": float(b["s"]), "cpu_s": float(b["cpu_time"]),
                     "max_rss_mb": float(b["max_rss"])})
    return pd.DataFrame(rows)


def _disk(results: Path, subject: str) -> tuple[float, int]:
    """MB and files the subject keeps in ``results`` (every stage folder's ``{subject}`` entry)."""
    files = [p for stage in results.iterdir() if stage.is_dir()
             for p in [*stage.glob(f"{subject}/**/*"), *stage.glob(f"{subject}.*")] if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6, len(files)


def _overlap(results: Path, subjects: list[str]) -> pd.DataFrame:
    """One row per subject, phase and method (sslln, refined): Dice and slice-wise HD per structure."""
    rows = []
    for s in subjects:
        f = results / "evaluate" / f"{s}.json"
        if f.exists():
            rows += [{"subject": s, **r} for r in json.loads(f.read_text())["overlap"]]
    return pd.DataFrame(rows)


def _mean_sd(x: pd.Series) -> str:
    return f"{x.mean():.3f} ± {x.std(ddof=1):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/acdc/training")
    ap.add_argument("--config", default="config/train_lr.yaml", help="its validation_patients are run")
    ap.add_argument("--patients", default="held-out", choices=["held-out", "training", "all"],
                    help="the config's validation patients, the others (the network's training patients) or all")
    ap.add_argument("--subjects", nargs="+", help="these patients instead (overrides --patients)")
    ap.add_argument("--exclude", nargs="+", default=[], help="patients left out of those chosen")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", default="", help="keep the scratch workflow folder here (default: deleted)")
    ap.add_argument("--out", default="bench/results/cohort_acdc")
    a = ap.parse_args()
    out = (ROOT / a.out) if not Path(a.out).is_absolute() else Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(a.data).resolve()
    held = set(yaml.safe_load((ROOT / a.config).read_text())["validation_patients"])
    tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="cohort_acdc_"))
    work = tmp / "work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for item in COPIED:
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, work / item)
    every = {p.name for p in data.glob("patient[0-9][0-9][0-9]")}
    chosen = set(a.subjects) if a.subjects else {"held-out": held, "training": every - held, "all": every}[a.patients]
    chosen -= set(a.exclude)
    subjects = _sheet(work, data, chosen)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/local", "--cores", str(a.cores),
                        "--config", "subjects=cohort.tsv", "results=results"], cwd=work, env=bin_env(),
                       capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    (out / "snakemake.log").write_text(r.stderr[-20000:])
    results = work / "results"
    failed = pd.read_csv(results / "cohort/failed.tsv", sep="\t") if (results / "cohort/failed.tsv").exists() \
        else pd.DataFrame()
    table = pd.read_csv(results / "cohort/measures.csv")
    costs = _stage_costs(work, subjects)
    costs.to_csv(out / "stage_costs.csv", index=False, float_format="%.2f")
    ov = _overlap(results, subjects)
    ov.to_csv(out / "overlap.csv", index=False, float_format="%.4f")

    per_subject = []
    for s in subjects:
        mb, n = _disk(results, s)
        row = table[table["subject"] == s]
        c = costs[costs["subject"] == s]
        per_subject.append({"subject": s, "measured": not row.empty, "results_mb": round(mb, 2), "results_files": n,
                            "wall_s": round(c["wall_s"].sum(), 1), "cpu_s": round(c["cpu_s"].sum(), 1),
                            "qc_flags": "" if row.empty or pd.isna(row["qc_flags"].iloc[0]) else row["qc_flags"].iloc[0]})
    ps = pd.DataFrame(per_subject)
    ps.to_csv(out / "per_subject.csv", index=False)

    accuracy = {}
    for (method, phase), g in ov.groupby(["method", "phase"]):
        accuracy[f"{method}_{phase}"] = {f"{k}_{st}": _mean_sd(g[f"{k}_{st}" if k == "dice" else f"hd2d_{st}_mm"])
                                         for st in STRUCTURES for k in ("dice", "hd2d_mm")}
    same = {}
    ref_csv = ROOT / "bench/results/sslln_validation/segmentation.csv"
    if ref_csv.exists() and chosen is not None and chosen <= held:
        ref = pd.read_csv(ref_csv).rename(columns={"patient": "subject"})
        m = ov[ov["method"] == "sslln"].merge(ref, on=["subject", "phase"], suffixes=("", "_bench"))
        diff = np.abs(np.stack([m[f"dice_{st}"] - m[f"dice_{st}_bench"] for st in STRUCTURES], 1))
        same = {"volumes_compared": len(m), "volumes_within_1e-3": int((diff.max(1) <= 1e-3).sum()),
                "differing": [f"{r.subject} {r.phase}: " + " / ".join(f"{r[f'dice_{st}']:.3f} vs {r[f'dice_{st}_bench']:.3f}"
                                                                   for st in STRUCTURES)
                              for (_, r), d in zip(m.iterrows(), diff.max(1)) if d > 1e-3]}
    flags: dict[str, int] = {}
    for f in ps["qc_flags"]:  # "flag@phase;flag@phase": subjects per flag
        for name in {x.split("@")[0] for x in str(f).split(";") if x}:
            flags[name] = flags.get(name, 0) + 1
    stages = costs.groupby("stage").agg(jobs=("wall_s", "size"), wall_s_median=("wall_s", "median"),
                                        wall_s_max=("wall_s", "max"), cpu_s_median=("cpu_s", "median"),
                                        max_rss_mb=("max_rss_mb", "max")).round(1)
    summary = {
        "command": f"snakemake --profile profiles/local --cores {a.cores} --config subjects=cohort.tsv results=results",
        "data": str(a.data), "patients": sorted(chosen), "n_subjects": len(subjects),
        "snakemake_rc": r.returncode, "wall_s": round(wall, 1),
        "measured": int(ps["measured"].sum()), "failed": failed.to_dict("records"),
        "accuracy_mean_sd": accuracy, "network_dice_against_sslln_validation": same,
        "qc_flags_subjects": dict(sorted(flags.items())),
        "subjects_flagged": int((ps["qc_flags"] != "").sum()),
        "stages": stages.reset_index().to_dict("records"),
        "per_subject_median": {"wall_s": float(ps["wall_s"].median()), "cpu_s": float(ps["cpu_s"].median()),
                               "results_mb": float(ps["results_mb"].median()),
                               "results_files": int(ps["results_files"].median())},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    if not a.keep:
        shutil.rmtree(tmp)
    if r.returncode != 0:
        raise SystemExit(f"snakemake exited {r.returncode}: see {out / 'snakemake.log'}")


if __name__ == "__main__":
    main()
