"""benchmarks/compact_isic.py: the compact copy trains on what the original would give, and keeps val as it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "benchmarks" / "compact_isic.py"


def compact(source: Path, target: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(source), str(target), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )


def test_train_decodes_to_the_same_masks_and_nearly_the_same_images_and_val_is_copied_unchanged(
    synthetic_dir: Path, tmp_path: Path
):
    pytest.importorskip("torch")
    from edgeseg.core.card import ModelCard
    from edgeseg.core.data import discover_samples
    from edgeseg.train.dataset import decode_train

    target = tmp_path / "compact"
    done = compact(synthetic_dir, target, "--size", "64", "--quality", "90")
    assert done.returncode == 0, done.stdout + done.stderr
    card = ModelCard(input_size=(64, 64))
    original = decode_train(discover_samples(synthetic_dir, split="train"), card, progress=False)
    copied = decode_train(discover_samples(target, split="train"), card, progress=False)
    assert copied.ids == original.ids and len(copied.ids) > 0
    assert np.array_equal(copied.masks.numpy(), original.masks.numpy())
    error = copied.images.float() - original.images.float()
    psnr = 10 * np.log10(255.0**2 / float((error**2).mean()))
    assert psnr > 33.0, psnr  # only the JPEG step differs
    for sample in discover_samples(synthetic_dir, split="val"):
        for path in (Path(sample.image), Path(sample.mask)):
            assert (target / path.relative_to(synthetic_dir)).read_bytes() == path.read_bytes()
    assert (target / "splits" / "train.txt").read_text() == (synthetic_dir / "splits" / "train.txt").read_text()


def test_refuses_to_write_into_an_existing_folder(synthetic_dir: Path, tmp_path: Path):
    (tmp_path / "taken").mkdir()
    done = compact(synthetic_dir, tmp_path / "taken")
    assert done.returncode != 0 and "already exists" in done.stderr
