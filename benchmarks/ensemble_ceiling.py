"""How far the models already trained reach on val if cost were no object: ensembles, flip TTA, threshold.

    python benchmarks/ensemble_ceiling.py RUN [RUN ...] [--data ../shared/data/isic2018]
        [--thresholds 0.4 0.45 0.5] [--out benchmarks/results/ensemble-ceiling-cpu.json]

The question (issue 13): is the val target within reach of the edge models trained so far, by any
means that needs no more training? Every combination of the runs that contains the first one (the
default model's run) is scored on val, with and without 4-view flip TTA (``hvflip``), at each
threshold. A combination averages its members' probabilities (after the sigmoid), as flip TTA
averages its views; the masks are then made as `edgeseg run` makes them (closer look, largest
region) and scored as benchmarks/train_accuracy.py scores val (ISIC scorer's rules, each image at
its own resolution, mean over images).

The threshold is picked here on val itself, and so is the best combination: the figures are an
upper bound for these models, not an estimate on unseen images. "networks per frame" is the cost:
members times views (the closer look adds as many again on frames whose lesion is small).

Each member's output for one network input is computed once and reused across combinations and
thresholds, so the grid costs about one pass per member and view. Writes the .json and a .md beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_accuracy import DEFAULT_DATA  # the accuracy benchmark's data set

RESULTS = Path(__file__).resolve().parent / "results"
VAL_TARGET = {"dice": 0.915, "jaccard": 0.855, "threshold_jaccard": 0.84}  # issue 13's val target
TTA_SETTINGS = ("none", "hvflip")


class RememberingBackend:
    """A backend that computes each distinct input batch once and then answers from memory."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.card = backend.card
        self.name, self.precision = backend.name, backend.precision
        self._logits: dict[bytes, np.ndarray] = {}

    def infer(self, batch: np.ndarray) -> np.ndarray:
        key = hashlib.blake2b(np.ascontiguousarray(batch).tobytes(), digest_size=16).digest()
        if key not in self._logits:
            self._logits[key] = self.backend.infer(batch).astype(
                np.float16
            )  # half the memory; far below the threshold's grain
        return self._logits[key].astype(np.float32)


class AveragingBackend:
    """Several backends as one: the mean of their probabilities, returned as logits (the Backend protocol)."""

    def __init__(self, members: list) -> None:
        self.members = members
        self.card = members[0].card
        self.name, self.precision = members[0].name, members[0].precision

    def infer(self, batch: np.ndarray) -> np.ndarray:
        from edgeseg.core.postprocess import activate

        probability = np.mean([activate(member.infer(batch), member.card) for member in self.members], axis=0)
        probability = np.clip(probability, 1e-7, 1 - 1e-7)
        return np.log(probability / (1 - probability)).astype(np.float32)

    def close(self) -> None:
        """The members are closed by whoever opened them."""


def combinations(names: list[str]) -> list[tuple[str, ...]]:
    """Every combination of the runs that contains the first, smallest first."""
    first, others = names[0], names[1:]
    return [(first, *chosen) for size in range(len(others) + 1) for chosen in itertools.combinations(others, size)]


def open_members(runs: list[Path]) -> dict[str, RememberingBackend]:
    from edgeseg.loading.open import open_model

    members = {run.name: RememberingBackend(open_model(run, "torch-cpu").backend) for run in runs}
    sizes = {name: tuple(member.card.input_size) for name, member in members.items()}
    if len(set(sizes.values())) > 1:
        raise SystemExit(f"the runs' input sizes differ ({sizes}); an ensemble needs one input")
    return members


def score_grid(
    members: dict[str, RememberingBackend], thresholds: list[float], data: Path, split_dir: Path | None
) -> list[dict]:
    import dataclasses

    from edgeseg.core.data import discover_samples
    from edgeseg.core.segmenter import TTA_FLIPS, Segmenter
    from edgeseg.evaluate.accuracy import evaluate

    val = discover_samples(data, split="val", split_dir=split_dir)
    rows = []
    for combo in combinations(list(members)):
        backend = AveragingBackend([members[name] for name in combo])
        for tta in TTA_SETTINGS:
            for threshold in thresholds:
                output = dataclasses.replace(backend.card.output, threshold=threshold)
                segmenter = Segmenter(backend, backend.card.replace(output=output), tta=tta)
                started = time.monotonic()
                mean = evaluate(segmenter, val, "+".join(combo), "val", progress=False).mean
                row = {
                    "runs": list(combo),
                    "tta": tta,
                    "threshold": threshold,
                    "networks_per_frame": len(combo) * len(TTA_FLIPS[tta]),
                    **{name: round(mean[name], 4) for name in VAL_TARGET},
                }
                row["meets_val_target"] = all(row[name] >= goal for name, goal in VAL_TARGET.items())
                rows.append(row)
                print(
                    f"{'+'.join(combo)} tta={tta} threshold={threshold}: Dice {row['dice']:.4f} J {row['jaccard']:.4f} "
                    f"thr. J {row['threshold_jaccard']:.4f} ({time.monotonic() - started:.0f} s)",
                    file=sys.stderr,
                )
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="training run directories; the first is the default model's")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split-dir", type=Path)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.4, 0.45, 0.5])
    parser.add_argument(
        "--out", type=Path, default=RESULTS / "ensemble-ceiling-cpu.json", help="the .md goes beside it"
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    from edgeseg.core.files import portable_command, portable_path, write_text_atomic
    from edgeseg.core.host import host_info

    started = time.monotonic()
    rows = score_grid(open_members(args.runs), args.thresholds, args.data, args.split_dir)
    report = {
        "benchmark": "ensemble_ceiling",
        "runs": {run.name: portable_path(run) for run in args.runs},
        "val_target": VAL_TARGET,
        "labels": "val split, masks as `edgeseg run` makes them (closer look, largest region), ISIC scorer's rules, "
        "mean over images; probabilities averaged over members and flip views; threshold and combination picked on "
        "val: an upper bound for these models, not an estimate on unseen images",
        "rows": rows,
        "command": portable_command(sys.argv),
        "host": host_info(),
        "wall_minutes": round((time.monotonic() - started) / 60, 2),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    write_text_atomic(args.out.with_suffix(".md"), markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    """The grid as one table, then the row with the best Jaccard (one meeting the target first)."""
    target = report["val_target"]
    lines = [
        "# Ensemble and flip-TTA ceiling of the trained models on val",
        "",
        f"Host: {report['host']['cpu'].get('model')}, PyTorch on the CPU. {report['labels']}.",
        "",
        "Runs: " + ", ".join(f"`{name}` ({path})" for name, path in report["runs"].items()) + ".",
        f"Val target: Dice >= {target['dice']}, Jaccard >= {target['jaccard']}, "
        f"thresholded Jaccard >= {target['threshold_jaccard']}.",
        "",
        "| runs averaged | TTA | networks per frame | threshold | Dice | Jaccard | thr. Jaccard "
        "| meets the val target |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {' + '.join(row['runs'])} | {row['tta']} | {row['networks_per_frame']} | {row['threshold']:g} | "
            f"{row['dice']:.4f} | {row['jaccard']:.4f} | {row['threshold_jaccard']:.4f} | "
            f"{'yes' if row['meets_val_target'] else 'no'} |"
        )
    best = max(report["rows"], key=lambda row: (row["meets_val_target"], row["jaccard"]))
    lines += [
        "",
        f"Best Jaccard: {' + '.join(best['runs'])}, TTA {best['tta']}, threshold {best['threshold']:g}: "
        f"Dice {best['dice']:.4f} / J {best['jaccard']:.4f} / thr. J {best['threshold_jaccard']:.4f}, "
        f"{best['networks_per_frame']} networks per frame.",
        "",
        f"`{report['command']}`, {report['date']}, {report['wall_minutes']} min.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
