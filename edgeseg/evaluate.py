"""`edgeseg eval`: ISIC metrics of a model on a data set, at each image's own resolution.

The model is anything the runtime's Segmenter can drive: a run directory (through PyTorch, by way of
the training part's TorchBackend), an ONNX file or a TensorRT engine (through the runtime). Every
form therefore shares the same preprocessing, upsampling and threshold: the card's.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click
import cv2
import numpy as np

from edgeseg.files import read_image, read_mask, write_bytes_atomic, write_mask, write_text_atomic
from edgeseg.metrics import METRIC_NAMES, image_scores, mean_scores

WORST_CASES = 6


@dataclass
class Evaluation:
    model: str
    backend: str
    split: str
    per_image: list[dict] = field(default_factory=list)
    worst_masks: dict[str, tuple[float, np.ndarray]] = field(default_factory=dict)  # id -> (Jaccard, predicted mask)

    @property
    def mean(self) -> dict[str, float]:
        return mean_scores([{name: row[name] for name in METRIC_NAMES} for row in self.per_image])

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "backend": self.backend,
            "split": self.split,
            "images": len(self.per_image),
            "resolution": "original (probability map upsampled to each image's own size)",
            "aggregation": "mean over images of per-image scores (ISIC 2018 Task 1 convention)",
            "mean": self.mean,
            "per_image": self.per_image,
        }


def evaluate(segmenter, samples, model_name: str, split: str, save_masks: Path | None = None,
             progress: bool = True) -> Evaluation:
    """Segment every sample and score it against its mask with the ISIC metrics."""
    from tqdm import tqdm

    result = Evaluation(model=model_name, backend=_backend_label(segmenter), split=split)
    for sample in tqdm(samples, desc="eval", unit="img", disable=not progress, file=sys.stderr):
        segmentation = segmenter.segment(read_image(sample.image))
        truth = read_mask(sample.mask)
        if truth.shape != segmentation.mask.shape:
            raise ValueError(
                f"{sample.mask}: mask is {truth.shape[1]}x{truth.shape[0]} but its image is "
                f"{segmentation.mask.shape[1]}x{segmentation.mask.shape[0]}; run `edgeseg data check` on the data"
            )
        result.per_image.append({"id": sample.id, **image_scores(truth, segmentation.mask)})
        keep_if_worst(result, sample.id, result.per_image[-1]["jaccard"], segmentation.mask)
        if save_masks is not None:
            write_mask(save_masks / f"{sample.id}_segmentation.png", segmentation.mask)
    return result


def keep_if_worst(evaluation: Evaluation, image_id: str, jaccard: float, mask: np.ndarray,
                  count: int = WORST_CASES) -> None:
    """Keep the predicted masks of the ``count`` lowest-Jaccard images so far, for the worst-cases picture."""
    evaluation.worst_masks[image_id] = (jaccard, mask)
    if len(evaluation.worst_masks) > count:
        del evaluation.worst_masks[max(evaluation.worst_masks, key=lambda key: evaluation.worst_masks[key][0])]


def _backend_label(segmenter) -> str:
    backend = segmenter.backend
    return f"{backend.name} ({backend.precision})"


def per_image_csv(evaluation: Evaluation) -> str:
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=["id", *METRIC_NAMES], lineterminator="\n")
    writer.writeheader()
    writer.writerows(evaluation.per_image)
    return stream.getvalue()


def summary_table(evaluation: Evaluation) -> str:
    lines = [
        f"{evaluation.model} on {evaluation.split} ({len(evaluation.per_image)} images), backend {evaluation.backend}",
        "metric              mean    min",
    ]
    for name in METRIC_NAMES:
        values = [row[name] for row in evaluation.per_image]
        lines.append(f"{name:<18} {np.mean(values):6.4f} {np.min(values):6.4f}")
    lines.append("per image at original resolution, then the mean over images (ISIC convention)")
    return "\n".join(lines)


def worst_cases_image(evaluation: Evaluation, samples, tile: int = 256) -> np.ndarray:
    """A strip per worst image (lowest Jaccard): the image, the truth outline, the prediction outline."""
    by_id = {sample.id: sample for sample in samples}
    worst = sorted((row for row in evaluation.per_image if row["id"] in evaluation.worst_masks),
                   key=lambda row: row["jaccard"])
    rows = []
    for row in worst:
        sample = by_id[row["id"]]
        image = read_image(sample.image)
        truth = read_mask(sample.mask)
        predicted = evaluation.worst_masks[row["id"]][1]
        panels = [image, _outlined(image, truth, (0, 255, 0)), _outlined(image, predicted, (0, 0, 255))]
        panels = [cv2.resize(panel, (tile, tile), interpolation=cv2.INTER_AREA) for panel in panels]
        caption = f"{row['id']}  Jaccard {row['jaccard']:.3f}  Dice {row['dice']:.3f}"
        cv2.putText(panels[0], caption, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(np.hstack(panels))
    return np.vstack(rows)


def _outlined(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    out = image.copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(2, image.shape[1] // 200)
    cv2.drawContours(out, contours, -1, color, thickness, cv2.LINE_AA)
    return out


def open_segmenter(model: str, backend: str):
    """A Segmenter for a run directory (PyTorch) or an exported file (the runtime)."""
    from edgeseg.runtime.segmenter import Segmenter

    path = Path(model)
    if path.is_dir():
        try:
            from edgeseg.train.model import load_model
            from edgeseg.train.torch_backend import TorchBackend
        except ImportError as error:
            raise click.ClickException(
                f"evaluating a run directory needs PyTorch ({error.name} is missing): "
                f"pip install 'edgeseg[train]', or evaluate its exported model.onnx instead"
            ) from None
        network, card = load_model(path)
        device = "cpu" if backend in ("auto", "cpu", "torch") else backend
        return Segmenter(TorchBackend(network, card, device=device), card)
    return Segmenter.from_path(path, backend=backend)


EXAMPLE = """\b
Examples:
  edgeseg eval --model runs/lite0 --data ../shared/data/isic2018 --split val
  edgeseg eval --model runs/lite0/model.onnx --data ../shared/data/isic2018 --json eval.json
  edgeseg eval --model runs/lite0 --data DIR --save-masks preds/   # PNGs the ISIC scorer accepts
"""


@click.command("eval", epilog=EXAMPLE)
@click.option("--model", "model", required=True, help="Run directory (PyTorch), model.onnx, or a TensorRT .engine.")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Data set folder (ISIC layout or images/ + masks/).")
@click.option("--split", default="val", show_default=True,
              help="Split to evaluate (a file <split>.txt in the split folder), or 'all'.")
@click.option("--split-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of split files (default: DATA/splits).")
@click.option("--backend", default="auto", show_default=True,
              help="auto, or a runtime backend (onnxruntime-cpu, onnxruntime-cuda, tensorrt); cpu/cuda for a run directory.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for per-image.csv and worst-cases.png (default: beside the model, eval-<split>/).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write {mean, per_image, ...} as JSON here.")
@click.option("--save-masks", type=click.Path(file_okay=False, path_type=Path),
              help="Write ISIC_nnnnnnn_segmentation.png masks (0/255, original size) here.")
def eval_command(model: str, data_dir: Path, split: str, split_dir: Path | None, backend: str,
                 out_dir: Path | None, json_path: Path | None, save_masks: Path | None) -> None:
    """Score a model on a data set with the official ISIC 2018 metrics.

    Each image is segmented, its probability map resized back to the image's own resolution and
    thresholded at the model card's threshold; Jaccard, thresholded Jaccard, Dice, sensitivity,
    specificity and accuracy are computed per image, then averaged over images, as the official
    scorer does.
    """
    from edgeseg.data import DataError, require_usable

    try:
        samples = require_usable(data_dir, split=None if split == "all" else split, split_dir=split_dir)
    except DataError as error:
        raise click.ClickException(str(error)) from None
    segmenter = open_segmenter(model, backend)
    evaluation = evaluate(segmenter, samples, model_name=str(model), split=split, save_masks=save_masks)

    model_path = Path(model)
    out_dir = out_dir or (model_path if model_path.is_dir() else model_path.parent) / f"eval-{split}"
    write_text_atomic(out_dir / "per-image.csv", per_image_csv(evaluation))
    ok, png = cv2.imencode(".png", worst_cases_image(evaluation, samples))
    if ok:
        write_bytes_atomic(out_dir / "worst-cases.png", png.tobytes())
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(evaluation.to_dict(), indent=2) + "\n")
    click.echo(summary_table(evaluation))
    click.echo(f"per-image results: {out_dir / 'per-image.csv'}; worst cases: {out_dir / 'worst-cases.png'}")
