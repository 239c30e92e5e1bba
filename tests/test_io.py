from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import biv_phantom, oblique_affine, write_nifti

from ssll.errors import InputImageError, LabelError
from ssll.io import atomic_path, load_image, load_labels, load_nifti, save_nifti
from ssll.types import Volume


def test_roundtrip_keeps_affine(tmp_path: Path) -> None:
    aff = oblique_affine()
    data = np.random.default_rng(0).random((10, 11, 5)).astype(np.float32)
    write_nifti(tmp_path / "a.nii.gz", data, aff)
    vol = load_image(tmp_path / "a.nii.gz")
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)
    np.testing.assert_allclose(vol.spacing, (1.5, 1.5, 8.0), rtol=1e-6)
    save_nifti(tmp_path / "b.nii.gz", Volume(vol.array, vol.affine))
    again = load_image(tmp_path / "b.nii.gz")
    np.testing.assert_allclose(again.affine, aff, atol=1e-5)
    np.testing.assert_array_equal(again.array, data)


def test_original_grid_output_keeps_input_header(tmp_path: Path) -> None:
    aff = oblique_affine()
    img = nib.Nifti1Image(biv_phantom((20, 20, 6)), np.diag([1.0, 1.0, 1.0, 1.0]))
    img.header.set_zooms((1.5, 1.5, 8.0))
    img.set_sform(np.diag([-1.0, -1.0, 1.0, 1.0]), code=2)  # ACDC-style: unit sform scales beside pixdim
    img.set_qform(aff, code=1)
    nib.save(img, str(tmp_path / "in.nii.gz"))
    with pytest.warns(UserWarning, match="disagree with pixdim"):
        vol = load_labels(tmp_path / "in.nii.gz")
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)  # qform wins over an inconsistent sform
    save_nifti(tmp_path / "out.nii.gz", vol, dtype=np.uint8)
    out = nib.load(str(tmp_path / "out.nii.gz"))
    np.testing.assert_allclose(out.get_sform(), img.get_sform())
    np.testing.assert_allclose(out.get_qform(), img.get_qform(), atol=1e-5)
    assert out.header.get_zooms() == pytest.approx((1.5, 1.5, 8.0))
    # The input's header problem was reported when the input was read; the derived file is read quietly,
    # to the same place.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load_labels(tmp_path / "out.nii.gz")
    np.testing.assert_allclose(again.affine, aff, atol=1e-5)
    np.testing.assert_array_equal(again.array, vol.array)


def test_sform_without_qform_gets_pixdim_spacing(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32) * np.arange(4), np.eye(4))
    img.header.set_zooms((2.0, 2.0, 5.0))
    img.set_sform(np.diag([-1.0, 1.0, 1.0, 1.0]), code=1)
    img.set_qform(None, code=0)
    nib.save(img, str(tmp_path / "x.nii"))
    with pytest.warns(UserWarning):
        vol = load_image(tmp_path / "x.nii")
    np.testing.assert_allclose(np.diag(vol.affine)[:3], [-2.0, 2.0, 5.0])


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o007, 0o660)])
def test_atomic_write_gives_the_umasks_permissions(tmp_path: Path, umask: int, mode: int) -> None:
    """Results are shared on a cluster: not the owner-only mode of a temporary file."""
    import os
    import stat

    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_text("{}")
        save_nifti(tmp_path / "x.nii.gz", Volume(np.zeros((2, 2, 2), np.float32), np.eye(4)))
    finally:
        os.umask(old)
    for name in ("out.json", "x.nii.gz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


# ---------------------------------------------------------------- bad input, one test each
def _good(tmp_path: Path) -> Path:
    return write_nifti(tmp_path / "good.nii.gz", np.random.default_rng(0).random((8, 8, 4)).astype(np.float32))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputImageError, match=r"nope\.nii\.gz: no such file"):
        load_image(tmp_path / "nope.nii.gz")


def test_truncated_gzip(tmp_path: Path) -> None:
    raw = _good(tmp_path).read_bytes()
    bad = tmp_path / "trunc.nii.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputImageError, match=r"trunc\.nii\.gz: truncated or corrupt gzip"):
        load_image(bad)


def test_not_gzip(tmp_path: Path) -> None:
    bad = tmp_path / "plain.nii.gz"
    bad.write_bytes(b"this is not gzip at all" * 20)
    with pytest.raises(InputImageError, match=r"plain\.nii\.gz: not a gzip file"):
        load_image(bad)


def test_not_nifti(tmp_path: Path) -> None:
    bad = tmp_path / "text.nii.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(b"hello world, no nifti header here" * 30)
    with pytest.raises(InputImageError, match=r"text\.nii\.gz: not a readable NIfTI"):
        load_image(bad)


def test_2d_image(tmp_path: Path) -> None:
    p = write_nifti(tmp_path / "flat.nii.gz", np.random.default_rng(0).random((8, 8)).astype(np.float32))
    with pytest.raises(InputImageError, match=r"flat\.nii\.gz: 2D image"):
        load_image(p)


def test_single_slice_image(tmp_path: Path) -> None:
    p = write_nifti(tmp_path / "one.nii.gz", np.random.default_rng(0).random((8, 8, 1)).astype(np.float32))
    with pytest.raises(InputImageError, match="single slice"):
        load_image(p)


def test_5d_image(tmp_path: Path) -> None:
    p = write_nifti(tmp_path / "five.nii.gz", np.random.default_rng(0).random((4, 4, 4, 2, 2)).astype(np.float32))
    with pytest.raises(InputImageError, match=r"five\.nii\.gz: 5D image"):
        load_image(p, ndim=(3, 4))


@pytest.mark.parametrize("zoom", [0.0, -1.0])
def test_bad_spacing(tmp_path: Path, zoom: float) -> None:
    img = nib.Nifti1Image(np.random.default_rng(0).random((6, 6, 4)).astype(np.float32), None)
    img.header["pixdim"][1:4] = [1.0, zoom, 1.0]
    img.header["qform_code"] = 0
    img.header["sform_code"] = 0
    nib.save(img, str(tmp_path / "sp.nii.gz"))
    with pytest.raises(InputImageError, match=r"sp\.nii\.gz: voxel spacing .* not positive"):
        load_image(tmp_path / "sp.nii.gz")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_inf(tmp_path: Path, value: float) -> None:
    d = np.random.default_rng(0).random((6, 6, 4)).astype(np.float32)
    d[1, 2, 3] = value
    p = write_nifti(tmp_path / "nan.nii.gz", d)
    with pytest.raises(InputImageError, match=r"nan\.nii\.gz: 1 NaN or infinite"):
        load_image(p)


def test_constant_image(tmp_path: Path) -> None:
    p = write_nifti(tmp_path / "const.nii.gz", np.full((6, 6, 4), 7.0, np.float32))
    with pytest.raises(InputImageError, match=r"const\.nii\.gz: constant image"):
        load_image(p)


def test_absurd_size(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4))
    img.header.set_data_shape((5000, 2, 2))
    # header claims 5000 voxels along i; the check fires before any data is read
    raw = img.header.binaryblock + b"\x00" * 4 + b"\x00" * 8
    p = tmp_path / "huge.nii"
    p.write_bytes(raw)
    with pytest.raises(InputImageError, match=r"huge\.nii: absurd image size"):
        load_nifti(p)


def test_labels_in_wrong_convention(tmp_path: Path) -> None:
    p = write_nifti(tmp_path / "lab.nii.gz", biv_phantom((48, 48, 6)))
    with pytest.raises(LabelError, match=r"lab\.nii\.gz: values \[4\] are not labels of the 'acdc'"):
        load_labels(p, "acdc")


def test_warnings_are_not_errors_for_good_files(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(_good(tmp_path))


def test_unit_image_is_stored_in_16_bits_and_reads_back_within_half_a_step(tmp_path: Path) -> None:
    import SimpleITK as sitk

    from ssll.io import UNIT_IMAGE_STEPS, save_unit_image

    rng = np.random.default_rng(0)
    data = rng.random((24, 20, 6)).astype(np.float32)
    data[0, 0, 0], data[1, 0, 0] = 0.0, 1.0
    aff = oblique_affine()
    save_unit_image(tmp_path / "w.nii.gz", Volume(data, aff))
    img = nib.load(str(tmp_path / "w.nii.gz"))
    assert img.get_data_dtype() == np.uint16
    back = load_image(tmp_path / "w.nii.gz")
    assert np.abs(back.array - data).max() <= 0.5 / UNIT_IMAGE_STEPS + 1e-7
    assert back.array[0, 0, 0] == 0.0 and back.array[1, 0, 0] == pytest.approx(1.0, abs=1e-7)
    np.testing.assert_allclose(back.affine, aff, atol=1e-5)
    # another reader applies the slope too (SimpleITK's array is (K, J, I))
    other = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "w.nii.gz"))).transpose(2, 1, 0)
    np.testing.assert_allclose(other, back.array, atol=1e-6)
    with pytest.raises(ValueError, match="outside"):
        save_unit_image(tmp_path / "bad.nii.gz", Volume(data * 1.5, aff))
    assert not (tmp_path / "bad.nii.gz").exists()
