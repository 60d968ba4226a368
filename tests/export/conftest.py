"""Fixtures for the export tests: the strict TensorRT and CUDA double (trt_double.py) as ``gpu_double``."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from .trt_double import GpuDouble


@pytest.fixture
def gpu_double(monkeypatch: pytest.MonkeyPatch):
    """Returns install(tensorrt_version="10.3.0.30", gpus=(("Orin", 8, 7),)) -> GpuDouble, which puts a strict
    double of TensorRT and cuda-python in place; at the end, fails the test if anything is still allocated."""
    installed: list[GpuDouble] = []

    def install(
        tensorrt_version: str = "10.3.0.30", gpus: Sequence[tuple[str, int, int]] = (("Orin", 8, 7),)
    ) -> GpuDouble:
        double = GpuDouble(tensorrt_version, gpus)
        double.install(monkeypatch)
        installed.append(double)
        return double

    yield install
    for double in installed:
        double.check_released()
