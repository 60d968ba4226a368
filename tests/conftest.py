"""Fixtures shared by every test: where the real data is, small synthetic data, a tiny model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseg.core.card import ModelCard, Provenance, save_card

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ISIC_DIR = REPO_ROOT.parent / "shared" / "data" / "isic2018"

# A network small enough for tests to train and export in seconds; real runs use the card's defaults.
TINY_ARCHITECTURE = {"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32}


def isic_data_dir() -> Path:
    return Path(os.environ.get("EDGESEG_ISIC_DIR", DEFAULT_ISIC_DIR))


@pytest.fixture(scope="session")
def isic_dir() -> Path:
    """The real ISIC 2018 data (EDGESEG_ISIC_DIR, default ../shared/data/isic2018), or skip."""
    path = isic_data_dir()
    if not (path / "ISIC2018_Task1_Training_GroundTruth").is_dir():
        pytest.skip(f"real ISIC 2018 data not found at {path}; set EDGESEG_ISIC_DIR to its folder")
    return path


@pytest.fixture(scope="session")
def installed_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """edgeseg installed (not editable) from a copy of the tree into the returned folder's site/: import-linter and
    mypy read the parts where a wheel puts them (the editable install's folder mapping hides them from both)."""
    work = tmp_path_factory.mktemp("installed")
    source = work / "source"
    skipped = (".git", ".venv*", "build", "runs", "demo-out", "out", "data", "*.egg-info", "__pycache__", ".*_cache")
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(*skipped))
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(work / "site"), str(source)], check=True)
    return work


@pytest.fixture(scope="session")
def tiny_card() -> ModelCard:
    return ModelCard(input_size=(64, 64), architecture_kwargs=dict(TINY_ARCHITECTURE))


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic dermoscopy images (96 px) in the ISIC layout with splits, made once per session."""
    from edgeseg.core.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, n=24, size=96, seed=7)
    return root


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_card: ModelCard) -> Path:
    """A run directory (card.json + weights) of an untrained tiny FPN with fixed random weights."""
    torch = pytest.importorskip("torch")
    from edgeseg.core.card import save_card
    from edgeseg.train.network import WEIGHTS_FILENAME, build_model, save_weights

    torch.manual_seed(0)
    run_dir = tmp_path_factory.mktemp("tiny_run")
    save_weights(build_model(tiny_card), run_dir / WEIGHTS_FILENAME)
    save_card(tiny_card, run_dir)
    return run_dir


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_run_dir: Path) -> Path:
    """The tiny run exported to fp32 ONNX."""
    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.train.network import load_model

    model, card = load_model(tiny_run_dir)
    return export_onnx(model, card, tmp_path_factory.mktemp("tiny_onnx") / "model.onnx")


# A tiny FPN trained for a few Adam steps on synthetic data (export's parity tests and the kill tests):
# parity on untrained weights says nothing. Random weights give probabilities near 0.5 everywhere, so
# the masks are threshold noise that any rounding flips; a few steps on synthetic lesions give masks
# with real structure and margins.
TRAIN_STEPS = 60


@pytest.fixture(scope="session")
def trained_run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_card: ModelCard, synthetic_dir: Path) -> Path:
    torch = pytest.importorskip("torch")
    import cv2

    from edgeseg.core.data import discover_samples
    from edgeseg.core.files import read_image, read_mask
    from edgeseg.core.preprocess import preprocess
    from edgeseg.train.network import WEIGHTS_FILENAME, build_model, save_weights

    card = tiny_card.replace(provenance=Provenance(data=synthetic_dir.name, notes="test fixture: 60 Adam steps"))
    samples = discover_samples(synthetic_dir, split="train")
    height, width = card.input_size
    images = np.concatenate([preprocess(read_image(sample.image), card) for sample in samples])
    masks = np.stack(
        [
            cv2.resize(read_mask(sample.mask).astype(np.float32), (width, height), interpolation=cv2.INTER_NEAREST)
            for sample in samples
        ]
    )[:, None]
    inputs, targets = torch.from_numpy(images), torch.from_numpy(masks)

    torch.manual_seed(0)
    model = build_model(card).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(TRAIN_STEPS):
        batch = torch.randperm(len(inputs))[:8]
        logits = model(inputs[batch])
        probability = torch.sigmoid(logits)
        dice = 1 - (2 * (probability * targets[batch]).sum() + 1) / (probability.sum() + targets[batch].sum() + 1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets[batch]) + dice
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    run_dir = tmp_path_factory.mktemp("trained_run")
    save_weights(model.eval(), run_dir / WEIGHTS_FILENAME)
    save_card(card, run_dir)
    return run_dir


@pytest.fixture
def fresh_venv(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A new virtual environment (tmp_path/venv) and the environment variables that run inside it alone:
    nothing of this interpreter's path, user site or display leaks in."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "DISPLAY", "WAYLAND_DISPLAY"}
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["PYTHONNOUSERSITE"] = "1"
    return venv, env
