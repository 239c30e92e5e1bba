"""Generation speed: one HR phantom subject (ED and ES) with its simulated LR versions, in memory.

Run on an otherwise idle machine (2 cores here):
    python bench/phantom_speed.py --n 10 --out bench/results/phantom_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from ssll.phantom import load_shape_bank, make_phantom
from ssll.simulate import LRConfig, simulate_lr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--biv-me", default="../shared/data/biv-me")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--out", default="bench/results/phantom_speed.json")
    a = ap.parse_args()
    bank = load_shape_bank(a.biv_me)
    make_phantom(bank, 1000)  # warm-up
    per_subject, per_phase = [], []
    for seed in range(a.n):
        t0 = time.perf_counter()
        ph = make_phantom(bank, seed)
        t1 = time.perf_counter()
        for p in ("ED", "ES"):
            simulate_lr(ph[p]["image"], ph[p]["labels"], ph["affine"], LRConfig(), np.random.default_rng([7, seed]))
        t2 = time.perf_counter()
        per_subject.append(t2 - t0)
        per_phase.append((t1 - t0) / 2 + (t2 - t1) / 2)
    res = {
        "n": a.n,
        "cores": os.cpu_count(),
        "seconds_per_subject_ED_ES_HR_and_LR": {"mean": float(np.mean(per_subject)), "max": float(np.max(per_subject))},
        "seconds_per_phantom_volume_with_its_LR": {"mean": float(np.mean(per_phase)), "max": float(np.max(per_phase))},
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
