"""The training loop, top to bottom: data, model, optimiser, epochs, validation, checkpoints, threshold.

A run directory holds:
    model.safetensors      the weights of the best epoch by validation IoU (the paper's rule)
    card.json              how to use them (input size, preprocessing, threshold) and where they came from
    checkpoint-last.pt     everything needed to resume after the last finished epoch (tensors only)
    config.json            the training configuration (what --resume reads before the first checkpoint)
    config.toml            the same settings as a --config file, to run them again
    logs/iterations.csv    loss, IoU and learning rate of every iteration
    logs/epochs.csv        per-epoch train loss/IoU and validation metrics (original resolution)
    logs/threshold.csv     the threshold analysis
    plots/*.png            loss and IoU curves (the paper's figures 5 and 6), threshold analysis

Under ``torchrun`` the same loop runs in every process with DistributedDataParallel; only rank 0
validates and writes (train.distributed). Checkpoints, logs and the card's provenance are written by
train.checkpoints.

``_run`` is the whole run; each phase it calls follows it in this file: build, start or restore,
train one epoch, validate, end the epoch (re-plan, checkpoint), finish.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from edgeseg.core.card import ModelCard, load_card, save_card
from edgeseg.core.data import LOCKED_SPLIT, Sample, locked_test_ids, require_usable
from edgeseg.core.errors import EdgesegError
from edgeseg.core.files import remove_stale_temporaries
from edgeseg.core.names import WEIGHTS_FILENAME
from edgeseg.core.progress import note
from edgeseg.core.progress import progress as track
from edgeseg.train.checkpoints import (
    CHECKPOINT_FILENAME,
    CHECKPOINT_KEYS,
    CONFIG_FILENAME,
    IterationLog,
    TrainState,
    card_with_provenance,
    load_checkpoint,
    open_iteration_log,
    read_config,
    restore_rng,
    save_checkpoint,
    split_hash,
    training_notes,
    write_config,
    write_threshold_log,
)
from edgeseg.train.config import TrainConfig
from edgeseg.train.dataset import AugmentedImages, TrainImages, ValImages, decode_train, decode_val, normalize_batch
from edgeseg.train.distributed import (
    Distributed,
    broadcast_flag,
    broadcast_int,
    gather_rng,
    setup_distributed,
    teardown_distributed,
)
from edgeseg.train.encoders import encoder_preprocessing, load_encoder_weights
from edgeseg.train.losses import build_loss
from edgeseg.train.network import build_model, initial_card, load_run_weights, save_weights
from edgeseg.train.threshold import ThresholdSweep, scores_at, sweep_thresholds

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # uint8 images, float masks, dataset indices


# Where --resume takes each TrainConfig field from. A run folder may come from anyone (a download, a
# colleague's disk), so what it stores may describe the training and nothing else: a path it named
# would let it read or write where it liked, and a test hook would change what the run does.
# - Describes the training: from the run (its checkpoint, else its config.json). Device, threads and
#   workers are among them because a CPU run repeats exactly only with the same threads.
RUN_FIELDS = (
    "epochs",
    "batch_size",
    "size",
    "lr",
    "min_lr_factor",
    "warmup_epochs",
    "weight_decay",
    "optimizer",
    "schedule",
    "step_epoch",
    "step_factor",
    "loss",
    "encoder",
    "decoder_channels",
    "augment",
    "camera_framing",
    "seed",
    "device",
    "time_budget_minutes",
    "threads",
    "workers",
)
# - Where to read or write: from the command line. The output is the run folder itself.
LOCATION_FIELDS = ("data", "split_dir", "out")
# - Files only a run's start reads (a file of encoder weights, the run a fine-tune starts from): a
#   checkpoint already holds the weights, so its values stay as the card's record and are never opened;
#   a run stopped before its first checkpoint starts again and takes them from the command line.
START_FILE_FIELDS = ("encoder_weights", "init_weights")
# - This terminal's progress bars: from the command line. (Test hooks are no field: RunHooks.)
COMMAND_LINE_ONLY_FIELDS = ("progress",)
ENCODER_WEIGHT_NAMES = ("imagenet", "none")  # encoder_weights values that name no file


@dataclass(frozen=True)
class RunHooks:
    """What a test asks of a run (the hidden --stop-after-epochs and --sample-log), beside its configuration:
    never stored with the run, so a resumed run has them from its own command line or not at all."""

    stop_after_epochs: int | None = None  # leave the run after this epoch's checkpoint, as a kill would
    sample_log: str | None = None  # append "rank id" for every training sample a step trains on


@dataclass
class TrainResult:
    run_dir: Path
    card: ModelCard
    state: TrainState
    sweep: ThresholdSweep | None


class TrainingError(EdgesegError, RuntimeError):
    """A training run that cannot start or continue (bad resume directory, too little data)."""


def train(config: TrainConfig, hooks: RunHooks | None = None) -> TrainResult:
    """Train from scratch into ``config.out`` (created; must not hold a run already); ``hooks`` are for tests."""
    run_dir = Path(config.out)
    if (run_dir / CHECKPOINT_FILENAME).exists():
        raise TrainingError(
            f"{run_dir} already holds a training run; continue it with --resume {run_dir} "
            f"--data {config.data}, or choose another --out"
        )
    return _run(config, checkpoint=None, hooks=hooks or RunHooks())


def resume(
    run_dir: str | Path,
    data: str | Path,
    split_dir: str | Path | None = None,
    start_files: dict[str, str] | None = None,
    progress: bool = True,
    hooks: RunHooks | None = None,
) -> TrainResult:
    """Continue the run in ``run_dir`` exactly where its last checkpoint left it (model, optimiser, schedule,
    epoch, RNG), or from the start when it stopped before its first checkpoint.

    From the run folder only what describes the training is taken (RUN_FIELDS); the data, the split and
    ``start_files`` (encoder_weights, init_weights: what a start from the beginning reads) come from the caller.
    """
    run_dir = Path(run_dir)
    checkpoint = read_checkpoint(run_dir)
    stored = checkpoint["config"] if checkpoint is not None else stored_config(run_dir)
    values = {name: stored[name] for name in RUN_FIELDS if name in stored}
    values |= start_file_values(run_dir, stored, start_files or {}, from_checkpoint=checkpoint is not None)
    values |= {
        "data": str(data),
        "split_dir": str(split_dir) if split_dir else None,
        "out": str(run_dir),
        "progress": progress,
    }
    try:
        config = TrainConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise TrainingError(
            f"{run_dir}: its stored training configuration is not one edgeseg wrote ({error})"
        ) from None
    return _run(config, checkpoint=checkpoint, hooks=hooks or RunHooks())


def read_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The run's checkpoint, or None when it stopped before its first one (tensors and plain values only)."""
    path = run_dir / CHECKPOINT_FILENAME
    if not path.is_file():
        return None
    try:
        checkpoint = load_checkpoint(path)  # weights_only=True: a pickle that would run code is refused
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise TrainingError(
            f"{path}: not a checkpoint edgeseg wrote, or a damaged one ({type(error).__name__}); "
            "it is loaded as tensors and plain values only"
        ) from None
    well_formed = isinstance(checkpoint, dict) and CHECKPOINT_KEYS <= checkpoint.keys()
    if not (well_formed and isinstance(checkpoint["config"], dict)):
        raise TrainingError(
            f"{path}: not a checkpoint edgeseg wrote (it should hold {', '.join(sorted(CHECKPOINT_KEYS))})"
        )
    return checkpoint


def stored_config(run_dir: Path) -> dict[str, Any]:
    """config.json of a run stopped before its first checkpoint: it starts again from it."""
    try:
        stored = read_config(run_dir)
    except ValueError as error:  # not JSON, not UTF-8, or not an object
        raise TrainingError(
            f"{run_dir / CONFIG_FILENAME}: not a training configuration edgeseg wrote ({error})"
        ) from None
    if stored is None:
        raise TrainingError(
            f"{run_dir}: no {CHECKPOINT_FILENAME} or {CONFIG_FILENAME} to resume from; --resume takes "
            "a run directory made by `edgeseg train`"
        )
    return stored


def start_file_values(
    run_dir: Path, stored: dict[str, Any], given: dict[str, str], from_checkpoint: bool
) -> dict[str, Any]:
    """encoder_weights and init_weights of a resumed run (START_FILE_FIELDS says why)."""
    if from_checkpoint:
        if given:
            raise TrainingError(
                f"{run_dir} continues from the weights of its checkpoint; "
                f"{', '.join(option_name(name) for name in given)} is only for a run stopped before "
                "its first checkpoint"
            )
        return {name: stored[name] for name in START_FILE_FIELDS if name in stored}
    values = {}
    for name in START_FILE_FIELDS:
        if name in given:
            values[name] = given[name]
        elif names_a_file(name, stored.get(name)):
            raise TrainingError(
                f"{run_dir} stopped before its first checkpoint and was started with "
                f"{option_name(name)} FILE, which is never taken from a run folder: resume it with "
                f"{option_name(name)} FILE given again"
            )
        elif name in stored:
            values[name] = stored[name]
    return values


def names_a_file(name: str, value: Any) -> bool:
    if name == "encoder_weights":
        return value not in (None, *ENCODER_WEIGHT_NAMES)
    return value is not None


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _run(config: TrainConfig, checkpoint: dict[str, Any] | None, hooks: RunHooks) -> TrainResult:
    ddp = setup_distributed(config.device)
    if ddp.is_main:
        remove_stale_temporaries(config.out)  # what a kill during a checkpoint or weights write left
    run = build(config, ddp, checkpoint)
    state = start_fresh(run) if checkpoint is None else restore(run, checkpoint)

    sample_log = SampleLog(hooks.sample_log, ddp.rank, run.train_data.ids)
    iteration_log = open_iteration_log(run.run_dir, state) if ddp.is_main else None
    clock = Clock.continuing(state.train_seconds, config.time_budget_minutes)
    out_of_time = False
    while state.epoch < state.planned_epochs and not out_of_time:
        epoch_start = time.monotonic()
        trained = train_epoch(run, state, clock, iteration_log, sample_log)
        out_of_time = trained.out_of_time
        state.epoch += 1
        if ddp.is_main:
            validate(run, state, trained, clock, epoch_start)
        end_epoch(run, state, clock, epoch_start)
        if stop_after_this_epoch(hooks, state):
            break  # as if killed here: the run dir is what a kill after this checkpoint leaves

    sample_log.close()
    if iteration_log is not None:
        iteration_log.close()
    # Only --stop-after-epochs leaves epochs and time over; that run is not finished, as after a kill.
    finished = out_of_time or state.epoch >= state.planned_epochs
    return finish(run, state, finished)


# --- build ----------------------------------------------------------------------------------------


@dataclass
class Run:
    """One process's run: its data, model, optimiser and loader, built once."""

    config: TrainConfig
    ddp: Distributed
    device: torch.device
    card: ModelCard  # replaced by the checkpoint's on resume and by each best epoch's
    train_samples: list[Sample]
    val_samples: list[Sample]
    train_data: TrainImages
    val_data: ValImages | None  # rank 0 only: it alone validates
    model: torch.nn.Module
    network: torch.nn.Module  # the model, wrapped in DistributedDataParallel under torchrun
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_function: torch.nn.Module
    sampler: DistributedSampler
    loader: DataLoader

    @property
    def run_dir(self) -> Path:
        return Path(self.config.out)

    @property
    def show(self) -> bool:
        return shows_progress(self.config, self.ddp)

    @property
    def use_amp(self) -> bool:
        return self.device.type == "cuda"

    @property
    def val_images(self) -> ValImages:
        """The val split, which rank 0 alone holds."""
        if self.val_data is None:
            raise RuntimeError(f"rank {self.ddp.rank} holds no val images: only rank 0 validates")
        return self.val_data


def build(config: TrainConfig, ddp: Distributed, checkpoint: dict[str, Any] | None) -> Run:
    """Data, model, optimiser and loader; a fresh run starts from the encoder's pretrained weights (or
    the run it fine-tunes), a resumed one from its checkpoint's card (the fine-tuned run may be gone)."""
    fresh = checkpoint is None
    device = pick_device(config.device, ddp)
    torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 1) // ddp.local_world_size))
    show = shows_progress(config, ddp)

    seed_everything(config.seed)
    card = make_card(config) if checkpoint is None else checkpoint_card(checkpoint, config)
    train_samples, val_samples = load_samples(config, show)
    if not fresh:
        require_the_split_it_trained_on(card, config, train_samples, val_samples)
    train_data = decode_train(train_samples, card, progress=show)
    val_data = decode_val(val_samples, card, progress=show) if ddp.is_main else None
    if len(train_samples) // ddp.world_size < config.batch_size:
        raise TrainingError(
            f"{len(train_samples)} training images are too few for --batch-size {config.batch_size} "
            f"on {ddp.world_size} process(es); lower --batch-size"
        )

    model = build_model(card)
    if fresh and config.init_weights:
        load_run_weights(model, config.init_weights)
    elif fresh and config.encoder_weights != "none":
        load_encoder_weights(model, config.encoder, config.encoder_weights)
    model = model.to(device).to(memory_format=torch.channels_last)  # the stubs take them only one at a time
    network = wrap_for_ddp(model, device, ddp)
    optimizer = build_optimizer(config, model)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    loss_function = build_loss(config.loss)
    sampler, loader = build_loader(config, train_data, ddp)
    return Run(
        config,
        ddp,
        device,
        card,
        train_samples,
        val_samples,
        train_data,
        val_data,
        model,
        network,
        optimizer,
        scaler,
        loss_function,
        sampler,
        loader,
    )


# --- start or restore -----------------------------------------------------------------------------


def start_fresh(run: Run) -> TrainState:
    """A new run: each rank's own augmentation stream, and the run directory with its config."""
    torch.manual_seed(run.config.seed + run.ddp.rank)  # the same initial weights everywhere, different augmentation
    if run.ddp.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run.run_dir, run.config)
    return TrainState(planned_epochs=run.config.epochs)


def restore(run: Run, checkpoint: dict[str, Any]) -> TrainState:
    """Continue from a checkpoint: weights, optimiser, loss scaler and this rank's RNG as they were (build took
    its card)."""
    run.model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scaler.load_state_dict(checkpoint["scaler"])
    state = TrainState(**checkpoint["state"])
    rng = checkpoint["rng"]
    restore_rng(rng[run.ddp.rank] if run.ddp.rank < len(rng) else rng[0])  # a run resumed on more ranks
    return state


# --- train one epoch ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clock:
    """This run's training time, counted across resumes, against the optional time budget."""

    start: float  # time.monotonic() at which the run would have started had it never been stopped
    budget: float  # seconds; math.inf without a budget

    @classmethod
    def continuing(cls, train_seconds: float, budget_minutes: float | None) -> Clock:
        """A clock that has already counted ``train_seconds`` (0 for a fresh run)."""
        return cls(time.monotonic() - train_seconds, budget_minutes * 60 if budget_minutes else math.inf)

    @property
    def limited(self) -> bool:
        return math.isfinite(self.budget)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def spent(self, ddp: Distributed) -> bool:
        """Whether the budget is spent, by rank 0's clock so every rank stops at the same step."""
        return self.limited and broadcast_flag(self.elapsed() > self.budget, ddp)


@dataclass
class EpochTraining:
    """What an epoch's training steps leave for its validation row."""

    losses: list[float] = field(default_factory=list)
    ious: list[float] = field(default_factory=list)
    lr: float = 0.0  # the last step's
    out_of_time: bool = False  # the time budget ran out during the epoch


def train_epoch(
    run: Run, state: TrainState, clock: Clock, iteration_log: IterationLog | None, sample_log: SampleLog
) -> EpochTraining:
    """One pass over this rank's share of the training set, cut short when the time budget is spent."""
    epoch = state.epoch + 1
    run.network.train()
    run.sampler.set_epoch(epoch)
    trained = EpochTraining()
    bar = track(run.loader, desc=f"epoch {epoch}/{state.planned_epochs}", unit="step", enabled=run.show)
    for images, masks, _ in sample_log.batches(bar):
        trained.lr = learning_rate(run.config, state.step, len(run.loader), state.planned_epochs)
        loss, iou = train_step(run, images, masks, trained.lr)
        state.step += 1
        trained.losses.append(loss)
        trained.ious.append(iou)
        if iteration_log is not None:
            row = {
                "epoch": epoch,
                "step": state.step,
                "loss": loss,
                "iou": iou,
                "lr": trained.lr,
                "seconds": round(clock.elapsed(), 3),
            }
            state.iterations.append(row)
            iteration_log.writerow(row)
        bar.set_postfix(
            loss=f"{np.mean(trained.losses[-50:]):.4f}",
            iou=f"{np.mean(trained.ious[-50:]):.3f}",
            lr=f"{trained.lr:.2e}",
        )
        trained.out_of_time = clock.spent(run.ddp)
        if trained.out_of_time:
            break
    bar.close()
    if trained.out_of_time and run.show:
        note(
            f"time budget of {run.config.time_budget_minutes} min spent during epoch {epoch}: "
            f"validating what it trained, then stopping"
        )
    return trained


def train_step(run: Run, images: torch.Tensor, masks: torch.Tensor, lr: float) -> tuple[float, float]:
    """One optimiser step at ``lr`` (mixed precision on CUDA); the batch's loss and IoU."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    inputs = normalize_batch(images.to(run.device, non_blocking=True), run.card).contiguous(
        memory_format=torch.channels_last
    )
    masks = masks.to(run.device, non_blocking=True)
    with torch.autocast(run.device.type, dtype=torch.float16, enabled=run.use_amp):
        logits = run.network(inputs)
        loss = run.loss_function(logits.float(), masks)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return float(loss.detach()), batch_iou(logits.detach(), masks)


# --- validate ---------------------------------------------------------------------------------------


def validate(run: Run, state: TrainState, trained: EpochTraining, clock: Clock, epoch_start: float) -> None:
    """Rank 0: score the epoch on the val split, log it, and keep its weights and card if it is the best."""
    val = run.val_images
    metrics = scores_at(
        predict_probabilities(run.model, val, run.card, run.device, run.config.batch_size),
        val.truths,
        run.card,
        run.card.output.threshold,
    )
    state.epochs.append(
        {
            "epoch": state.epoch,
            "step": state.step,
            "train_loss": float(np.mean(trained.losses)),
            "train_iou": float(np.mean(trained.ious)),
            **{f"val_{name}": value for name, value in metrics.items()},
            "lr": trained.lr,
            "seconds": round(clock.elapsed(), 3),
        }
    )
    if metrics["jaccard"] > state.best_jaccard:
        keep_best(run, state, metrics)
    if run.show:
        note(
            f"epoch {state.epoch}: val dice {metrics['dice']:.4f} jaccard {metrics['jaccard']:.4f} "
            f"thresholded jaccard {metrics['threshold_jaccard']:.4f} (best epoch {state.best_epoch}, "
            f"{(time.monotonic() - epoch_start) / 60:.1f} min)"
        )


def keep_best(run: Run, state: TrainState, metrics: dict[str, float]) -> None:
    """This epoch is the best so far: its weights and card replace the last best's."""
    state.best_jaccard, state.best_epoch, state.best_metrics = metrics["jaccard"], state.epoch, metrics
    run.card = card_with_provenance(run.card, run.config, run.train_samples, run.val_samples, state)
    save_weights(run.model, run.run_dir / WEIGHTS_FILENAME)
    save_card(run.card, run.run_dir)


# --- end the epoch ------------------------------------------------------------------------------------


def end_epoch(run: Run, state: TrainState, clock: Clock, epoch_start: float) -> None:
    """On every rank: re-plan the epochs to the time budget, then checkpoint (rank 0 writes)."""
    state.epoch_seconds.append(time.monotonic() - epoch_start)
    if clock.limited:
        planned = plan_epochs(run.config, clock.budget, clock.elapsed(), state.epoch_seconds)
        state.planned_epochs = broadcast_int(planned, run.ddp)
    state.train_seconds = clock.elapsed()
    rng = gather_rng(run.ddp)
    if run.ddp.is_main:
        save_checkpoint(run.run_dir, run.model, run.optimizer, run.scaler, state, run.card, run.config, rng)


# --- finish -------------------------------------------------------------------------------------------


def finish(run: Run, state: TrainState, finished: bool) -> TrainResult:
    """Rank 0 analyses the threshold of a finished run; every rank then leaves the process group."""
    sweep = None
    if run.ddp.is_main and finished:
        run.card, sweep = finish_run(run.run_dir, run.card, run.config, state, run.val_images, run.device)
    teardown_distributed(run.ddp)
    return TrainResult(run.run_dir, run.card, state, sweep)


def finish_run(
    run_dir: Path, card: ModelCard, config: TrainConfig, state: TrainState, val: ValImages, device: torch.device
) -> tuple[ModelCard, ThresholdSweep | None]:
    """Threshold analysis on the best weights, the chosen threshold into the card, and the plots."""
    from safetensors.torch import load_file

    from edgeseg.train.plots import plot_threshold_sweep, plot_training

    plot_training(state.iterations, state.epochs, run_dir / "plots")
    if state.best_epoch == 0:
        return card, None
    card = load_card(run_dir)
    model = build_model(card)
    model.load_state_dict(load_file(str(run_dir / WEIGHTS_FILENAME)))
    model = model.to(device).to(memory_format=torch.channels_last)  # the stubs take them only one at a time
    probabilities = predict_probabilities(model, val, card, device, config.batch_size)
    sweep = sweep_thresholds(probabilities, val.truths, card)
    chosen = scores_at(probabilities, val.truths, card, sweep.chosen)
    at_half = state.best_metrics
    metrics = {
        **{name: round(value, 6) for name, value in chosen.items()},
        **{f"{name}_at_0.5": round(value, 6) for name, value in at_half.items()},
    }
    card = card.replace(
        output=dataclasses.replace(card.output, threshold=sweep.chosen),
        provenance=dataclasses.replace(
            card.provenance, epochs=state.epoch, val_metrics=metrics, notes=training_notes(config, sweep.chosen)
        ),
    )
    save_card(card, run_dir)
    write_threshold_log(run_dir, sweep)
    plot_threshold_sweep(sweep, run_dir / "plots")
    return card, sweep


# --- test hooks -----------------------------------------------------------------------------------


class SampleLog:
    """--sample-log (tests): appends "rank id" for every training sample a step trains on."""

    def __init__(self, path: str | None, rank: int, ids: list[str]) -> None:
        self.stream = open(path, "a", encoding="utf-8") if path else None
        self.rank = rank
        self.ids = ids

    def batches(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        """``batches`` as they are, each one's samples logged as it is handed to a step."""
        for batch in batches:
            if self.stream is not None:
                self.stream.write("".join(f"{self.rank} {self.ids[i]}\n" for i in batch[2].tolist()))
            yield batch

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


def stop_after_this_epoch(hooks: RunHooks, state: TrainState) -> bool:
    """--stop-after-epochs (tests): leave the run after this epoch's checkpoint, as a kill would."""
    return hooks.stop_after_epochs is not None and state.epoch >= hooks.stop_after_epochs


# --- set-up helpers ---------------------------------------------------------------------------------


def shows_progress(config: TrainConfig, ddp: Distributed) -> bool:
    """Progress bars and epoch lines come from rank 0 alone."""
    return config.progress and ddp.is_main


def pick_device(name: str, ddp: Distributed) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError(f"{backend_flag(name)}: PyTorch sees no CUDA GPU here; use --backend torch-cpu")
        index = ddp.local_rank if name == "cuda" else torch.device(name).index
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if name != "cpu":
        raise TrainingError(f"{backend_flag(name)}: expected --backend auto, torch-cpu or torch-cuda")
    return torch.device("cpu")


def backend_flag(device: str) -> str:
    """How the command line names a device: `--backend torch-cuda` for "cuda"; the old --device for "cuda:N"."""
    names = {"auto": "auto", "cpu": "torch-cpu", "cuda": "torch-cuda"}
    return f"--backend {names[device]}" if device in names else f"--device {device}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def checkpoint_card(checkpoint: dict[str, Any], config: TrainConfig) -> ModelCard:
    return ModelCard.from_dict(json.loads(checkpoint["card"]), source=str(Path(config.out) / CHECKPOINT_FILENAME))


def make_card(config: TrainConfig) -> ModelCard:
    pyramid, segmentation = config.decoder_channels
    height, width = config.size
    card = ModelCard(
        encoder=config.encoder,
        architecture_kwargs={"decoder_pyramid_channels": pyramid, "decoder_segmentation_channels": segmentation},
        input_size=(height, width),
        preprocessing=encoder_preprocessing(config.encoder, config.encoder_weights),
    )
    if config.init_weights:
        # Fine-tuning keeps the architecture and the normalisation the weights were trained with.
        card = card.replace(preprocessing=initial_card(config.init_weights, card).preprocessing)
    return card


def load_samples(config: TrainConfig, progress: bool) -> tuple[list[Sample], list[Sample]]:
    """Both splits, fully checked before anything trains (a DataError lists every problem)."""
    split_dir = Path(config.split_dir) if config.split_dir else None
    train_samples = require_usable(config.data, split="train", split_dir=split_dir, progress=progress)
    val_samples = require_usable(config.data, split="val", split_dir=split_dir, progress=progress)
    if not val_samples:
        raise TrainingError(f"{config.data}: the val split is empty; validation picks the best epoch")
    require_no_locked_ids(config, train_samples, val_samples)
    return train_samples, val_samples


def require_no_locked_ids(config: TrainConfig, train_samples: list[Sample], val_samples: list[Sample]) -> None:
    """Training never reads the locked test split: neither its weights nor its choices (epoch, threshold) see it."""
    locked = locked_test_ids(config.data, Path(config.split_dir) if config.split_dir else None)
    leaked = sorted(locked & {sample.id for sample in [*train_samples, *val_samples]})
    if leaked:
        raise TrainingError(
            f"{config.data}: {len(leaked)} id(s) of the locked {LOCKED_SPLIT} split are in the train or val split "
            f"(e.g. {', '.join(leaked[:3])}); a model must never train or be chosen on it. Remove them from "
            f"train.txt and val.txt (edgeseg data check lists every id in two splits)."
        )


def require_the_split_it_trained_on(
    card: ModelCard, config: TrainConfig, train_samples: list[Sample], val_samples: list[Sample]
) -> None:
    """A resume continues exactly only on the split its checkpoint trained on (the data is given again)."""
    trained_on = card.provenance.split_hash
    if trained_on and trained_on != split_hash(train_samples, val_samples):
        split = config.split_dir or str(Path(config.data) / "splits")
        raise TrainingError(
            f"{split}: this train/val split is not the one {config.out} trained on; resume with that "
            "run's data (and its --split-dir, if it had one), or start a new run from its weights with "
            f"--init-weights {config.out}"
        )


def wrap_for_ddp(model: torch.nn.Module, device: torch.device, ddp: Distributed) -> torch.nn.Module:
    """The model in DistributedDataParallel under torchrun, else the model itself."""
    if not ddp.enabled:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def build_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    raise TrainingError(f"unknown optimizer {config.optimizer!r}; choose adamw or adam")


def build_loader(
    config: TrainConfig, train_data: TrainImages, ddp: Distributed
) -> tuple[DistributedSampler[int], DataLoader]:
    """Augmented batches of this rank's share of the training set, reshuffled every epoch."""
    dataset = AugmentedImages(train_data, augment=config.augment, camera_framing=config.camera_framing)
    sampler: DistributedSampler[int] = DistributedSampler(
        dataset, num_replicas=ddp.world_size, rank=ddp.rank, shuffle=True, seed=config.seed
    )
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=config.workers,
        persistent_workers=config.workers > 0,
    )
    return sampler, loader


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


def predict_probabilities(
    model: torch.nn.Module, val: ValImages, card: ModelCard, device: torch.device, batch_size: int
) -> np.ndarray:
    """Probabilities (N, H, W) at network resolution for the validation inputs."""
    model.eval()
    chunks = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        for start in range(0, len(val.ids), batch_size):
            inputs = val.inputs[start : start + batch_size].to(device).contiguous(memory_format=torch.channels_last)
            chunks.append(torch.sigmoid(model(inputs).float())[:, 0].cpu().numpy())
    model.train()
    return np.concatenate(chunks)
