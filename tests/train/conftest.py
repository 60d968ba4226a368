"""Fixtures of the training tests: the TrainConfig a command would run, caught before any training."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


@pytest.fixture
def started(monkeypatch) -> list:
    """The TrainConfig of each `edgeseg train` run in the test, caught in place of training."""
    loop = pytest.importorskip("edgeseg.train.loop")
    configs = []

    def catch(config, hooks=None):
        configs.append(config)
        return SimpleNamespace(sweep=None, state=SimpleNamespace(epoch=1, planned_epochs=1), run_dir=config.out)

    monkeypatch.setattr(loop, "train", catch)
    return configs
