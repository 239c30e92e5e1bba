"""Sunnybrook DICOM geometry check: expert contours rasterised on the converted 4D volume.

Each expert contour is given in pixel coordinates of one DICOM image (x = column, y = row).
It is taken to world space with *that file's own* ImagePositionPatient, ImageOrientationPatient
and PixelSpacing, then into voxel coordinates of the volume built by ``ssll.ingest`` with the
volume's affine, and rasterised there. If the conversion's geometry is right, every contour
lands on an acquired slice (|k - round(k)| ~ 0), on the phase of its image, and encloses the
bright LV blood pool (endocardial contours) with the darker myocardium between endo- and
epicardial contours. A transposed in-plane convention is scored beside it as a control.

Run:  python bench/sunnybrook_geometry.py --out bench/results/sunnybrook_geometry.json --png bench/results/sunnybrook_overlay.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import SimpleITK as sitk
from matplotlib.path import Path as MplPath

from ssll.ingest import dicom_layout, read_dicom_cine


def _file_geometry(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = sitk.ImageFileReader()
    r.SetFileName(str(path))
    r.ReadImageInformation()
    ipp = np.array([float(v) for v in r.GetMetaData("0020|0032").split("\\")])
    iop = np.array([float(v) for v in r.GetMetaData("0020|0037").split("\\")])
    sp = np.array([float(v) for v in r.GetMetaData("0028|0030").split("\\")])
    return ipp, iop, sp


def _contour_to_voxels(xy: np.ndarray, dcm: Path, affine: np.ndarray) -> np.ndarray:
    ipp, iop, sp = _file_geometry(dcm)
    lps = ipp[None] + xy[:, :1] * sp[1] * iop[None, :3] + xy[:, 1:2] * sp[0] * iop[None, 3:]
    ras = lps * np.array([-1.0, -1.0, 1.0])
    inv = np.linalg.inv(affine)
    return (inv[:3, :3] @ ras.T).T + inv[:3, 3]


def _mask(poly_ij: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    pts = np.stack([ii.ravel(), jj.ravel()], axis=1)
    return MplPath(poly_ij).contains_points(pts).reshape(shape)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dicom", default="../shared/data/sunnybrook/dicoms/SCD0000101")
    ap.add_argument("--contours", default="../shared/data/sunnybrook/contourfiles/SC-HF-I-1")
    ap.add_argument("--out", default="bench/results/sunnybrook_geometry.json")
    ap.add_argument("--png", default="bench/results/sunnybrook_overlay.png")
    a = ap.parse_args()
    vol = read_dicom_cine(a.dicom)
    layout, _ = dicom_layout(a.dicom)
    where = {p.name: (k, t) for k, row in enumerate(layout) for t, p in enumerate(row)}
    results = []
    panels = []
    for kind in ("i", "o"):
        for f in sorted(Path(a.contours, f"{kind}-contours").glob("*.txt")):
            inst = int(f.name.split("-")[2])
            dcm = Path(a.dicom) / f"{inst}.dcm"
            xy = np.loadtxt(f)
            vox = _contour_to_voxels(xy, dcm, vol.affine)
            k_float = float(vox[:, 2].mean())
            k = int(round(k_float))
            t = where[dcm.name][1]
            assert where[dcm.name][0] == k, (f.name, where[dcm.name], k_float)
            img = vol.array[:, :, k, t]
            m = _mask(vox[:, :2], img.shape)
            m_swapped = _mask(vox[:, [1, 0]], img.shape)
            results.append({"contour": f.name, "kind": kind, "slice": k, "phase": t,
                            "k_offset": abs(k_float - k), "mask": m, "mask_swapped": m_swapped, "img": img})
    # endo/epi pairs on the same image: blood (inside endo) vs myocardium (epi minus endo)
    pairs = []
    by_name = {(r["kind"], r["contour"].split("-")[2]): r for r in results}
    for (kind, inst), r in by_name.items():
        if kind != "i" or ("o", inst) not in by_name:
            continue
        o = by_name[("o", inst)]
        blood = r["img"][r["mask"]].mean()
        myo_mask = o["mask"] & ~r["mask"]
        myo = r["img"][myo_mask].mean() if myo_mask.any() else np.nan
        blood_sw = r["img"][r["mask_swapped"]].mean()
        myo_sw_mask = o["mask_swapped"] & ~r["mask_swapped"]
        myo_sw = r["img"][myo_sw_mask].mean() if myo_sw_mask.any() else np.nan
        pairs.append({"instance": int(inst), "slice": r["slice"], "phase": r["phase"],
                      "blood_over_myocardium": float(blood / myo), "control_transposed": float(blood_sw / myo_sw)})
        panels.append((r, o))
    summary = {
        "volume_shape": list(vol.array.shape),
        "voxel_size_mm": list(vol.spacing),
        "n_contours": len(results),
        "max_offset_from_slice_plane_voxels": max(r["k_offset"] for r in results),
        "n_endo_epi_pairs": len(pairs),
        "blood_over_myocardium_median": float(np.median([p["blood_over_myocardium"] for p in pairs])),
        "blood_over_myocardium_min": float(np.min([p["blood_over_myocardium"] for p in pairs])),
        "control_transposed_median": float(np.median([p["control_transposed"] for p in pairs])),
        "pairs": pairs,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "pairs"}, indent=2))
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.2))
    for ax, (r, o) in zip(np.atleast_1d(axes), panels):
        img = r["img"]
        ii, jj = np.nonzero(o["mask"])
        c = (int(ii.mean()), int(jj.mean()))
        sl = (slice(max(c[0] - 40, 0), c[0] + 40), slice(max(c[1] - 40, 0), c[1] + 40))
        ax.imshow(img[sl].T, cmap="gray", origin="upper")
        ax.contour(r["mask"][sl].T.astype(float), levels=[0.5], colors="r", linewidths=1)
        ax.contour(o["mask"][sl].T.astype(float), levels=[0.5], colors="lime", linewidths=1)
        ax.set_title(f"slice {r['slice']} phase {r['phase']}", fontsize=8)
        ax.axis("off")
    fig.suptitle("Sunnybrook SC-HF-I-1: expert endo (red) / epi (green) contours on the converted 4D volume", fontsize=9)
    fig.tight_layout()
    fig.savefig(a.png, dpi=90)


if __name__ == "__main__":
    main()
