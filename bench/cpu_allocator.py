"""What malloc's handling of large blocks costs the CPU stages, and what a batch costs on a CPU.

``ssll segment`` (a subject's ED and ES in one process, the orientation searched: 32 forward passes), ``ssll refine``
(one phase) and a training step of SSLLN are run as separate processes, the way the workflow and ``ssll train`` run
them, with malloc's own policy (``SSLL_ALLOCATOR=system``) and with :func:`ssll.allocator.reuse_large_blocks`, which
the CLI applies; ``segment`` also with 4 volumes per forward pass (the old default) and with the device's default (1
on a CPU). Each configuration runs ``--repeats`` times, the configurations interleaved so that the machine's changing
speed falls on all alike; per run the wall time, the CPU time in user and kernel mode and the peak resident memory of
the process (``os.wait4``). The label files of every ``segment`` configuration are compared with the first's.

Run:  python bench/cpu_allocator.py --out bench/results/cpu_allocator.json   (about 12 min on 2 cores)
      ``--bank`` names the atlas bank for ``refine`` (default: the workflow's, else the Table III bench's)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ssll.allocator import without_policy

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "acdc"
LOG = Path(tempfile.gettempdir()) / f"cpu_allocator_{os.getpid()}.log"  # each child's stdout and stderr
SEGMENT_CONFIGS = {  # name: (allocator policy on, --batch-size)
    "system_malloc_batch4": (False, 4),
    "reuse_batch4": (True, 4),
    "system_malloc_batch1": (False, 1),
    "reuse_batch_default": (True, 0),
}

TRAIN_STEP = """
import time, torch
from ssll.nn.network import SSLLN
torch.set_num_threads(2)
torch.manual_seed(0)
net = SSLLN()
opt = torch.optim.Adam(net.parameters(), 1e-3)
x = torch.rand(4, 80, 128, 128)
def step():
    seg, lmk = net(x)
    loss = seg.float().mean() + lmk.float().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
step()
t = time.perf_counter()
for _ in range(5):
    step()
print((time.perf_counter() - t) / 5)
"""


def timed(cmd: list[str], reuse: bool) -> dict:
    """Run ``cmd`` as a child process with malloc's own policy (``reuse`` False: ``SSLL_ALLOCATOR=system``) or the
    CLI's; its wall, user and system seconds and peak resident memory (MB, from ``os.wait4``), and its output."""
    env = without_policy()
    env["SSLL_ALLOCATOR"] = "ssll" if reuse else "system"
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    t = time.perf_counter()
    pid = os.posix_spawn(cmd[0], cmd, env, file_actions=[
        (os.POSIX_SPAWN_OPEN, 1, str(LOG), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2)])
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {LOG.read_text()[-2000:]}")
    return {"wall_s": round(wall, 2), "user_s": round(ru.ru_utime, 2), "sys_s": round(ru.ru_stime, 2),
            "peak_rss_mb": round(ru.ru_maxrss / 1024, 1), "out": LOG.read_text()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bank", default=None)
    ap.add_argument("--out", default="bench/results/cpu_allocator.json")
    a = ap.parse_args()
    ssll = [sys.executable, "-m", "ssll"]
    bank = a.bank or next((b for b in ("resources/atlas_bank/bank", "resources/bench/refinement/bank")
                           if (ROOT / b / "atlases.tsv").exists()), None)
    tmp = Path(tempfile.mkdtemp(prefix="cpu_allocator_"))
    subjects = sorted(p.name for p in DEMO.iterdir() if p.is_dir())
    frames = {s: sorted(f for f in (DEMO / s).glob(f"{s}_frame??.nii.gz")) for s in subjects}
    for s in subjects:
        for phase, f in zip(("ED", "ES"), frames[s]):
            timed([*ssll, "preprocess", "--image", str(f), "--out-image", str(tmp / f"{s}_{phase}.nii.gz"),
                   "--out-record", str(tmp / f"{s}_{phase}.json")], True)

    def segment_cmd(s: str, batch: int, out: Path) -> list[str]:
        cmd = [*ssll, "segment", "--subject", s, "--orientation", "search", "--batch-size", str(batch)]
        for phase in ("ED", "ES"):
            cmd += ["--image", str(tmp / f"{s}_{phase}.nii.gz"), "--record", str(tmp / f"{s}_{phase}.json"),
                    "--phase", phase]
        return [*cmd, "--out-dir", str(out)]

    rows: list[dict] = []
    for rep in range(a.repeats):
        for s in subjects:
            for name, (reuse, batch) in SEGMENT_CONFIGS.items():
                r = timed(segment_cmd(s, batch, tmp / name / s), reuse)
                rows.append({"stage": "segment", "config": name, "subject": s, "repeat": rep,
                             **{k: v for k, v in r.items() if k != "out"}})
                print(rows[-1], flush=True)
    import nibabel as nib

    same = {}
    for name in SEGMENT_CONFIGS:
        same[name] = all(np.array_equal(np.asarray(nib.load(tmp / name / s / f"{ph}_{kind}.nii.gz").dataobj),
                                        np.asarray(nib.load(tmp / "system_malloc_batch4" / s / f"{ph}_{kind}.nii.gz").dataobj))
                         for s in subjects for ph in ("ED", "ES") for kind in ("labels", "labels_original", "landmarkmap"))
    if bank:
        for s in subjects:
            seg = tmp / "reuse_batch_default" / s
            timed([*ssll, "landmarks", "--landmark-map", str(seg / "ED_landmarkmap.nii.gz"), "--out-json",
                   str(tmp / f"{s}_lm.json"), "--out-csv", str(tmp / f"{s}_lm.csv"), "--out-map", str(tmp / f"{s}_lm.nii.gz")], True)
        for rep in range(a.repeats):
            for s in subjects:
                for reuse in (False, True):
                    seg = tmp / "reuse_batch_default" / s
                    out = tmp / f"refine_{reuse}_{s}"
                    r = timed([*ssll, "refine", "--subject", s, "--image", str(tmp / f"{s}_ED.nii.gz"), "--labels",
                               str(seg / "ED_labels.nii.gz"), "--landmarks", str(tmp / f"{s}_lm.json"), "--record",
                               str(tmp / f"{s}_ED.json"), "--bank", str(ROOT / bank), "--out-labels", f"{out}.nii.gz",
                               "--out-original", f"{out}_original.nii.gz", "--out-record", f"{out}.json"], reuse)
                    rows.append({"stage": "refine ED", "config": "reuse" if reuse else "system_malloc", "subject": s,
                                 "repeat": rep, **{k: v for k, v in r.items() if k != "out"}})
                    print(rows[-1], flush=True)
    for rep in range(a.repeats):
        for reuse in (False, True):
            r = timed([sys.executable, "-c",
                       f"from ssll.allocator import reuse_large_blocks\nreuse_large_blocks()\n{TRAIN_STEP}"], reuse)
            rows.append({"stage": "train step (batch 4, 128 px)", "config": "reuse" if reuse else "system_malloc",
                         "repeat": rep, "step_s": round(float(r["out"].split()[-1]), 3),
                         **{k: v for k, v in r.items() if k != "out"}})
            print(rows[-1], flush=True)
    summary: dict = {"repeats": a.repeats, "subjects": subjects, "bank": bank, "cpu_count": os.cpu_count(),
                     "segment_labels_identical_to_system_malloc_batch4": same, "median": {}}
    keys = ("wall_s", "user_s", "sys_s", "peak_rss_mb", "step_s")
    for stage in dict.fromkeys(r["stage"] for r in rows):
        for config in dict.fromkeys(r["config"] for r in rows if r["stage"] == stage):
            sel = [r for r in rows if r["stage"] == stage and r["config"] == config]
            summary["median"][f"{stage}: {config}"] = {k: round(float(np.median([r[k] for r in sel])), 2)
                                                      for k in keys if k in sel[0]}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"summary": summary, "runs": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
