"""`edgeseg train` on tiny synthetic data: the run directory, exact resume, bad data, the schedule."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from click.testing import CliRunner
from safetensors.torch import load_file

from edgeseg.cli import main
from edgeseg.core.card import load_card
from edgeseg.train.config import TrainConfig
from edgeseg.train.loop import CHECKPOINT_FILENAME, learning_rate, plan_epochs
from edgeseg.train.network import load_model
from edgeseg.train.threshold import THRESHOLDS

TINY = [
    "--size",
    "64",
    "--batch-size",
    "4",
    "--decoder-channels",
    "32,32",
    "--encoder-weights",
    "none",
    "--seed",
    "3",
    "--threads",
    "2",
    "--no-progress",
]


def run_train(*args: str) -> None:
    result = CliRunner().invoke(main, ["train", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.fixture(scope="module")
def two_epoch_run(synthetic_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    run_train("--data", str(synthetic_dir), "--out", str(out), "--epochs", "2", *TINY)
    return out


def test_tiny_run_writes_a_complete_run_dir(two_epoch_run, synthetic_dir):
    for name in (
        "model.safetensors",
        "card.json",
        CHECKPOINT_FILENAME,
        "config.json",
        "config.toml",
        "logs/iterations.csv",
        "logs/epochs.csv",
        "logs/threshold.csv",
        "plots/loss.png",
        "plots/iou.png",
        "plots/threshold.png",
        "plots/probability-histogram.png",
    ):
        assert (two_epoch_run / name).stat().st_size > 0, name
    card = load_card(two_epoch_run)
    assert card.input_size == (64, 64)
    assert card.architecture_kwargs == {"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32}
    assert card.output.threshold in THRESHOLDS
    provenance = card.provenance
    assert (provenance.train_images, provenance.val_images, provenance.epochs) == (19, 5, 2)
    assert provenance.best_epoch in (1, 2) and provenance.split_hash.startswith("sha256:")
    assert provenance.data == synthetic_dir.name  # the data set by name, never a path of this machine
    files = sorted(path.relative_to(synthetic_dir).as_posix() for path in synthetic_dir.glob("ISIC2018_*/*"))
    expected = "sha256:" + hashlib.sha256("".join(f"{name}\n" for name in files).encode()).hexdigest()
    assert provenance.data_files_hash == expected  # every pair of the synthetic set: 19 train + 5 val
    assert {"dice", "jaccard", "threshold_jaccard", "jaccard_at_0.5"} <= set(provenance.val_metrics)
    assert "torch" in provenance.versions

    iterations = rows(two_epoch_run / "logs/iterations.csv")
    assert [int(r["step"]) for r in iterations] == list(range(1, 9))  # 19 images // 4 = 4 steps per epoch
    epochs = rows(two_epoch_run / "logs/epochs.csv")
    assert [int(r["epoch"]) for r in epochs] == [1, 2]
    best = max(epochs, key=lambda r: float(r["val_jaccard"]))
    assert int(best["epoch"]) == provenance.best_epoch
    assert provenance.val_metrics["jaccard_at_0.5"] == pytest.approx(float(best["val_jaccard"]), abs=1e-6)

    model, _ = load_model(two_epoch_run)  # the best weights rebuild from the card alone
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_resume_after_a_kill_equals_an_uninterrupted_run(two_epoch_run, synthetic_dir, tmp_path):
    out = tmp_path / "killed"
    run_train("--data", str(synthetic_dir), "--out", str(out), "--epochs", "2", "--stop-after-epochs", "1", *TINY)
    assert len(rows(out / "logs/epochs.csv")) == 1 and not (out / "logs/threshold.csv").exists()
    run_train("--resume", str(out), "--data", str(synthetic_dir), "--no-progress")

    finished = torch.load(two_epoch_run / CHECKPOINT_FILENAME, weights_only=True)
    resumed = torch.load(out / CHECKPOINT_FILENAME, weights_only=True)
    assert finished["model"].keys() == resumed["model"].keys()
    for name, tensor in finished["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    best_a, best_b = load_file(str(two_epoch_run / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(best_a[name], best_b[name]) for name in best_a)

    def logged(run: Path) -> list[tuple[str, ...]]:  # everything but the wall-clock seconds
        return [(r["epoch"], r["step"], r["loss"], r["iou"], r["lr"]) for r in rows(run / "logs/iterations.csv")]

    assert logged(out) == logged(two_epoch_run)
    assert load_card(out).output.threshold == load_card(two_epoch_run).output.threshold


def test_corrupt_data_stops_before_training(synthetic_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data)
    broken = sorted((data / "ISIC2018_Task1-2_Training_Input").glob("*.jpg"))[0]
    broken.write_bytes(b"not a jpeg")
    result = CliRunner().invoke(main, ["train", "--data", str(data), "--out", str(tmp_path / "run"), *TINY])
    assert result.exit_code != 0
    assert broken.name in result.output
    assert not (tmp_path / "run" / CHECKPOINT_FILENAME).exists()


def test_existing_run_is_not_overwritten(two_epoch_run, synthetic_dir):
    result = CliRunner().invoke(main, ["train", "--data", str(synthetic_dir), "--out", str(two_epoch_run), *TINY])
    assert result.exit_code != 0 and "--resume" in result.output


def test_size_not_divisible_by_32_names_the_fix(synthetic_dir, tmp_path):
    result = CliRunner().invoke(
        main, ["train", "--data", str(synthetic_dir), "--out", str(tmp_path), "--size", "250x100"]
    )
    assert result.exit_code != 0
    assert "multiples of 32" in result.output and "Consider 256x128" in result.output


def test_paper_preset_fills_what_is_not_given(synthetic_dir, tmp_path, monkeypatch):
    seen = {}

    def fake_train(config, hooks=None):
        seen["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr("edgeseg.train.loop.train", fake_train)
    CliRunner().invoke(
        main,
        ["train", "--data", str(synthetic_dir), "--out", str(tmp_path / "r"), "--preset", "paper", "--epochs", "3"],
    )
    config = seen["config"]
    assert (config.encoder, config.size, config.loss, config.optimizer, config.lr, config.schedule) == (
        "se_resnext50_32x4d",
        (320, 320),
        "dice",
        "adam",
        1e-4,
        "step",
    )
    assert config.epochs == 3  # given explicitly, so it wins over the preset's 20


def test_schedules():
    paper = TrainConfig(data="d", out="o", lr=1e-4, schedule="step", step_epoch=10)
    assert learning_rate(paper, 10 * 5 - 1, 5, 20) == pytest.approx(1e-4)  # last step of epoch 10
    assert learning_rate(paper, 10 * 5, 5, 20) == pytest.approx(1e-5)  # first step of epoch 11
    cosine = TrainConfig(data="d", out="o", lr=1e-3, min_lr_factor=0.01)
    assert learning_rate(cosine, 0, 10, 5) == pytest.approx(1e-4)  # warm-up starts at lr / 10
    assert learning_rate(cosine, 10, 10, 5) == pytest.approx(1e-3)  # peak after one epoch
    assert learning_rate(cosine, 50, 10, 5) == pytest.approx(1e-5)  # ends at lr * min_lr_factor
    assert plan_epochs(TrainConfig(data="d", out="o", epochs=40), 3600, 400, [400]) == 8  # 2% margin on the pace
    assert plan_epochs(TrainConfig(data="d", out="o", epochs=5), 3600, 400, [400]) == 5


def simulate_budget(first_epoch: float, later_epochs: float, budget: float = 3600) -> tuple[int, int, float]:
    """Run the planner as the loop does, on a simulated clock: (epochs run, last plan, seconds used)."""
    config = TrainConfig(data="d", out="o", epochs=100)
    planned, elapsed, durations = config.epochs, 0.0, []
    while len(durations) < planned:
        durations.append(first_epoch if not durations else later_epochs)
        elapsed += durations[-1]
        assert elapsed <= budget, "an epoch was planned that the budget cannot hold: the cosine would be cut"
        planned = plan_epochs(config, budget, elapsed, durations)
    return len(durations), planned, elapsed


def test_planner_replans_after_a_slow_first_epoch():
    # A busy start (first epoch 3x slower) used to fix the plan at 6 epochs and leave half the hour unused.
    epochs, planned, used = simulate_budget(first_epoch=600, later_epochs=200)
    assert epochs == planned  # the run ends on its last planned step: the schedule ran to its end
    assert epochs >= 15 and used >= 3600 - 2 * 200  # and the budget was spent, not left over
    quiet, _, _ = simulate_budget(first_epoch=200, later_epochs=200)
    assert quiet - epochs <= 2


def test_config_json_records_the_run(two_epoch_run):
    config = json.loads((two_epoch_run / "config.json").read_text())
    assert config["epochs"] == 2 and config["size"] == [64, 64] and config["seed"] == 3


def test_init_weights_fine_tunes_from_every_weight_of_a_run(two_epoch_run, synthetic_dir, tmp_path):
    out = tmp_path / "tuned"
    run_train(
        "--data",
        str(synthetic_dir),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--init-weights",
        str(two_epoch_run),
        "--lr",
        "1e-12",
        *TINY,
    )
    start, tuned = load_file(str(two_epoch_run / "model.safetensors")), load_file(str(out / "model.safetensors"))
    weights = [name for name in start if name.endswith(".weight") and start[name].dim() == 4]  # conv kernels
    assert weights and all(torch.allclose(start[name], tuned[name], atol=1e-6) for name in weights)
    card = load_card(out)
    assert card.preprocessing == load_card(two_epoch_run).preprocessing
    assert "fine-tuned from the run" in card.provenance.notes


def test_init_weights_from_another_architecture_names_the_options(two_epoch_run, synthetic_dir, tmp_path):
    tiny_other = [value if value != "32,32" else "16,16" for value in TINY]
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--data",
            str(synthetic_dir),
            "--out",
            str(tmp_path / "run"),
            "--init-weights",
            str(two_epoch_run),
            *tiny_other,
        ],
    )
    assert result.exit_code == 1
    assert "--decoder-channels" in result.output and str(two_epoch_run) in result.output
    assert not (tmp_path / "run").exists()


def test_a_fine_tune_resumes_after_the_run_it_started_from_is_gone(two_epoch_run, synthetic_dir, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(two_epoch_run, source)
    out = tmp_path / "tuned"
    run_train(
        "--data",
        str(synthetic_dir),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--stop-after-epochs",
        "1",
        "--init-weights",
        str(source),
        *TINY,
    )
    shutil.rmtree(source)
    run_train("--resume", str(out), "--data", str(synthetic_dir), "--no-progress")
    assert [int(r["epoch"]) for r in rows(out / "logs/epochs.csv")] == [1, 2]


def test_training_never_reads_the_locked_test_split(synthetic_dir: Path, tmp_path: Path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data)
    train_ids = (data / "splits" / "train.txt").read_text().split()
    # A test split that shares an id with train: refused before anything trains, naming the id.
    (data / "splits" / "test.txt").write_text(train_ids[0] + "\n")
    result = CliRunner().invoke(
        main, ["train", "--data", str(data), "--out", str(tmp_path / "leak"), *TINY, "--epochs", "1"]
    )
    assert result.exit_code != 0 and "locked test split" in result.output and train_ids[0] in result.output
    assert not (tmp_path / "leak" / "checkpoint-last.pt").exists()
    # A test split of its own, whose images are not even readable: training (and its threshold analysis)
    # never opens them, so it runs.
    (data / "splits" / "train.txt").write_text("\n".join(train_ids[2:]) + "\n")
    (data / "splits" / "test.txt").write_text("\n".join(train_ids[:2]) + "\n")
    for sample_id in train_ids[:2]:
        (data / "ISIC2018_Task1-2_Training_Input" / f"{sample_id}.jpg").write_bytes(b"not an image")
    result = CliRunner().invoke(
        main, ["train", "--data", str(data), "--out", str(tmp_path / "run"), *TINY, "--epochs", "1"]
    )
    assert result.exit_code == 0, result.output
    assert load_card(tmp_path / "run").provenance.train_images == len(train_ids) - 2
