"""The little of CUDA the TensorRT backend needs, through NVIDIA's cuda-python (no torch, no pycuda).

Written to the documented cuda-python runtime API (every call returns ``(error, *values)``) and
NVIDIA's TensorRT Python samples (samples/python/common_runtime.py). Verified only where a GPU was
available; on a host without one, nothing here is imported.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError

GPU_EXTRA_FIX = (
    "install NVIDIA's cuda-python: pip install 'edgeseg[gpu]' on an x86 GPU host, or the cuda-python matching "
    "your JetPack's CUDA on a Jetson"
)


class CudaError(EdgesegError, RuntimeError):
    """A CUDA runtime call that failed."""


def cudart() -> Any:
    """The CUDA runtime bindings: ``cuda.bindings.runtime`` (cuda-python >= 12.8) or the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart as runtime

        return runtime
    except ImportError:
        raise ImportError(f"the TensorRT backend needs CUDA from Python: {GPU_EXTRA_FIX}") from None


def call(result: tuple) -> Any:
    """Unpack a cuda-python result ``(error, *values)``: raise on error, else return the value(s)."""
    error, *values = result
    runtime = cudart()
    if error != runtime.cudaError_t.cudaSuccess:
        raise CudaError(f"CUDA runtime call failed: {error!r}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def compute_capability(device: int = 0) -> str | None:
    """This GPU's compute capability as "major.minor" (e.g. "8.7"), or None when no GPU is usable."""
    runtime = cudart()
    error, count = runtime.cudaGetDeviceCount()
    if error != runtime.cudaError_t.cudaSuccess or count <= device:
        return None
    properties = call(runtime.cudaGetDeviceProperties(device))
    return f"{properties.major}.{properties.minor}"


class PinnedBuffer:
    """A page-locked host array and a device allocation of the same size, made once and reused."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        runtime = cudart()
        dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * dtype.itemsize
        self.host_pointer = int(call(runtime.cudaMallocHost(self.nbytes)))
        raw = np.ctypeslib.as_array(ctypes.cast(self.host_pointer, ctypes.POINTER(ctypes.c_uint8)), (self.nbytes,))
        self.host = raw.view(dtype).reshape(shape)
        self.device_pointer = int(call(runtime.cudaMalloc(self.nbytes)))

    def to_device(self, stream: Any) -> None:
        runtime = cudart()
        kind = runtime.cudaMemcpyKind.cudaMemcpyHostToDevice
        call(runtime.cudaMemcpyAsync(self.device_pointer, self.host_pointer, self.nbytes, kind, stream))

    def to_host(self, stream: Any) -> None:
        runtime = cudart()
        kind = runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost
        call(runtime.cudaMemcpyAsync(self.host_pointer, self.device_pointer, self.nbytes, kind, stream))

    def free(self) -> None:
        runtime = cudart()
        if self.device_pointer:
            call(runtime.cudaFree(self.device_pointer))
            self.device_pointer = 0
        if self.host_pointer:
            self.host = None
            call(runtime.cudaFreeHost(self.host_pointer))
            self.host_pointer = 0
