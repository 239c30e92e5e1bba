"""What ``ssll segment`` costs per volume, with and without the orientation search.

The four demo volumes (patient020 and patient080, ED and ES) are preprocessed once, then segmented by
:func:`ssll.nn.infer.run_segment` as the workflow runs it (one model load, all outputs written): with
``orientation="stored"`` and with ``orientation="search"`` (16 forward passes per volume, the chosen one's kept). Each
mode runs ``--repeats`` times after one warm-up; the median wall time per volume is reported, with
the time of the bare forward pass and of ``orientation_scores`` alone, and the peak resident memory. As the ``ssll``
command does for ``segment``, the process first has malloc keep its large blocks
(:func:`ssll.allocator.reuse_large_blocks`; ``--system-malloc`` leaves glibc's default) and the batch size is the
device's (:func:`ssll.nn.device.batch_size_for`: 1 on a CPU).

Run:  python bench/segment_speed.py --out bench/results/segment_speed.json   (about 3 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ssll.allocator import reuse_large_blocks
from ssll.io import load_image, read_json
from ssll.nn.data import acdc_cases
from ssll.nn.device import batch_size_for
from ssll.nn.infer import SegmentItem, default_weights, forward, load_model, run_segment
from ssll.nn.orientation import orientation_scores
from ssll.preprocess import GridRecord, input_fov_mask, run_preprocess

DEMO = Path(__file__).resolve().parents[1] / "demo" / "acdc"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/results/segment_speed.json")
    ap.add_argument("--system-malloc", action="store_true", help="leave glibc's large-block policy as it is")
    a = ap.parse_args()
    mmap_threshold = 0 if a.system_malloc else reuse_large_blocks()
    warnings.simplefilter("ignore")
    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="segment_speed_"))
    items = []
    for c in acdc_cases(DEMO):
        name, phase = str(c["patient"]), str(c["phase"])
        w, r = tmp / f"{name}_{phase}.nii.gz", tmp / f"{name}_{phase}.json"
        run_preprocess(image=str(c["image"]), out_image=str(w), out_record=str(r))
        items.append(SegmentItem(name, phase, w, r, tmp / "out" / name))
    weights = default_weights("sslln_lr")
    result: dict[str, object] = {"volumes": len(items), "threads": a.threads, "repeats": a.repeats,
                                 "device": "cuda" if torch.cuda.is_available() else "cpu",
                                 "malloc_mmap_threshold_bytes": mmap_threshold or "glibc default"}
    for mode in ("stored", "search"):
        run_segment(items[:1], weights, orientation=mode)  # warm-up
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            failures = run_segment(items, weights, orientation=mode)
            times.append((time.perf_counter() - t) / len(items))
            assert not failures, failures
        result[f"run_segment_{mode}_s_per_volume"] = round(float(np.median(times)), 3)
    model = load_model(weights)
    batch = batch_size_for(model.device, 0)
    result["batch_size"] = batch
    vol = load_image(items[0].image)
    fov = input_fov_mask(GridRecord.from_dict(read_json(items[0].record)))
    forward(model, vol.array[None])
    t = time.perf_counter()
    for _ in range(4):
        forward(model, vol.array[None])
    result["forward_s_per_volume"] = round((time.perf_counter() - t) / 4, 3)
    t = time.perf_counter()
    orientation_scores(model, vol.array, fov, batch_size=batch)
    result["orientation_scores_s_per_volume"] = round(time.perf_counter() - t, 3)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    orient = {it.subject + "/" + it.phase: read_json(it.out_dir / f"{it.phase}_orientation.json")["orientation"]
              for it in items}
    result["orientations_chosen"] = orient
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
