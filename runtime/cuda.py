"""The little of CUDA the TensorRT backend needs, through NVIDIA's cuda-python (no torch, no pycuda).

Written to the documented cuda-python runtime API (``cuda.bindings.runtime``: every call returns
``(error, *values)``; a stream parameter takes a ``cudaStream_t``) and NVIDIA's TensorRT Python samples
(samples/python/common_runtime.py). TensorRT's Python API takes a stream as an int handle
(``execute_async_v3(stream_handle: int)``); ``native_handle`` gives it without the ``int(obj)``
that cuda-bindings deprecates. Tested against a strict double of these calls (tests/export/trt_double.py);
on a host without a GPU, nothing here is imported.

An NVIDIA driver too old for the CUDA installed is reported as that (``CudaDriverError``, with the
driver's version and the minimum), never as "no GPU": CUDA answers cudaErrorInsufficientDriver both
for an old driver and for no driver at all, so the GPUs nvidia-smi lists tell the two apart.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeseg.core import host
from edgeseg.core.errors import EdgesegError

GPU_EXTRA_FIX = (
    "install NVIDIA's cuda-python: pip install 'edgeseg[gpu]' on an x86 GPU host, or the cuda-python matching "
    "your JetPack's CUDA on a Jetson"
)


class CudaError(EdgesegError, RuntimeError):
    """A CUDA runtime call that failed."""


class CudaDriverError(CudaError):
    """CUDA cannot use the NVIDIA GPU that is here: its driver is older than this CUDA needs."""


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


def call(result: tuple, what: str = "a CUDA runtime call") -> Any:
    """Unpack a cuda-python result ``(error, *values)``: raise on error, else return the value(s)."""
    error, *values = result
    if error != cudart().cudaError_t.cudaSuccess:
        raise CudaError(f"{what} failed: {getattr(error, 'name', error)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def native_handle(cuda_object: Any) -> int:
    """The address a cuda-python object (a ``cudaStream_t``) wraps, as the int TensorRT's Python API takes."""
    if isinstance(cuda_object, int):
        return cuda_object
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(cuda_object)  # cuda-python before 12.9 has no utils module; int() is its documented way
    return int(get_cuda_native_handle(cuda_object))


@dataclass(frozen=True)
class Device:
    name: str
    major: int
    minor: int

    @property
    def compute_capability(self) -> str:
        return f"{self.major}.{self.minor}"


def device(index: int = 0) -> Device | None:
    """This GPU's name and compute capability (e.g. "Orin", 8.7), or None when CUDA sees no GPU.

    Raises CudaDriverError where CUDA says the driver is insufficient and nvidia-smi lists a GPU.
    """
    runtime = cudart()
    error, count = runtime.cudaGetDeviceCount()
    if error == runtime.cudaError_t.cudaErrorInsufficientDriver:
        reason = gpu_unusable_reason(cuda_major(), "CUDA reports cudaErrorInsufficientDriver")
        if reason is not None:
            raise CudaDriverError(reason)
        return None  # what CUDA also answers where no NVIDIA driver is installed at all: no GPU
    if error != runtime.cudaError_t.cudaSuccess or not count or count <= index:
        return None
    properties = call(runtime.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = properties.name
    if isinstance(name, bytes):  # a C char[256]: the name, then NULs
        name = name.split(b"\0", 1)[0].decode(errors="replace")
    return Device(name=str(name), major=int(properties.major), minor=int(properties.minor))


def cuda_major() -> int | None:
    """The CUDA major of the cuda-python in use: cudaRuntimeGetVersion() // 1000, else its package's version."""
    try:
        runtime = cudart()
    except ImportError:
        runtime = None
    get_version = getattr(runtime, "cudaRuntimeGetVersion", None)
    if get_version is not None:
        error, version = get_version()
        if error == runtime.cudaError_t.cudaSuccess and version:
            return int(version) // 1000
    for distribution in ("cuda-bindings", "cuda-python"):
        version, _ = host.package_version(distribution)
        head = (version or "").split(".")[0]
        if head.isdigit():
            return int(head)
    return None


def listed_driver_problem(major: int | None, gpus: list[dict] | None = None) -> str | None:
    """Why the driver of a GPU nvidia-smi lists (or ``gpus``) cannot run CUDA ``major`` software (its
    version and the minimum), or None: no GPU listed, the driver new enough, or nothing to judge by."""
    if gpus is None:
        gpus, _ = host.nvidia_smi_gpus()
    for gpu in gpus or []:
        problem = host.driver_problem(gpu["driver"], major) if major else None
        if problem:
            return f"{gpu['name']}: {problem}"
    return None


def gpu_unusable_reason(major: int | None, cuda_says: str) -> str | None:
    """What to tell a user whose CUDA gives no GPU while nvidia-smi lists one; None where it lists none."""
    gpus, _ = host.nvidia_smi_gpus()
    if not gpus:
        return None
    problem = listed_driver_problem(major, gpus)
    if problem:
        return f"{problem} ({cuda_says})."
    listed = "; ".join(f"{gpu['name']} (driver {gpu['driver']})" for gpu in gpus)
    minima = ", ".join(
        f"CUDA {cuda} needs >= {driver}" for cuda, driver in host.CUDA_DRIVER_MINIMUM.items() if cuda >= 12
    )
    built = f"CUDA {major}" if major else "the CUDA installed"
    return (
        f"nvidia-smi lists {listed}, but {cuda_says}: check that the driver is new enough for {built} ({minima}) "
        f"and CUDA_VISIBLE_DEVICES; `edgeseg doctor` shows both."
    )


class Stream:
    """A CUDA stream: the ``cudaStream_t`` for cuda-python calls, its int ``handle`` for TensorRT's."""

    def __init__(self) -> None:
        self.stream = call(cudart().cudaStreamCreate(), "cudaStreamCreate")
        self.handle = native_handle(self.stream)

    def synchronize(self) -> None:
        call(cudart().cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def destroy(self) -> None:
        """Destroy the stream; a second call does nothing."""
        stream, self.stream = self.stream, None
        if stream is not None:
            call(cudart().cudaStreamDestroy(stream), "cudaStreamDestroy")


class PinnedBuffer:
    """A page-locked host array and a device allocation of the same size, made once and reused."""

    host: np.ndarray | None  # None once freed: no view into released memory is left

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        runtime = cudart()
        dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * dtype.itemsize
        self.device_pointer = 0
        self.host_pointer = int(call(runtime.cudaMallocHost(self.nbytes), "cudaMallocHost"))
        try:
            raw = np.ctypeslib.as_array(ctypes.cast(self.host_pointer, ctypes.POINTER(ctypes.c_uint8)), (self.nbytes,))
            self.host = raw.view(dtype).reshape(shape)
            self.device_pointer = int(call(runtime.cudaMalloc(self.nbytes), "cudaMalloc"))
        except BaseException:
            self.free()  # the pinned half must not leak when the device half fails
            raise

    def to_device(self, stream: Stream) -> None:
        runtime = cudart()
        kind = runtime.cudaMemcpyKind.cudaMemcpyHostToDevice
        call(
            runtime.cudaMemcpyAsync(self.device_pointer, self.host_pointer, self.nbytes, kind, stream.stream),
            "cudaMemcpyAsync (host to device)",
        )

    def to_host(self, stream: Stream) -> None:
        runtime = cudart()
        kind = runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost
        call(
            runtime.cudaMemcpyAsync(self.host_pointer, self.device_pointer, self.nbytes, kind, stream.stream),
            "cudaMemcpyAsync (device to host)",
        )

    def free(self) -> None:
        """Free both halves (the host one even when freeing the device one fails); a second call does nothing."""
        runtime = cudart()
        device_pointer, self.device_pointer = self.device_pointer, 0
        host_pointer, self.host_pointer = self.host_pointer, 0
        self.host = None
        try:
            if device_pointer:
                call(runtime.cudaFree(device_pointer), "cudaFree")
        finally:
            if host_pointer:
                call(runtime.cudaFreeHost(host_pointer), "cudaFreeHost")
