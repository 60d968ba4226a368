"""benchmarks/encoder_weights.py: the file it writes trains from the same weights as --encoder-weights imagenet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "benchmarks" / "encoder_weights.py"


def test_the_written_encoder_loads_as_the_imagenet_weights(tmp_path: Path):
    torch = pytest.importorskip("torch")
    smp = pytest.importorskip("segmentation_models_pytorch")
    from edgeseg.train.encoders import LITE0_ENCODER, load_encoder_weights

    out = tmp_path / "lite0.safetensors"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(out)], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr
    from_file, from_package = (
        smp.create_model("FPN", encoder_name=LITE0_ENCODER, encoder_weights=None, classes=1) for _ in range(2)
    )
    load_encoder_weights(from_file, LITE0_ENCODER, str(out))
    load_encoder_weights(from_package, LITE0_ENCODER, "imagenet")
    expected = from_package.encoder.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in from_file.encoder.state_dict().items())


def test_refuses_a_name_train_would_not_take(tmp_path: Path):
    pytest.importorskip("segmentation_models_pytorch")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "lite0.pt")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert done.returncode != 0 and "safetensors" in done.stderr and not (tmp_path / "lite0.pt").exists()


def test_half_stores_float16_that_loads_within_float16_rounding(tmp_path: Path):
    torch = pytest.importorskip("torch")
    smp = pytest.importorskip("segmentation_models_pytorch")
    from safetensors.torch import load_file

    from edgeseg.train.encoders import LITE0_ENCODER, load_encoder_weights

    out = tmp_path / "lite0-half.safetensors"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), "--half"], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert {tensor.dtype for tensor in load_file(str(out)).values() if tensor.is_floating_point()} == {torch.float16}
    from_file, from_package = (
        smp.create_model("FPN", encoder_name=LITE0_ENCODER, encoder_weights=None, classes=1) for _ in range(2)
    )
    load_encoder_weights(from_file, LITE0_ENCODER, str(out))
    load_encoder_weights(from_package, LITE0_ENCODER, "imagenet")
    expected = from_package.encoder.state_dict()
    loaded = from_file.encoder.state_dict()
    assert all(loaded[name].dtype == tensor.dtype for name, tensor in expected.items())
    assert all(
        torch.allclose(loaded[name], tensor, rtol=2**-10, atol=1e-7)
        for name, tensor in expected.items()
        if tensor.is_floating_point()
    )
