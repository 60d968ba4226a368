"""benchmarks/ensemble_ceiling.py: its averaging, its memory, and a single run's row equal to `edgeseg eval`'s
figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseg.core.card import ModelCard

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ensemble_ceiling.py"


class CountingBackend:
    name, precision, card = "torch-cpu", "fp32", ModelCard(input_size=(32, 32))

    def __init__(self, scale: float) -> None:
        self.scale, self.calls = scale, 0

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.scale * batch[:, :1]


def test_averaging_means_the_probabilities_and_remembering_runs_each_input_once(load_benchmark):
    script = load_benchmark("ensemble_ceiling")
    batch = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)
    plus, minus = CountingBackend(2.0), CountingBackend(-2.0)
    remembered = script.RememberingBackend(plus)
    alone = script.AveragingBackend([remembered])
    both = script.AveragingBackend([remembered, script.RememberingBackend(minus)])

    np.testing.assert_allclose(alone.infer(batch), 2.0 * batch[:, :1], atol=0.02)  # float16 memory
    np.testing.assert_allclose(both.infer(batch), 0.0, atol=0.02)  # p and 1 - p average to 0.5
    assert plus.calls == 1 and minus.calls == 1
    assert script.combinations(["a", "b", "c"]) == [("a",), ("a", "b"), ("a", "c"), ("a", "b", "c")]


def test_a_run_alone_without_tta_scores_as_edgeseg_eval(
    trained_run_dir: Path, tiny_run_dir: Path, synthetic_dir: Path, tmp_path: Path
):
    pytest.importorskip("torch")
    from edgeseg.core.data import discover_samples
    from edgeseg.evaluate.accuracy import evaluate
    from edgeseg.loading.open import open_model

    out = tmp_path / "ceiling.json"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(trained_run_dir),
            str(tiny_run_dir),
            "--data",
            str(synthetic_dir),
            "--thresholds",
            "0.5",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(len(row["runs"]), row["tta"], row["networks_per_frame"]) for row in rows] == [
        (1, "none", 1),
        (1, "hvflip", 4),
        (2, "none", 2),
        (2, "hvflip", 8),
    ]
    assert out.with_suffix(".md").read_text().count("\n| ") == 2 + len(rows)  # header, rule, one line per row

    with open_model(trained_run_dir, "torch-cpu") as segmenter:
        mean = evaluate(segmenter, discover_samples(synthetic_dir, split="val"), "run", "val", progress=False).mean
    assert rows[0]["threshold"] == segmenter.card.output.threshold
    assert rows[0]["jaccard"] == pytest.approx(mean["jaccard"], abs=2e-3)
    assert rows[0]["dice"] == pytest.approx(mean["dice"], abs=2e-3)
