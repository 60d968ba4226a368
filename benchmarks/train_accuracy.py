"""Accuracy benchmark: train the default edge model for a fixed time on ISIC 2018, score it as the device sees.

    python benchmarks/train_accuracy.py [--minutes 60] [--data ../shared/data/isic2018] [--out runs/accuracy-cpu]
                                        [--result benchmarks/results/accuracy-cpu.json] [--size 256] ...
    python benchmarks/train_accuracy.py --score-only runs/accuracy-cpu --result ...   # score a finished run again

Trains `edgeseg train`'s defaults (FPN + tu-tf_efficientnet_lite0 from ImageNet, unless options say
otherwise) on the train split with a time budget, then scores the best checkpoint through
``edgeseg.evaluate`` (the Segmenter over PyTorch: the runtime's preprocessing, every probability map
resized back to its image's own resolution, made into a mask as the card says, scored per image with
the ISIC-exact metrics, averaged over images). Rows:

- val: the val split as it is (mostly 512x512 crops); also at threshold 0.5 and with every region kept;
- val_camera_framed: the val images placed in full 4:3 / 3:2 camera frames (edgeseg.evaluate.device_views),
  scored at the frame's resolution: what a dermatoscope camera shows;
- full_resolution_val / full_resolution_train: the shared set's images at their camera's resolution
  (2 in val; 20 in train, which the model saw in training, stretched to its input);
- val_no_refine / val_camera_framed_no_refine: the same without the closer look (``Segmenter.refine``),
  the network's first look alone. Every other row makes masks as `edgeseg run` does, closer look included.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from edgeseg.core.names import LOSSES

REPO = Path(__file__).resolve().parents[1]
ISIC_LICENCE = (
    "ISIC 2018 Task 1-2 training input: CC0 1.0 (public domain), with the Task 1 ground-truth masks; "
    "cite Codella et al. 2019 (arXiv:1902.03368) and Tschandl et al. 2018 (Sci. Data 5, 180161)"
)
DEFAULT_DATA = Path(os.environ.get("EDGESEG_ISIC_DIR", REPO.parent / "shared" / "data" / "isic2018"))


def score_run(run_dir: Path, data: Path, split_dir: Path | None) -> dict[str, dict]:
    """Mean ISIC metrics of the run's best model on each view, at each image's own resolution."""
    import dataclasses

    from edgeseg.core.data import discover_samples
    from edgeseg.core.segmenter import Segmenter
    from edgeseg.evaluate.accuracy import evaluate, evaluate_images
    from edgeseg.evaluate.device_views import camera_framed, full_resolution
    from edgeseg.loading.open import open_model

    val = discover_samples(data, split="val", split_dir=split_dir)
    train = discover_samples(data, split="train", split_dir=split_dir)
    with open_model(run_dir, "torch-cpu") as segmenter:
        card = segmenter.card
        at_half = Segmenter(segmenter.backend, card.replace(output=dataclasses.replace(card.output, threshold=0.5)))
        every_region = Segmenter(segmenter.backend, card, keep_largest=False)
        network_alone = Segmenter(segmenter.backend, card, refine=False)
        evaluations = {
            "val": evaluate(segmenter, val, str(run_dir), "val"),
            "val_at_0.5": evaluate(at_half, val, str(run_dir), "val"),
            "val_all_regions": evaluate(every_region, val, str(run_dir), "val"),
            "val_camera_framed": evaluate_images(segmenter, camera_framed(val), str(run_dir), "val camera-framed"),
            "val_no_refine": evaluate(network_alone, val, str(run_dir), "val"),
            "val_camera_framed_no_refine": evaluate_images(
                network_alone, camera_framed(val), str(run_dir), "val camera-framed"
            ),
            "full_resolution_val": evaluate_images(segmenter, full_resolution(val), str(run_dir), "val full-res"),
            "full_resolution_train": evaluate_images(segmenter, full_resolution(train), str(run_dir), "train full-res"),
        }
    return {
        name: {**evaluation.mean, **interval_bounds(evaluation), "images": len(evaluation.per_image)}
        for name, evaluation in evaluations.items()
    }


def interval_bounds(evaluation) -> dict[str, float]:
    """The 95% bootstrap interval of the ranking metrics' means, flat (they also go into the card's evaluations)."""
    intervals = evaluation.intervals
    return {
        f"{name}_{end}": round(getattr(intervals[name], end), 6)
        for name in ("dice", "jaccard", "threshold_jaccard")
        for end in ("low", "high")
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="training time budget [60]")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split-dir", type=Path)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "accuracy-cpu", help="run directory (not in git)")
    parser.add_argument("--result", type=Path, default=REPO / "benchmarks" / "results" / "accuracy-cpu.json")
    parser.add_argument("--score-only", type=Path, metavar="RUN_DIR", help="score this finished run; train nothing")
    parser.add_argument("--data-licence", default=ISIC_LICENCE, help="the training data's licence, for the card")
    parser.add_argument("--size", type=int, help="square input side, multiple of 32 [train default]")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--loss", choices=LOSSES)
    parser.add_argument("--decoder-channels", help="PYRAMID,SEGMENTATION [train default]")
    parser.add_argument("--camera-framing", type=float, help="share of camera-framed training samples [train default]")
    parser.add_argument("--encoder")
    parser.add_argument("--encoder-weights")
    parser.add_argument("--init-weights", help="fine-tune this trained run directory instead of starting from ImageNet")
    parser.add_argument("--epochs", type=int, help="most epochs [train default]; the budget usually decides")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int)
    parser.add_argument(
        "--trained-on",
        help="with --score-only: where the run was trained (a GPU machine, say), for the "
        "record; 'host' is always the machine that scores",
    )
    return parser.parse_args()


def train_config(args: argparse.Namespace):
    from edgeseg.train.loop import TrainConfig

    options = {
        "size": (args.size, args.size) if args.size else None,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "loss": args.loss,
        "camera_framing": args.camera_framing,
        "encoder": args.encoder,
        "encoder_weights": args.encoder_weights,
        "init_weights": args.init_weights,
        "epochs": args.epochs,
        "decoder_channels": tuple(int(v) for v in args.decoder_channels.split(",")) if args.decoder_channels else None,
    }
    return TrainConfig(
        data=str(args.data),
        out=str(args.out),
        split_dir=str(args.split_dir) if args.split_dir else None,
        time_budget_minutes=args.minutes,
        device=args.device,
        seed=args.seed,
        threads=args.threads,
        **{name: value for name, value in options.items() if value is not None},
    )


def training_record(run_dir: Path) -> dict:
    """What the run's checkpoint says about its training: epochs, steps, pace, the per-epoch metrics, the config."""
    import torch

    if not (run_dir / "checkpoint-last.pt").exists():
        return logged_training_record(run_dir)
    checkpoint = torch.load(run_dir / "checkpoint-last.pt", map_location="cpu", weights_only=True)
    state = checkpoint["state"]
    steps = state["iterations"]
    step_seconds = np.diff([0.0] + [row["seconds"] for row in steps]) if steps else np.array([])
    return {
        "train_minutes": round(state["train_seconds"] / 60, 2),
        "epochs_run": state["epoch"],
        "epochs_planned": state["planned_epochs"],
        "best_epoch": state["best_epoch"],
        "steps": state["step"],
        "median_seconds_per_step": round(float(np.median(step_seconds)), 3) if step_seconds.size else None,
        "per_epoch": state["epochs"],
        "config": checkpoint["config"],
    }


def logged_training_record(run_dir: Path) -> dict:
    """The same from the run's logs, config and card, for a run that came back without its checkpoint
    (benchmarks/device_session.sh leaves it behind); the planned epoch count is not logged."""
    from edgeseg.core.card import load_card

    epochs = read_csv_numbers(run_dir / "logs" / "epochs.csv")
    seconds = [row["seconds"] for row in read_csv_numbers(run_dir / "logs" / "iterations.csv")]
    step_seconds = np.diff([0.0] + seconds) if seconds else np.array([])
    return {
        "train_minutes": round(epochs[-1]["seconds"] / 60, 2),
        "epochs_run": len(epochs),
        "epochs_planned": None,
        "best_epoch": load_card(run_dir).provenance.best_epoch,
        "steps": int(epochs[-1]["step"]),
        "median_seconds_per_step": round(float(np.median(step_seconds)), 3) if step_seconds.size else None,
        "per_epoch": epochs,
        "config": json.loads((run_dir / "config.json").read_text()),
    }


def read_csv_numbers(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as stream:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(stream)]


def record_in_card(run_dir: Path, scores: dict[str, dict], data_licence: str):
    """The views' figures and the data's licence go into the run's card, so every export carries them."""
    import dataclasses

    from edgeseg.core.card import load_card, save_card

    card = load_card(run_dir)
    evaluations = {name: {key: round(value, 6) for key, value in view.items()} for name, view in scores.items()}
    provenance = dataclasses.replace(card.provenance, evaluations=evaluations, data_licence=data_licence)
    card = card.replace(provenance=provenance)
    save_card(card, run_dir)
    return card


CONFIG_PATHS = ("data", "out", "split_dir", "encoder_weights", "init_weights")


def portable_training_record(record: dict) -> dict:
    """The training record with the run's config naming its folders as a committed record may (portable_path)."""
    from edgeseg.core.files import portable_path

    config = {
        name: portable_path(value) if name in CONFIG_PATHS and value else value
        for name, value in record["config"].items()
    }
    return {**record, "config": config}


def main() -> int:
    args = parse_args()
    from edgeseg.core.files import portable_command, portable_path, write_text_atomic
    from edgeseg.core.host import host_info
    from edgeseg.train.loop import train

    started = time.monotonic()
    run_dir = args.score_only or args.out
    if args.score_only is None:
        if (args.out / "checkpoint-last.pt").exists():
            sys.exit(f"{args.out} already holds a run; remove it, pass --out elsewhere, or --score-only {args.out}")
        train(train_config(args))
    scores = score_run(run_dir, args.data, args.split_dir)
    card = record_in_card(run_dir, scores, args.data_licence)
    report = {
        "benchmark": "train_accuracy",
        "labels": "every image scored at its own resolution (ISIC scorer's rules); mean over images. 'val' makes masks "
        "as the card says (the threshold from the threshold analysis, largest region kept); 'val_at_0.5' at "
        "threshold 0.5; 'val_all_regions' without the largest-region rule; 'val_camera_framed' the val images "
        "in full camera frames at the frame's resolution; 'full_resolution_*' the images kept at camera resolution. "
        "Every row is made as `edgeseg run` makes masks, the closer look (refine) included, except the "
        "'*_no_refine' rows: the network's first look alone.",
        **scores,
        "threshold": card.output.threshold,
        **portable_training_record(training_record(run_dir)),
        "wall_minutes_including_decode_and_scoring": round((time.monotonic() - started) / 60, 2),
        "card": card.to_dict(),
        "command": portable_command(sys.argv),
        "trained_on": args.trained_on or ("this host" if args.score_only is None else "not recorded"),
        "host": host_info(),
        "run_dir": portable_path(run_dir),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_text_atomic(args.result, json.dumps(report, indent=2) + "\n")
    for name in ("val", "val_camera_framed", "full_resolution_val", "full_resolution_train"):
        view = scores[name]
        print(
            f"{name} ({view['images']} images, threshold {report['threshold']:g}): dice {view['dice']:.4f} "
            f"jaccard {view['jaccard']:.4f} thresholded jaccard {view['threshold_jaccard']:.4f}"
        )
    print(f"after {report['train_minutes']} min of training; written to {args.result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
