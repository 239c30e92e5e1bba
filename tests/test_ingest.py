from __future__ import annotations

import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import SHARED_DATA, write_dicom_series, write_nifti

from ssll.errors import DicomError, InputImageError
from ssll.ingest import choose_phases, es_from_lv_volumes, read_dicom_cine, read_dicom_zip, run_ingest


def _cine(n_frames: int = 8, es: int = 5) -> np.ndarray:
    ii, jj, _kk = np.meshgrid(np.arange(24), np.arange(24), np.arange(5), indexing="ij")
    r = np.sqrt((ii - 12) ** 2 + (jj - 12) ** 2)
    radii = 8 - 5 * np.sin(np.pi * np.arange(n_frames) / (2 * es)).clip(0) ** 2
    radii[es + 1 :] = np.linspace(radii[es], 8, n_frames - es)[1:]
    frames = [(r < rad) * 300.0 + 50.0 for rad in radii]
    return np.stack(frames, axis=-1).astype(np.float32)


def test_es_is_largest_change_from_ed() -> None:
    ph = choose_phases(_cine(es=5))
    assert (ph.ed, ph.es) == (0, 5)
    assert ph.es_method == "max intensity change"


def test_phases_can_be_given() -> None:
    ph = choose_phases(_cine(), ed=1, es=3)
    assert (ph.ed, ph.es, ph.ed_method, ph.es_method) == (1, 3, "given", "given")


def test_phase_out_of_range() -> None:
    with pytest.raises(InputImageError, match="ES frame 9 is out of range 0..7"):
        choose_phases(_cine(), es=9)


def test_es_from_lv_volumes() -> None:
    assert es_from_lv_volumes(np.array([150.0, 120.0, 70.0, 90.0, 140.0])) == 2
    with pytest.raises(ValueError, match="finite 1D"):
        es_from_lv_volumes(np.array([np.nan, 1.0]))


def test_run_ingest_4d_keeps_geometry(tmp_path: Path) -> None:
    aff = np.array([[0, -1.4, 0, 20], [1.4, 0, 0, -5], [0, 0, 8, 3], [0, 0, 0, 1.0]])
    write_nifti(tmp_path / "cine.nii.gz", _cine(), aff)
    ph = run_ingest(image=tmp_path / "cine.nii.gz", out_ed=tmp_path / "ed.nii.gz", out_es=tmp_path / "es.nii.gz",
                    out_record=tmp_path / "rec.json")
    assert (ph.ed, ph.es) == (0, 5)
    es = nib.load(str(tmp_path / "es.nii.gz"))
    assert es.shape == (24, 24, 5)
    np.testing.assert_allclose(es.affine, aff, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(es.dataobj), _cine()[..., 5])


def test_run_ingest_takes_the_frames_the_sheet_does_not_give_from_the_cycle(tmp_path: Path) -> None:
    """--frames-from: ED and ES from ssll cycle's curve where not given; a given frame wins; the record says how;
    a cycle of another length, a broken record, or ED/ES files are refused, naming the record."""
    write_nifti(tmp_path / "cine.nii.gz", _cine(), np.diag([1.4, 1.4, 8.0, 1.0]))
    (tmp_path / "cycle.json").write_text(json.dumps({"n_frames": 8, "ed_frame": 1, "es_frame": 4}))
    out = {"out_ed": tmp_path / "ed.nii.gz", "out_es": tmp_path / "es.nii.gz", "out_record": tmp_path / "rec.json"}
    ph = run_ingest(image=tmp_path / "cine.nii.gz", frames_from=tmp_path / "cycle.json", **out)
    assert (ph.ed, ph.es) == (1, 4)  # the intensity rule alone gives (0, 5)
    rec = json.loads(out["out_record"].read_text())
    assert rec["ed_method"] == "largest LV cavity (ssll cycle)" and rec["es_method"] == "smallest LV cavity (ssll cycle)"
    np.testing.assert_array_equal(np.asarray(nib.load(out["out_es"]).dataobj), _cine()[..., 4])
    ph = run_ingest(image=tmp_path / "cine.nii.gz", frames_from=tmp_path / "cycle.json", ed=0, **out)
    assert (ph.ed, ph.es, ph.ed_method, ph.es_method) == (0, 4, "given", "smallest LV cavity (ssll cycle)")
    (tmp_path / "other.json").write_text(json.dumps({"n_frames": 30, "ed_frame": 0, "es_frame": 11}))
    with pytest.raises(InputImageError, match=r"other.json: a cycle of 30 frames, but the cine has 8"):
        run_ingest(image=tmp_path / "cine.nii.gz", frames_from=tmp_path / "other.json", **out)
    (tmp_path / "broken.json").write_text("{}")
    with pytest.raises(InputImageError, match=r"broken.json: not a cycle record"):
        run_ingest(image=tmp_path / "cine.nii.gz", frames_from=tmp_path / "broken.json", **out)
    with pytest.raises(InputImageError, match=r"cycle.json: frames from a cycle apply to a cine"):
        run_ingest(ed_image=out["out_ed"], es_image=out["out_es"], frames_from=tmp_path / "cycle.json",
                   out_ed=tmp_path / "e2.nii.gz", out_es=tmp_path / "s2.nii.gz", out_record=tmp_path / "r2.json")


def test_dicom_series_is_ordered_and_placed(tmp_path: Path) -> None:
    expected, affine = write_dicom_series(tmp_path / "s")
    vol = read_dicom_cine(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, expected)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-3)


def test_dicom_missing_image(tmp_path: Path) -> None:
    write_dicom_series(tmp_path / "s", skip={(1, 2)})
    with pytest.raises(DicomError, match="missing images"):
        read_dicom_cine(tmp_path / "s")


def test_dicom_missing_slice(tmp_path: Path) -> None:
    write_dicom_series(tmp_path / "s", n_slices=5, skip={(2, t) for t in range(3)})
    with pytest.raises(DicomError, match="uneven slice spacing"):
        read_dicom_cine(tmp_path / "s")


def test_dicom_duplicate_slice(tmp_path: Path) -> None:
    write_dicom_series(tmp_path / "s", duplicate=(1, 1))
    with pytest.raises(DicomError, match="duplicate images|missing images"):
        read_dicom_cine(tmp_path / "s")


def test_dicom_mixed_orientation(tmp_path: Path) -> None:
    write_dicom_series(tmp_path / "s", tilt_slice=3)
    with pytest.raises(DicomError, match="mixed orientations"):
        read_dicom_cine(tmp_path / "s")


def test_dicom_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("nothing")
    with pytest.raises(DicomError, match="no readable DICOM"):
        read_dicom_cine(tmp_path / "e")


def test_dicom_one_series_per_slice_reads_as_the_same_stack(tmp_path: Path) -> None:
    # UK Biobank stores a short-axis cine as one series per slice position
    expected, affine = write_dicom_series(tmp_path / "s", n_slices=5, series_per_slice=True)
    vol = read_dicom_cine(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, expected)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-3)


def test_dicom_slice_acquired_again_uses_the_later_series(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    expected, _ = write_dicom_series(tmp_path / "s", series_per_slice=True, repeat_slice=1)
    with caplog.at_level("WARNING", logger="ssll.ingest"):
        vol = read_dicom_cine(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, expected)  # slice 1 from the repeat (SeriesNumber 99, not 11)
    assert vol.array[0, 0, 1, 0] == 6000 and vol.array[0, 0, 2, 0] == 2000
    assert "acquired 2 times; using series 99, dropping 11" in caplog.text
    write_dicom_series(tmp_path / "n", series_per_slice=True, repeat_slice=1, series_numbers=False)
    with pytest.raises(DicomError, match="no distinct SeriesNumber"):
        read_dicom_cine(tmp_path / "n")


def test_dicom_copy_of_the_stack_beside_per_slice_series_is_not_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # UK Biobank's zips hold, beside the per-slice series, one series over every position
    # (CINE_segmented_SAX_InlineVF); its pixels here are 10000 higher, so reading it would show
    expected, affine = write_dicom_series(tmp_path / "s", series_per_slice=True, description="CINE_segmented_SAX_b")
    write_dicom_series(tmp_path / "t", description="CINE_segmented_SAX_InlineVF", offset=10000)
    for f in (tmp_path / "t").iterdir():
        f.rename(tmp_path / "s" / f"t_{f.name}")
    with caplog.at_level("WARNING", logger="ssll.ingest"):
        vol = read_dicom_cine(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, expected)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-3)
    assert "(CINE_segmented_SAX_InlineVF) holds 4 slice positions beside 4 one-slice series" in caplog.text
    # from a zip, as UK Biobank ships it: the log names the archive, not the temporary folder
    caplog.clear()
    archive = tmp_path / "1234567_20209_2_0.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted((tmp_path / "s").iterdir()):
            zf.write(f, f.name)
    with caplog.at_level("WARNING", logger="ssll.ingest"):
        vol = read_dicom_zip(archive)
    np.testing.assert_array_equal(vol.array, expected)
    assert f"{archive}: series" in caplog.text and "ssll-dicom-" not in caplog.text


def test_dicom_two_multi_slice_series_in_one_folder(tmp_path: Path) -> None:
    write_dicom_series(tmp_path / "s")  # one series over all four positions
    write_dicom_series(tmp_path / "t", series_per_slice=True, n_slices=1, offset=10000)  # one slice, its own series
    write_dicom_series(tmp_path / "u", offset=20000, uid="1.2.826.0.1.3680043.2.1125.77")  # another over all four
    for sub in ("t", "u"):
        for f in (tmp_path / sub).iterdir():
            f.rename(tmp_path / "s" / f"{sub}_{f.name}")
    with pytest.raises(DicomError, match="holds 4 slice positions; give one series per folder"):
        read_dicom_cine(tmp_path / "s")


@pytest.mark.real_data
def test_sunnybrook_real_series() -> None:
    folder = SHARED_DATA / "sunnybrook" / "dicoms" / "SCD0000101"
    if not folder.is_dir():
        pytest.skip("Sunnybrook data absent")
    vol = read_dicom_cine(folder)
    assert vol.array.shape == (256, 256, 12, 20)
    np.testing.assert_allclose(vol.spacing, (1.367188, 1.367188, 10.0), atol=1e-3)


@pytest.mark.real_data
def test_sunnybrook_split_into_one_series_per_slice_reads_the_same(tmp_path: Path) -> None:
    folder = SHARED_DATA / "sunnybrook" / "dicoms" / "SCD0000101"
    if not folder.is_dir():
        pytest.skip("Sunnybrook data absent")
    ref = read_dicom_cine(folder)
    uids: dict[str, str] = {}
    for p in sorted(folder.iterdir()):
        try:
            img = sitk.ReadImage(str(p))
        except RuntimeError:
            continue
        ipp = img.GetMetaData("0020|0032")  # each slice position its own series, as UK Biobank stores a stack
        uids.setdefault(ipp, f"{img.GetMetaData('0020|000e')}.{len(uids) + 1}")
        img.SetMetaData("0020|000e", uids[ipp])
        w = sitk.ImageFileWriter()
        w.KeepOriginalImageUIDOn()
        w.SetFileName(str(tmp_path / p.name))
        w.Execute(img)
    assert len(uids) == 12
    vol = read_dicom_cine(tmp_path)
    np.testing.assert_array_equal(vol.array, ref.array)
    np.testing.assert_array_equal(vol.affine, ref.affine)
    # as a UK Biobank zip holds it: the per-slice series plus a copy of the stack as one series (InlineVF)
    archive = tmp_path.parent / "ukbb_like.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(tmp_path.iterdir()):
            zf.write(p, f"slices/{p.name}")
        for p in sorted(folder.iterdir()):
            zf.write(p, f"inlinevf/{p.name}")
    vol = read_dicom_zip(archive)
    np.testing.assert_array_equal(vol.array, ref.array)
    np.testing.assert_array_equal(vol.affine, ref.affine)


def test_run_ingest_reads_a_zip_archive_and_follows_no_member_path(tmp_path: Path) -> None:

    expected, affine = write_dicom_series(tmp_path / "s", n_phases=4, series_per_slice=True)
    archive = tmp_path / "study" / "1234567_20209_2_0.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("manifest.csv", "filename,series description\n")  # not DICOM: skipped
        for i, f in enumerate(sorted((tmp_path / "s").iterdir())):
            # nested names and one that climbs out of the folder: extracted flat, under their index
            zf.write(f, f"../escape_{f.name}" if i == 0 else f"sax/{f.name}")
    ph = run_ingest(image=archive, ed=0, es=3, out_ed=tmp_path / "ed.nii.gz", out_es=tmp_path / "es.nii.gz",
                    out_record=tmp_path / "r.json")
    es = nib.load(str(tmp_path / "es.nii.gz"))
    np.testing.assert_allclose(es.affine, affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(es.dataobj), expected[..., 3])
    assert (ph.ed, ph.es) == (0, 3)
    assert sorted(p.name for p in (tmp_path / "study").iterdir()) == ["1234567_20209_2_0.zip"]  # nothing unpacked
    assert not any(p.name.startswith("escape_") for p in tmp_path.rglob("*"))
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK not really")
    with pytest.raises(DicomError, match="bad.zip: not a readable zip archive"):
        run_ingest(image=bad, out_ed=tmp_path / "e2.nii.gz", out_es=tmp_path / "s2.nii.gz", out_record=tmp_path / "r2.json")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as zf:
        zf.writestr("manifest.csv", "nothing\n")
    with pytest.raises(DicomError, match=r"empty.zip: no readable DICOM image files"):
        run_ingest(image=tmp_path / "empty.zip", out_ed=tmp_path / "e3.nii.gz", out_es=tmp_path / "s3.nii.gz",
                   out_record=tmp_path / "r3.json")


def test_run_ingest_dicom_series(tmp_path: Path) -> None:
    expected, affine = write_dicom_series(tmp_path / "s", n_phases=4)
    ph = run_ingest(image=tmp_path / "s", ed=0, es=2, out_ed=tmp_path / "ed.nii.gz", out_es=tmp_path / "es.nii.gz",
                    out_record=tmp_path / "r.json")
    assert (ph.ed, ph.es) == (0, 2)
    es = nib.load(str(tmp_path / "es.nii.gz"))
    np.testing.assert_allclose(es.affine, affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(es.dataobj), expected[..., 2])
