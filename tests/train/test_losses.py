"""The training losses: each is lowest for the right mask, and the Lovasz hinge scores each image on its own."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from edgeseg.core.names import LOSSES
from edgeseg.train.losses import build_loss


def target() -> torch.Tensor:
    mask = torch.zeros(2, 1, 32, 32)
    mask[0, :, 8:24, 8:24] = 1
    mask[1, :, 2:6, 2:6] = 1  # a small lesion
    return mask


@pytest.mark.parametrize("name", LOSSES)
def test_each_loss_prefers_the_true_mask_to_a_shifted_one(name: str) -> None:
    loss = build_loss(name)
    truth = target()
    right = (truth * 2 - 1) * 6
    shifted = (torch.roll(truth, shifts=3, dims=-1) * 2 - 1) * 6
    assert loss(right, truth).item() < loss(shifted, truth).item()


def test_the_lovasz_loss_weighs_a_small_lesion_as_much_as_a_big_one() -> None:
    # Per image, as the ISIC score: missing the small lesion entirely costs as much as missing the big one.
    loss = build_loss("lovasz")
    truth = target()
    right = (truth * 2 - 1) * 6
    miss_small, miss_big = right.clone(), right.clone()
    miss_small[1] = -6
    miss_big[0] = -6
    assert loss(miss_small, truth).item() == pytest.approx(loss(miss_big, truth).item(), rel=0.05)


def test_an_unknown_loss_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="lovasz"):
        build_loss("focal")
