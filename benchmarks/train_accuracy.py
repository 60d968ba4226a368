"""Accuracy benchmark: train the default edge model for a fixed time on ISIC 2018, score it on val.

    python benchmarks/train_accuracy.py [--minutes 60] [--data ../shared/data/isic2018] [--out runs/accuracy-cpu]
                                        [--result benchmarks/results/accuracy-cpu.json] [--size 256] ...

Trains `edgeseg train`'s defaults (FPN + tu-tf_efficientnet_lite0 from ImageNet, unless options say
otherwise) on the train split with a time budget, then scores the best checkpoint on the val split
through the runtime's own preprocessing (TorchBackend + edgeseg.preprocess): every probability map
resized back to its image's own resolution, made into a mask as the card says (its threshold, the
largest region kept), scored per image with edgeseg.metrics (ISIC-exact), averaged over images.
Also recorded: the same at threshold 0.5, and with every region kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("EDGESEG_ISIC_DIR", REPO.parent / "shared" / "data" / "isic2018"))


def score_run(run_dir: Path, data: Path, split_dir: Path | None) -> dict[str, dict[str, float]]:
    """Mean ISIC metrics of the run's best model on val, at each image's own resolution."""
    from tqdm import tqdm

    from edgeseg.data import discover_samples
    from edgeseg.files import read_image, read_mask
    from edgeseg.metrics import image_scores, mean_scores
    from edgeseg.preprocess import activate, lesion_mask, preprocess, probability_at
    from edgeseg.train.model import load_model
    from edgeseg.train.torch_backend import TorchBackend

    model, card = load_model(run_dir)
    every_region = card.replace(output=dataclasses.replace(card.output, keep_largest_region=False))
    scores: dict[str, list[dict[str, float]]] = {"val": [], "val_at_0.5": [], "val_all_regions": []}
    with TorchBackend(model, card) as backend:
        for sample in tqdm(discover_samples(data, split="val", split_dir=split_dir), desc="score val", unit="img"):
            image, truth = read_image(sample.image), read_mask(sample.mask)
            probability = probability_at(activate(backend.infer(preprocess(image, card)), card)[0, 0], *truth.shape, card)
            scores["val"].append(image_scores(truth, lesion_mask(probability, card)[0]))
            scores["val_at_0.5"].append(image_scores(truth, lesion_mask(probability, card, threshold=0.5)[0]))
            scores["val_all_regions"].append(image_scores(truth, lesion_mask(probability, every_region)[0]))
    return {name: mean_scores(values) for name, values in scores.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="training time budget [60]")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split-dir", type=Path)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "accuracy-cpu", help="run directory (not in git)")
    parser.add_argument("--result", type=Path, default=REPO / "benchmarks" / "results" / "accuracy-cpu.json")
    parser.add_argument("--size", type=int, help="square input side, multiple of 32 [train default]")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--loss", choices=["dice", "dice+bce"])
    parser.add_argument("--decoder-channels", help="PYRAMID,SEGMENTATION [train default]")
    parser.add_argument("--camera-framing", type=float, help="share of camera-framed training samples [train default]")
    parser.add_argument("--encoder")
    parser.add_argument("--encoder-weights")
    parser.add_argument("--epochs", type=int, help="most epochs [train default]; the budget usually decides")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()

    from edgeseg.files import write_text_atomic
    from edgeseg.host import host_info
    from edgeseg.train.loop import TrainConfig, train

    options = {"size": (args.size, args.size) if args.size else None, "batch_size": args.batch_size, "lr": args.lr,
               "loss": args.loss, "camera_framing": args.camera_framing, "encoder": args.encoder, "encoder_weights": args.encoder_weights, "epochs": args.epochs,
               "decoder_channels": tuple(int(v) for v in args.decoder_channels.split(",")) if args.decoder_channels else None}
    config = TrainConfig(data=str(args.data), out=str(args.out), split_dir=str(args.split_dir) if args.split_dir else None,
                         time_budget_minutes=args.minutes, device=args.device, seed=args.seed, threads=args.threads,
                         **{name: value for name, value in options.items() if value is not None})
    if (args.out / "checkpoint-last.pt").exists():
        sys.exit(f"{args.out} already holds a run; remove it or pass --out elsewhere")

    started = time.monotonic()
    result = train(config)
    wall_minutes = (time.monotonic() - started) / 60
    scores = score_run(args.out, args.data, args.split_dir)

    steps = result.state.iterations
    step_seconds = np.diff([0.0] + [row["seconds"] for row in steps]) if steps else np.array([])
    report = {
        "benchmark": "train_accuracy",
        "labels": "val split of the data; every image scored at its own resolution (ISIC scorer's rules); "
                  "mean over images. 'val' makes masks as the card says (the threshold from the threshold analysis, largest region kept); 'val_at_0.5' at threshold 0.5; 'val_all_regions' without the largest-region rule.",
        "val": scores["val"],
        "val_at_0.5": scores["val_at_0.5"],
        "val_all_regions": scores["val_all_regions"],
        "threshold": result.card.output.threshold,
        "train_minutes": round(result.state.train_seconds / 60, 2),
        "wall_minutes_including_decode_and_scoring": round(wall_minutes, 2),
        "epochs_run": result.state.epoch,
        "epochs_planned": result.state.planned_epochs,
        "best_epoch": result.state.best_epoch,
        "steps": result.state.step,
        "median_seconds_per_step": round(float(np.median(step_seconds)), 3) if step_seconds.size else None,
        "per_epoch": result.state.epochs,
        "config": config.to_dict(),
        "card": result.card.to_dict(),
        "command": " ".join(shlex.quote(part) for part in [sys.executable, *sys.argv]),
        "host": host_info(),
        "run_dir": str(args.out),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_text_atomic(args.result, json.dumps(report, indent=2) + "\n")
    val = scores["val"]
    print(f"val (original resolution, threshold {report['threshold']:g}): dice {val['dice']:.4f} "
          f"jaccard {val['jaccard']:.4f} thresholded jaccard {val['threshold_jaccard']:.4f} after "
          f"{report['train_minutes']} min of training; written to {args.result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
