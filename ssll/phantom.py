"""High-resolution bi-ventricular phantoms from real shapes (biv-me), with exact landmarks.

Anatomy comes from the real fitted biv-me models (three subjects, in point-to-point
correspondence): a phantom blends the subjects' rigidly aligned ED shapes with random convex
weights, adds the same blend of their ED->ES motion for the ES shape, scales globally, deforms
smoothly (random Gaussian radial-basis displacements of the control points), and varies the LV
wall thickness. The heart is posed in a 1.25x1.25x2 mm, 192x192x80 grid whose axis 2 runs
roughly base -> apex (as in ACDC) with random tilt, in-plane rotation and position in the
field of view.

Intensities imitate balanced-SSFP cine: bright blood, darker myocardium, chest wall and body
fat, dark lungs, liver, epicardial fat, air outside the body; then partial volume (Gaussian
blur), a smooth multiplicative coil bias field and Rician noise.

The six landmarks are computed from the mesh (not from labels), see :func:`exact_landmarks`.
World coordinates are RAS+ mm (biv-me's patient coordinates are LPS and are converted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ssll.errors import InputImageError
from ssll.labels import LANDMARK_NAMES, Label, Landmark
from ssll.mesh import BivTemplate, label_shells, load_control_points, load_template
from ssll.preprocess import WORKING_SHAPE, WORKING_SPACING
from ssll.types import Array, PathLike, voxel_size

__all__ = [
    "PhantomAnatomy",
    "PhantomConfig",
    "ShapeBank",
    "anatomy_labels",
    "exact_landmarks",
    "heart_frame",
    "load_shape_bank",
    "make_phantom",
    "phantom_anatomy",
    "render_image",
]

_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class PhantomConfig:
    """Ranges of the random phantom parameters.

    Attributes:
        scale: global scale factor range. Defaults to (0.88, 1.03).
        deform_mm: amplitude of the smooth random deformation (mm). Defaults to 3.
        wall_mm: LV wall thickness change range (mm; positive thickens). Defaults to (-1.5, 2.0).
        tilt_deg: maximum tilt of the slice axis from the LV long axis (deg). Defaults to 10.
        shift_mm: maximum offset of the heart from the grid centre, in-plane (mm). Defaults to 20.
        noise: Rician noise sigma relative to blood signal. Defaults to (0.02, 0.06).
        bias: coil bias field strength (log amplitude). Defaults to 0.15.
    """

    scale: tuple[float, float] = (0.88, 1.03)
    deform_mm: float = 3.0
    wall_mm: tuple[float, float] = (-1.5, 2.0)
    tilt_deg: float = 10.0
    shift_mm: float = 20.0
    noise: tuple[float, float] = (0.02, 0.06)
    bias: float = 0.15


@dataclass(frozen=True)
class ShapeBank:
    """Rigidly aligned control points of the real subjects: ``ed`` ``(M, 388, 3)`` and the ED->ES
    motion ``motion`` ``(M, 388, 3)`` (NaN for subjects without an ES frame), RAS+ mm."""

    template: BivTemplate
    ed: Array
    motion: Array
    names: tuple[str, ...]


def _procrustes(src: Array, ref: Array) -> tuple[Array, Array]:
    """Rotation R and translation t with ``src @ R.T + t ~ ref`` (least squares, no scaling)."""
    cs, cr = src.mean(0), ref.mean(0)
    u, _, vt = np.linalg.svd((src - cs).T @ (ref - cr))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return r, cr - cs @ r.T


def load_shape_bank(root: PathLike) -> ShapeBank:
    """Load the biv-me template and the real subjects (ED, and ES where available).

    Raises:
        InputImageError: the biv-me folder is missing or incomplete.
    """
    root = Path(root)
    template = load_template(root)
    pairs = [
        ("fitted_patient1", root / "fitted_patient1/patient1_model_frame_000.txt",
         root / "fitted_patient1/patient1_model_frame_009.txt"),
        ("patient_2", root / "tests_reference/patient_2_gpdata_model_frame_001.txt",
         root / "tests_reference/patient_2_gpdata_model_frame_012.txt"),
        ("patient_1", root / "tests_reference/patient_1_gpdata_model_frame_000.txt", None),
    ]
    eds, motions, names = [], [], []
    ref = None
    for name, ed_p, es_p in pairs:
        ed = load_control_points(ed_p) * _LPS_TO_RAS
        es = load_control_points(es_p) * _LPS_TO_RAS if es_p is not None else None
        if ref is None:
            ref = ed
        r, t = _procrustes(ed, ref)
        eds.append(ed @ r.T + t)
        motions.append((es @ r.T + t) - (ed @ r.T + t) if es is not None else np.full_like(ed, np.nan))
        names.append(name)
    return ShapeBank(template, np.stack(eds), np.stack(motions), tuple(names))


def heart_frame(template: BivTemplate, nodes: Array) -> tuple[Array, Array]:
    """Heart-centred frame: origin (LV centre half-way between mitral valve and apex) and rotation
    whose columns are e_i (RV -> LV), e_j, e_k (base -> apex), in world mm."""
    mv = nodes[template.surface_nodes("MITRAL_VALVE")].mean(0)
    lv_epi = nodes[template.surface_nodes("LV_EPICARDIAL")]
    proj = (lv_epi - mv) @ _unit(lv_epi.mean(0) - mv)
    apex = lv_epi[np.argmax(proj)]
    ek = _unit(apex - mv)
    lv_c = nodes[template.surface_nodes("LV_ENDOCARDIAL")].mean(0)
    rv_c = nodes[template.surface_nodes("RV_FREEWALL")].mean(0)
    ei = _unit((lv_c - rv_c) - ((lv_c - rv_c) @ ek) * ek)
    ej = np.cross(ek, ei)
    return (mv + apex) / 2.0, np.stack([ei, ej, ek], axis=1)


def _unit(v: Array) -> Array:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def exact_landmarks(template: BivTemplate, nodes: Array) -> Array:
    """The six landmarks from the mesh, world mm ``(6, 3)`` (row n = landmark n + 1).

    Mitral valve centre: mean of the mitral valve nodes. Apex: the LV epicardial node farthest
    along the long axis (mitral valve -> LV epicardial centroid). Mid-ventricular plane: half-way
    between them, normal to the long axis. On it (nodes within 3 mm): RV insert points where the
    RV septal and free-wall surfaces meet (interpolated to the plane on each side; the more
    anterior one, larger RAS y, is landmark 2); LV lateral wall mid-point half-way between the
    LV endo- and epicardium on the ray from the RV centre through the LV centre; RV lateral
    wall turning point, the RV epicardial node farthest from the LV centre.
    """
    mv = nodes[template.surface_nodes("MITRAL_VALVE")].mean(0)
    lv_epi_idx = np.union1d(template.surface_nodes("LV_EPICARDIAL"), template.surface_nodes("RV_SEPTUM"))
    lv_epi = nodes[lv_epi_idx]
    axis = _unit(lv_epi.mean(0) - mv)
    proj = (lv_epi - mv) @ axis
    apex = lv_epi[np.argmax(proj)]
    axis = _unit(apex - mv)
    h_mid = float((apex - mv) @ axis) / 2.0

    def near(idx: Array, tol: float = 3.0) -> Array:
        p = nodes[idx]
        return p[np.abs((p - mv) @ axis - h_mid) < tol]

    def to_plane(p: Array) -> Array:
        return p - ((p - mv) @ axis - h_mid)[:, None] * axis

    lv_c = to_plane(near(lv_epi_idx)).mean(0)
    rv_idx = np.union1d(template.surface_nodes("RV_FREEWALL"), template.surface_nodes("RV_SEPTUM"))
    rv_c = to_plane(near(rv_idx)).mean(0)
    d_rv = _unit((rv_c - lv_c) - ((rv_c - lv_c) @ axis) * axis)
    # RV insert points: septum/free-wall junction nodes, per side, interpolated to the plane
    junction = np.intersect1d(template.surface_nodes("RV_SEPTUM"), template.surface_nodes("RV_FREEWALL"))
    jp = nodes[junction]
    side = np.sign(np.cross(d_rv, jp - lv_c) @ axis)
    inserts = []
    for s in (1.0, -1.0):
        q = jp[side == s]
        h = (q - mv) @ axis - h_mid
        above, below = q[h >= 0], q[h < 0]
        if len(above) and len(below):
            a = above[np.argmin((above - mv) @ axis - h_mid)]
            b = below[np.argmax((below - mv) @ axis - h_mid)]
            ha, hb = (a - mv) @ axis - h_mid, (b - mv) @ axis - h_mid
            inserts.append(b + (a - b) * (-hb / (ha - hb)))
        else:
            inserts.append(to_plane(q[np.argmin(np.abs(h))][None])[0])
    inserts.sort(key=lambda p: -p[1])  # anterior (larger RAS y) first
    # LV lateral wall mid-point
    lat_dir = -d_rv

    def radial(idx: Array) -> float:
        p = to_plane(near(idx)) - lv_c
        r = np.linalg.norm(p, axis=1)
        cosang = (p @ lat_dir) / np.maximum(r, 1e-9)
        sel = cosang > np.cos(np.deg2rad(15.0))
        return float(np.median(r[sel])) if sel.any() else float(r[np.argmax(cosang)])

    r_endo = radial(template.surface_nodes("LV_ENDOCARDIAL"))
    r_epi = radial(template.surface_nodes("LV_EPICARDIAL"))
    lat = lv_c + lat_dir * (r_endo + r_epi) / 2.0
    rv_epi = to_plane(near(template.surface_nodes("RV_EPICARDIAL")))
    turn = rv_epi[np.argmax(np.linalg.norm(rv_epi - lv_c, axis=1))]
    out = np.zeros((6, 3))
    out[Landmark.LV_LATERAL_WALL - 1] = lat
    out[Landmark.RV_INSERT_ANTERIOR - 1] = inserts[0]
    out[Landmark.RV_INSERT_INFERIOR - 1] = inserts[1]
    out[Landmark.RV_LATERAL_TURNING - 1] = turn
    out[Landmark.APEX - 1] = apex
    out[Landmark.MITRAL_VALVE_CENTRE - 1] = mv
    return out


def _rotation(axis: Array, angle: float) -> Array:
    a = _unit(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def _sample_shapes(bank: ShapeBank, rng: np.random.Generator, cfg: PhantomConfig) -> tuple[Array, Array]:
    m = len(bank.names)
    w = rng.dirichlet(np.full(m, 1.0))
    ed = np.tensordot(w, bank.ed, axes=1)
    has_es = ~np.isnan(bank.motion[:, 0, 0])
    wm = w[has_es] / w[has_es].sum()
    motion = np.tensordot(wm, bank.motion[has_es], axes=1) * rng.uniform(0.85, 1.15)
    es = ed + motion
    centre = ed.mean(0)
    s = rng.uniform(*cfg.scale)
    # smooth random deformation: a few Gaussian RBF displacements (same field for ED and ES)
    n_rbf = 6
    c_rbf = centre + rng.normal(0, 25.0, size=(n_rbf, 3))
    d_rbf = rng.normal(0, cfg.deform_mm, size=(n_rbf, 3))

    def warp(p: Array) -> Array:
        q = centre + (p - centre) * s
        wts = np.exp(-((q[:, None, :] - c_rbf[None]) ** 2).sum(-1) / (2 * 30.0**2))
        return q + wts @ d_rbf

    return warp(ed), warp(es)


def _change_wall(lab: Array, delta_mm: float, spacing: Array) -> Array:
    """Thicken (delta > 0: LV cavity shrinks) or thin (cavity grows into the wall) the LV wall."""
    out = lab.copy()
    nz = np.argwhere((lab == Label.LV_CAVITY) | (lab == Label.LV_WALL))
    if nz.size == 0 or delta_mm == 0:
        return out
    box = tuple(slice(max(a - 2, 0), b + 3) for a, b in zip(nz.min(0), nz.max(0)))
    sub, src = out[box], lab[box]
    if delta_mm > 0:
        cav = src == Label.LV_CAVITY
        d = ndimage.distance_transform_edt(cav, sampling=spacing)
        sub[cav & (d <= delta_mm)] = Label.LV_WALL
    else:
        d = ndimage.distance_transform_edt(src != Label.LV_CAVITY, sampling=spacing)
        sub[(src == Label.LV_WALL) & (d <= -delta_mm)] = Label.LV_CAVITY
    return out


def render_image(labels: Array, affine: Array, centre: Array, frame: Array, rng: np.random.Generator,
                 cfg: PhantomConfig) -> Array:
    """bSSFP-like intensities (float32, blood ~1) for a canonical label map on a grid.

    Args:
        labels: ``(I, J, K)`` canonical labels.
        affine: voxel -> world (mm).
        centre: heart centre (world mm); frame: heart axes (columns e_i RV->LV, e_j, e_k base->apex).
    """
    shape = labels.shape
    sp = voxel_size(affine)
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), -1)
    world = idx @ affine[:3, :3].T.astype(np.float32) + affine[:3, 3].astype(np.float32)
    u, v, w = np.moveaxis((world - centre.astype(np.float32)) @ frame.astype(np.float32), -1, 0)
    img = np.zeros(shape, np.float32)
    jitter = lambda x: x * rng.uniform(0.85, 1.15)  # noqa: E731
    body = ((u + 10) / 165.0) ** 2 + ((v - 15) / 120.0) ** 2 < 1.0
    fat = body & (((u + 10) / 150.0) ** 2 + ((v - 15) / 105.0) ** 2 >= 1.0)
    img[body] = jitter(0.32)  # chest wall, muscle
    img[fat] = jitter(0.85)  # subcutaneous fat
    lung_l = ((u - 70) / 45.0) ** 2 + ((v - 10) / 70.0) ** 2 + (w / 120.0) ** 2 < 1.0
    lung_r = ((u + 85) / 50.0) ** 2 + ((v - 25) / 65.0) ** 2 + (w / 120.0) ** 2 < 1.0
    img[(lung_l | lung_r) & body] = jitter(0.05)
    liver = ((u + 40) / 90.0) ** 2 + ((v - 30) / 60.0) ** 2 + ((w - 85) / 45.0) ** 2 < 1.0
    img[liver & body] = jitter(0.45)
    aorta = ((u - 5) / 12.0) ** 2 + ((v - 55) / 12.0) ** 2 < 1.0
    img[aorta & body] = jitter(0.95)
    heart = labels > 0
    # heart surroundings, computed in a box around the heart (8 mm margin)
    nz = np.argwhere(heart)
    margin = np.ceil(8.0 / sp).astype(int)
    lo = np.maximum(nz.min(0) - margin, 0)
    hi = np.minimum(nz.max(0) + margin + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    d_heart = ndimage.distance_transform_edt(~heart[box], sampling=sp)
    patches = ndimage.zoom(rng.random(tuple(max(2, n // 6) for n in d_heart.shape)).astype(np.float32),
                           [n / max(2, n // 6) for n in d_heart.shape], order=1)[tuple(slice(0, n) for n in d_heart.shape)]
    sub = img[box]
    sub[(d_heart > 0) & (d_heart < 6.0)] = jitter(0.3)  # pericardium / surrounding tissue
    sub[(d_heart > 0) & (d_heart < rng.uniform(2.0, 4.0)) & (patches > 0.5)] = jitter(0.8)  # epicardial fat
    blood, myo = jitter(1.0), jitter(0.28)
    img[(labels == Label.LV_CAVITY) | (labels == Label.RV_CAVITY)] = blood
    img[(labels == Label.LV_WALL) | (labels == Label.RV_WALL)] = myo
    # texture, partial volume, coil bias, Rician noise
    coarse = tuple(max(2, n // 4) for n in shape)
    texture = ndimage.zoom(rng.normal(size=coarse).astype(np.float32), [n / c for n, c in zip(shape, coarse)], order=1)
    img *= 1.0 + 0.05 * texture[: shape[0], : shape[1], : shape[2]]
    img = ndimage.gaussian_filter(img, sigma=(0.6, 0.6, 0.5))
    c = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    ci, cj, ck = np.meshgrid(*c, indexing="ij", sparse=True)
    coef = rng.normal(0, cfg.bias, size=6).astype(np.float32)
    bias = np.exp(coef[0] * ci + coef[1] * cj + coef[2] * ck + coef[3] * ci * cj + coef[4] * ci**2 + coef[5] * cj**2)
    img = img * bias
    sigma = rng.uniform(*cfg.noise)
    n1 = rng.normal(0, sigma, size=shape).astype(np.float32)
    n2 = rng.normal(0, sigma, size=shape).astype(np.float32)
    return np.sqrt((img + n1) ** 2 + n2**2).astype(np.float32)


@dataclass(frozen=True)
class PhantomAnatomy:
    """The continuous anatomy of one phantom subject, before it is put on a grid.

    Attributes:
        template: the biv-me template (shells of the model).
        nodes: mesh nodes per phase, ``{"ED": (N, 3), "ES": (N, 3)}``, world RAS+ mm.
        wall_change_mm: LV wall thickness change applied after voxelisation (mm; positive thickens).
        affine: the phantom's own HR grid, voxel -> world (mm), ``(4, 4)``.
        centre: heart centre (world mm, ``(3,)``); frame: ``(3, 3)`` rotation whose columns are the grid axes.
        offset_mm: the heart's offset from the grid centre along the grid axes (mm).
    """

    template: BivTemplate
    nodes: dict[str, Array]
    wall_change_mm: float
    affine: Array
    centre: Array
    frame: Array
    offset_mm: Array


def phantom_anatomy(bank: ShapeBank, seed: int, cfg: PhantomConfig | None = None) -> PhantomAnatomy:
    """The anatomy and pose of phantom ``seed`` (deterministic; :func:`make_phantom` puts it on its grid)."""
    cfg = cfg or PhantomConfig()
    rng = np.random.default_rng([20190, seed])
    cp_ed, cp_es = _sample_shapes(bank, rng, cfg)
    t = bank.template
    nodes_ed, nodes_es = t.nodes(cp_ed), t.nodes(cp_es)
    centre, frame = heart_frame(t, nodes_ed)
    tilt = _rotation(rng.normal(size=3), np.deg2rad(rng.uniform(0, cfg.tilt_deg)))
    spin = _rotation(frame[:, 2], np.deg2rad(rng.uniform(-20, 20)))
    rot = spin @ tilt @ frame
    sp = np.asarray(WORKING_SPACING)
    offset = np.array([*rng.uniform(-cfg.shift_mm, cfg.shift_mm, 2), rng.uniform(-10, 10)])
    affine = np.eye(4)
    affine[:3, :3] = rot * sp
    grid_centre = (np.asarray(WORKING_SHAPE) - 1) / 2.0
    affine[:3, 3] = centre + rot @ offset - affine[:3, :3] @ grid_centre
    wall = float(rng.uniform(*cfg.wall_mm))
    return PhantomAnatomy(t, {"ED": nodes_ed, "ES": nodes_es}, wall, affine, centre, rot, offset)


def anatomy_labels(anatomy: PhantomAnatomy, phase: str, affine: Array, shape: tuple[int, int, int]) -> Array:
    """Canonical labels (uint8, ``shape``) of a phantom's ``phase`` voxelised on any grid (``affine``: voxel -> world mm).

    The truth of a phantom on another grid (e.g. the working grid of its simulated LR stack), made
    from the mesh itself: interpolating the HR label map instead loses thin structures (a working
    grid half a slice off the HR grid loses about a third of the RV wall to ties).
    """
    lab = label_shells(anatomy.template, anatomy.nodes[phase], affine, shape)
    return _change_wall(lab, anatomy.wall_change_mm, voxel_size(affine))


def make_phantom(bank: ShapeBank, seed: int, cfg: PhantomConfig | None = None) -> dict[str, object]:
    """One HR phantom subject (ED and ES), deterministic from ``seed``.

    Returns:
        ``{"affine": (4, 4), "ED": {"image", "labels", "landmarks"}, "ES": {...}, "params": {...}}``
        with images ``(192, 192, 80)`` float32, canonical labels uint8, landmarks ``(6, 3)`` world mm.
    """
    cfg = cfg or PhantomConfig()
    a = phantom_anatomy(bank, seed, cfg)
    out: dict[str, object] = {"affine": a.affine}
    for phase in ("ED", "ES"):
        lab = anatomy_labels(a, phase, a.affine, WORKING_SHAPE)
        img = render_image(lab, a.affine, a.centre, a.frame, np.random.default_rng([20190, seed, len(phase)]), cfg)
        out[phase] = {"image": img, "labels": lab, "landmarks": exact_landmarks(a.template, a.nodes[phase])}
    out["params"] = {"seed": seed, "wall_change_mm": a.wall_change_mm, "offset_mm": a.offset_mm.tolist()}
    return out


def require_bank(root: PathLike) -> ShapeBank:
    """:func:`load_shape_bank` with a clear error when the folder is absent."""
    if not Path(root, "model").is_dir():
        raise InputImageError(f"{root}: not a biv-me data folder (no model/)")
    return load_shape_bank(root)


def run_phantom(*, biv_me: PathLike, out_dir: PathLike, n: int, first_seed: int = 0,
                cfg: PhantomConfig | None = None, lr: bool = False) -> list[Path]:
    """I/O layer of ``ssll phantom``: write ``n`` subjects ``phantom_<seed>`` under ``out_dir``.

    Per subject and phase: ``<phase>_image.nii.gz``, ``<phase>_labels.nii.gz`` (canonical),
    ``<phase>_landmarks.json`` (world mm); with ``lr``, also ``<phase>_lr_image.nii.gz``,
    ``<phase>_lr_labels.nii.gz`` and ``<phase>_lr.json`` (see :mod:`ssll.simulate`).
    ``out_dir/atlas_sheet.tsv`` lists every phantom's ED and ES image (``ssll atlas build --sheet``).
    """
    from ssll.io import save_nifti, write_json
    from ssll.simulate import LRConfig, simulate_lr
    from ssll.types import Volume

    bank = require_bank(biv_me)
    done = []
    for seed in range(first_seed, first_seed + n):
        d = Path(out_dir) / f"phantom_{seed:04d}"
        ph = make_phantom(bank, seed, cfg)
        aff = ph["affine"]
        for phase in ("ED", "ES"):
            p = ph[phase]
            save_nifti(d / f"{phase}_image.nii.gz", Volume(p["image"], aff), dtype=np.float32)
            save_nifti(d / f"{phase}_labels.nii.gz", Volume(p["labels"], aff), dtype=np.uint8)
            write_json(d / f"{phase}_landmarks.json", {
                "space": "world RAS+ mm", "source": "exact, from the mesh",
                "landmarks": [{"landmark": i + 1, "name": LANDMARK_NAMES[i],
                               "x_mm": float(q[0]), "y_mm": float(q[1]), "z_mm": float(q[2])}
                              for i, q in enumerate(p["landmarks"])]})
            if lr:
                sim = simulate_lr(p["image"], p["labels"], aff, LRConfig(), np.random.default_rng([7, seed, len(phase)]))
                save_nifti(d / f"{phase}_lr_image.nii.gz", Volume(sim["image"], sim["affine"]), dtype=np.float32)
                save_nifti(d / f"{phase}_lr_labels.nii.gz", Volume(sim["labels"], sim["affine"]), dtype=np.uint8)
                write_json(d / f"{phase}_lr.json", sim["record"])
        write_json(d / "params.json", ph["params"])
        done.append(d)
    # the atlas source sheet of ``ssll atlas build`` (paths relative to out_dir): every phantom there
    from ssll.io import atomic_path

    subjects = sorted(q.name for q in Path(out_dir).glob("phantom_[0-9]*") if (q / "ES_image.nii.gz").is_file())
    with atomic_path(Path(out_dir) / "atlas_sheet.tsv") as tmp:
        tmp.write_text("atlas_id\timage\n" + "".join(f"{s}_{ph}\t{s}/{ph}_image.nii.gz\n"
                                                       for s in subjects for ph in ("ED", "ES")))
    return done
