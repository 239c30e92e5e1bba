"""The workflow as the Snakemake catalog tests it: lint, dry run, then the demo cohort end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=900)


def test_lint_is_clean() -> None:
    r = _run([*SNAKEMAKE, "--lint", "--configfile", "config/config.yaml"], ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_snakefmt_is_clean() -> None:
    r = _run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow"], ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dry_run_plans_every_stage() -> None:
    r = _run([*SNAKEMAKE, "-n", "--forceall", "--quiet", "rules", "--configfile", "config/config.yaml",
              "--directory", str(ROOT), "-s", str(ROOT / "Snakefile")], ROOT)
    assert r.returncode == 0, r.stderr
    for rule in ("ingest", "preprocess", "segment", "landmarks", "measures", "cohort_table"):
        assert rule in r.stdout


def test_bad_subject_id_is_rejected_before_the_dag(tmp_path: Path) -> None:
    sheet = tmp_path / "s.tsv"
    sheet.write_text("subject\ted_image\tes_image\nbad/../id\ta.nii.gz\tb.nii.gz\n")
    r = _run([*SNAKEMAKE, "-n", "--config", f"subjects={sheet}"], ROOT)
    assert r.returncode != 0
    assert "bad/../id" in r.stdout + r.stderr


def _copy_workflow(work: Path) -> None:
    work.mkdir()
    for name in ("Snakefile", "workflow", "config", "profiles", "demo", "envs"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)


def _slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    return r.returncode == 0 and any(s in r.stdout for s in ("idle", "mix", "alloc"))


@pytest.mark.slow
@pytest.mark.slurm
def test_demo_cohort_on_slurm(tmp_path: Path) -> None:
    """The demo cohort through --profile profiles/slurm on a real SLURM (.ci/slurm-cluster start)."""
    if not _slurm_up():
        if os.environ.get("SSLL_REQUIRE_SLURM") == "1":
            pytest.fail("SSLL_REQUIRE_SLURM=1 but no SLURM cluster answers (sinfo)")
        pytest.skip("no SLURM cluster here (start one with .ci/slurm-cluster start)")
    work = tmp_path / "run"
    _copy_workflow(work)
    shutil.copytree(ROOT / "tests/workflow/slurm-ci", work / "slurm-ci")
    r = subprocess.run(["timeout", "-s", "INT", "900", *SNAKEMAKE, "--profile", "profiles/slurm",
                        "--profile", "slurm-ci"], cwd=work, env=_env(), capture_output=True, text=True,
                       encoding="utf-8", errors="replace")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "Using profiles" in r.stdout + r.stderr or "slurm" in r.stdout + r.stderr
    logs = list((work / ".snakemake/slurm_logs").rglob("*.log"))
    assert any("segment" in str(p) for p in logs), logs  # the jobs really went through sbatch
    assert (work / "results/cohort/measures.csv").exists()


@pytest.mark.slow
def test_demo_cohort_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "run"
    _copy_workflow(work)
    r = _run([*SNAKEMAKE, "--profile", "profiles/local"], work)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for subject in ("patient020", "patient080"):
        for phase in ("ED", "ES"):
            orig = nib.load(str(work / "results/segment" / subject / f"{phase}_labels_original.nii.gz"))
            src = nib.load(str(work / "results/ingest" / subject / f"{phase}.nii.gz"))
            assert orig.shape == src.shape
            np.testing.assert_allclose(orig.affine, src.affine, atol=1e-4)
            lab = np.asarray(orig.dataobj)
            assert set(np.unique(lab)) >= {0, 1, 2, 3}
            assert (work / "results/landmarks" / subject / f"{phase}.csv").exists()
    table = (work / "results/cohort/measures.csv").read_text()
    assert "patient020" in table and "lv_ef_pct" in table
    # a rerun has nothing to do
    r2 = _run([*SNAKEMAKE, "--profile", "profiles/local", "-n"], work)
    assert "Nothing to be done" in r2.stdout + r2.stderr
