"""Atlas bank, landmark affine, NMI and selection: answers known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import biv_phantom

from ssll.atlases import (
    AtlasConfig,
    crop,
    crop_box,
    landmark_affine,
    load_bank,
    nmi,
    read_sheet,
    select_atlases,
    write_atlas,
    write_manifest,
)
from ssll.errors import AtlasError, RegistrationError

SP = (1.25, 1.25, 2.0)
LANDMARKS = np.array([[10.0, 0, 0], [-10, 5, 0], [0, 20, 3], [0, -15, 2], [2, 1, -30], [1, 0, 25]])


def _affine(spacing=SP, origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = origin
    return a


def test_landmark_affine_recovers_a_known_affine() -> None:
    rng = np.random.default_rng(0)
    true = np.eye(4)
    true[:3, :3] = np.eye(3) * 1.1 + rng.normal(0, 0.05, (3, 3))
    true[:3, 3] = [5.0, -3.0, 12.0]
    dest = LANDMARKS @ true[:3, :3].T + true[:3, 3]
    np.testing.assert_allclose(landmark_affine(LANDMARKS, dest), true, atol=1e-9)


def test_landmark_affine_rejects_coplanar_and_too_few_points() -> None:
    flat = LANDMARKS.copy()
    flat[:, 2] = 0
    with pytest.raises(RegistrationError, match="coplanar"):
        landmark_affine(flat, flat)
    nan = LANDMARKS.copy()
    nan[:3] = np.nan
    with pytest.raises(RegistrationError, match="3 usable"):
        landmark_affine(nan, LANDMARKS)


def test_nmi_limits() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, 20000)
    assert nmi(a, a) == pytest.approx(2.0)
    assert nmi(a, (a + 1) % 5) == pytest.approx(2.0)  # a relabelling keeps all the information
    assert nmi(a, rng.integers(0, 5, 20000)) == pytest.approx(1.0, abs=0.01)


def test_crop_keeps_world_positions() -> None:
    lab = biv_phantom(shape=(60, 60, 30), spacing=SP)
    aff = _affine(origin=(-30.0, 10.0, 5.0))
    box = crop_box(lab, aff, 5.0)
    sub, sub_aff = crop(lab, aff, box)
    v = np.array([box[0].start + 3, box[1].start + 4, box[2].start + 2, 1.0])
    np.testing.assert_allclose(sub_aff @ np.array([3, 4, 2, 1.0]), aff @ v)
    assert sub.shape[0] < lab.shape[0] and (sub > 0).sum() == (lab > 0).sum()


def _bank(tmp_path, shifts_mm) -> list:
    rows = []
    for n, s in enumerate(shifts_mm):
        lab = biv_phantom(shape=(60, 60, 30), spacing=SP, centre=(29.5 + s / SP[0], 29.5, 14.5))
        vols = write_atlas(tmp_path / f"a{n}.npz", image=lab / 4.0, labels=lab, affine=_affine(), landmarks=LANDMARKS)
        rows.append({"atlas_id": f"a{n}", "file": f"a{n}.npz", "source_image": "synthetic", "weights": "none", **vols})
    write_manifest(tmp_path, rows)
    return load_bank(tmp_path)


def test_selection_ranks_by_nmi_after_the_landmark_affine(tmp_path) -> None:
    # identical landmarks -> identity affine; atlases whose heart is displaced score lower
    bank = _bank(tmp_path, [8.0, 0.0, 4.0, 12.0])
    target = biv_phantom(shape=(60, 60, 30), spacing=SP)
    chosen = select_atlases(target, _affine(), LANDMARKS, bank, AtlasConfig(top_k=3, nmi_stride=1))
    assert [c["atlas"].atlas_id for c in chosen] == ["a1", "a2", "a0"]
    assert chosen[0]["nmi"] > chosen[1]["nmi"] > chosen[2]["nmi"]
    np.testing.assert_allclose(chosen[0]["affine"], np.eye(4), atol=1e-9)
    with pytest.warns(UserWarning, match="5 atlases asked for, 4 usable"):
        assert len(select_atlases(target, _affine(), LANDMARKS, bank, AtlasConfig(top_k=5))) == 4
    assert not chosen[0]["mirrored"]


def test_a_target_in_a_mirrored_frame_gets_its_atlases_mirrored_into_it(tmp_path) -> None:
    # the target image is the phantom seen in a mirror (array flipped along i, the same header), as ACDC's
    # headers show every heart; its landmarks are the mirror images of the atlases'
    bank = _bank(tmp_path, [8.0, 0.0, 4.0, 12.0])
    target = biv_phantom(shape=(60, 60, 30), spacing=SP)
    plain = select_atlases(target, _affine(), LANDMARKS, bank, AtlasConfig(top_k=3, nmi_stride=1))
    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])
    mirror[0, 3] = 59 * SP[0]  # x -> 73.75 mm - x: voxel i -> 59 - i
    landmarks = LANDMARKS @ mirror[:3, :3].T + mirror[:3, 3]
    chosen = select_atlases(target[::-1], _affine(), landmarks, bank, AtlasConfig(top_k=3, nmi_stride=1))
    assert [c["atlas"].atlas_id for c in chosen] == ["a1", "a2", "a0"]
    assert all(c["mirrored"] for c in chosen)
    np.testing.assert_allclose(chosen[0]["affine"], mirror, atol=1e-9)  # the mirror back onto the atlas
    for c, p in zip(chosen, plain):  # the mirrored atlas fits the mirrored heart as the atlas fits the heart
        assert c["nmi"] == pytest.approx(p["nmi"], abs=1e-9)
    # an atlas whose landmark affine has the minority's handedness (landmarks in the wrong order) is skipped
    bank[1].landmarks = bank[1].landmarks @ mirror[:3, :3].T
    chosen = select_atlases(target[::-1], _affine(), landmarks, bank, AtlasConfig(top_k=3, nmi_stride=1))
    assert [c["atlas"].atlas_id for c in chosen] == ["a2", "a0", "a3"]
    assert all(c["mirrored"] for c in chosen)
    with pytest.raises(RegistrationError, match="reflection"):
        landmark_affine(landmarks, LANDMARKS)
    np.testing.assert_allclose(landmark_affine(landmarks, LANDMARKS, allow_reflection=True), mirror, atol=1e-9)


def test_bank_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(AtlasError, match="not an atlas bank"):
        load_bank(tmp_path)
    _bank(tmp_path, [0.0])
    (tmp_path / "a0.npz").write_bytes(b"garbage")
    with pytest.raises(AtlasError, match="atlas a0: unreadable"):
        load_bank(tmp_path)
    sheet = tmp_path / "sheet.tsv"
    sheet.write_text("atlas_id\timage\nok\tx.nii.gz\n../evil\ty.nii.gz\n")
    with pytest.raises(AtlasError, match="bad atlas id"):
        read_sheet(sheet)
    with pytest.raises(ValueError, match="init must be"):
        AtlasConfig.from_mapping({"init": "magic"})
