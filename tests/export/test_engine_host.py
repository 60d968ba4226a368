"""Hosts that cannot build an engine say why, and export skips the engine forms rather than failing."""

from __future__ import annotations

import pytest

from edgeseg.export import tensorrt_export
from edgeseg.runtime import cuda


def test_a_driver_too_old_makes_engines_unavailable_with_its_reason(monkeypatch):
    def old_driver(index: int = 0):
        raise cuda.CudaDriverError("NVIDIA driver 470.82.01 is older than CUDA 12 needs (>= 525.60.13)")

    monkeypatch.setattr(cuda, "device", old_driver)
    with pytest.raises(tensorrt_export.EngineUnavailable, match="470.82.01 is older than CUDA 12 needs"):
        tensorrt_export.gpu_properties()


def test_the_builders_gpu_is_the_runtimes_device_with_its_fp16_rate():
    orin = tensorrt_export.Gpu("Orin", 8, 7)
    assert isinstance(orin, cuda.Device) and orin.compute_capability == "8.7" and orin.has_fast_fp16
    assert not tensorrt_export.Gpu("GTX 1080", 6, 1).has_fast_fp16
