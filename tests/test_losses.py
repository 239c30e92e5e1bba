from __future__ import annotations

import math

import pytest
import torch

from ssll.nn.losses import dice_loss, landmark_loss


def _logits_from_labels(lab: torch.Tensor, n: int, scale: float = 50.0) -> torch.Tensor:
    return torch.nn.functional.one_hot(lab, n).movedim(-1, 1).float() * scale


def test_dice_loss_perfect_and_worst() -> None:
    t = torch.tensor([[[0, 1, 2, 3, 4, 0]]])
    assert dice_loss(_logits_from_labels(t, 5), t).item() == pytest.approx(0.0, abs=1e-6)
    wrong = (t + 1) % 5
    assert dice_loss(_logits_from_labels(wrong, 5), t).item() == pytest.approx(1.0, abs=1e-6)


def test_dice_loss_tabulated_value() -> None:
    # two classes, uniform probabilities 0.5 everywhere, target [0, 1]
    t = torch.tensor([[0, 1]])
    logits = torch.zeros(1, 5, 2)
    logits[:, 2:] = -1e4  # only classes 0 and 1 get probability
    # per class: inter = 0.5, sum g^2 = 1, sum p^2 = 0.5 -> dice 2/3; absent classes: 0/(0+~0) = 0
    expected = 1 - (2 / 3 + 2 / 3 + 0 + 0 + 0) / 5
    assert dice_loss(logits, t).item() == pytest.approx(expected, abs=1e-5)


def test_missing_rv_wall_is_left_out() -> None:
    # target has no RV wall; the net predicts RV wall where the target says background
    t = torch.tensor([[0, 0, 1, 3]])
    pred = torch.tensor([[4, 4, 1, 3]])
    logits = _logits_from_labels(pred, 5)
    penalised = dice_loss(logits, t, has_rv_wall=torch.tensor([True])).item()
    excused = dice_loss(logits, t, has_rv_wall=torch.tensor([False])).item()
    assert penalised > 0.3
    # remaining classes 0,1,2,3: 0,1,3 perfect; 2 absent in both -> dice 0 -> loss 1/4
    assert excused == pytest.approx(0.25, abs=1e-5)


def test_landmark_loss_weights() -> None:
    # 4 voxels: 3 background, 1 landmark 1; uniform logits -> -log p = log 7 everywhere
    t = torch.tensor([[0, 0, 0, 1]])
    logits = torch.zeros(1, 7, 4)
    assert landmark_loss(logits, t).item() == pytest.approx(math.log(7), rel=1e-6)
    # confident background, uniform at the landmark: weighted mean is dominated by the landmark
    logits[0, 0, :3] = 20.0
    val = landmark_loss(logits, t).item()
    w_bg, w_lm = 1 - 3 / 4, 1 - 1 / 4
    nll_bg = -torch.log_softmax(logits[0, :, 0], 0)[0].item()
    expected = (3 * w_bg * nll_bg + w_lm * math.log(7)) / (3 * w_bg + w_lm)
    assert val == pytest.approx(expected, rel=1e-5)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="do not match"):
        dice_loss(torch.zeros(1, 5, 3), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="do not match"):
        landmark_loss(torch.zeros(1, 7, 3), torch.zeros(2, 3, dtype=torch.long))
