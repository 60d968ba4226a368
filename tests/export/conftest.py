"""A tiny FPN trained for a few Adam steps on synthetic data: parity on untrained weights says nothing.

Random weights give probabilities near 0.5 everywhere, so the masks are threshold noise that any
rounding flips; a few steps on synthetic lesions give masks with real structure and margins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeseg.card import ModelCard, Provenance, save_card

TRAIN_STEPS = 60


@pytest.fixture(scope="session")
def trained_run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_card: ModelCard, synthetic_dir: Path) -> Path:
    torch = pytest.importorskip("torch")
    import cv2

    from edgeseg.data import discover_samples
    from edgeseg.files import read_image, read_mask
    from edgeseg.preprocess import preprocess
    from edgeseg.train.model import WEIGHTS_FILENAME, build_model, save_weights

    card = tiny_card.replace(provenance=Provenance(data=str(synthetic_dir), notes="test fixture: 60 Adam steps"))
    samples = discover_samples(synthetic_dir, split="train")
    height, width = card.input_size
    images = np.concatenate([preprocess(read_image(sample.image), card) for sample in samples])
    masks = np.stack([
        cv2.resize(read_mask(sample.mask).astype(np.float32), (width, height), interpolation=cv2.INTER_NEAREST)
        for sample in samples
    ])[:, None]
    inputs, targets = torch.from_numpy(images), torch.from_numpy(masks)

    torch.manual_seed(0)
    model = build_model(card).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(TRAIN_STEPS):
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
