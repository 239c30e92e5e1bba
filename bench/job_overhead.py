"""What one workflow job costs before it does any work, against the work a registration does.

Measures on this machine (quiet: run nothing else): the start of a Python process that imports the refinement stack
(``python -c "import ssll.refine"``: torch, scipy, SimpleITK), the ``ssll`` command doing nothing
(``ssll --help``), a do-nothing Snakemake job on the local executor, and, in one process, the
first and the following label registrations of the default FFD on a phantom pair (the first
pays torch's one-off set-up); and, with the benchmark atlas bank, the whole refinement of one
subject and phase (selection over the bank, 5 registrations, fusion); and ``ssll refine`` of one
subject's ED and ES volumes as two processes (the former job per phase) against one process
(``--and``, the job per subject). The ratio of job overhead to registration time decides how
the refinement is split into jobs.

Run:  python bench/job_overhead.py --out bench/results/job_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _time(cmd: list[str], n: int = 3, cwd: str | None = None) -> float:
    best = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=cwd)
        best.append(time.perf_counter() - t0)
    return sorted(best)[len(best) // 2]


def _two_processes_vs_one(ph: dict, model: object, bank: str, bindir: Path) -> dict[str, float]:
    """Wall time of `ssll refine` over a subject's ED and ES: two processes against one (--and)."""
    import numpy as np

    from ssll.io import save_nifti, write_json
    from ssll.landmarks import _write_landmarks, points_from_landmark_map
    from ssll.nn.infer import predict
    from ssll.preprocess import preprocess_volume
    from ssll.simulate import LRConfig, simulate_lr
    from ssll.types import Volume

    with tempfile.TemporaryDirectory() as tmp:
        groups = []
        for ph_name in ("ED", "ES"):
            sim = simulate_lr(ph[ph_name]["image"], ph[ph_name]["labels"], ph["affine"], LRConfig(),
                              np.random.default_rng([7, 30000, len(ph_name)]))
            work, rec = preprocess_volume(Volume(sim["image"], sim["affine"]))
            lab, lmap, _ = predict(model, work.array[None])
            f = {k: str(Path(tmp, f"{ph_name}_{k}")) for k in ("image.nii.gz", "labels.nii.gz", "lm.json", "rec.json")}
            save_nifti(f["image.nii.gz"], Volume(work.array, rec.working_affine), dtype=np.float32)
            save_nifti(f["labels.nii.gz"], Volume(lab[0], rec.working_affine), dtype=np.uint8)
            write_json(f["rec.json"], rec.to_dict())
            _write_landmarks(points_from_landmark_map(lmap[0]), rec.working_affine, work.array.shape,
                             out_json=f["lm.json"], out_csv=str(Path(tmp, f"{ph_name}_lm.csv")),
                             out_map=str(Path(tmp, f"{ph_name}_lm.nii.gz")), confidence={}, radius_mm=4.0)
            groups.append(["--image", f["image.nii.gz"], "--labels", f["labels.nii.gz"], "--landmarks", f["lm.json"],
                           "--record", f["rec.json"], "--out-labels", str(Path(tmp, f"{ph_name}_r.nii.gz")),
                           "--out-original", str(Path(tmp, f"{ph_name}_ro.nii.gz")),
                           "--out-record", str(Path(tmp, f"{ph_name}_r.json"))])
        head = [str(bindir / "ssll"), "refine", "--subject", "bench", "--bank", bank]
        t0 = time.perf_counter()
        for g in groups:
            subprocess.run([*head, *g], check=True, capture_output=True)
        two = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run([*head, "--and", *groups[0], "--and", *groups[1]], check=True, capture_output=True)
        one = time.perf_counter() - t0
    return {"two_processes_s": round(two, 2), "one_process_s": round(one, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/job_overhead.json")
    ap.add_argument("--biv-me", default="../shared/data/biv-me")
    ap.add_argument("--bank", default="resources/bench/refinement/bank", help="atlas bank of bench/refinement.py")
    a = ap.parse_args()
    bindir = Path(sys.executable).parent
    res = {"python_import_refinement_s": _time([sys.executable, "-c", "import ssll.refine"]),
           "ssll_help_s": _time([str(bindir / "ssll"), "--help"])}
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "Snakefile").write_text("rule all:\n    output: 'x.txt'\n    shell: 'touch {output}'\n")
        t = []
        for _ in range(3):
            Path(tmp, "x.txt").unlink(missing_ok=True)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "snakemake", "-c1", "--quiet"], cwd=tmp, check=True, capture_output=True)
            t.append(time.perf_counter() - t0)
        res["snakemake_one_noop_job_s"] = sorted(t)[1]
    import numpy as np
    import torch

    from ssll.atlases import crop, crop_box, landmark_affine
    from ssll.phantom import make_phantom, require_bank
    from ssll.register import register_labels

    torch.set_num_threads(2)
    bank = require_bank(a.biv_me)
    pairs = [(make_phantom(bank, 40000 + i), make_phantom(bank, 40100 + i)) for i in range(4)]
    times = []
    for tgt, atl in pairs:
        box = crop_box(tgt["ED"]["labels"], tgt["affine"], 15.0)
        tl, taff = crop(tgt["ED"]["labels"], tgt["affine"], box)
        init = landmark_affine(tgt["ED"]["landmarks"], atl["ED"]["landmarks"])
        abox = crop_box(atl["ED"]["labels"], atl["affine"], 20.0)
        al, aaff = crop(atl["ED"]["labels"], atl["affine"], abox)
        t0 = time.perf_counter()
        register_labels(tl, taff, al, aaff, init, slices=np.arange(2, tl.shape[2], 5))
        times.append(time.perf_counter() - t0)
    res["first_registration_in_process_s"] = times[0]
    res["later_registration_s_mean"] = float(np.mean(times[1:]))
    if Path(a.bank, "atlases.tsv").is_file():
        # the whole refinement of one subject and phase, quiet machine: selection over the bank,
        # L registrations, fusion (SSLLN-LR input on simulated-LR phantoms, as bench/refinement.py)
        import resource

        from ssll.atlases import load_bank
        from ssll.landmarks import points_from_landmark_map, voxel_to_world
        from ssll.nn.infer import default_weights, load_model, predict
        from ssll.preprocess import preprocess_volume
        from ssll.refine import acquired_slices, refine, stack_slab
        from ssll.simulate import LRConfig, simulate_lr
        from ssll.types import Volume

        t0 = time.perf_counter()
        atlases = load_bank(a.bank)
        res["bank_load_s"] = time.perf_counter() - t0
        res["bank_atlases"] = len(atlases)
        model = load_model(default_weights("sslln_lr"))
        runs = []
        for seed in (30000, 30001, 30002):
            ph = make_phantom(bank, seed)
            sim = simulate_lr(ph["ED"]["image"], ph["ED"]["labels"], ph["affine"], LRConfig(),
                              np.random.default_rng([7, seed, 2]))
            work, rec = preprocess_volume(Volume(sim["image"], sim["affine"]))
            lab, lmap, _ = predict(model, work.array[None])
            pts = voxel_to_world(points_from_landmark_map(lmap[0]), rec.working_affine)
            _, info = refine(work.array, lab[0], rec.working_affine, pts, atlases, slices=acquired_slices(rec),
                             stack=stack_slab(rec))
            runs.append(info["seconds"])
            if seed == 30000:
                res["ssll_refine_ED_ES"] = _two_processes_vs_one(ph, model, a.bank, bindir)
        res["refine_seconds_per_subject_phase"] = {k: round(float(np.mean([r[k] for r in runs])), 2) for k in runs[0]}
        res["refine_peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    res["conclusion"] = ("one job per subject runs its 2 x L registrations (ED and ES) in one process: a job per "
                         "(subject, rank) would pay the process start (python_import_refinement_s) and the job "
                         "overhead for each registration (later_registration_s_mean); one process for both phases "
                         "pays the start, the bank load and torch's first-registration set-up once")
    res["machine"] = f"{os.cpu_count()} CPU cores, torch threads 2"
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
