"""The closer look (Segmenter ``refine``): where it looks, and that it draws a small lesion in a big frame better."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgeseg.core.card import ModelCard
from edgeseg.core.metrics import image_scores
from edgeseg.core.postprocess import CLOSER_LOOK_MAX_SHARE, CLOSER_LOOK_SCALE, closer_look_box
from edgeseg.core.segmenter import Pending, Segmenter


class DarknessBackend:
    """A backend double that calls every dark pixel of its input lesion (logits from the red channel)."""

    name, precision = "fake", "fp32"

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        self.calls: list[int] = []

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        return (-8.0 * batch[:, :1]).astype(np.float32)  # normalised to about -1..1: dark is lesion

    def close(self) -> None:
        pass


def probability_with_box(shape: tuple[int, int], top: int, left: int, height: int, width: int) -> np.ndarray:
    probability = np.zeros(shape, dtype=np.float32)
    probability[top : top + height, left : left + width] = 0.9
    return probability


def test_the_box_is_a_square_around_the_lesion_scaled_to_the_image(tiny_card: ModelCard) -> None:
    # A 6x4 network-pixel lesion in a 64x64 first look of a 768x1024 frame: 12 image pixels per network pixel in
    # y, 16 in x; its larger side is 4 * 16 = 64 pixels wide and 6 * 12 = 72 tall.
    probability = probability_with_box((64, 64), top=20, left=30, height=6, width=4)
    left, top, width, height = closer_look_box(probability, 768, 1024, tiny_card)
    side = round(72 * CLOSER_LOOK_SCALE)
    assert (width, height) == (side, side)
    assert abs((left + width / 2) - 32 * 16) <= 1 and abs((top + height / 2) - 23 * 12) <= 1


def test_the_box_is_at_least_the_network_input_and_stays_inside_the_image(tiny_card: ModelCard) -> None:
    speck = probability_with_box((64, 64), top=0, left=62, height=1, width=2)  # a speck in the top-right corner
    left, top, width, height = closer_look_box(speck, 768, 1024, tiny_card)
    assert width == height == max(tiny_card.input_size)
    assert (top, left + width) == (0, 1024)


def test_no_lesion_or_a_lesion_that_fills_the_frame_gets_no_closer_look(tiny_card: ModelCard) -> None:
    assert closer_look_box(np.zeros((64, 64), np.float32), 768, 1024, tiny_card) is None
    big = probability_with_box((64, 64), top=10, left=10, height=40, width=40)
    assert (40 * 16 * CLOSER_LOOK_SCALE) ** 2 > CLOSER_LOOK_MAX_SHARE * 768 * 1024
    assert closer_look_box(big, 768, 1024, tiny_card) is None


def test_a_box_wider_than_a_narrow_frame_is_cut_to_it(tiny_card: ModelCard) -> None:
    # A 300x3000 strip (47 image pixels per network pixel in x): the square around a 7-network-pixel-wide
    # lesion would be 2 * 328 = 656 pixels tall, the frame is 300.
    probability = probability_with_box((64, 64), top=30, left=30, height=3, width=7)
    left, top, width, height = closer_look_box(probability, 300, 3000, tiny_card)
    assert (top, height) == (0, 300) and width == 656 and 0 <= left and left + width <= 3000


def frame_with_a_small_dark_disc(height: int = 768, width: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((height, width, 3), 220, dtype=np.uint8)
    truth = np.zeros((height, width), dtype=np.uint8)
    cv2.ellipse(truth, (700, 250), (45, 30), 20, 0, 360, 1, thickness=-1)
    image[truth.astype(bool)] = 30
    return image, truth.astype(bool)


def test_the_closer_look_draws_a_small_lesion_in_a_big_frame_closer_to_its_outline(tiny_card: ModelCard) -> None:
    image, truth = frame_with_a_small_dark_disc()
    plain_backend, closer_backend = DarknessBackend(tiny_card), DarknessBackend(tiny_card)
    plain = Segmenter(plain_backend, refine=False).segment(image)
    closer = Segmenter(closer_backend, refine=True).segment(image)
    assert plain_backend.calls == [1] and closer_backend.calls == [1, 1]
    plain_jaccard, closer_jaccard = (
        image_scores(truth, plain.mask)["jaccard"],
        image_scores(truth, closer.mask)["jaccard"],
    )
    assert closer_jaccard > 0.95 and closer_jaccard > plain_jaccard + 0.05, (plain_jaccard, closer_jaccard)
    outside = np.ones_like(truth)
    outside[150:350, 600:800] = False
    np.testing.assert_array_equal(closer.probability[outside], plain.probability[outside])  # only the square changes


def test_the_closer_look_uses_the_same_flips_and_a_filled_frame_gets_one_look(tiny_card: ModelCard) -> None:
    image, _ = frame_with_a_small_dark_disc()
    backend = DarknessBackend(tiny_card)
    Segmenter(backend, tta="hflip", refine=True).segment(image)
    assert backend.calls == [2, 2]
    filled = np.full((768, 1024, 3), 30, dtype=np.uint8)
    backend = DarknessBackend(tiny_card)
    Segmenter(backend, refine=True).segment(filled)
    assert backend.calls == [1]


def test_logits_finished_without_their_image_get_no_closer_look(tiny_card: ModelCard) -> None:
    # Export parity finishes stored logits of each form: the same first look, with nothing to crop.
    image, _ = frame_with_a_small_dark_disc()
    segmenter = Segmenter(DarknessBackend(tiny_card), refine=True)
    logits = segmenter.infer(segmenter.prepare(image)).logits.copy()
    finished = segmenter.finish(Pending(image.shape[:2], logits=logits))
    unrefined = Segmenter(DarknessBackend(tiny_card), refine=False).segment(image)
    np.testing.assert_array_equal(finished.mask, unrefined.mask)


@pytest.mark.parametrize("refine", [True, False])
def test_refine_can_be_switched_on_an_open_segmenter(tiny_card: ModelCard, refine: bool) -> None:
    image, _ = frame_with_a_small_dark_disc()
    backend = DarknessBackend(tiny_card)
    segmenter = Segmenter(backend, refine=not refine)
    segmenter.refine = refine
    segmenter.segment(image)
    assert len(backend.calls) == (2 if refine else 1)
