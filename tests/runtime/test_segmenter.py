"""Segmenter outputs at the image's resolution, measurements, overlay, and agreement with PyTorch."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from edgeseg.core.card import ModelCard
from edgeseg.core.drawing import HudInfo, OverlayRenderer
from edgeseg.core.lesion_measurements import max_feret_diameter, measure
from edgeseg.core.postprocess import NEAR_TIE_AREA_SHARE, activate, inside_contour, lesion_contour, probability_at
from edgeseg.core.preprocess import FrameError, preprocess
from edgeseg.core.segmenter import Segmentation, Segmenter
from edgeseg.runtime.backends import open_segmenter

from .conftest import lesion_image


class ConstantLogits:
    """A backend whose logits are given: to test post-processing exactly."""

    name, precision = "fake", "fp32"

    def __init__(self, logits: np.ndarray, card: ModelCard) -> None:
        self.logits, self.card = logits.astype(np.float32), card

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.logits[None, None]

    def close(self) -> None:
        pass


def test_segment_gives_everything_at_the_images_own_resolution(tiny_onnx: Path) -> None:
    image = lesion_image(width=150, height=90)
    with open_segmenter(tiny_onnx, keep_largest=False) as segmenter:
        result = segmenter.segment(image)
        card = segmenter.card
    assert result.probability.shape == (90, 150) and result.probability.dtype == np.float32
    assert result.mask.shape == (90, 150) and result.mask.dtype == bool
    assert 0.0 <= result.probability.min() and result.probability.max() <= 1.0
    np.testing.assert_array_equal(result.mask, result.probability > card.output.threshold)
    assert set(result.timings_ms) == {"preprocess", "inference", "postprocess"}
    assert all(ms >= 0 for ms in result.timings_ms.values())
    assert result.measurements.lesion_present == bool(result.mask.any())
    assert result.measurements.area_px == int(result.mask.sum())
    assert (result.contour is None) == (not result.mask.any())


def test_segmenter_matches_raw_onnxruntime_on_the_same_tensor(tiny_onnx: Path, tiny_card: ModelCard) -> None:
    image = lesion_image(width=200, height=120, seed=5)
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {tiny_card.tensor_names.input: preprocess(image, tiny_card)})
    expected = probability_at(activate(logits[0, 0], tiny_card), 120, 200, tiny_card)
    with open_segmenter(tiny_onnx, backend="onnxruntime-cpu") as segmenter:
        first = segmenter.segment(image)
        again = segmenter.segment(image)  # the reused input buffer gives the same answer
    np.testing.assert_array_equal(first.probability, expected)
    np.testing.assert_array_equal(again.probability, expected)


def test_keep_largest_keeps_one_region_inside_the_thresholded_mask(tiny_card: ModelCard) -> None:
    height, width = tiny_card.input_size
    logits = np.full((height, width), -5.0)
    logits[5:25, 5:25] = 5.0  # the large region, with a hole
    logits[12:15, 12:15] = -5.0
    logits[40:44, 40:44] = 5.0  # a small island
    backend = ConstantLogits(logits, tiny_card)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    every = Segmenter(backend, tiny_card, keep_largest=False).segment(image)
    largest = Segmenter(backend, tiny_card, keep_largest=True).segment(image)
    assert every.measurements.regions == 2 and largest.measurements.regions == 1
    assert not (largest.mask & ~every.mask).any()
    assert largest.mask[10, 10] and not largest.mask[13, 13] and not largest.mask[41, 41]
    assert largest.measurements.area_px == 20 * 20 - 9
    np.testing.assert_array_equal(largest.probability, every.probability)


def test_inside_contour_keeps_the_regions_holes() -> None:
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:12, 2:12] = True
    mask[5:7, 5:7] = False
    mask[15:18, 15:18] = True
    contour, regions = lesion_contour(mask)
    kept = inside_contour(mask, contour)
    assert regions == 2 and kept.sum() == 100 - 4 and not kept[16, 16] and not kept[5, 5]


def test_of_two_near_equal_regions_the_central_one_is_the_lesion_whichever_rounding_makes_larger() -> None:
    # ISIC_0013306 in miniature: the lesion in the centre and, off-centre, a region of nearly its size.
    # Whichever of the two a form's rounding makes a few pixels larger, the mask is the central one.
    for central_side, other_side in ((40, 38), (38, 40)):
        mask = np.zeros((200, 200), dtype=bool)
        mask[100 - central_side // 2 : 100 + central_side // 2, 100 - central_side // 2 : 100 + central_side // 2] = (
            True
        )
        mask[5 : 5 + other_side, 150 : 150 + other_side] = True
        contour, regions = lesion_contour(mask)
        kept = inside_contour(mask, contour)
        assert regions == 2 and kept[100, 100] and not kept[20, 160], (central_side, other_side)


def test_a_region_clearly_larger_than_the_central_one_is_the_lesion() -> None:
    mask = np.zeros((200, 200), dtype=bool)
    mask[95:105, 95:105] = True  # central, 100 px
    mask[0:40, 150:190] = True  # off-centre, 1600 px: no near tie
    assert NEAR_TIE_AREA_SHARE * 1600 > 100
    contour, _ = lesion_contour(mask)
    kept = inside_contour(mask, contour)
    assert kept[20, 160] and not kept[100, 100]


def test_measurements_of_a_rectangle() -> None:
    mask = np.zeros((100, 200), dtype=bool)
    mask[10:40, 20:60] = True  # 30 rows x 40 columns
    contour, regions = lesion_contour(mask)
    result = measure(mask, contour, regions, mm_per_px=0.1)
    assert result.lesion_present and result.regions == 1
    assert result.area_px == 1200 and result.bbox == (20, 10, 40, 30)
    assert result.perimeter_px == pytest.approx(2 * (39 + 29))  # through the boundary pixels' centres
    assert result.max_diameter_px == pytest.approx(np.hypot(39, 29))
    assert result.area_mm2 == pytest.approx(12.0) and result.max_diameter_mm == pytest.approx(np.hypot(39, 29) * 0.1)
    empty = measure(np.zeros((5, 5), dtype=bool), None, 0)
    assert not empty.lesion_present and empty.bbox is None and empty.area_mm2 is None
    assert empty.to_dict()["bbox"] is None and result.to_dict()["bbox"] == [20, 10, 40, 30]


def test_feret_diameter_of_a_rotated_segment() -> None:
    points = np.array([[[0, 0]], [[30, 40]], [[10, 5]]], dtype=np.int32)
    assert max_feret_diameter(points) == pytest.approx(50.0)


def test_overlay_fills_the_lesion_draws_the_hud_and_reuses_its_canvas() -> None:
    image = np.full((240, 320, 3), 128, dtype=np.uint8)
    mask = np.zeros((240, 320), dtype=bool)
    mask[100:200, 150:300] = True
    contour, regions = lesion_contour(mask)
    segmentation = Segmentation(mask.astype(np.float32), mask, contour, measure(mask, contour, regions), {})
    renderer = OverlayRenderer()
    hud = HudInfo(fps=25.0, latency_ms=40.0, backend="onnxruntime-cpu", precision="fp32")
    first = renderer.render(image, segmentation, hud)
    assert not np.array_equal(first[150, 220], image[150, 220])  # inside: tinted
    assert np.array_equal(first[230, 20], image[230, 20])  # outside, away from HUD and contour: untouched
    assert first[10:40, 10:100].mean() != 128  # the HUD panel is drawn top left
    assert np.array_equal(image, np.full_like(image, 128))  # the input is left alone
    assert renderer.render(image, segmentation, hud) is first


@pytest.mark.isic
def test_segmenter_masks_agree_with_pytorch_on_real_images(isic_dir: Path, tiny_run_dir: Path, tiny_onnx: Path) -> None:
    pytest.importorskip("torch")
    from edgeseg.train.network import load_model
    from edgeseg.train.torch_backend import TorchBackend

    images = sorted((isic_dir / "ISIC2018_Task1-2_Training_Input").glob("ISIC_*.jpg"))[:4]
    if not images:
        pytest.skip(f"no ISIC images under {isic_dir}")
    model, card = load_model(tiny_run_dir)
    exported = open_segmenter(tiny_onnx, backend="onnxruntime-cpu", keep_largest=False)
    reference = Segmenter(TorchBackend(model, card), card, keep_largest=False)
    for path in images:
        image = cv2.imread(str(path))
        ours, theirs = exported.segment(image).mask, reference.segment(image).mask
        total = ours.sum() + theirs.sum()
        dice = 1.0 if total == 0 else 2 * (ours & theirs).sum() / total
        assert dice >= 0.99, f"{path.name}: Dice {dice:.4f} between onnxruntime and PyTorch masks"


@pytest.mark.parametrize(
    ("name", "image"),
    [
        ("1x1", np.full((1, 1, 3), 120, np.uint8)),
        ("grey", np.full((90, 120), 120, np.uint8)),
        ("grey, one channel", np.full((90, 120, 1), 120, np.uint8)),
        ("BGRA", np.full((90, 120, 4), 120, np.uint8)),
        ("16-bit", np.full((90, 120, 3), 120 * 257, np.uint16)),
        ("16-bit grey", np.full((90, 120), 120 * 257, np.uint16)),
        ("a strided view", np.full((90, 240, 3), 120, np.uint8)[:, ::2]),
        ("large", np.full((3000, 4000, 3), 120, np.uint8)),
    ],
)
def test_odd_frames_are_segmented_at_their_own_size(tiny_onnx: Path, name: str, image: np.ndarray) -> None:
    with open_segmenter(tiny_onnx, "onnxruntime-cpu") as segmenter:
        result = segmenter.segment(image)
        same_as_bgr = segmenter.segment(np.full((*image.shape[:2], 3), 120, np.uint8))
    assert result.mask.shape == image.shape[:2], name
    np.testing.assert_allclose(result.probability, same_as_bgr.probability, atol=1e-6, err_msg=name)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 10, 3), np.uint8), "shape"),
        (np.zeros((10, 10, 2), np.uint8), "channels"),
        (np.zeros((10, 10, 3), np.float32), "uint8 0-255 first"),
        (np.zeros((10,), np.uint8), "shape"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_frames_it_cannot_take_are_refused_with_what_to_do(tiny_onnx: Path, image, message: str) -> None:
    with open_segmenter(tiny_onnx, "onnxruntime-cpu") as segmenter, pytest.raises(FrameError, match=message):
        segmenter.segment(image)
