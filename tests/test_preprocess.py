from __future__ import annotations

import numpy as np
import pytest
from conftest import biv_phantom, image_from_labels, oblique_affine

from ssll.errors import InputImageError
from ssll.preprocess import (
    GridRecord,
    PreprocessConfig,
    labels_to_working,
    normalise_intensity,
    preprocess_volume,
    resample,
    to_original,
    working_affine,
)
from ssll.types import Volume, voxel_size


def test_working_affine_centres_and_keeps_directions() -> None:
    a = oblique_affine(spacing=(1.5, 1.7, 8.0))
    shape = (40, 30, 9)
    w = working_affine(a, shape)
    centre_in = a @ np.array([19.5, 14.5, 4.0, 1.0])
    centre_w = w @ np.array([95.5, 95.5, 39.5, 1.0])
    np.testing.assert_allclose(centre_in, centre_w, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(w[:3, :3], axis=0), (1.25, 1.25, 2.0))
    dirs_in = a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0)
    np.testing.assert_allclose(w[:3, :3] / np.linalg.norm(w[:3, :3], axis=0), dirs_in, atol=1e-12)


def test_normalise_clips_to_percentiles() -> None:
    x = np.arange(101, dtype=np.float32)
    out = normalise_intensity(x, 1.0, 99.0)
    assert out[0] == 0.0 and out[1] == 0.0 and out[99] == 1.0 and out[100] == 1.0
    assert out[50] == pytest.approx(0.5)


def test_preprocess_output_and_padding() -> None:
    lab = biv_phantom((64, 60, 12))
    vol = Volume(image_from_labels(lab), oblique_affine())
    work, rec = preprocess_volume(vol)
    assert work.array.shape == (192, 192, 80) and work.array.dtype == np.float32
    assert work.array.min() == 0.0 and work.array.max() == 1.0
    # the input covers 96x90x96 mm: the working grid corners lie outside and are padding (0)
    assert work.array[0, 0, 0] == 0.0 and work.array[-1, -1, -1] == 0.0
    lo, hi = np.percentile(vol.array, [1, 99])
    assert rec.intensity_range == pytest.approx((lo, hi))


def test_a_given_grid_affine_moves_the_working_grid() -> None:
    """A grid moved by whole working voxels (5 along i, -3 along j) holds the same image shifted by them."""
    vol = Volume(image_from_labels(biv_phantom((64, 60, 12))), oblique_affine())
    work, rec = preprocess_volume(vol)
    moved = rec.working_affine.copy()
    moved[:3, 3] = rec.working_affine[:3, :3] @ np.array([5.0, -3.0, 0.0]) + rec.working_affine[:3, 3]
    work2, rec2 = preprocess_volume(vol, grid_affine=moved)
    np.testing.assert_array_equal(rec2.working_affine, moved)
    np.testing.assert_allclose(work2.array[:-5, 3:], work.array[5:, :-3], atol=1e-6)
    np.testing.assert_array_equal(preprocess_volume(vol, grid_affine=rec.working_affine)[0].array, work.array)


@pytest.mark.parametrize("n_slices", [11, 12])  # odd and even counts put ties in different places
def test_label_round_trip_is_exact(n_slices: int) -> None:
    lab = biv_phantom((64, 60, n_slices))
    vol = Volume(image_from_labels(lab), oblique_affine())
    _, rec = preprocess_volume(vol)
    back = to_original(labels_to_working(lab, rec), rec)
    np.testing.assert_array_equal(back, lab)


def test_world_point_is_preserved() -> None:
    lab = np.zeros((40, 40, 10), np.uint8)
    lab[21, 13, 7] = 1
    aff = oblique_affine()
    rec = GridRecord((40, 40, 10), aff, (192, 192, 80), working_affine(aff, (40, 40, 10)))
    w = resample(lab, aff, rec.working_affine, rec.working_shape, order=0)
    world_in = aff @ np.array([21, 13, 7, 1.0])
    pts = np.argwhere(w == 1)
    world_w = (rec.working_affine[:3, :3] @ pts.T).T + rec.working_affine[:3, 3]
    # the working voxels of that one input voxel are centred on it within half an input voxel
    np.testing.assert_allclose(world_w.mean(axis=0), world_in[:3], atol=0.5 * 1.5 + 1e-6)
    d = np.abs(np.linalg.solve(aff[:3, :3], (world_w - world_in[:3]).T))
    assert d.max() <= 0.5 + 1e-9


def test_grid_record_json_round_trip() -> None:
    aff = oblique_affine()
    rec = GridRecord((4, 5, 6), aff, (192, 192, 80), working_affine(aff, (4, 5, 6)), (1.0, 2.0))
    again = GridRecord.from_dict(rec.to_dict())
    np.testing.assert_allclose(again.working_affine, rec.working_affine)
    assert again.input_shape == (4, 5, 6) and again.intensity_range == (1.0, 2.0)


def test_constant_range_is_an_error() -> None:
    arr = np.zeros((10, 10, 4), np.float32)
    arr[0, 0, 0] = 1.0  # 1st and 99th percentiles are both 0
    with pytest.raises(InputImageError, match="percentile range"):
        preprocess_volume(Volume(arr, np.eye(4)))


def test_config_validation() -> None:
    assert PreprocessConfig.from_mapping({"shape": [96, 96, 40]}).shape == (96, 96, 40)
    with pytest.raises(ValueError, match="unknown keys"):
        PreprocessConfig.from_mapping({"spacin": [1, 1, 1]})
    with pytest.raises(ValueError, match="spacing must be"):
        PreprocessConfig.from_mapping({"spacing": [1, 0, 1]})
    with pytest.raises(ValueError, match="percentiles"):
        PreprocessConfig.from_mapping({"percentiles": [99, 1]})


def test_to_original_checks_shape() -> None:
    aff = np.eye(4)
    rec = GridRecord((4, 5, 6), aff, (192, 192, 80), working_affine(aff, (4, 5, 6)))
    with pytest.raises(ValueError, match="not the working shape"):
        to_original(np.zeros((10, 10, 10), np.uint8), rec)


def test_soft_round_trip_keeps_fine_grids() -> None:
    from ssll.evaluate import dice
    from ssll.preprocess import labels_to_working_soft, probabilities_to_original

    lab = biv_phantom((160, 150, 10), spacing=(0.7, 0.7, 10.0))
    aff = np.diag([0.7, 0.7, 10.0, 1.0])
    _, rec = preprocess_volume(Volume(image_from_labels(lab), aff))
    hard = to_original(labels_to_working(lab, rec), rec)
    soft = probabilities_to_original(labels_to_working_soft(lab, rec), rec)
    for k in (1, 2, 3, 4):
        assert dice(soft == k, lab == k) >= 0.98
        assert dice(soft == k, lab == k) >= dice(hard == k, lab == k)


def test_voxel_size_is_the_column_norms_of_any_oblique_affine() -> None:
    """A rotation times diag(1.4, 1.6, 8) mm, with a translation, has that voxel size; the 3x3 part gives the same."""
    rot = oblique_affine((1.4, 1.6, 8.0))
    np.testing.assert_allclose(voxel_size(rot), (1.4, 1.6, 8.0), atol=1e-12)
    np.testing.assert_allclose(voxel_size(rot[:3, :3]), (1.4, 1.6, 8.0), atol=1e-12)
    np.testing.assert_allclose(Volume(np.zeros((2, 2, 2)), rot).spacing, (1.4, 1.6, 8.0), atol=1e-12)
