"""The workflow as the Snakemake catalog tests it: lint, dry run, then the demo cohort end to end."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
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
    return subprocess.run(args, check=False, cwd=cwd, env=_env(), capture_output=True, text=True, encoding="utf-8",
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


def test_shell_commands_do_not_grow_with_the_cohort(tmp_path: Path) -> None:
    # bash -c takes at most 128 KiB: no command may list the cohort's subjects or files
    demo = ROOT / "demo/acdc/patient020"
    sheet = tmp_path / "s.tsv"
    sheet.write_text("subject\ted_image\tes_image\n" + "".join(
        f"s{i:04d}\t{demo}/patient020_frame01.nii.gz\t{demo}/patient020_frame11.nii.gz\n" for i in range(300)))
    r = _run([*SNAKEMAKE, "-n", "--forceall", "-p", "--config", f"subjects={sheet}", f"results={tmp_path / 'r'}"], ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    cmds = [ln for ln in r.stdout.splitlines() if ln.startswith("Shell command: ")]
    assert len(cmds) > 300 * 8 and max(map(len, cmds)) < 4000, max(cmds, key=len)[:300]
    # the default config searches each volume's orientation (the workflow tests below segment as stored)
    segment = [c for c in cmds if "ssll segment" in c]
    assert segment and all("--orientation search" in c and "--batch-size 0" in c for c in segment), segment[:1]


def test_chunks_are_the_sheets_rows_and_a_missing_input_leaves_only_its_subject_out(tmp_path: Path) -> None:
    """chunk_size cuts the sheet's rows, so a subject's chunk does not move when another's file goes missing; a
    missing file is looked up (and reported) only in the chunk that plans its subject."""
    demo = ROOT / "demo/acdc/patient020"
    ed, es = f"{demo}/patient020_frame01.nii.gz", f"{demo}/patient020_frame11.nii.gz"
    sheet = tmp_path / "s.tsv"
    sheet.write_text("subject\ted_image\tes_image\n" + "".join(
        f"s{i}\t{tmp_path / 'gone.nii.gz' if i == 1 else ed}\t{es}\n" for i in range(4)))
    planned = {}
    for chunk in (0, 1):
        r = _run([*SNAKEMAKE, "-n", "--forceall", "-p", "--config", f"subjects={sheet}", f"results={tmp_path / 'r'}",
                  "chunk_size=2", f"chunk_index={chunk}"], ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        planned[chunk] = sorted(ln.split("--subject ")[1].split()[0] for ln in r.stdout.splitlines()
                                if ln.startswith("Shell command: ssll ingest"))
        assert ("subject s1: input missing" in r.stderr) == (chunk == 0), r.stderr[-2000:]
    assert planned == {0: ["s0"], 1: ["s2", "s3"]}


def test_sheet_paths_with_spaces_and_quotes_reach_the_commands_whole(tmp_path: Path) -> None:
    """Paths from the sheet are shell-quoted: a folder named with a space and a quote (a DICOM export's "SAX 1",
    a name like O'Neil) reaches ingest and evaluate as one argument each, and cannot end the quoting early."""
    import shlex

    data = tmp_path / "scans of O'Neil; touch injected"
    data.mkdir()
    demo = ROOT / "demo/acdc/patient020"
    for name in ("patient020_frame01.nii.gz", "patient020_frame11.nii.gz", "patient020_frame01_gt.nii.gz",
                 "patient020_frame11_gt.nii.gz"):
        shutil.copy(demo / name, data / name)
    ed, es = data / "patient020_frame01.nii.gz", data / "patient020_frame11.nii.gz"
    gt_ed, gt_es = data / "patient020_frame01_gt.nii.gz", data / "patient020_frame11_gt.nii.gz"
    sheet = tmp_path / "s.tsv"
    sheet.write_text("subject\ted_image\tes_image\tgt_ed\tgt_es\tgt_convention\n"
                     f"p1\t{ed}\t{es}\t{gt_ed}\t{gt_es}\tacdc\n")
    conf = ["--config", f"subjects={sheet}", f"results={tmp_path / 'r'}"]
    r = _run([*SNAKEMAKE, "-n", "--forceall", "-p", *conf], ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    cmds = {ln.split()[3]: shlex.split(ln.removeprefix("Shell command: ").split(" > ")[0])
            for ln in r.stdout.splitlines() if ln.startswith(("Shell command: ssll ingest", "Shell command: ssll evaluate"))}
    assert set(cmds) == {"ingest", "evaluate"}, list(cmds)
    ingest, evaluate = cmds["ingest"], cmds["evaluate"]
    assert ingest[ingest.index("--ed-image") + 1] == str(ed) and ingest[ingest.index("--es-image") + 1] == str(es)
    assert evaluate[evaluate.index("--ed-truth") + 1] == str(gt_ed)
    assert evaluate[evaluate.index("--es-truth") + 1] == str(gt_es)
    # and the ingest job really runs on them, in a copy of the workflow (its logs land there)
    work = tmp_path / "run"
    _copy_workflow(work)
    r = _run([*SNAKEMAKE, "-c1", *conf, "--", str(tmp_path / "r/ingest/p1/ED.nii.gz")], work)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert nib.load(str(tmp_path / "r/ingest/p1/ED.nii.gz")).shape == nib.load(str(ed)).shape
    assert not (work / "injected").exists()  # the folder's name ran nothing
    # the results folder, unquoted in every rule's outputs, is refused with such characters before any job
    r = _run([*SNAKEMAKE, "-n", "--config", f"subjects={sheet}", f"results={tmp_path / 'my results'}"], ROOT)
    assert r.returncode != 0 and "my results" in r.stdout + r.stderr, r.stderr[-2000:]


def test_cycle_is_planned_for_cine_subjects_only_when_asked(tmp_path: Path) -> None:
    """`cycle: true` adds one `ssll cycle` job per subject given as a cine (column image), none for a subject given
    as ED/ES files; with the default config there is none."""
    import nibabel as nib
    import numpy as np

    cine = tmp_path / "cine.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.float32), np.diag([1.5, 1.5, 8.0, 1.0])), cine)
    demo = ROOT / "demo/acdc/patient020"
    sheet = tmp_path / "s.tsv"
    sheet.write_text("subject\timage\ted_image\tes_image\n"
                     f"cine1\t{cine}\t\t\n"
                     f"files1\t\t{demo}/patient020_frame01.nii.gz\t{demo}/patient020_frame11.nii.gz\n")
    base = [*SNAKEMAKE, "-n", "--forceall", "-p", "--config", f"subjects={sheet}", f"results={tmp_path / 'r'}"]
    for extra, want in (([], 0), (["cycle=True"], 1)):
        r = _run([*base, *extra], ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        cmds = [ln for ln in r.stdout.splitlines() if ln.startswith("Shell command: ssll cycle")]
        assert len(cmds) == want, cmds
    c = cmds[0]
    assert "--subject cine1" in c and str(cine) in c and "--orientation search" in c and "--preprocess" in c
    # segment's network settings reach the cycle as they reach segment (a GPU node's batch of 16)
    (tmp_path / "gpu.yaml").write_text("segment:\n  batch_size: 16\n")
    r16 = _run([*base[:-3], "--configfile", "config/config.yaml", str(tmp_path / "gpu.yaml"), *base[-3:], "cycle=True"],
               ROOT)
    assert r16.returncode == 0, r16.stderr[-2000:]
    net = [ln for ln in r16.stdout.splitlines() if ln.startswith(("Shell command: ssll cycle", "Shell command: ssll segment"))]
    assert len(net) == 3 and all("--batch-size 16" in ln for ln in net), net
    assert f"{tmp_path / 'r'}/cycle/cine1/cycle.json" in c
    # the QC flags of the cine subject check its ED/ES against the curve; the other subject's have nothing to check
    qc = {c.split("--subject ")[-1].split()[0]: c for c in r.stdout.splitlines()
          if c.startswith("Shell command: (ssll qc ")}
    assert f"--cycle {tmp_path / 'r'}/cycle/cine1/cycle.json" in qc["cine1"] and "--frames " in qc["cine1"]
    assert "--cycle" not in qc["files1"]
    # phases_from_cycle: the cine subject's ingest reads its frames from the cycle; the other's does not
    r = _run([*base, "phases_from_cycle=True"], ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    ingest = {c.split("--subject ")[1].split()[0]: c for c in r.stdout.splitlines()
              if c.startswith("Shell command: ssll ingest")}
    assert f"--frames-from {tmp_path / 'r'}/cycle/cine1/cycle.json" in ingest["cine1"]
    assert "--frames-from" not in ingest["files1"]
    assert sum(c.startswith("Shell command: ssll cycle") for c in r.stdout.splitlines()) == 1


FAST = ["--configfile", "config/config.yaml", "fast.yaml"]


def _copy_workflow(work: Path) -> None:
    work.mkdir()
    for name in ("Snakefile", "workflow", "config", "profiles", "demo", "envs"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    shutil.copy(ROOT / "tests/workflow/fast.yaml", work / "fast.yaml")


def _stored(work: Path) -> list[str]:
    """Config arguments for the copied workflow with the volumes segmented as stored: the orientation
    search (16 forward passes a volume, about 20 s on 2 cores) is tested on real data in
    tests/test_orientation.py and its wiring by the dry run above; these tests need the plumbing."""
    (work / "stored.yaml").write_text("segment:\n  orientation: stored\n")
    return [*FAST, "stored.yaml"]


def _one_subject(work: Path) -> list[str]:
    """Cut the copied demo sheet to its first subject (patient020), segmented as stored: the tests that
    need the whole pipeline's plumbing, not a second heart, stay short. Returns the config arguments."""
    lines = (work / "config/subjects.tsv").read_text().splitlines()
    assert lines[1].startswith("patient020\t")
    (work / "config/subjects.tsv").write_text("\n".join(lines[:2]) + "\n")
    return _stored(work)


def _slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    r = subprocess.run(["sinfo", "-h", "-o", "%t"], check=False, capture_output=True, text=True)
    return r.returncode == 0 and any(s in r.stdout for s in ("idle", "mix", "alloc"))


@pytest.mark.slow
@pytest.mark.slurm
def test_demo_cohort_on_slurm(tmp_path: Path) -> None:
    """The demo cohort's first subject through --profile profiles/slurm on a real SLURM (.ci/slurm-cluster start)."""
    if not _slurm_up():
        if os.environ.get("SSLL_REQUIRE_SLURM") == "1":
            pytest.fail("SSLL_REQUIRE_SLURM=1 but no SLURM cluster answers (sinfo)")
        pytest.skip("no SLURM cluster here (start one with .ci/slurm-cluster start)")
    work = tmp_path / "run"
    _copy_workflow(work)
    config = _one_subject(work)
    shutil.copytree(ROOT / "tests/workflow/slurm-ci", work / "slurm-ci")
    r = subprocess.run(["timeout", "-s", "INT", "900", *SNAKEMAKE, "--profile", "profiles/slurm",
                        "--profile", "slurm-ci", *config], check=False, cwd=work, env=_env(), capture_output=True,
                       text=True, encoding="utf-8", errors="replace")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "Using profiles" in r.stdout + r.stderr or "slurm" in r.stdout + r.stderr
    logs = list((work / ".snakemake/slurm_logs").rglob("*.log"))
    assert any("segment" in str(p) for p in logs), logs  # the jobs really went through sbatch
    # the profile's groups: ingest + preprocess in one SLURM job, landmarks + refine in another
    dirs = {p.relative_to(work / ".snakemake/slurm_logs").parts[0] for p in logs}
    assert any(d.startswith("group_prepare") for d in dirs) and any(d.startswith("group_register") for d in dirs), dirs
    assert not any(d in ("rule_ingest", "rule_preprocess", "rule_landmarks", "rule_refine") for d in dirs), dirs
    assert (work / "results/cohort/measures.csv").exists()
    assert any("refine" in str(p) for p in logs) and (work / "results/cohort/report.html").exists()


@pytest.mark.slow
def test_demo_cohort_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "run"
    _copy_workflow(work)
    config = [*_stored(work), "--config", "keep_working_images=False"]  # a large cohort's disk-saving setting
    r = _run([*SNAKEMAKE, "--profile", "profiles/local", *config], work)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for subject in ("patient020", "patient080"):
        for phase in ("ED", "ES"):
            # the working-grid images are gone once read; their grid records stay
            assert not (work / "results/preprocess" / subject / f"{phase}.nii.gz").exists()
            assert (work / "results/preprocess" / subject / f"{phase}.json").exists()
            orig = nib.load(str(work / "results/segment" / subject / f"{phase}_labels_original.nii.gz"))
            src = nib.load(str(work / "results/ingest" / subject / f"{phase}.nii.gz"))
            assert orig.shape == src.shape
            np.testing.assert_allclose(orig.affine, src.affine, atol=1e-4)
            lab = np.asarray(orig.dataobj)
            assert set(np.unique(lab)) >= {0, 1, 2, 3}
            assert (work / "results/landmarks" / subject / f"{phase}.csv").exists()
            ref = nib.load(str(work / "results/refine" / subject / f"{phase}_labels_original.nii.gz"))
            assert ref.shape == src.shape
            np.testing.assert_allclose(ref.affine, src.affine, atol=1e-4)
            assert set(np.unique(np.asarray(ref.dataobj))) == {0, 1, 2, 3, 4}  # the refined model has an RV wall
            assert (work / "results/mesh" / subject / f"{phase}.vtk").stat().st_size > 0
            assert not (work / "results/mesh" / subject / f"{phase}_lv_wall.ply").exists()  # surface: ply: false
            assert (work / "results/refine" / subject / f"{phase}_labels.nii.gz.prov.json").exists()
    table = (work / "results/cohort/measures.csv").read_text()
    assert "patient020" in table and "lv_ef_pct" in table and "refined_lv_ef_pct" in table and "qc_flags" in table
    # the network's expected Dice: written by segment, carried by qc into the cohort table and the report
    assert "es_expected_dice_lv_cavity" in table and "qc_expected_dice_min" in table
    assert "ed_orientation" in table  # the voxel-grid orientation segment chose, per phase
    assert (work / "results/cohort/measures.parquet").exists()
    assert (work / "results/evaluate/patient020.json").exists()  # the demo sheet gives ground truth
    page = (work / "results/cohort/report.html").read_text()
    assert "<b>2</b> subjects: <b>2</b> done" in page and "Bland-Altman" in page and "lowest expected Dice" in page
    # a rerun has nothing to do (the deleted working images are not missing work)
    r2 = _run([*SNAKEMAKE, "--profile", "profiles/local", *config, "-n"], work)
    assert "Nothing to be done" in r2.stdout + r2.stderr


def _jobs(log: str) -> dict[int, tuple[str, str, list[str]]]:
    """Job id -> (rule, wildcards, outputs) from Snakemake's printed job blocks."""
    jobs: dict[int, tuple[str, str, list[str]]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", log):
        m = re.match(r"(?:local)?rule (\w+):", block)
        jid = re.search(r"^\s+jobid: (\d+)", block, re.MULTILINE)
        if not (m and jid):
            continue
        wc = re.search(r"^\s+wildcards: (.*)$", block, re.MULTILINE)
        out = re.search(r"^\s+output: (.*)$", block, re.MULTILINE)
        jobs[int(jid.group(1))] = (m.group(1), wc.group(1).strip() if wc else "",
                                   [o.strip() for o in out.group(1).split(",")] if out else [])
    return jobs


def _finished(log: str) -> set[int]:
    return {int(j) for j in re.findall(r"Finished jobid: (\d+)", log)}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_failures_kill_and_rerun(tmp_path: Path) -> None:
    """A corrupt subject, a missing file and a kill -9 mid-run: the rerun does only the missing work,
    leaves every completed output unchanged, and the report names the failed subjects and why."""
    work = tmp_path / "run"
    _copy_workflow(work)
    config = _one_subject(work)
    good = (work / "demo/acdc/patient020/patient020_frame01.nii.gz").read_bytes()
    (work / "corrupt_ed.nii.gz").write_bytes(good[: len(good) // 3])  # truncated gzip
    sheet = (work / "config/subjects.tsv").read_text().splitlines()
    sheet += ["corrupt\t\tcorrupt_ed.nii.gz\tdemo/acdc/patient020/patient020_frame11.nii.gz\t\t\t\t\t",
              "missing\t\tdemo/acdc/patient999/nowhere.nii.gz\tdemo/acdc/patient020/patient020_frame11.nii.gz\t\t\t\t\t"]
    (work / "config/subjects.tsv").write_text("\n".join(sheet) + "\n")
    cmd = [*SNAKEMAKE, "--profile", "profiles/local", *config]
    # run 1: killed with SIGKILL once the first refinement is written
    log1 = work / "run1.log"
    with log1.open("w") as fh:
        p = subprocess.Popen(cmd, cwd=work, env=_env(), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        target = work / "results/refine/patient020/ED.json"
        t0 = time.time()
        while not target.exists() and p.poll() is None and time.time() - t0 < 900:
            time.sleep(0.5)
        assert p.poll() is None, "the run ended before it could be killed"
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    text1 = log1.read_text()
    jobs1 = _jobs(text1)
    done = {jobs1[j][:2]: jobs1[j][2] for j in _finished(text1) if j in jobs1}
    assert any(rule == "refine" for rule, _ in done) or any(rule == "landmarks" for rule, _ in done)
    before = {o: _digest(work / o) for outs in done.values() for o in outs if (work / o).is_file()}
    assert before
    # run 2: completes what is missing; the corrupt subject fails (keep-going), the missing one is left out.
    # A kill -9 leaves Snakemake's lock behind: --unlock first, as after any hard kill
    assert _run([*cmd, "--unlock"], work).returncode == 0
    r2 = _run(cmd, work)
    assert r2.returncode != 0  # the corrupt subject failed
    log2 = r2.stdout + r2.stderr
    assert "LockException" not in log2
    ran = {v[:2] for v in _jobs(log2).values()}
    assert any(rule == "measures" for rule, _ in ran)  # the rerun did the remaining work
    assert not ran & set(done), f"completed jobs ran again: {sorted(ran & set(done))}"
    assert {o: _digest(work / o) for o in before} == before  # nothing completed changed
    assert "subject missing: input missing" in log2
    assert (work / "results/measures/patient020.tsv").exists()
    failed = (work / "results/cohort/failed.tsv").read_text()
    assert "corrupt\tingest\t" in failed and "error" in failed
    assert "missing\tinput\tinput missing: demo/acdc/patient999/nowhere.nii.gz" in failed
    assert (work / "results/cohort/report.html").exists()
    # run 3 (dry): only the corrupt subject's work (and the cohort targets that wait for it) is left
    r3 = _run([*cmd, "-n"], work)
    left = {v[:2] for v in _jobs(r3.stdout + r3.stderr).values()}
    assert left and all("patient0" not in wc for _, wc in left), left
