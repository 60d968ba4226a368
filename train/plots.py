"""Training plots (matplotlib, Agg backend: no display needed): the paper's figures 5 and 6 and the threshold
analysis."""

from __future__ import annotations

from pathlib import Path

from edgeseg.core.files import atomic_output
from edgeseg.train.threshold import HISTOGRAM_BINS, ThresholdSweep


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    with atomic_output(path) as temporary:
        figure.savefig(temporary, dpi=110)
    _pyplot().close(figure)
    return path


def plot_curve(
    iterations: list[dict], epochs: list[dict], train_key: str, val_key: str | None, label: str, path: Path
) -> Path:
    """One training curve per iteration (and its running mean), with validation points per epoch."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4))
    steps = [row["step"] for row in iterations]
    values = [row[train_key] for row in iterations]
    axes.plot(steps, values, lw=0.5, alpha=0.35, color="tab:blue", label=f"train {label} (per iteration)")
    window = max(1, len(values) // 50)
    if len(values) >= window:
        smooth = [
            sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
            for i in range(len(values))
        ]
        axes.plot(steps, smooth, lw=1.5, color="tab:blue", label=f"train {label} (running mean of {window})")
    if val_key is not None and epochs:
        axes.plot(
            [row["step"] for row in epochs],
            [row[val_key] for row in epochs],
            "o-",
            color="tab:orange",
            label=f"val {label} (per epoch, original resolution)",
        )
    axes.set_xlabel("iteration")
    axes.set_ylabel(label)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_training(iterations: list[dict], epochs: list[dict], out_dir: Path) -> list[Path]:
    return [
        plot_curve(iterations, epochs, "loss", None, "loss", out_dir / "loss.png"),
        plot_curve(iterations, epochs, "iou", "val_jaccard", "IoU", out_dir / "iou.png"),
    ]


def plot_threshold_sweep(sweep: ThresholdSweep, out_dir: Path) -> list[Path]:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4))
    for name, label in (("dice", "Dice"), ("jaccard", "Jaccard"), ("threshold_jaccard", "thresholded Jaccard")):
        axes.plot(sweep.thresholds, sweep.means[name], "o-", ms=3, label=label)
    axes.axvline(sweep.chosen, color="grey", ls="--", label=f"chosen {sweep.chosen:.2f}")
    axes.set_xlabel("threshold on the predicted probability")
    axes.set_ylabel("mean over val images (original resolution)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    curve = _save(figure, out_dir / "threshold.png")

    figure, axes = plt.subplots(figsize=(7, 4))
    width = 1.0 / HISTOGRAM_BINS
    axes.bar([i * width for i in range(HISTOGRAM_BINS)], sweep.histogram, width=width, align="edge")
    axes.set_yscale("log")
    axes.set_xlabel("predicted probability (val pixels, network resolution)")
    axes.set_ylabel("pixels")
    axes.axvline(sweep.chosen, color="grey", ls="--")
    histogram = _save(figure, out_dir / "probability-histogram.png")
    return [curve, histogram]
