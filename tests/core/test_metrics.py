"""edgeseg.core.metrics against the official ISIC scorer (isic-challenge-scoring), to 1e-9."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeseg.core.files import read_mask, write_mask
from edgeseg.core.metrics import METRIC_NAMES, Confusion, confusion, image_scores, mean_scores

scoring = pytest.importorskip("isic_challenge_scoring.segmentation", reason="pip install 'edgeseg[dev]'")
load_image = pytest.importorskip("isic_challenge_scoring.load_image")

TOLERANCE = 1e-9

# The scorer (5.6.0) calls Series.rename(inplace=True), which newer pandas deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in Series.rename:DeprecationWarning")


def official_pair(image_id: str, truth: np.ndarray, prediction: np.ndarray):
    """An ImagePair as the scorer builds it from files: 0/255 uint8 greyscale arrays."""
    pair = load_image.ImagePair(truth_file=Path(f"{image_id}_segmentation.png"))
    pair.image_id = image_id
    pair.truth_image = np.where(truth, 255, 0).astype(np.uint8)
    pair.prediction_image = np.where(prediction, 255, 0).astype(np.uint8)
    return pair


def official_scores(pairs) -> dict[str, float]:
    return dict(scoring.SegmentationScore(pairs).macro_average)


def assert_matches_scorer(cases: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Each image's scores and the mean over images equal the official scorer's."""
    pairs = [official_pair(f"ISIC_{index:07d}", truth, prediction) for index, (truth, prediction) in enumerate(cases)]
    ours = [image_scores(truth, prediction) for truth, prediction in cases]
    for pair, scores in zip(pairs, ours, strict=True):
        expected = official_scores([pair])
        for name in METRIC_NAMES:
            assert scores[name] == pytest.approx(expected[name], abs=TOLERANCE), (pair.image_id, name)
    expected_mean = official_scores(pairs)
    mean = mean_scores(ours)
    for name in METRIC_NAMES:
        assert mean[name] == pytest.approx(expected_mean[name], abs=TOLERANCE), name


def square(shape: tuple[int, int], top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_edge_cases_match_the_official_scorer() -> None:
    shape = (37, 53)  # odd, non-square: catches transposed or flattened counting
    empty = np.zeros(shape, bool)
    full = np.ones(shape, bool)
    one_pixel = np.zeros(shape, bool)
    one_pixel[5, 7] = True
    other_pixel = np.zeros(shape, bool)
    other_pixel[30, 50] = True
    cases = [
        (empty, empty),  # every freebie at once
        (empty, one_pixel),  # empty truth, a false positive
        (one_pixel, empty),  # lesion missed
        (full, full),  # specificity freebie
        (full, empty),
        (empty, full),
        (one_pixel, one_pixel),
        (one_pixel, other_pixel),  # non-overlapping single pixels
        (square(shape, 0, 0, 10), square(shape, 20, 30, 10)),  # non-overlapping blobs
        (square(shape, 5, 5, 20), square(shape, 8, 8, 20)),  # overlap with Jaccard near the 0.65 cut
        (square(shape, 5, 5, 20), square(shape, 5, 5, 19)),  # Jaccard above 0.65
    ]
    assert_matches_scorer(cases)


def test_random_masks_match_the_official_scorer() -> None:
    rng = np.random.default_rng(2018)
    cases = []
    for _ in range(30):
        shape = tuple(int(side) for side in rng.integers(1, 80, size=2))
        truth = rng.random(shape) < rng.random()
        prediction = np.where(rng.random(shape) < 0.2, ~truth, truth)  # flip a fifth of the pixels
        cases.append((truth, prediction))
    assert_matches_scorer(cases)


def test_freebies_and_threshold_follow_the_scorer_conventions() -> None:
    empty = np.zeros((4, 4), bool)
    assert image_scores(empty, empty) == {name: 1.0 for name in METRIC_NAMES}
    scores = image_scores(empty, square((4, 4), 0, 0, 1))
    assert scores["sensitivity"] == 1.0 and scores["jaccard"] == 0.0 and scores["dice"] == 0.0
    assert scores["specificity"] == 15 / 16
    # A 4x4 prediction inside a 5x5 lesion: Jaccard 16/25 = 0.64, below the 0.65 cut, so thresholded to 0.
    truth, prediction = square((8, 8), 0, 0, 5), square((8, 8), 0, 0, 4)
    assert image_scores(truth, prediction)["jaccard"] == pytest.approx(0.64)
    assert image_scores(truth, prediction)["threshold_jaccard"] == 0.0


def test_confusion_counts_and_input_checks() -> None:
    truth = np.array([[True, True, False, False]])
    prediction = np.array([[True, False, True, False]])
    assert confusion(truth, prediction) == Confusion(tp=1, tn=1, fp=1, fn=1)
    with pytest.raises(TypeError, match="mask > 128"):
        confusion(truth.astype(np.uint8) * 255, prediction)
    with pytest.raises(ValueError, match="image's own resolution"):
        confusion(truth, prediction.T)
    with pytest.raises(ValueError, match="no images"):
        mean_scores([])


@pytest.mark.isic
def test_real_isic_masks_match_the_official_scorer_from_files(isic_dir: Path, tmp_path: Path) -> None:
    """20 real masks against eroded, dilated, shifted, empty and full versions, read from PNG files.

    The scorer reads the files with PIL, we read them with OpenCV (read_mask): the whole path agrees.
    """
    truth_files = sorted((isic_dir / "ISIC2018_Task1_Training_GroundTruth").glob("*_segmentation.png"))[:20]
    truth_dir, prediction_dir = tmp_path / "truth", tmp_path / "prediction"
    truth_dir.mkdir()
    kernel = np.ones((15, 15), np.uint8)
    cases = []
    for index, truth_file in enumerate(truth_files):
        shutil.copy(truth_file, truth_dir / truth_file.name)  # a temporary copy for the scorer's folder walk
        truth = read_mask(truth_file)
        as_uint8 = truth.astype(np.uint8)
        variants = [
            cv2.erode(as_uint8, kernel).astype(bool),
            cv2.dilate(as_uint8, kernel).astype(bool),
            np.roll(truth, (index * 7, -index * 5), axis=(0, 1)),
            np.zeros_like(truth),
            np.ones_like(truth),
        ]
        prediction = variants[index % len(variants)]
        write_mask(prediction_dir / truth_file.name, prediction)
        cases.append((truth_file, read_mask(truth_file), read_mask(prediction_dir / truth_file.name)))

    ours = [image_scores(truth, prediction) for _, truth, prediction in cases]
    official_mean = dict(scoring.SegmentationScore.from_dir(truth_dir, prediction_dir).macro_average)
    mean = mean_scores(ours)
    for name in METRIC_NAMES:
        assert mean[name] == pytest.approx(official_mean[name], abs=TOLERANCE), name

    for (truth_file, _, _), scores in zip(cases, ours, strict=True):
        pair = load_image.ImagePair(truth_file=truth_file)
        pair.parse_image_id()
        pair.find_prediction_file(prediction_dir)
        pair.load_truth_image()
        pair.load_prediction_image()
        expected = official_scores([pair])
        for name in METRIC_NAMES:
            assert scores[name] == pytest.approx(expected[name], abs=TOLERANCE), (truth_file.name, name)
    # The variants really differ from the truth, so the comparison is not trivially all ones.
    assert 0.1 < mean["jaccard"] < 0.95


# ---- intervals ----------------------------------------------------------------------------------


def test_bootstrap_interval_of_a_constant_is_the_constant_and_of_a_coin_is_about_two_standard_errors():
    from edgeseg.core.metrics import bootstrap_interval

    constant = bootstrap_interval([0.25] * 50)
    assert (constant.mean, constant.low, constant.high, constant.images) == (0.25, 0.25, 0.25, 50)
    # 400 fair coin flips: mean 0.5, standard error 0.025, so the 95% interval is about 0.5 -/+ 1.96 * 0.025.
    coin = bootstrap_interval([0.0, 1.0] * 200)
    assert coin.mean == 0.5 and abs(coin.low - 0.451) < 0.01 and abs(coin.high - 0.549) < 0.01
    assert coin.excludes_zero and not bootstrap_interval([-1.0, 1.0] * 200).excludes_zero
    assert bootstrap_interval([0.0, 1.0] * 200) == coin  # the same seed, the same interval


def test_paired_differences_pair_images_by_id_and_tell_a_real_gain_from_noise():
    from edgeseg.core.metrics import paired_differences

    rng = np.random.default_rng(1)
    base = {f"ISIC_{i}": {"dice": float(value)} for i, value in enumerate(rng.uniform(0.5, 1.0, 300))}
    better = {i: {"dice": scores["dice"] + 0.01} for i, scores in base.items()}  # every image gains 0.01
    noisy = {i: {"dice": scores["dice"] + float(rng.normal(0, 0.05))} for i, scores in base.items()}
    gain = paired_differences(base, better, ["dice"])["dice"]
    assert gain.mean == pytest.approx(0.01) and gain.low == pytest.approx(0.01) and gain.excludes_zero
    noise = paired_differences(base, noisy, ["dice"])["dice"]
    assert noise.low < 0 < noise.high and not noise.excludes_zero
    # Unpaired, the same gain would drown in the spread between images: pairing is the point.
    assert str(gain).startswith("+0.0100 [")
    with pytest.raises(ValueError, match="same images"):
        paired_differences(base, {"ISIC_x": {"dice": 1.0}}, ["dice"])
