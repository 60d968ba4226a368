"""DistributedDataParallel under torchrun: 2 CPU processes (gloo), each on its own share of the data."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import defaultdict

import pytest

pytest.importorskip("torch")

from edgeseg.core.data import discover_samples
from edgeseg.train.loop import CHECKPOINT_FILENAME


@pytest.mark.slow
def test_two_processes_see_different_samples_and_rank0_alone_writes(synthetic_dir, tmp_path):
    out, sample_log = tmp_path / "run", tmp_path / "samples.txt"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "edgeseg",
        "train",
        "--data",
        str(synthetic_dir),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--size",
        "64",
        "--batch-size",
        "4",
        "--decoder-channels",
        "32,32",
        "--encoder-weights",
        "none",
        "--device",
        "cpu",
        "--no-progress",
        "--sample-log",
        str(sample_log),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]

    seen = defaultdict(list)
    for line in sample_log.read_text().splitlines():
        rank, sample_id = line.split()
        seen[rank].append(sample_id)
    assert set(seen) == {"0", "1"}
    assert len(seen["0"]) == len(seen["1"]) == 8  # 19 images -> 10 per rank -> 2 full batches of 4
    assert not set(seen["0"]) & set(seen["1"])  # each rank its own share of the epoch
    train_ids = {sample.id for sample in discover_samples(synthetic_dir, split="train")}
    assert set(seen["0"]) | set(seen["1"]) <= train_ids

    # Rank 0 alone logged: one row per optimiser step, not one per rank.
    with open(out / "logs" / "iterations.csv", newline="") as stream:
        steps = [int(row["step"]) for row in csv.DictReader(stream)]
    assert steps == [1, 2]
    assert (out / CHECKPOINT_FILENAME).is_file() and (out / "model.safetensors").is_file()
    assert sorted(path.name for path in out.iterdir() if path.name.startswith(".")) == []  # no stray temporaries
