"""TorchBackend: the runtime's Backend protocol over the PyTorch model."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeseg.train.network import load_model
from edgeseg.train.torch_backend import TorchBackend


def test_infer_returns_the_model_logits(tiny_run_dir):
    model, card = load_model(tiny_run_dir)
    batch = np.random.default_rng(0).standard_normal((2, 3, *card.input_size)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    with TorchBackend(model, card) as backend:
        assert (backend.name, backend.precision) == ("torch-cpu", "fp32")
        logits = backend.infer(batch)
    assert logits.dtype == np.float32 and logits.shape == (2, 1, *card.input_size)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5)


def test_fp16_is_close_to_fp32_and_returns_float32(tiny_run_dir):
    model, card = load_model(tiny_run_dir)
    batch = np.random.default_rng(1).standard_normal((1, 3, *card.input_size)).astype(np.float32)
    reference = TorchBackend(model, card).infer(batch)
    half_model, _ = load_model(tiny_run_dir)
    with TorchBackend(half_model, card, precision="fp16") as backend:
        assert backend.precision == "fp16"
        logits = backend.infer(batch)
    assert logits.dtype == np.float32
    assert np.abs(logits - reference).max() < 0.05


def test_wrong_input_shape_is_refused(tiny_run_dir):
    model, card = load_model(tiny_run_dir)
    with pytest.raises(ValueError, match=r"expected a float32 batch \(N, 3, 64, 64\)"):
        TorchBackend(model, card).infer(np.zeros((1, 3, 32, 32), np.float32))
