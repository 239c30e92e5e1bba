from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import biv_phantom, image_from_labels, write_nifti

from ssll.cli import main, split_groups


def test_help_lists_every_stage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("ingest", "preprocess", "segment", "landmarks", "landmarks-from-labels", "train"):
        assert cmd in out


def test_preprocess_in_process(tmp_path: Path) -> None:
    lab = biv_phantom((64, 60, 12))
    write_nifti(tmp_path / "img.nii.gz", image_from_labels(lab))
    write_nifti(tmp_path / "lab.nii.gz", lab)
    rc = main(["preprocess", "--subject", "s1", "--image", str(tmp_path / "img.nii.gz"),
               "--labels", str(tmp_path / "lab.nii.gz"), "--out-image", str(tmp_path / "w.nii.gz"),
               "--out-record", str(tmp_path / "w.json"), "--out-labels", str(tmp_path / "wl.nii.gz")])
    assert rc == 0
    rec = json.loads((tmp_path / "w.json").read_text())
    assert rec["working_shape"] == [192, 192, 80]
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".prov.json"))
    assert names == ["img.nii.gz", "lab.nii.gz", "w.json", "w.nii.gz", "wl.nii.gz"]  # no temporary files left


def test_split_groups() -> None:
    assert split_groups(["qc", "--subject", "s"]) == [["qc", "--subject", "s"]]
    assert split_groups(["qc", "--subject", "s", "--and", "--a", "1", "--and", "--a", "2"]) == [
        ["qc", "--subject", "s", "--a", "1"], ["qc", "--subject", "s", "--a", "2"]]


def test_one_process_runs_each_group_and_stops_at_the_first_failure(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lab = biv_phantom((64, 60, 12))
    write_nifti(tmp_path / "ed.nii.gz", image_from_labels(lab))
    write_nifti(tmp_path / "es.nii.gz", image_from_labels(np.roll(lab, 2, axis=0)))
    rc = main(["preprocess", "--subject", "s1", "--params", "{}",
               "--and", "--image", str(tmp_path / "ed.nii.gz"), "--out-image", str(tmp_path / "ED.nii.gz"),
               "--out-record", str(tmp_path / "ED.json"),
               "--and", "--image", str(tmp_path / "es.nii.gz"), "--out-image", str(tmp_path / "ES.nii.gz"),
               "--out-record", str(tmp_path / "ES.json")])
    assert rc == 0
    for ph in ("ED", "ES"):
        prov = json.loads((tmp_path / f"{ph}.nii.gz.prov.json").read_text())
        assert prov["subject"] == "s1" and f"{ph}.nii.gz" in prov["output"] and f"{ph.lower()}.nii.gz" in " ".join(prov["argv"])
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    rc = main(["preprocess", "--subject", "s2",
               "--and", "--image", str(tmp_path / "broken.nii.gz"), "--out-image", str(tmp_path / "b1.nii.gz"),
               "--out-record", str(tmp_path / "b1.json"),
               "--and", "--image", str(tmp_path / "es.nii.gz"), "--out-image", str(tmp_path / "b2.nii.gz"),
               "--out-record", str(tmp_path / "b2.json")])
    assert rc == 2 and "broken.nii.gz" in capsys.readouterr().err
    assert not (tmp_path / "b1.nii.gz").exists() and not (tmp_path / "b2.nii.gz").exists()


@pytest.mark.parametrize("spacing", [(0.0015, 0.0015, 0.008), (17.6, 17.6, 100.0), (1.5, 1.5, 0.1)])
def test_a_voxel_size_no_cine_has_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             spacing: tuple[float, float, float]) -> None:
    """Metres written as mm, or a stack that cannot be short-axis slices: one line naming the subject, the file
    and the voxel size; nothing written."""
    lab = biv_phantom((64, 60, 12))
    img = write_nifti(tmp_path / "img.nii.gz", image_from_labels(lab), spacing=spacing)
    rc = main(["preprocess", "--subject", "s9", "--image", str(img), "--out-image", str(tmp_path / "o.nii.gz"),
               "--out-record", str(tmp_path / "o.json")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ssll preprocess: s9: error: ") and "img.nii.gz" in err[0]
    assert "voxel size" in err[0] and "units" in err[0]
    assert not (tmp_path / "o.nii.gz").exists() and not (tmp_path / "o.json").exists()


def test_bad_input_gives_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    rc = main(["preprocess", "--subject", "case_7", "--image", str(bad), "--out-image", str(tmp_path / "o.nii.gz"),
               "--out-record", str(tmp_path / "o.json")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("ssll preprocess: case_7: error: ") and "broken.nii.gz" in err[0]
    assert not (tmp_path / "o.nii.gz").exists() and not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("bad_id", ["../etc", "a b", "x;rm -rf", "", "a/b", "-flag"])
def test_subject_ids_are_validated(tmp_path: Path, bad_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    write_nifti(tmp_path / "img.nii.gz", np.random.default_rng(0).random((8, 8, 4)).astype(np.float32))
    rc = main(["preprocess", f"--subject={bad_id}", "--image", str(tmp_path / "img.nii.gz"),
               "--out-image", str(tmp_path / "o.nii.gz"), "--out-record", str(tmp_path / "o.json")])
    assert rc == 2
    assert "invalid subject id" in capsys.readouterr().err


def test_bad_params_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_nifti(tmp_path / "img.nii.gz", np.random.default_rng(0).random((8, 8, 4)).astype(np.float32))
    rc = main(["preprocess", "--image", str(tmp_path / "img.nii.gz"), "--out-image", str(tmp_path / "o.nii.gz"),
               "--out-record", str(tmp_path / "o.json"), "--params", '{"spacing": [1, 1]}'])
    assert rc == 3
    assert "spacing must be" in capsys.readouterr().err


def test_ingest_cli_dicom_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d").mkdir()
    rc = main(["ingest", "--subject", "s2", "--image", str(tmp_path / "d"), "--out-ed", str(tmp_path / "ed.nii.gz"),
               "--out-es", str(tmp_path / "es.nii.gz"), "--out-record", str(tmp_path / "r.json")])
    assert rc == 2
    assert "no readable DICOM" in capsys.readouterr().err


def test_every_output_gets_a_provenance_record(tmp_path) -> None:
    import json as _json

    from ssll import __version__

    write_nifti(tmp_path / "img.nii.gz", image_from_labels(biv_phantom()))
    rc = main(["preprocess", "--subject", "s1", "--image", str(tmp_path / "img.nii.gz"), "--out-image",
               str(tmp_path / "w.nii.gz"), "--out-record", str(tmp_path / "w.json"), "--params", '{"order": 1}'])
    assert rc == 0
    for name in ("w.nii.gz", "w.json"):
        prov = _json.loads((tmp_path / f"{name}.prov.json").read_text())
        assert prov["ssll_version"] == __version__ and prov["command"] == "preprocess"
        assert prov["subject"] == "s1" and prov["params"] == {"order": 1}
        assert prov["output"].endswith(name)


@pytest.mark.parametrize(("exported", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_cli_makes_openmp_threads_sleep_before_torch_loads(exported: str | None, expected: str) -> None:
    # the OpenMP runtime reads OMP_WAIT_POLICY once, when torch loads: the CLI must set it first
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if exported:
        env["OMP_WAIT_POLICY"] = exported
    code = ("import os, sys; import ssll.cli; "
            "print('torch' in sys.modules, os.environ['OMP_WAIT_POLICY'])")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["False", expected]
