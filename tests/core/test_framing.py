"""Camera framing keeps image and mask aligned, leaves one lesion, and refuses what it cannot frame."""

import cv2
import numpy as np
import pytest

from edgeseg.core.framing import Framing, frame_size, place_in_frame, resize_pair, touches_border, vignette


def crop_with_lesion(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Skin-coloured noise with one dark disc; the mask is exactly the disc."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal((170, 180, 210), 8, (size, size, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, (size // 2 + 5, size // 2 - 3), size // 5, 1, -1)
    image[mask > 0] = (40, 50, 90)
    return image, mask


def dark(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=2) < 100


@pytest.mark.parametrize("framing", [Framing(2.0, 4 / 3, 0.0, 1.0), Framing(1.5, 1.5, 0.7, 0.2), Framing(2.5, 1.0)])
def test_the_mask_follows_the_lesion_into_the_frame(framing):
    image, mask = crop_with_lesion()
    framed, framed_mask = place_in_frame(image, mask, framing)
    assert framed.shape[:2] == framed_mask.shape == frame_size(96, 96, framing)
    assert framed_mask.sum() == mask.sum()  # the lesion is placed once, not mirrored into copies
    np.testing.assert_array_equal(dark(framed), framed_mask > 0)  # and the image's lesion is exactly there
    stretched, stretched_mask = resize_pair(framed, framed_mask, 64, 64, "area")
    agreement = (dark(stretched) == stretched_mask).mean()
    assert stretched.shape[:2] == stretched_mask.shape == (64, 64) and agreement > 0.99


def test_the_frame_has_the_asked_aspect_and_zoom():
    assert frame_size(512, 512, Framing(zoom=1.5, aspect=4 / 3)) == (768, 1024)
    assert frame_size(512, 512, Framing()) == (512, 512)
    with pytest.raises(ValueError):
        Framing(zoom=0.5)


def test_a_lesion_cut_by_the_crop_edge_is_recognised():
    _, mask = crop_with_lesion()
    assert not touches_border(mask)
    mask[:, :3] = 1
    assert touches_border(mask)


def test_vignette_darkens_corners_only():
    image = np.full((64, 80, 3), 200, np.uint8)
    shaded = vignette(image, strength=1.0)
    assert shaded[0, 0].max() < 20 and (shaded[32, 40] == 200).all()
