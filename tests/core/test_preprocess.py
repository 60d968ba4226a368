import numpy as np

from edgeseg.core.card import ModelCard, Output, Preprocessing
from edgeseg.core.postprocess import activate, binarize, lesion_mask, probability_at
from edgeseg.core.preprocess import preprocess


def test_preprocess_follows_the_card():
    card = ModelCard(input_size=(64, 96), preprocessing=Preprocessing(mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.125)))
    bgr = np.zeros((64, 96, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30  # B, G, R
    tensor = preprocess(bgr, card)
    assert tensor.shape == (1, 3, 64, 96) and tensor.dtype == np.float32
    expected_rgb = [(30 / 255 - 0.1) / 0.5, (20 / 255 - 0.2) / 0.25, (10 / 255 - 0.3) / 0.125]
    np.testing.assert_allclose(tensor[0, :, 5, 7], expected_rgb, rtol=1e-6)


def test_preprocess_resizes_any_image_to_the_input_size():
    card = ModelCard(input_size=(64, 64))
    tensor = preprocess(np.full((480, 640, 3), 128, np.uint8), card)
    assert tensor.shape == (1, 3, 64, 64)
    np.testing.assert_allclose(tensor, (128 / 255 - 0.5) / 0.5, atol=1e-6)


def test_postprocess_returns_a_mask_at_the_image_resolution_using_the_card_threshold():
    card = ModelCard(output=Output(threshold=0.7))
    logits = np.array([[-2.0, 0.5], [1.0, 3.0]], np.float32)
    probability = activate(logits, card)
    np.testing.assert_allclose(probability, 1 / (1 + np.exp(-logits)), rtol=1e-6)
    full = probability_at(probability, 4, 6, card)
    assert full.shape == (4, 6)
    mask = binarize(probability, card)
    assert mask.tolist() == [[False, False], [True, True]]


def test_lesion_mask_keeps_the_largest_region_with_its_holes_as_the_card_says():
    probability = np.zeros((40, 40), np.float32)
    probability[5:25, 5:25] = 0.9  # the lesion
    probability[12:15, 12:15] = 0.1  # a hole in it
    probability[32:36, 32:36] = 0.8  # a stray island
    card = ModelCard()
    mask, contour, regions = lesion_mask(probability, card)
    assert regions == 1 and contour is not None
    assert mask[10, 10] and not mask[13, 13] and not mask[33, 33]

    every = card.replace(output=Output(keep_largest_region=False))
    mask, _, regions = lesion_mask(probability, every)
    assert regions == 2 and mask[33, 33]

    mask, contour, regions = lesion_mask(probability, card, threshold=0.95)
    assert not mask.any() and contour is None and regions == 0
