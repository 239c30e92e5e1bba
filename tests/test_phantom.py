from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA

from ssll.labels import Label
from ssll.landmarks import landmarks_from_labels, voxel_to_world, world_to_voxel


@pytest.fixture(scope="module")
def bank():
    root = SHARED_DATA / "biv-me"
    if not root.is_dir():
        pytest.skip("biv-me data absent")
    from ssll.phantom import load_shape_bank

    return load_shape_bank(root)


@pytest.fixture(scope="module")
def phantom(bank):
    from ssll.phantom import make_phantom

    return make_phantom(bank, 5)


@pytest.mark.real_data
def test_phantom_is_deterministic(bank, phantom) -> None:
    from ssll.phantom import make_phantom

    again = make_phantom(bank, 5)
    np.testing.assert_array_equal(again["ED"]["labels"], phantom["ED"]["labels"])
    np.testing.assert_array_equal(again["ES"]["image"], phantom["ES"]["image"])
    np.testing.assert_allclose(again["ED"]["landmarks"], phantom["ED"]["landmarks"])


@pytest.mark.real_data
def test_phantom_anatomy(phantom) -> None:
    ml = 1.25 * 1.25 * 2.0 / 1000
    ed, es = phantom["ED"]["labels"], phantom["ES"]["labels"]
    assert ed.shape == (192, 192, 80) and ed.dtype == np.uint8
    assert set(np.unique(ed)) == {0, 1, 2, 3, 4}
    lv_ed, lv_es = (ed == Label.LV_CAVITY).sum() * ml, (es == Label.LV_CAVITY).sum() * ml
    assert 60 < lv_ed < 350 and lv_es < lv_ed
    # blood is brighter than myocardium
    img = phantom["ED"]["image"]
    assert img[ed == Label.LV_CAVITY].mean() > 2 * img[ed == Label.LV_WALL].mean()


@pytest.mark.real_data
def test_exact_landmarks_lie_in_the_grid_and_agree_with_labels(phantom) -> None:
    aff = phantom["affine"]
    exact = phantom["ED"]["landmarks"]
    vox = world_to_voxel(exact, aff)
    assert np.all(vox > -1) and np.all(vox < np.array([192, 192, 80]))
    derived = voxel_to_world(landmarks_from_labels(phantom["ED"]["labels"], aff), aff)
    assert np.linalg.norm(derived - exact, axis=1).max() < 20.0


@pytest.mark.real_data
def test_anatomy_labels_on_other_grids(bank, phantom) -> None:
    """The phantom's labels voxelised from its mesh on another grid: its own grid gives ``make_phantom``'s labels;
    a grid one slice further on gives them one slice on; half a slice off keeps every structure's volume (the RV
    wall, one or two voxels thick, included), which interpolating the HR label map does not."""
    from ssll.phantom import anatomy_labels, phantom_anatomy

    a = phantom_anatomy(bank, 5)
    aff = phantom["affine"]
    np.testing.assert_array_equal(a.affine, aff)
    for phase in ("ED", "ES"):
        np.testing.assert_array_equal(anatomy_labels(a, phase, aff, (192, 192, 80)), phantom[phase]["labels"])
    ed = phantom["ED"]["labels"]
    one_on = aff.copy()
    one_on[:3, 3] += aff[:3, 2]
    np.testing.assert_array_equal(anatomy_labels(a, "ED", one_on, (192, 192, 79)), ed[:, :, 1:])
    half = aff.copy()
    half[:3, 3] += 0.5 * aff[:3, 2]
    lab = anatomy_labels(a, "ED", half, (192, 192, 80))
    for c in range(1, 5):
        assert abs(int((lab == c).sum()) / int((ed == c).sum()) - 1) < 0.03, Label(c).name
