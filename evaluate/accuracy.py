"""Accuracy of a model on a data set: the ISIC metrics per image at its own resolution, then the mean.

The model is any Segmenter (``edgeseg.loading.open.open_model``): a run directory through PyTorch,
an ONNX file or a TensorRT engine through the runtime. Every form therefore shares the same
preprocessing, upsampling and threshold: the card's. `edgeseg eval` and `edgeseg bench --data` use it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgeseg.core.files import portable_path, read_image, read_mask, write_mask
from edgeseg.core.metrics import (
    BOOTSTRAP_RESAMPLES,
    METRIC_NAMES,
    Interval,
    bootstrap_interval,
    image_scores,
    mean_scores,
    paired_differences,
)
from edgeseg.core.progress import progress as track

WORST_CASES = 6


@dataclass
class Evaluation:
    model: str
    backend: str
    split: str
    per_image: list[dict] = field(default_factory=list)
    postprocess: dict = field(default_factory=dict)  # the Segmenter's options: tta, fill_holes, refine
    worst_masks: dict[str, tuple[float, np.ndarray]] = field(default_factory=dict)  # id -> (Jaccard, predicted mask)

    @property
    def mean(self) -> dict[str, float]:
        return mean_scores([{name: row[name] for name in METRIC_NAMES} for row in self.per_image])

    @property
    def intervals(self) -> dict[str, Interval]:
        """Each metric's mean over images with its 95% bootstrap interval (images resampled)."""
        return {name: bootstrap_interval(row[name] for row in self.per_image) for name in METRIC_NAMES}

    def scores_by_id(self) -> dict[str, dict[str, float]]:
        return {row["id"]: row for row in self.per_image}

    def to_dict(self) -> dict:
        return {
            "model": portable_path(self.model),
            "backend": self.backend,
            "split": self.split,
            "images": len(self.per_image),
            "resolution": "original (probability map upsampled to each image's own size)",
            "postprocess": self.postprocess,
            "aggregation": "mean over images of per-image scores (ISIC 2018 Task 1 convention)",
            "mean": self.mean,
            "intervals": {name: interval.to_dict() for name, interval in self.intervals.items()},
            "interval": INTERVAL_METHOD,
            "per_image": self.per_image,
        }


INTERVAL_METHOD = (
    f"95% percentile bootstrap of the mean: the images resampled with replacement "
    f"{BOOTSTRAP_RESAMPLES} times, the 2.5th and 97.5th percentiles of the resampled means"
)


def paired_comparison(evaluation: Evaluation, against: Evaluation) -> dict[str, Interval]:
    """Per metric, ``evaluation`` minus ``against`` on the same images: the mean difference and its interval.

    Paired by image, so what varies from image to image (most of the spread) cancels; "better" means the
    interval lies above 0.
    """
    return paired_differences(against.scores_by_id(), evaluation.scores_by_id())


def verdict(difference: Interval) -> str:
    if not difference.excludes_zero:
        return "no difference shown (the interval holds 0)"
    return "better" if difference.low > 0 else "worse"


def comparison_dict(evaluation: Evaluation, against: Evaluation) -> dict:
    differences = paired_comparison(evaluation, against)
    return {
        "against": portable_path(against.model),
        "against_mean": against.mean,
        "difference": f"{portable_path(evaluation.model)} minus {portable_path(against.model)}, per image, "
        "then the mean",
        "differences": {name: interval.to_dict() for name, interval in differences.items()},
        "verdicts": {name: verdict(interval) for name, interval in differences.items()},
        "interval": INTERVAL_METHOD,
    }


def comparison_table(evaluation: Evaluation, against: Evaluation) -> str:
    differences = paired_comparison(evaluation, against)
    lines = [
        f"{evaluation.model} minus {against.model}, paired on the same {len(evaluation.per_image)} images "
        f"({evaluation.split})",
        "metric              difference [95% interval]       verdict",
    ]
    for name, difference in differences.items():
        lines.append(f"{name:<18} {str(difference):<32} {verdict(difference)}")
    return "\n".join(lines)


@dataclass(frozen=True)
class LabelledImage:
    """One image to score: its id, the BGR pixels and the ground-truth mask at the same size."""

    id: str
    image: np.ndarray
    truth: np.ndarray
    source: str  # the file (or files) it came from, for error messages


def read_samples(samples) -> Iterator[LabelledImage]:
    """The data set's image/mask pairs, read one at a time."""
    for sample in samples:
        yield LabelledImage(sample.id, read_image(sample.image), read_mask(sample.mask), str(sample.mask))


def evaluate(
    segmenter, samples, model_name: str, split: str, save_masks: Path | None = None, progress: bool = True
) -> Evaluation:
    """Segment every sample (image and mask files) and score it against its mask with the ISIC metrics."""
    return evaluate_images(
        segmenter, read_samples(samples), model_name, split, save_masks, progress, total=len(samples)
    )


def evaluate_images(
    segmenter,
    images: Iterable[LabelledImage],
    model_name: str,
    split: str,
    save_masks: Path | None = None,
    progress: bool = True,
    total: int | None = None,
) -> Evaluation:
    """Segment every image and score it against its truth, each at the image's own resolution."""
    result = Evaluation(
        model=model_name, backend=_backend_label(segmenter), split=split, postprocess=_postprocess_options(segmenter)
    )
    for item in track(images, desc=f"eval {split}", unit="img", total=total, enabled=progress):
        segmentation = segmenter.segment(item.image)
        if item.truth.shape != segmentation.mask.shape:
            raise ValueError(
                f"{item.source}: mask is {item.truth.shape[1]}x{item.truth.shape[0]} but its image is "
                f"{segmentation.mask.shape[1]}x{segmentation.mask.shape[0]}; run `edgeseg data check` on the data"
            )
        result.per_image.append({"id": item.id, **image_scores(item.truth, segmentation.mask)})
        keep_if_worst(result, item.id, result.per_image[-1]["jaccard"], segmentation.mask)
        if save_masks is not None:
            write_mask(save_masks / f"{item.id}_segmentation.png", segmentation.mask)
    return result


def keep_if_worst(
    evaluation: Evaluation, image_id: str, jaccard: float, mask: np.ndarray, count: int = WORST_CASES
) -> None:
    """Keep the predicted masks of the ``count`` lowest-Jaccard images so far, for the worst-cases picture."""
    evaluation.worst_masks[image_id] = (jaccard, mask)
    if len(evaluation.worst_masks) > count:
        del evaluation.worst_masks[max(evaluation.worst_masks, key=lambda key: evaluation.worst_masks[key][0])]


def _backend_label(segmenter) -> str:
    backend = segmenter.backend
    return f"{backend.name} ({backend.precision})"


def _postprocess_options(segmenter) -> dict:
    """The Segmenter's mask options that change the figures (a test double may have none)."""
    return {name: getattr(segmenter, name) for name in ("tta", "fill_holes", "refine") if hasattr(segmenter, name)}


def per_image_csv(evaluation: Evaluation) -> str:
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=["id", *METRIC_NAMES], lineterminator="\n")
    writer.writeheader()
    writer.writerows(evaluation.per_image)
    return stream.getvalue()


def summary_table(evaluation: Evaluation) -> str:
    options = "".join(f", {name} {value}" for name, value in evaluation.postprocess.items())
    images = len(evaluation.per_image)
    lines = [
        f"{evaluation.model} on {evaluation.split} ({images} images), backend {evaluation.backend}{options}",
        "metric              mean    [95% interval]     min",
    ]
    for name, interval in evaluation.intervals.items():
        lowest = min(row[name] for row in evaluation.per_image)
        lines.append(f"{name:<18} {interval.mean:6.4f}  [{interval.low:6.4f}, {interval.high:6.4f}]  {lowest:6.4f}")
    lines.append(
        "per image at original resolution, then the mean over images (ISIC convention); the interval: "
        "images resampled (bootstrap)"
    )
    return "\n".join(lines)


TRUTH_COLOUR = (0, 255, 0)  # BGR green: the ground truth's outline
PREDICTION_COLOUR = (0, 0, 255)  # BGR red: the prediction's outline
LEGEND_HEIGHT = 26


def worst_cases_image(evaluation: Evaluation, samples, tile: int = 256) -> np.ndarray:
    """A strip per worst image (lowest Jaccard): the image, the truth outline, the prediction outline; a legend
    on top."""
    by_id = {sample.id: sample for sample in samples}
    worst = sorted(
        (row for row in evaluation.per_image if row["id"] in evaluation.worst_masks), key=lambda row: row["jaccard"]
    )
    rows = []
    for row in worst:
        sample = by_id[row["id"]]
        image = read_image(sample.image)
        truth = read_mask(sample.mask)
        predicted = evaluation.worst_masks[row["id"]][1]
        panels = [image, _outlined(image, truth, TRUTH_COLOUR), _outlined(image, predicted, PREDICTION_COLOUR)]
        panels = [cv2.resize(panel, (tile, tile), interpolation=cv2.INTER_AREA) for panel in panels]
        caption = f"{row['id']}  Jaccard {row['jaccard']:.3f}  Dice {row['dice']:.3f}"
        cv2.putText(panels[0], caption, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(np.hstack(panels))
    return np.vstack([legend_band(tile), *rows])


def legend_band(tile: int) -> np.ndarray:
    """What each column shows, above them: each outline's colour drawn beside its name."""
    band = np.zeros((LEGEND_HEIGHT, 3 * tile, 3), np.uint8)
    columns = [
        ("image, worst Jaccard first", None),
        ("ground truth (green outline)", TRUTH_COLOUR),
        ("prediction (red outline)", PREDICTION_COLOUR),
    ]
    for index, (text, colour) in enumerate(columns):
        x = index * tile + 6
        if colour is not None:
            cv2.line(band, (x, LEGEND_HEIGHT // 2), (x + 18, LEGEND_HEIGHT // 2), colour, 3, cv2.LINE_AA)
            x += 24
        cv2.putText(
            band,
            text,
            (x, LEGEND_HEIGHT // 2 + 5),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            colour or (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return band


def _outlined(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    out = image.copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(2, image.shape[1] // 200)
    cv2.drawContours(out, contours, -1, color, thickness, cv2.LINE_AA)
    return out
