"""A training run's settings, TrainConfig: torch-free, so `edgeseg train --help` shows its defaults from here.

The loop (train.loop) runs a TrainConfig; the command line (train.cli) reads each option's default from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

LITE0_ENCODER = "tu-tf_efficientnet_lite0"  # the default edge encoder (train.encoders holds its weights)


@dataclass(frozen=True)
class TrainConfig:
    data: str
    out: str
    split_dir: str | None = None
    epochs: int = 40  # an upper bound when time_budget_minutes is set
    batch_size: int = 8
    size: tuple[int, int] = (256, 256)
    lr: float = 1e-3
    min_lr_factor: float = 0.01  # cosine ends at lr * this
    warmup_epochs: int = 1  # cosine: linear warm-up from lr / 10 over this many epochs
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw | adam
    schedule: str = "cosine"  # cosine | step
    step_epoch: int = 10  # step: lr * step_factor from this epoch on (1-based epochs after it)
    step_factor: float = 0.1
    loss: str = "dice+bce"
    encoder: str = LITE0_ENCODER
    encoder_weights: str = "imagenet"  # imagenet | none | path to a .safetensors state dict of the encoder
    init_weights: str | None = None  # a trained run directory to fine-tune: every weight and its preprocessing
    decoder_channels: tuple[int, int] = (128, 64)  # FPN pyramid, segmentation channels
    augment: bool = True
    camera_framing: float = 0.3  # share of training samples placed in a full camera frame (CameraFraming)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N (the command line: --backend auto | torch-cpu | torch-cuda)
    time_budget_minutes: float | None = None
    threads: int | None = None
    workers: int = 0
    stop_after_epochs: int | None = None  # leave the run as a kill would, after this many epochs (tests)
    sample_log: str | None = None  # append "rank id" for every training sample drawn (tests)
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        values = dict(data)
        for name in ("size", "decoder_channels"):  # JSON and checkpoints store tuples as lists
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


def default_of(name: str) -> Any:
    """The default of TrainConfig field ``name``."""
    return next(field.default for field in dataclasses.fields(TrainConfig) if field.name == name)
