"""The post-processing levers of the Segmenter: hole filling, and flip test-time augmentation flipped back right."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgeseg.core.card import ModelCard
from edgeseg.core.postprocess import lesion_mask
from edgeseg.core.segmenter import TTA_MODES, Segmenter


class FunctionBackend:
    """A backend double whose logits are a known function of its (N, 3, H, W) input; it records each call's batch
    size."""

    name, precision = "fake", "fp32"

    def __init__(self, card: ModelCard, function, max_batch: int | None = None) -> None:
        self.card, self.function, self.max_batch = card, function, max_batch
        self.calls: list[int] = []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        if self.max_batch is not None and len(batch) > self.max_batch:
            raise ValueError(f"this model takes a batch of {self.max_batch}, got {len(batch)}")
        return np.stack([self.function(view)[None] for view in batch]).astype(np.float32)

    def close(self) -> None:
        pass


def x_ramp(view: np.ndarray) -> np.ndarray:
    """Logits rising from left to right, whatever the image: -k at the left edge, +k at the right."""
    width = view.shape[-1]
    return np.broadcast_to(np.linspace(-4.0, 4.0, width, dtype=np.float32), view.shape[1:]).copy()


def y_ramp(view: np.ndarray) -> np.ndarray:
    return x_ramp(view.transpose(0, 2, 1)).T


def sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


def ring_and_island(size: int = 64) -> np.ndarray:
    probability = np.zeros((size, size), dtype=np.float32)
    probability[8:40, 8:40] = 0.9  # a ring: a lesion with a hole in the middle
    probability[18:30, 18:30] = 0.1
    probability[48:56, 48:60] = 0.9  # a separate, smaller region
    return probability


def test_hole_filling_fills_the_rings_hole_and_leaves_a_second_region_alone(tiny_card: ModelCard) -> None:
    every = tiny_card.replace(output=dataclasses.replace(tiny_card.output, keep_largest_region=False))
    probability = ring_and_island()
    plain, _, regions = lesion_mask(probability, every)
    filled, contour, filled_regions = lesion_mask(probability, every, fill_holes=True)
    assert regions == filled_regions == 2 and contour is not None
    assert not plain[24, 24] and filled[24, 24]  # the hole is filled
    np.testing.assert_array_equal(filled[8:40, 8:40], True)
    np.testing.assert_array_equal(filled[44:, 44:], plain[44:, 44:])  # the second region exactly as it was
    assert filled.sum() == plain.sum() + 12 * 12
    assert not (plain & ~filled).any()


def test_hole_filling_with_the_largest_region_kept_fills_it_and_drops_the_island(tiny_card: ModelCard) -> None:
    filled, _, regions = lesion_mask(ring_and_island(), tiny_card, fill_holes=True)
    assert tiny_card.output.keep_largest_region and regions == 1
    assert filled.sum() == 32 * 32 and filled[24, 24] and not filled[50, 50]


def test_the_segmenter_fills_holes_only_when_asked(tiny_card: ModelCard) -> None:
    logits = np.where(ring_and_island() > 0.5, 5.0, -5.0)
    backend = FunctionBackend(tiny_card, lambda view: logits)
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    assert not Segmenter(backend, keep_largest=False).segment(image).mask[24, 24]
    with_filling = Segmenter(backend, keep_largest=False, fill_holes=True).segment(image)
    assert with_filling.mask[24, 24] and with_filling.measurements.regions == 2
    assert with_filling.measurements.area_px == 32 * 32 + 8 * 12


@pytest.mark.parametrize("tta", ["hflip", "hvflip"])
def test_an_x_ramp_flipped_back_and_averaged_is_one_half_everywhere(tiny_card: ModelCard, tta: str) -> None:
    # sigmoid(r(x)) + sigmoid(r(W-1-x)) = 1 for a ramp symmetric about the centre: only a correct flip-back gives 0.5.
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    plain = Segmenter(FunctionBackend(tiny_card, x_ramp)).segment(image).probability
    averaged = Segmenter(FunctionBackend(tiny_card, x_ramp), tta=tta).segment(image).probability
    np.testing.assert_allclose(plain[0], sigmoid(np.linspace(-4, 4, 64)), atol=1e-6)
    np.testing.assert_allclose(averaged, 0.5, atol=1e-6)
    assert averaged.dtype == np.float32


def test_a_y_ramp_survives_a_horizontal_flip_but_not_a_vertical_one(tiny_card: ModelCard) -> None:
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    plain = Segmenter(FunctionBackend(tiny_card, y_ramp)).segment(image).probability
    hflip = Segmenter(FunctionBackend(tiny_card, y_ramp), tta="hflip").segment(image).probability
    hvflip = Segmenter(FunctionBackend(tiny_card, y_ramp), tta="hvflip").segment(image).probability
    np.testing.assert_allclose(hflip, plain, atol=1e-6)
    np.testing.assert_allclose(hvflip, 0.5, atol=1e-6)


def asymmetric_image(size: int = 64) -> np.ndarray:
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[10:50, 5:25] = 200  # a bright block left of centre, and a gradient
    image[:, :, 1] = np.linspace(0, 255, size, dtype=np.uint8)[None]
    return image


def pixelwise_network(view: np.ndarray) -> np.ndarray:
    """A pixelwise network: flipping commutes with it."""
    return view[0] * 2.0


def left_to_right_network(view: np.ndarray) -> np.ndarray:
    """A network that reads left to right: flipping changes what it says."""
    return np.cumsum(view[0], axis=-1) / 16.0


def test_a_flip_equivariant_network_gives_the_same_probability_with_and_without_tta(tiny_card: ModelCard) -> None:
    plain = Segmenter(FunctionBackend(tiny_card, pixelwise_network)).segment(asymmetric_image()).probability
    for tta in ("hflip", "hvflip"):
        segmenter = Segmenter(FunctionBackend(tiny_card, pixelwise_network), tta=tta)
        averaged = segmenter.segment(asymmetric_image()).probability
        np.testing.assert_allclose(averaged, plain, atol=1e-6)


def test_tta_changes_what_a_position_dependent_network_says_about_an_asymmetric_image(tiny_card: ModelCard) -> None:
    segmenter = Segmenter(FunctionBackend(tiny_card, left_to_right_network))
    plain = segmenter.segment(asymmetric_image()).probability
    averaged = Segmenter(FunctionBackend(tiny_card, left_to_right_network), tta="hflip").segment(asymmetric_image())
    batch = segmenter.prepare(asymmetric_image()).batch[0]
    flipped_back = sigmoid(left_to_right_network(batch[:, :, ::-1]))[:, ::-1]
    expected = (sigmoid(left_to_right_network(batch)) + flipped_back) / 2
    assert np.abs(averaged.probability - plain).max() > 0.05
    np.testing.assert_allclose(averaged.probability, expected, atol=1e-5)


@pytest.mark.parametrize(("tta", "views"), [("none", 1), ("hflip", 2), ("hvflip", 4)])
def test_the_views_go_through_the_backend_as_one_batch_where_it_takes_one(
    tiny_card: ModelCard, tta: str, views: int
) -> None:
    backend = FunctionBackend(tiny_card, x_ramp)
    segmenter = Segmenter(backend, tta=tta)
    segmenter.segment(asymmetric_image())
    segmenter.segment(asymmetric_image())
    assert backend.calls == [views, views]


def test_a_batch_of_one_backend_gets_the_views_one_by_one_after_one_try(tiny_card: ModelCard) -> None:
    backend = FunctionBackend(tiny_card, x_ramp, max_batch=1)
    segmenter = Segmenter(backend, tta="hvflip")
    first = segmenter.segment(asymmetric_image()).probability
    segmenter.segment(asymmetric_image())
    assert backend.calls == [4, 1, 1, 1, 1, 1, 1, 1, 1]  # the batch is tried once, then never again
    np.testing.assert_allclose(first, 0.5, atol=1e-6)


def test_tta_is_validated_and_can_be_switched_on_an_open_segmenter(tiny_card: ModelCard) -> None:
    with pytest.raises(ValueError, match="hflip"):
        Segmenter(FunctionBackend(tiny_card, x_ramp), tta="sideways")
    backend = FunctionBackend(tiny_card, x_ramp)
    segmenter = Segmenter(backend)
    with pytest.raises(ValueError, match="none, hflip, hvflip"):
        segmenter.tta = "rotate"
    segmenter.tta = "hflip"
    np.testing.assert_allclose(segmenter.segment(asymmetric_image()).probability, 0.5, atol=1e-6)
    assert backend.calls == [2] and TTA_MODES == ("none", "hflip", "hvflip")
