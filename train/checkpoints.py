"""What a training run keeps in its directory between epochs: its state (TrainState) in the checkpoint, its
settings, the logs, the card's provenance.

A checkpoint holds tensors and plain Python values only, so ``torch.load(weights_only=True)`` reads it.
The CSV logs are rewritten from the checkpointed state, so after a resume they hold exactly what the
checkpoint trained, not the steps a kill lost.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import random
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edgeseg.core.card import ModelCard, Provenance, data_name
from edgeseg.core.data import Sample
from edgeseg.core.files import atomic_output, write_text_atomic
from edgeseg.train.config import CONFIG_TOML_FILENAME, TrainConfig, settings_toml

if TYPE_CHECKING:
    from edgeseg.train.threshold import ThresholdSweep

CHECKPOINT_FILENAME = "checkpoint-last.pt"
CHECKPOINT_KEYS = frozenset({"model", "optimizer", "scaler", "state", "card", "config", "rng"})
CONFIG_FILENAME = "config.json"
ITERATION_FIELDS = ("epoch", "step", "loss", "iou", "lr", "seconds")
EPOCH_FIELDS = (
    "epoch",
    "step",
    "train_loss",
    "train_iou",
    "val_dice",
    "val_jaccard",
    "val_threshold_jaccard",
    "val_accuracy",
    "val_sensitivity",
    "val_specificity",
    "lr",
    "seconds",
)


@dataclass
class TrainState:
    """What changes as training goes, and is saved with every checkpoint."""

    epoch: int = 0  # epochs finished
    step: int = 0  # optimiser steps taken
    planned_epochs: int = 0
    best_jaccard: float = -1.0
    best_epoch: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)  # wall time of each epoch, validation included
    iterations: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)


# --- checkpoint ------------------------------------------------------------------------------------


def save_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    state: TrainState,
    card: ModelCard,
    config: TrainConfig,
    rng: list[dict[str, Any]],
) -> None:
    """Everything a resume needs after this epoch, then the logs rewritten to match it.

    ``rng`` is every rank's RNG state, in rank order.
    """
    checkpoint = {
        "model": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "state": dataclasses.asdict(state),
        "card": card.to_json(),
        "config": config.to_dict(),
        "rng": rng,
    }
    with atomic_output(run_dir / CHECKPOINT_FILENAME) as temporary:
        torch.save(checkpoint, temporary)
    write_logs(run_dir, state)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def write_config(run_dir: Path, config: TrainConfig) -> None:
    """config.json, which --resume reads, and config.toml, which `edgeseg train --config` reads to run it again."""
    write_text_atomic(run_dir / CONFIG_FILENAME, json.dumps(config.to_dict(), indent=2) + "\n")
    write_text_atomic(run_dir / CONFIG_TOML_FILENAME, settings_toml(config))


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """config.json as written by ``write_config``, or None when the run has none (ValueError if it is not one)."""
    path = run_dir / CONFIG_FILENAME
    if not path.is_file():
        return None
    stored = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(stored, dict):
        raise ValueError(f"{path}: not a JSON object")
    return stored


def capture_rng() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(item) for item in value) if isinstance(value, list | tuple) else value


# --- logs ------------------------------------------------------------------------------------------


def csv_text(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_logs(run_dir: Path, state: TrainState) -> None:
    """Rewrite the logs from the checkpointed state: a resumed run's logs drop what the kill lost."""
    write_text_atomic(run_dir / "logs" / "iterations.csv", csv_text(state.iterations, ITERATION_FIELDS))
    write_text_atomic(run_dir / "logs" / "epochs.csv", csv_text(state.epochs, EPOCH_FIELDS))


def write_threshold_log(run_dir: Path, sweep: ThresholdSweep) -> None:
    write_text_atomic(run_dir / "logs" / "threshold.csv", csv_text(sweep.rows(), ("threshold", *sweep.means)))


class IterationLog:
    """logs/iterations.csv, appended every step so a long epoch can be watched live."""

    def __init__(self, path: Path) -> None:
        self.stream = open(path, "a", encoding="utf-8", newline="")
        self.writer = csv.DictWriter(self.stream, fieldnames=ITERATION_FIELDS, lineterminator="\n")

    def writerow(self, row: dict[str, Any]) -> None:
        self.writer.writerow(row)
        self.stream.flush()

    def close(self) -> None:
        self.stream.close()


def open_iteration_log(run_dir: Path, state: TrainState) -> IterationLog:
    write_logs(run_dir, state)
    return IterationLog(run_dir / "logs" / "iterations.csv")


# --- the card's provenance -------------------------------------------------------------------------


def card_with_provenance(
    card: ModelCard,
    config: TrainConfig,
    train_samples: list[Sample],
    val_samples: list[Sample],
    state: TrainState,
    notes: str = "",
) -> ModelCard:
    return card.replace(
        provenance=Provenance(
            data=data_name(Path(config.data).resolve()),
            data_files_hash=data_files_hash(Path(config.data), [*train_samples, *val_samples]),
            split_hash=split_hash(train_samples, val_samples),
            train_images=len(train_samples),
            val_images=len(val_samples),
            epochs=state.epoch,
            best_epoch=state.best_epoch,
            val_metrics={name: round(value, 6) for name, value in state.best_metrics.items()},
            versions=versions(),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            notes=notes or training_notes(config, card.output.threshold),
        )
    )


def training_notes(config: TrainConfig, threshold: float) -> str:
    return (
        f"val_metrics: val split, each image at its own resolution, mean over images, threshold {threshold:g}. "
        f"Trained with {config.loss} loss, {config.optimizer} lr {config.lr:g} {config.schedule} schedule, "
        f"batch {config.batch_size}, {start_weights(config)}, seed {config.seed}."
    )


def start_weights(config: TrainConfig) -> str:
    if config.init_weights:
        return f"fine-tuned from the run {config.init_weights}"
    return f"encoder weights {config.encoder_weights}"


def data_files_hash(root: Path, samples: list[Sample]) -> str:
    """sha256 of the sorted list of the samples' image and mask files, relative to the data folder."""
    names = sorted(str(path.relative_to(root).as_posix()) for sample in samples for path in (sample.image, sample.mask))
    return "sha256:" + hashlib.sha256("".join(f"{name}\n" for name in names).encode()).hexdigest()


def split_hash(train_samples: list[Sample], val_samples: list[Sample]) -> str:
    text = "train\n" + "".join(f"{s.id}\n" for s in train_samples) + "val\n" + "".join(f"{s.id}\n" for s in val_samples)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def versions() -> dict[str, str]:
    import cv2
    import segmentation_models_pytorch
    import timm
    import torchvision

    from edgeseg.core.version import __version__

    return {
        "edgeseg": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "segmentation_models_pytorch": segmentation_models_pytorch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }
