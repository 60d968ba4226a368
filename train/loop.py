"""The training loop, top to bottom: data, model, optimiser, epochs, validation, checkpoints, threshold.

A run directory holds:
    model.safetensors      the weights of the best epoch by validation IoU (the paper's rule)
    card.json              how to use them (input size, preprocessing, threshold) and where they came from
    checkpoint-last.pt     everything needed to resume after the last finished epoch (tensors only)
    config.json            the training configuration
    logs/iterations.csv    loss, IoU and learning rate of every iteration
    logs/epochs.csv        per-epoch train loss/IoU and validation metrics (original resolution)
    logs/threshold.csv     the threshold analysis
    plots/*.png            loss and IoU curves (the paper's figures 5 and 6), threshold analysis

Under ``torchrun`` the same loop runs in every process with DistributedDataParallel; only rank 0
validates and writes.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from edgeseg.card import ModelCard, Provenance, save_card
from edgeseg.data import Sample, require_usable
from edgeseg.files import atomic_output, write_text_atomic
from edgeseg.train.dataset import AugmentedImages, ValImages, decode_train, decode_val, normalize_batch
from edgeseg.train.encoders import LITE0_ENCODER, encoder_preprocessing, load_encoder_weights
from edgeseg.train.losses import build_loss
from edgeseg.train.model import WEIGHTS_FILENAME, build_model, save_weights
from edgeseg.train.threshold import ThresholdSweep, scores_at, sweep_thresholds

CHECKPOINT_FILENAME = "checkpoint-last.pt"
CONFIG_FILENAME = "config.json"
ITERATION_FIELDS = ("epoch", "step", "loss", "iou", "lr", "seconds")
EPOCH_FIELDS = ("epoch", "step", "train_loss", "train_iou", "val_dice", "val_jaccard", "val_threshold_jaccard",
                "val_accuracy", "val_sensitivity", "val_specificity", "lr", "seconds")


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
    decoder_channels: tuple[int, int] = (128, 64)  # FPN pyramid, segmentation channels
    augment: bool = True
    camera_framing: float = 0.3  # share of training samples placed in a full camera frame (CameraFraming)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
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
        values["size"] = tuple(values["size"])
        values["decoder_channels"] = tuple(values["decoder_channels"])
        return cls(**values)


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


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


@dataclass
class TrainResult:
    run_dir: Path
    card: ModelCard
    state: TrainState
    sweep: ThresholdSweep | None


class TrainingError(RuntimeError):
    """A training run that cannot start or continue (bad resume directory, too little data)."""


def train(config: TrainConfig) -> TrainResult:
    """Train from scratch into ``config.out`` (created; must not hold a run already)."""
    run_dir = Path(config.out)
    if (run_dir / CHECKPOINT_FILENAME).exists():
        raise TrainingError(f"{run_dir} already holds a training run; continue it with --resume {run_dir} "
                            "or choose another --out")
    return _run(config, checkpoint=None)


def resume(run_dir: str | Path, progress: bool = True) -> TrainResult:
    """Continue a run exactly where its last checkpoint left it (model, optimiser, schedule, epoch, RNG)."""
    path = Path(run_dir) / CHECKPOINT_FILENAME
    if not path.is_file():
        raise TrainingError(f"{path}: no checkpoint to resume from; --resume takes a run directory made by "
                            "`edgeseg train`")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    config = TrainConfig.from_dict({**checkpoint["config"], "out": str(run_dir), "progress": progress,
                                    "stop_after_epochs": None})
    return _run(config, checkpoint=checkpoint)


def _run(config: TrainConfig, checkpoint: dict[str, Any] | None) -> TrainResult:
    ddp = setup_distributed(config.device)
    device = pick_device(config.device, ddp)
    torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 1) // ddp.local_world_size))
    run_dir = Path(config.out)
    show = config.progress and ddp.is_main

    seed_everything(config.seed)
    card = make_card(config)
    train_samples, val_samples = load_samples(config, show)
    train_data = decode_train(train_samples, card, progress=show)
    val_data = decode_val(val_samples, card, progress=show) if ddp.is_main else None
    if len(train_samples) // ddp.world_size < config.batch_size:
        raise TrainingError(f"{len(train_samples)} training images are too few for --batch-size {config.batch_size} "
                            f"on {ddp.world_size} process(es); lower --batch-size")

    model = build_model(card)
    if checkpoint is None and config.encoder_weights != "none":
        load_encoder_weights(model, config.encoder, config.encoder_weights)
    model = model.to(device, memory_format=torch.channels_last)
    network = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if ddp.enabled else model
    optimizer = build_optimizer(config, model)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_function = build_loss(config.loss)

    dataset = AugmentedImages(train_data, augment=config.augment, camera_framing=config.camera_framing)
    sampler = DistributedSampler(dataset, num_replicas=ddp.world_size, rank=ddp.rank, shuffle=True, seed=config.seed)
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, drop_last=True,
                        num_workers=config.workers, persistent_workers=config.workers > 0)
    steps_per_epoch = len(loader)

    state = TrainState(planned_epochs=config.epochs)
    if checkpoint is None:
        torch.manual_seed(config.seed + ddp.rank)  # the same initial weights everywhere, different augmentation
        if ddp.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(run_dir / CONFIG_FILENAME, json.dumps(config.to_dict(), indent=2) + "\n")
    else:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        state = TrainState(**checkpoint["state"])
        card = ModelCard.from_dict(json.loads(checkpoint["card"]), source=str(run_dir / CHECKPOINT_FILENAME))
        restore_rng(checkpoint["rng"][ddp.rank] if ddp.rank < len(checkpoint["rng"]) else checkpoint["rng"][0])

    sample_log = open(config.sample_log, "a", encoding="utf-8") if config.sample_log else None  # noqa: SIM115
    iteration_log = open_iteration_log(run_dir, state) if ddp.is_main else None
    session_start = time.monotonic() - state.train_seconds
    budget = config.time_budget_minutes * 60 if config.time_budget_minutes else math.inf
    out_of_time = False

    while state.epoch < state.planned_epochs and not out_of_time:
        epoch = state.epoch + 1
        epoch_start = time.monotonic()
        network.train()
        sampler.set_epoch(epoch)
        losses, ious = [], []
        bar = tqdm(loader, desc=f"epoch {epoch}/{state.planned_epochs}", unit="step", disable=not show,
                   dynamic_ncols=True)
        for images, masks, indices in bar:
            lr = learning_rate(config, state.step, steps_per_epoch, state.planned_epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs = normalize_batch(images.to(device, non_blocking=True), card).contiguous(
                memory_format=torch.channels_last)
            masks = masks.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                logits = network(inputs)
                loss = loss_function(logits.float(), masks)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            state.step += 1

            loss_value, iou = float(loss.detach()), batch_iou(logits.detach(), masks)
            losses.append(loss_value)
            ious.append(iou)
            if sample_log is not None:
                sample_log.write("".join(f"{ddp.rank} {train_data.ids[i]}\n" for i in indices.tolist()))
            if iteration_log is not None:
                row = {"epoch": epoch, "step": state.step, "loss": loss_value, "iou": iou, "lr": lr,
                       "seconds": round(time.monotonic() - session_start, 3)}
                state.iterations.append(row)
                iteration_log.writerow(row)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", iou=f"{np.mean(ious[-50:]):.3f}", lr=f"{lr:.2e}")
            out_of_time = math.isfinite(budget) and broadcast_flag(time.monotonic() - session_start > budget, ddp)
            if out_of_time:
                break
        bar.close()
        if out_of_time and show:
            print(f"time budget of {config.time_budget_minutes} min spent during epoch {epoch}: "
                  f"validating what it trained, then stopping", file=sys.stderr)

        state.epoch = epoch
        if ddp.is_main:
            metrics = scores_at(predict_probabilities(model, val_data, card, device, config.batch_size),
                                val_data.truths, card, card.output.threshold)
            state.epochs.append({
                "epoch": epoch, "step": state.step, "train_loss": float(np.mean(losses)),
                "train_iou": float(np.mean(ious)), **{f"val_{name}": value for name, value in metrics.items()},
                "lr": lr, "seconds": round(time.monotonic() - session_start, 3),
            })
            if metrics["jaccard"] > state.best_jaccard:
                state.best_jaccard, state.best_epoch, state.best_metrics = metrics["jaccard"], epoch, metrics
                card = card_with_provenance(card, config, train_samples, val_samples, state)
                save_weights(model, run_dir / WEIGHTS_FILENAME)
                save_card(card, run_dir)
            if show:
                print(f"epoch {epoch}: val dice {metrics['dice']:.4f} jaccard {metrics['jaccard']:.4f} "
                      f"thresholded jaccard {metrics['threshold_jaccard']:.4f} (best epoch {state.best_epoch}, "
                      f"{(time.monotonic() - epoch_start) / 60:.1f} min)", file=sys.stderr)
        state.epoch_seconds.append(time.monotonic() - epoch_start)
        if math.isfinite(budget):
            state.planned_epochs = broadcast_int(
                plan_epochs(config, budget, time.monotonic() - session_start, state.epoch_seconds), ddp)
        state.train_seconds = time.monotonic() - session_start
        save_checkpoint(run_dir, model, optimizer, scaler, state, card, config, ddp)
        if config.stop_after_epochs is not None and epoch >= config.stop_after_epochs:
            break  # as if killed here: the run dir is what a kill after this checkpoint leaves

    if sample_log is not None:
        sample_log.close()
    if iteration_log is not None:
        iteration_log.close()
    stopped_early = config.stop_after_epochs is not None and state.epoch < state.planned_epochs and not out_of_time
    sweep = None
    if ddp.is_main and not stopped_early:
        card, sweep = finish_run(run_dir, card, config, state, val_data, device)
    if ddp.enabled:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(run_dir, card, state, sweep)


# --- set-up ---------------------------------------------------------------------------------------

def setup_distributed(device: str) -> Distributed:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): nccl on CUDA, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Distributed(rank=dist.get_rank(), world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                       local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size))))


def pick_device(name: str, ddp: Distributed) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError(f"--device {name}: PyTorch sees no CUDA GPU here; use --device cpu")
        index = ddp.local_rank if name == "cuda" else torch.device(name).index
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if name != "cpu":
        raise TrainingError(f"--device {name}: expected auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_card(config: TrainConfig) -> ModelCard:
    pyramid, segmentation = config.decoder_channels
    return ModelCard(
        encoder=config.encoder,
        architecture_kwargs={"decoder_pyramid_channels": pyramid, "decoder_segmentation_channels": segmentation},
        input_size=tuple(config.size),
        preprocessing=encoder_preprocessing(config.encoder, config.encoder_weights),
    )


def load_samples(config: TrainConfig, progress: bool) -> tuple[list[Sample], list[Sample]]:
    """Both splits, fully checked before anything trains (a DataError lists every problem)."""
    split_dir = Path(config.split_dir) if config.split_dir else None
    train_samples = require_usable(config.data, split="train", split_dir=split_dir, progress=progress)
    val_samples = require_usable(config.data, split="val", split_dir=split_dir, progress=progress)
    if not val_samples:
        raise TrainingError(f"{config.data}: the val split is empty; validation picks the best epoch")
    return train_samples, val_samples


def build_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    raise TrainingError(f"unknown optimizer {config.optimizer!r}; choose adamw or adam")


# --- schedule -------------------------------------------------------------------------------------

def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int, planned_epochs: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based)."""
    if config.schedule == "step":  # the paper's: constant, then * step_factor after epoch step_epoch
        return config.lr * (config.step_factor if step >= config.step_epoch * steps_per_epoch else 1.0)
    if config.schedule != "cosine":
        raise TrainingError(f"unknown schedule {config.schedule!r}; choose cosine or step")
    warmup = config.warmup_epochs * steps_per_epoch
    if step < warmup:
        return config.lr * (0.1 + 0.9 * step / warmup)
    progress = min(1.0, (step - warmup) / max(1, planned_epochs * steps_per_epoch - warmup))
    return config.lr * (config.min_lr_factor + (1 - config.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress)))


def plan_epochs(config: TrainConfig, budget_seconds: float, elapsed_seconds: float, epoch_seconds: list[float]) -> int:
    """How many epochs fit the time budget, re-planned after every epoch at the recent pace.

    The pace is the median of the last three epochs, so one slow epoch (the first, on a busy machine)
    neither shrinks nor stretches the plan for good; the cosine schedule then ends with the budget.
    """
    done = len(epoch_seconds)
    pace = float(np.median(epoch_seconds[-3:])) * 1.02  # a small margin, so the last epoch ends inside the budget
    more = int((budget_seconds - elapsed_seconds) / pace) if pace > 0 else 0
    return max(done, min(config.epochs, done + more))


# --- one step's numbers and validation -------------------------------------------------------------

def batch_iou(logits: torch.Tensor, masks: torch.Tensor) -> float:
    """IoU of the whole batch at probability 0.5 (logit 0), at network resolution: for the curves only."""
    predicted = logits > 0
    truth = masks > 0.5
    union = (predicted | truth).sum()
    return 1.0 if int(union) == 0 else float((predicted & truth).sum() / union)


def predict_probabilities(model: torch.nn.Module, val: ValImages, card: ModelCard, device: torch.device,
                          batch_size: int) -> np.ndarray:
    """Probabilities (N, H, W) at network resolution for the validation inputs."""
    model.eval()
    chunks = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        for start in range(0, len(val.ids), batch_size):
            inputs = val.inputs[start:start + batch_size].to(device).contiguous(memory_format=torch.channels_last)
            chunks.append(torch.sigmoid(model(inputs).float())[:, 0].cpu().numpy())
    model.train()
    return np.concatenate(chunks)


# --- checkpoints, card, logs -----------------------------------------------------------------------

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


def gather_rng(ddp: Distributed) -> list[dict[str, Any]]:
    """Every rank's RNG state (each augments differently), collected on rank 0."""
    mine = capture_rng()
    if not ddp.enabled:
        return [mine]
    states: list[Any] = [None] * ddp.world_size
    dist.all_gather_object(states, mine)
    return states


def save_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, state: TrainState, card: ModelCard, config: TrainConfig,
                    ddp: Distributed) -> None:
    rng = gather_rng(ddp)
    if not ddp.is_main:
        return
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


def card_with_provenance(card: ModelCard, config: TrainConfig, train_samples: list[Sample],
                         val_samples: list[Sample], state: TrainState, notes: str = "") -> ModelCard:
    return card.replace(provenance=Provenance(
        data=str(Path(config.data).resolve()),
        split_hash=split_hash(train_samples, val_samples),
        train_images=len(train_samples),
        val_images=len(val_samples),
        epochs=state.epoch,
        best_epoch=state.best_epoch,
        val_metrics={name: round(value, 6) for name, value in state.best_metrics.items()},
        versions=versions(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        notes=notes or training_notes(config, card.output.threshold),
    ))


def training_notes(config: TrainConfig, threshold: float) -> str:
    return (f"val_metrics: val split, each image at its own resolution, mean over images, threshold {threshold:g}. "
            f"Trained with {config.loss} loss, {config.optimizer} lr {config.lr:g} {config.schedule} schedule, "
            f"batch {config.batch_size}, encoder weights {config.encoder_weights}, seed {config.seed}.")


def split_hash(train_samples: list[Sample], val_samples: list[Sample]) -> str:
    text = "train\n" + "".join(f"{s.id}\n" for s in train_samples) + "val\n" + "".join(f"{s.id}\n" for s in val_samples)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def versions() -> dict[str, str]:
    import cv2
    import segmentation_models_pytorch
    import timm
    import torchvision

    from edgeseg import __version__

    return {"edgeseg": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "torchvision": torchvision.__version__, "segmentation_models_pytorch": segmentation_models_pytorch.__version__,
            "timm": timm.__version__, "numpy": np.__version__, "opencv": cv2.__version__}


def _csv_text(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_logs(run_dir: Path, state: TrainState) -> None:
    """Rewrite the logs from the checkpointed state: a resumed run's logs drop what the kill lost."""
    write_text_atomic(run_dir / "logs" / "iterations.csv", _csv_text(state.iterations, ITERATION_FIELDS))
    write_text_atomic(run_dir / "logs" / "epochs.csv", _csv_text(state.epochs, EPOCH_FIELDS))


class _IterationLog:
    """logs/iterations.csv, appended every step so a long epoch can be watched live."""

    def __init__(self, path: Path) -> None:
        self.stream = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        self.writer = csv.DictWriter(self.stream, fieldnames=ITERATION_FIELDS, lineterminator="\n")

    def writerow(self, row: dict[str, Any]) -> None:
        self.writer.writerow(row)
        self.stream.flush()

    def close(self) -> None:
        self.stream.close()


def open_iteration_log(run_dir: Path, state: TrainState) -> _IterationLog:
    write_logs(run_dir, state)
    return _IterationLog(run_dir / "logs" / "iterations.csv")


def finish_run(run_dir: Path, card: ModelCard, config: TrainConfig, state: TrainState, val: ValImages,
               device: torch.device) -> tuple[ModelCard, ThresholdSweep | None]:
    """Threshold analysis on the best weights, the chosen threshold into the card, and the plots."""
    from safetensors.torch import load_file

    from edgeseg.train.plots import plot_threshold_sweep, plot_training

    plot_training(state.iterations, state.epochs, run_dir / "plots")
    if state.best_epoch == 0:
        return card, None
    card = ModelCard.from_json((run_dir / "card.json").read_text(encoding="utf-8"), source=str(run_dir / "card.json"))
    model = build_model(card)
    model.load_state_dict(load_file(str(run_dir / WEIGHTS_FILENAME)))
    model = model.to(device, memory_format=torch.channels_last)
    probabilities = predict_probabilities(model, val, card, device, config.batch_size)
    sweep = sweep_thresholds(probabilities, val.truths, card)
    chosen = scores_at(probabilities, val.truths, card, sweep.chosen)
    at_half = state.best_metrics
    metrics = {**{name: round(value, 6) for name, value in chosen.items()},
               **{f"{name}_at_0.5": round(value, 6) for name, value in at_half.items()}}
    card = card.replace(
        output=dataclasses.replace(card.output, threshold=sweep.chosen),
        provenance=dataclasses.replace(card.provenance, epochs=state.epoch, val_metrics=metrics,
                                       notes=training_notes(config, sweep.chosen)),
    )
    save_card(card, run_dir)
    write_text_atomic(run_dir / "logs" / "threshold.csv", _csv_text(sweep.rows(), ("threshold", *sweep.means)))
    plot_threshold_sweep(sweep, run_dir / "plots")
    return card, sweep


# --- distributed helpers -----------------------------------------------------------------------------

def broadcast_flag(flag: bool, ddp: Distributed) -> bool:
    """Rank 0's decision, so every rank stops at the same step."""
    return bool(broadcast_int(int(flag), ddp))


def broadcast_int(value: int, ddp: Distributed) -> int:
    if not ddp.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.int64,
                          device=f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(tensor, src=0)
    return int(tensor.item())
