"""A strict test double of the TensorRT Python API and of the CUDA runtime calls edgeseg makes.

The fixture ``gpu_double`` (conftest.py) puts fake ``tensorrt`` and ``cuda.bindings.runtime`` (with
``cuda.bindings.utils``) modules into ``sys.modules``, so the engine builder and ``TensorRTBackend`` run
end to end on a machine without a GPU. Its engine carries the ONNX it was built from and computes with
onnxruntime's CPU provider, so what comes out is a real model's output.

Strict, as the real API is documented (sources below), and stricter where a mistake would only show
on a GPU: every call checks its argument types; a stream is a ``cudaStream_t`` for CUDA calls and an
int handle for ``execute_async_v3``; copies and kernels queue on their stream and run only at
``cudaStreamSynchronize`` (a missing synchronize leaves stale output); a memcpy must cover exactly its
two allocations; ``set_tensor_address`` takes only live ``cudaMalloc`` pointers, and at execution
every buffer must be the tensor's size (a wrong dtype or shape fails); an output's shape may not be
asked before a dynamic input's shape is set; a strongly typed network refuses layer precisions and
precision builder flags, and the TensorRT 11 double has no FP16/INT8/OBEY_PRECISION_CONSTRAINTS flags
at all; the ONNX parser refuses asymmetric Q/DQ and int32 (bias) DequantizeLinear. Misuse raises
``ApiMisuse`` (an AssertionError, so no ``except Exception`` in the code under test hides it for long:
the fixture also fails the test).
Live pinned buffers, device buffers and streams are counted; the fixture fails a test that leaves any.
``fail_next(call)`` makes one call report failure the way the real one does (an error code, None or
False), to test the clean-up paths.

Not modelled: TensorRT's kernels and precisions (an FP16 flag on an fp32 network still computes in
fp32 here, and a strongly typed FP16 network computes exactly as its FP16 ONNX does on onnxruntime).

Sources: TensorRT Python API (docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/
Builder.html, NetworkDefinitionCreationFlag.STRONGLY_TYPED: "Setting layer precision and layer output
types is not allowed"; the 11.0.0 page: STRONGLY_TYPED deprecated, "Strongly typed mode is always
enabled"); NVIDIA/TensorRT python/src/infer/pyCore.cpp (execute_async_v3(size_t streamHandle) -> bool,
set_tensor_address(name, size_t memory) -> bool, set_input_shape -> bool); TensorRT 11's BuilderFlag
(no kFP16, kINT8, kOBEY_PRECISION_CONSTRAINTS); cuda-bindings 13 docstrings (cudaStreamCreate() ->
(cudaError_t, cudaStream_t); stream parameters "CUstream or cudaStream_t"; cudaMalloc/cudaMallocHost(size_t)
-> (cudaError_t, pointer)) and its tips (int(cuda_obj) deprecated for get_cuda_native_handle).
"""

from __future__ import annotations

import enum
import importlib.machinery
import itertools
import json
import sys
import types
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

ENGINE_MAGIC = b"TRT-DOUBLE-ENGINE\n"
CACHE_MAGIC = b"TRT-DOUBLE-TIMING-CACHE\n"


class ApiMisuse(AssertionError):
    """A call the real API documents otherwise, or makes in an order it forbids."""


def require(condition: object, message: str) -> None:
    if not condition:
        raise ApiMisuse(message)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- CUDA runtime (cuda.bindings.runtime) ---------------------------------------------------------


class cudaError_t(enum.IntEnum):  # the names here and below are cuda-python's
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStream_t:
    """As cuda-python's: wraps the handle; int() still works but is deprecated (get_cuda_native_handle)."""

    def __init__(self, init_value: int = 0) -> None:
        self._handle = init_value
        self._owner: CudaDouble | None = None

    def __int__(self) -> int:
        warnings.warn(
            "int(cuda_obj) is deprecated: use cuda.bindings.utils.get_cuda_native_handle",
            DeprecationWarning,
            stacklevel=2,
        )
        if self._owner is not None:
            self._owner.deprecated_int_calls += 1
        return self._handle

    def __eq__(self, other: object) -> bool:
        return isinstance(other, cudaStream_t) and other._handle == self._handle

    def __hash__(self) -> int:
        return hash(self._handle)

    def __repr__(self) -> str:
        return f"<cudaStream_t {self._handle:#x}>"


class cudaDeviceProp:
    def __init__(self, name: str, major: int, minor: int) -> None:
        self.name = name.encode().ljust(256, b"\0")  # a C char[256], as cuda-python gives it
        self.major, self.minor = major, minor


class CudaDouble:
    """The CUDA runtime calls edgeseg makes, on numpy memory: pinned host buffers at real addresses (the
    code views them through ctypes), device buffers at made-up addresses no host code can reach."""

    def __init__(self, gpus: Sequence[tuple[str, int, int]]) -> None:
        self.gpus = list(gpus)
        self.host: dict[int, np.ndarray] = {}
        self.device: dict[int, np.ndarray] = {}
        self.streams: dict[int, list[Callable[[], None]]] = {}
        self.calls: list[str] = []
        self.deprecated_int_calls = 0
        self._failures: dict[str, cudaError_t] = {}
        self._device_addresses = itertools.count(0x7D00_0000_0000, 0x100_0000)
        self._stream_handles = itertools.count(0x5A00, 0x10)

    def fail_next(self, call: str, error: cudaError_t = cudaError_t.cudaErrorMemoryAllocation) -> None:
        self._failures[call] = error

    def live(self) -> dict[str, int]:
        return {"pinned host buffers": len(self.host), "device buffers": len(self.device), "streams": len(self.streams)}

    def _enter(self, call: str) -> cudaError_t | None:
        self.calls.append(call)
        return self._failures.pop(call, None)

    def _stream(self, stream: object, call: str) -> int | None:
        require(
            isinstance(stream, cudaStream_t),
            f"{call}: its stream is documented as CUstream or cudaStream_t; got {type(stream).__name__} {stream!r}",
        )
        return stream._handle if stream._handle in self.streams else None

    def _size(self, size: object, call: str) -> None:
        require(is_int(size) and size > 0, f"{call}(size: size_t): got {type(size).__name__} {size!r}")

    def run_queue(self, handle: int) -> None:
        queue = self.streams[handle]
        while queue:
            queue.pop(0)()

    def enqueue(self, handle: int, work: Callable[[], None]) -> None:
        self.streams[handle].append(work)

    # The API, as cuda.bindings.runtime spells it: every call returns (cudaError_t, *values).

    def cudaGetDeviceCount(self):
        if (error := self._enter("cudaGetDeviceCount")) is not None:
            return error, None
        if not self.gpus:
            return cudaError_t.cudaErrorNoDevice, 0
        return cudaError_t.cudaSuccess, len(self.gpus)

    def cudaGetDeviceProperties(self, device):
        require(is_int(device), f"cudaGetDeviceProperties(device: int): got {device!r}")
        if (error := self._enter("cudaGetDeviceProperties")) is not None:
            return error, None
        if not 0 <= device < len(self.gpus):
            return cudaError_t.cudaErrorInvalidDevice, None
        return cudaError_t.cudaSuccess, cudaDeviceProp(*self.gpus[device])

    def cudaStreamCreate(self):
        if (error := self._enter("cudaStreamCreate")) is not None:
            return error, None
        handle = next(self._stream_handles)
        self.streams[handle] = []
        stream = cudaStream_t(handle)
        stream._owner = self
        return cudaError_t.cudaSuccess, stream

    def cudaStreamSynchronize(self, stream):
        handle = self._stream(stream, "cudaStreamSynchronize")
        if (error := self._enter("cudaStreamSynchronize")) is not None:
            return (error,)
        if handle is None:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        self.run_queue(handle)
        return (cudaError_t.cudaSuccess,)

    def cudaStreamDestroy(self, stream):
        handle = self._stream(stream, "cudaStreamDestroy")
        if (error := self._enter("cudaStreamDestroy")) is not None:
            return (error,)
        if handle is None:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        self.run_queue(handle)  # work queued on a destroyed stream still completes
        del self.streams[handle]
        return (cudaError_t.cudaSuccess,)

    def cudaMallocHost(self, size):
        self._size(size, "cudaMallocHost")
        if (error := self._enter("cudaMallocHost")) is not None:
            return error, None
        buffer = np.zeros(size, np.uint8)
        self.host[buffer.ctypes.data] = buffer
        return cudaError_t.cudaSuccess, buffer.ctypes.data

    def cudaFreeHost(self, ptr):
        require(is_int(ptr), f"cudaFreeHost(ptr): pass the int cudaMallocHost gave; got {ptr!r}")
        if (error := self._enter("cudaFreeHost")) is not None:
            return (error,)
        if self.host.pop(ptr, None) is None:
            return (cudaError_t.cudaErrorInvalidValue,)
        return (cudaError_t.cudaSuccess,)

    def cudaMalloc(self, size):
        self._size(size, "cudaMalloc")
        if (error := self._enter("cudaMalloc")) is not None:
            return error, None
        address = next(self._device_addresses)
        self.device[address] = np.zeros(size, np.uint8)
        return cudaError_t.cudaSuccess, address

    def cudaFree(self, devPtr):
        require(is_int(devPtr), f"cudaFree(devPtr): pass the int cudaMalloc gave; got {devPtr!r}")
        if (error := self._enter("cudaFree")) is not None:
            return (error,)
        if self.device.pop(devPtr, None) is None:
            return (cudaError_t.cudaErrorInvalidValue,)
        return (cudaError_t.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        require(isinstance(kind, cudaMemcpyKind), f"cudaMemcpyAsync(kind: cudaMemcpyKind): got {kind!r}")
        require(is_int(dst) and is_int(src), f"cudaMemcpyAsync: pass the pointers as ints; got {dst!r}, {src!r}")
        self._size(count, "cudaMemcpyAsync")
        handle = self._stream(stream, "cudaMemcpyAsync")
        if (error := self._enter("cudaMemcpyAsync")) is not None:
            return (error,)
        if handle is None:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        directions = {
            cudaMemcpyKind.cudaMemcpyHostToDevice: (self.device, self.host, "device", "pinned host"),
            cudaMemcpyKind.cudaMemcpyDeviceToHost: (self.host, self.device, "pinned host", "device"),
        }
        require(kind in directions, f"cudaMemcpyAsync: edgeseg copies host<->device only, not {kind.name}")
        target, source, target_kind, source_kind = directions[kind]
        require(dst in target, f"cudaMemcpyAsync({kind.name}): dst {dst:#x} is not a live {target_kind} allocation")
        require(src in source, f"cudaMemcpyAsync({kind.name}): src {src:#x} is not a live {source_kind} allocation")
        require(
            count == target[dst].size == source[src].size,
            f"cudaMemcpyAsync({kind.name}): {count} bytes between allocations of {source[src].size} and "
            f"{target[dst].size} bytes",
        )

        def copy() -> None:
            require(dst in target and src in source, "a queued copy found its memory freed before it ran")
            target[dst][:] = source[src]

        self.enqueue(handle, copy)
        return (cudaError_t.cudaSuccess,)

    def module(self) -> types.ModuleType:
        runtime = _module("cuda.bindings.runtime")
        runtime.cudaError_t, runtime.cudaMemcpyKind = cudaError_t, cudaMemcpyKind
        runtime.cudaStream_t, runtime.cudaDeviceProp = cudaStream_t, cudaDeviceProp
        for name in (
            "cudaGetDeviceCount",
            "cudaGetDeviceProperties",
            "cudaStreamCreate",
            "cudaStreamSynchronize",
            "cudaStreamDestroy",
            "cudaMallocHost",
            "cudaFreeHost",
            "cudaMalloc",
            "cudaFree",
            "cudaMemcpyAsync",
        ):
            setattr(runtime, name, getattr(self, name))
        return runtime


def get_cuda_native_handle(obj: object) -> int:
    """cuda.bindings.utils.get_cuda_native_handle: the address a CUDA object wraps."""
    if not isinstance(obj, cudaStream_t):
        raise TypeError(f"Unknown type: {type(obj)}")
    return obj._handle


# --- TensorRT ------------------------------------------------------------------------------------


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 8


NUMPY_TYPES = {
    DataType.FLOAT: np.float32,
    DataType.HALF: np.float16,
    DataType.INT8: np.int8,
    DataType.INT32: np.int32,
    DataType.BOOL: np.bool_,
    DataType.UINT8: np.uint8,
    DataType.INT64: np.int64,
}
ONNX_TYPES = {
    1: DataType.FLOAT,
    10: DataType.HALF,
    3: DataType.INT8,
    6: DataType.INT32,
    9: DataType.BOOL,
    2: DataType.UINT8,
    7: DataType.INT64,
}


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    DLA_LOCAL_DRAM = 2
    DLA_GLOBAL_DRAM = 3
    TACTIC_DRAM = 4


class LayerType(enum.IntEnum):
    CONVOLUTION = 0
    ACTIVATION = 2
    ELEMENTWISE = 4
    RESIZE = 20
    CONSTANT = 18
    QUANTIZE = 33
    DEQUANTIZE = 34
    CAST = 41
    NORMALIZATION = 43


LAYER_TYPES = {
    "Conv": LayerType.CONVOLUTION,
    "Relu": LayerType.ACTIVATION,
    "Sigmoid": LayerType.ACTIVATION,
    "Resize": LayerType.RESIZE,
    "Constant": LayerType.CONSTANT,
    "QuantizeLinear": LayerType.QUANTIZE,
    "DequantizeLinear": LayerType.DEQUANTIZE,
    "Cast": LayerType.CAST,
    "InstanceNormalization": LayerType.NORMALIZATION,
    "GroupNormalization": LayerType.NORMALIZATION,
    "LayerNormalization": LayerType.NORMALIZATION,
}
PRECISION_FLAGS = ("FP16", "INT8", "BF16", "FP8", "INT4", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS")


def builder_flag_enum(major: int) -> type[enum.IntEnum]:
    """TensorRT 10's builder flags; TensorRT 11 removed weak typing, and with it the precision flags."""
    members = {
        "FP16": 0,
        "INT8": 1,
        "DEBUG": 2,
        "GPU_FALLBACK": 3,
        "REFIT": 4,
        "DISABLE_TIMING_CACHE": 5,
        "TF32": 6,
        "SPARSE_WEIGHTS": 7,
        "SAFETY_SCOPE": 8,
        "OBEY_PRECISION_CONSTRAINTS": 9,
        "PREFER_PRECISION_CONSTRAINTS": 10,
        "DIRECT_IO": 11,
        "BF16": 17,
        "FP8": 19,
        "INT4": 26,
    }
    if major >= 11:
        members = {name: value for name, value in members.items() if name not in PRECISION_FLAGS}
    return enum.IntEnum("BuilderFlag", members)


def network_flag_enum(major: int) -> type[enum.IntEnum]:
    if major >= 11:  # strongly typed always; the flag stays, ignored
        return enum.IntEnum(
            "NetworkDefinitionCreationFlag",
            {"STRONGLY_TYPED": 0, "PREFER_AOT_PYTHON_PLUGINS": 1, "PREFER_JIT_PYTHON_PLUGINS": 2},
        )
    return enum.IntEnum(
        "NetworkDefinitionCreationFlag",
        {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1, "PREFER_JIT_PYTHON_PLUGINS": 2, "PREFER_AOT_PYTHON_PLUGINS": 3},
    )


class Logger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = Severity

    def __init__(self, min_severity: Logger.Severity = Severity.WARNING) -> None:
        require(
            isinstance(min_severity, Logger.Severity), f"Logger(min_severity: Logger.Severity): got {min_severity!r}"
        )
        self.min_severity = min_severity
        self.messages: list[tuple[Logger.Severity, str]] = []

    def log(self, severity: Logger.Severity, msg: str) -> None:
        self.messages.append((severity, msg))


class HostMemory(bytes):
    """IHostMemory: a buffer of bytes."""

    @property
    def nbytes(self) -> int:
        return len(self)


class Tensor:
    def __init__(self, name: str, shape: tuple[int, ...], dtype: DataType) -> None:
        self.name, self.shape, self.dtype = name, shape, dtype


class Layer:
    def __init__(self, network: Network, kind: LayerType, name: str, num_outputs: int) -> None:
        self._network, self.type, self.name, self.num_outputs = network, kind, name, num_outputs
        self._precision: DataType | None = None
        self.output_types: dict[int, DataType] = {}

    def _settable(self, what: str, dtype: object) -> None:
        require(
            not self._network.strongly_typed,
            f"{what} on a strongly typed network: 'Setting layer precision and layer output types is not allowed'",
        )
        require(isinstance(dtype, DataType), f"{what}: a tensorrt.DataType, got {dtype!r}")

    @property
    def precision(self) -> DataType:
        return DataType.FLOAT if self._precision is None else self._precision

    @precision.setter
    def precision(self, dtype: DataType) -> None:
        self._settable("ILayer.precision", dtype)
        self._precision = dtype

    @property
    def precision_is_set(self) -> bool:
        return self._precision is not None

    def set_output_type(self, index: int, dtype: DataType) -> None:
        self._settable("ILayer.set_output_type", dtype)
        require(is_int(index) and 0 <= index < self.num_outputs, f"set_output_type: no output {index!r}")
        self.output_types[index] = dtype


class Network:
    def __init__(self, strongly_typed: bool) -> None:
        self.strongly_typed = strongly_typed
        self.inputs: list[Tensor] = []
        self.outputs: list[Tensor] = []
        self.layers: list[Layer] = []
        self.onnx: bytes | None = None

    num_inputs = property(lambda self: len(self.inputs))
    num_outputs = property(lambda self: len(self.outputs))
    num_layers = property(lambda self: len(self.layers))

    def get_input(self, index: int) -> Tensor:
        require(is_int(index) and 0 <= index < len(self.inputs), f"get_input({index!r})")
        return self.inputs[index]

    def get_output(self, index: int) -> Tensor:
        require(is_int(index) and 0 <= index < len(self.outputs), f"get_output({index!r})")
        return self.outputs[index]

    def get_layer(self, index: int) -> Layer:
        require(is_int(index) and 0 <= index < len(self.layers), f"get_layer({index!r})")
        return self.layers[index]

    def populate(self, proto, onnx_bytes: bytes) -> None:
        graph = proto.graph
        initializers = {initializer.name for initializer in graph.initializer}

        def tensor(value) -> Tensor:
            dims = tuple(dim.dim_value if dim.dim_value > 0 else -1 for dim in value.type.tensor_type.shape.dim)
            return Tensor(value.name, dims, ONNX_TYPES[value.type.tensor_type.elem_type])

        self.inputs = [tensor(value) for value in graph.input if value.name not in initializers]
        self.outputs = [tensor(value) for value in graph.output]
        self.layers = [
            Layer(
                self, LAYER_TYPES.get(node.op_type, LayerType.ELEMENTWISE), node.name or node.op_type, len(node.output)
            )
            for node in graph.node
        ]
        self.onnx = onnx_bytes


class ParserError:
    def __init__(self, text: str) -> None:
        self.text = text

    def desc(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


def unsupported_qdq(proto) -> list[str]:
    """What TensorRT's ONNX parser refuses in Q/DQ: a zero point other than int8 0 (it takes symmetric INT8
    only), and a DequantizeLinear of anything but int8 data, such as onnxruntime's int32 biases ("only
    activation types allowed as input to this layer", onnx/onnx-tensorrt#850, microsoft/onnxruntime#14229)."""
    from onnx import TensorProto, numpy_helper

    values = {initializer.name: initializer for initializer in proto.graph.initializer}
    problems = []
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        name = node.name or node.output[0]
        if len(node.input) > 2 and node.input[2]:
            zero = values.get(node.input[2])
            if zero is None or zero.data_type != TensorProto.INT8 or numpy_helper.to_array(zero).any():
                problems.append(f"{name}: zero point must be int8 0 (symmetric INT8 only)")
        data = values.get(node.input[0])
        if node.op_type == "DequantizeLinear" and data is not None and data.data_type != TensorProto.INT8:
            problems.append(
                f"{name}: only activation types allowed as input to this layer "
                f"({TensorProto.DataType.Name(data.data_type)} data)"
            )
    return problems


class OnnxParserBase:
    _double: TensorRTDouble

    def __init__(self, network: Network, logger: Logger) -> None:
        require(isinstance(network, Network), f"OnnxParser(network: INetworkDefinition, ...): got {network!r}")
        require(isinstance(logger, Logger), f"OnnxParser(..., logger: ILogger): got {logger!r}")
        self._network, self._errors = network, []

    num_errors = property(lambda self: len(self._errors))

    def get_error(self, index: int) -> ParserError:
        require(is_int(index) and 0 <= index < len(self._errors), f"get_error({index!r})")
        return self._errors[index]

    def parse_from_file(self, model: str) -> bool:
        import onnx

        require(isinstance(model, str), f"parse_from_file(model: str): got {type(model).__name__}")
        require(self._network.onnx is None, "parse_from_file: this network was parsed already")
        try:
            proto = onnx.load(model)
            onnx.checker.check_model(proto)
        except Exception as error:  # onnx raises several types for a bad file
            self._errors.append(ParserError(f"{model}: not a readable ONNX model ({error})"))
            return False
        problems = unsupported_qdq(proto)
        if problems:
            self._errors.extend(ParserError(problem) for problem in problems)
            return False
        self._network.populate(proto, Path(model).read_bytes())
        return True


class OptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    # The parameter names are TensorRT's (callers may pass them by keyword).
    def set_shape(self, input: str, min: Sequence[int], opt: Sequence[int], max: Sequence[int]) -> None:
        require(isinstance(input, str), f"set_shape(input: str, ...): got {input!r}")
        shapes = tuple(tuple(shape) for shape in (min, opt, max))
        require(all(is_int(side) and side > 0 for shape in shapes for side in shape), f"set_shape: {shapes}")
        require(len({len(shape) for shape in shapes}) == 1, f"set_shape: ranks differ in {shapes}")
        require(
            all(a <= b <= c for a, b, c in zip(*shapes, strict=True)),
            f"set_shape: min <= opt <= max fails for {shapes}",
        )
        self.shapes[input] = shapes


class TimingCache:
    def __init__(self, data: bytes, tag: bytes) -> None:
        self.data, self.tag = data, tag

    def serialize(self) -> HostMemory:
        return HostMemory(CACHE_MAGIC + self.tag + b"\n" + b"tuned")


class BuilderConfig:
    def __init__(self, double: TensorRTDouble) -> None:
        self._double = double
        self.flags: set = set()
        self.pools: dict[MemoryPoolType, int] = {}
        self.profiles: list[OptimizationProfile] = []
        self.timing_cache: TimingCache | None = None

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        require(
            isinstance(pool, MemoryPoolType) and is_int(pool_size) and pool_size >= 0,
            f"set_memory_pool_limit(pool: MemoryPoolType, pool_size: int): got {pool!r}, {pool_size!r}",
        )
        self.pools[pool] = pool_size

    def set_flag(self, flag) -> None:
        require(isinstance(flag, self._double.BuilderFlag), f"set_flag(flag: BuilderFlag): got {flag!r}")
        self.flags.add(flag)

    def get_flag(self, flag) -> bool:
        return flag in self.flags

    def add_optimization_profile(self, profile: OptimizationProfile) -> int:
        require(isinstance(profile, OptimizationProfile), f"add_optimization_profile: got {profile!r}")
        if not profile.shapes:
            return -1
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, serialized_timing_cache) -> TimingCache:
        require(
            isinstance(serialized_timing_cache, (bytes, bytearray, memoryview)),
            f"create_timing_cache(serialized_timing_cache: buffer): got {type(serialized_timing_cache).__name__}",
        )
        return TimingCache(bytes(serialized_timing_cache), self._double.cache_tag)

    def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
        require(
            isinstance(cache, TimingCache) and isinstance(ignore_mismatch, bool),
            f"set_timing_cache(cache: ITimingCache, ignore_mismatch: bool): got {cache!r}, {ignore_mismatch!r}",
        )
        if cache.data and not cache.data.startswith(CACHE_MAGIC + self._double.cache_tag):
            return False  # corrupt, or another TensorRT's or GPU's: refused when mismatches are not ignored
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> TimingCache:
        require(self.timing_cache is not None, "get_timing_cache: no timing cache was set")
        return self.timing_cache


class BuilderBase:
    _double: TensorRTDouble

    def __init__(self, logger: Logger) -> None:
        require(isinstance(logger, Logger), f"Builder(logger: ILogger): got {logger!r}")
        self._logger = logger

    def create_network(self, flags: int = 0) -> Network:
        flag_enum = self._double.NetworkDefinitionCreationFlag
        require(is_int(flags), f"create_network(flags: int): got {flags!r}")
        require(
            flags & ~sum(1 << int(flag) for flag in flag_enum) == 0, f"create_network: unknown flag bits {flags:#x}"
        )
        strongly_typed = self._double.major >= 11 or bool(flags & (1 << int(flag_enum.STRONGLY_TYPED)))
        return Network(strongly_typed)

    def create_builder_config(self) -> BuilderConfig:
        return BuilderConfig(self._double)

    def create_optimization_profile(self) -> OptimizationProfile:
        return OptimizationProfile()

    def build_serialized_network(self, network: Network, config: BuilderConfig) -> HostMemory | None:
        require(
            isinstance(network, Network) and isinstance(config, BuilderConfig),
            "build_serialized_network(network, config)",
        )
        require(network.onnx is not None, "build_serialized_network: the network is empty (parse the ONNX first)")
        flags = {flag.name for flag in config.flags}
        precision = sorted(flags & set(PRECISION_FLAGS))
        if network.strongly_typed:
            require(
                not precision,
                f"a strongly typed network takes its types from the network: builder flags {precision} are not allowed",
            )
        elif any(layer.precision_is_set for layer in network.layers):
            require(
                flags & {"OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"},
                "layer precisions were set without OBEY_PRECISION_CONSTRAINTS (or PREFER_...): TensorRT ignores them",
            )
        profile = self._profile(network, config)
        if profile is None or self._double.take_failure("build_serialized_network"):
            return None
        header = {
            "tensorrt_version": self._double.version,
            "gpu": self._double.gpu,
            "strongly_typed": network.strongly_typed,
            "flags": sorted(flags),
            "profile": profile,
            "pinned": [layer.name for layer in network.layers if layer.precision_is_set],
            "inputs": [[t.name, list(t.shape), t.dtype.name] for t in network.inputs],
            "outputs": [[t.name, list(t.shape), t.dtype.name] for t in network.outputs],
        }
        self._double.builds.append(header)
        return HostMemory(ENGINE_MAGIC + json.dumps(header).encode() + b"\n" + network.onnx)

    def _profile(self, network: Network, config: BuilderConfig) -> dict | None:
        """Every dynamic input needs a profile: the real builder logs an error and builds nothing without one."""
        shapes = config.profiles[0].shapes if config.profiles else {}
        for tensor in network.inputs:
            if all(side > 0 for side in tensor.shape):
                continue
            if tensor.name not in shapes:
                self._logger.log(Logger.ERROR, f"{tensor.name}: dynamic input without an optimization profile")
                return None
            require(
                all(len(shape) == len(tensor.shape) for shape in shapes[tensor.name]), f"profile rank for {tensor.name}"
            )
        return {name: [list(shape) for shape in value] for name, value in shapes.items()}


class Engine:
    def __init__(self, double: TensorRTDouble, header: dict, onnx_bytes: bytes) -> None:
        self._double, self._header, self._onnx = double, header, onnx_bytes
        self._io = {
            name: (TensorIOMode.INPUT, tuple(shape), DataType[dtype]) for name, shape, dtype in header["inputs"]
        }
        self._io.update(
            {name: (TensorIOMode.OUTPUT, tuple(shape), DataType[dtype]) for name, shape, dtype in header["outputs"]}
        )
        self._names = list(self._io)
        self._session = None
        self._output_shapes: dict[tuple, dict[str, tuple[int, ...]]] = {}

    num_io_tensors = property(lambda self: len(self._names))

    def get_tensor_name(self, index: int) -> str:
        require(is_int(index) and 0 <= index < len(self._names), f"get_tensor_name({index!r})")
        return self._names[index]

    def _tensor(self, name: str, call: str) -> tuple:
        require(isinstance(name, str), f"{call}(name: str): got {name!r}")
        require(name in self._io, f"{call}: no tensor named {name!r}")
        return self._io[name]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        require(isinstance(name, str), f"get_tensor_mode(name: str): got {name!r}")
        return self._io[name][0] if name in self._io else TensorIOMode.NONE

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._tensor(name, "get_tensor_shape")[1]

    def get_tensor_dtype(self, name: str) -> DataType:
        return self._tensor(name, "get_tensor_dtype")[2]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        require(
            profile_index == 0 and name in self._header["profile"],
            f"get_tensor_profile_shape({name!r}, {profile_index})",
        )
        return [tuple(shape) for shape in self._header["profile"][name]]

    def create_execution_context(self) -> ExecutionContext | None:
        if self._double.take_failure("create_execution_context"):
            return None
        return ExecutionContext(self)

    @property
    def session(self):
        import onnxruntime as ort

        if self._session is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self._session = ort.InferenceSession(self._onnx, options, providers=["CPUExecutionProvider"])
        return self._session

    def output_shapes(self, input_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        key = tuple(sorted(input_shapes.items()))
        if key not in self._output_shapes:
            feeds = {name: np.zeros(shape, NUMPY_TYPES[self._io[name][2]]) for name, shape in input_shapes.items()}
            outputs = self.session.run(None, feeds)
            names = [output.name for output in self.session.get_outputs()]
            self._output_shapes[key] = {name: tuple(value.shape) for name, value in zip(names, outputs, strict=True)}
        return self._output_shapes[key]


class ExecutionContext:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.input_shapes = {
            name: shape
            for name, (mode, shape, _) in engine._io.items()
            if mode == TensorIOMode.INPUT and all(side >= 0 for side in shape)
        }
        self.addresses: dict[str, int] = {}

    def _inputs(self) -> list[str]:
        return [name for name, (mode, _, _) in self.engine._io.items() if mode == TensorIOMode.INPUT]

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        require(isinstance(name, str), f"set_input_shape(name: str, shape): got {name!r}")
        shape = tuple(shape)
        require(all(is_int(side) for side in shape), f"set_input_shape: the shape takes ints, got {shape}")
        if (
            self.engine._double.take_failure("set_input_shape")
            or self.engine.get_tensor_mode(name) != TensorIOMode.INPUT
        ):
            return False
        declared = self.engine._io[name][1]
        if len(shape) != len(declared) or any(d >= 0 and d != s for d, s in zip(declared, shape, strict=True)):
            return False
        if name in self.engine._header["profile"]:
            low, _, high = self.engine._header["profile"][name]
            if not all(a <= s <= b for a, s, b in zip(low, shape, high, strict=True)):
                return False
        self.input_shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        mode, declared, _ = self.engine._tensor(name, "get_tensor_shape")
        if mode == TensorIOMode.INPUT:
            return self.input_shapes.get(name, declared)
        unset = [input_name for input_name in self._inputs() if input_name not in self.input_shapes]
        require(
            not unset,
            f"get_tensor_shape({name!r}) of an output before set_input_shape of the dynamic input(s) "
            f"{unset}: TensorRT would answer with -1 dimensions",
        )
        return self.engine.output_shapes(self.input_shapes)[name]

    def set_tensor_address(self, name: str, memory: int) -> bool:
        require(isinstance(name, str), f"set_tensor_address(name: str, memory: int): got {name!r}")
        require(
            is_int(memory), f"set_tensor_address(name, memory: int): pass the device pointer as an int, got {memory!r}"
        )
        if self.engine._double.take_failure("set_tensor_address") or name not in self.engine._io:
            return False
        require(
            memory in self.engine._double.cuda.device,
            f"set_tensor_address({name!r}): {memory:#x} is not a live cudaMalloc allocation (a host pointer, or freed)",
        )
        self.addresses[name] = memory
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        cuda = self.engine._double.cuda
        require(
            is_int(stream_handle),
            "execute_async_v3(stream_handle: int): pass the stream's int handle "
            f"(cuda.bindings.utils.get_cuda_native_handle), not {type(stream_handle).__name__}",
        )
        require(stream_handle in cuda.streams, f"execute_async_v3: {stream_handle:#x} is not a live stream")
        unset = [name for name in self._inputs() if name not in self.input_shapes]
        require(not unset, f"execute_async_v3 before set_input_shape of {unset}")
        unbound = [name for name in self.engine._names if name not in self.addresses]
        require(not unbound, f"execute_async_v3 before set_tensor_address of {unbound}")
        shapes = {**self.input_shapes, **self.engine.output_shapes(self.input_shapes)}
        for name, address in self.addresses.items():
            dtype = np.dtype(NUMPY_TYPES[self.engine._io[name][2]])
            needed = int(np.prod(shapes[name])) * dtype.itemsize
            require(address in cuda.device, f"execute_async_v3: the buffer of {name!r} was freed")
            require(
                cuda.device[address].size == needed,
                f"execute_async_v3: {name!r} is a {dtype} tensor of shape "
                f"{shapes[name]} ({needed} bytes), but its buffer has {cuda.device[address].size} bytes",
            )
        if self.engine._double.take_failure("execute_async_v3"):
            return False
        cuda.enqueue(stream_handle, lambda: self._run(dict(self.addresses), shapes))
        return True

    def _run(self, addresses: dict[str, int], shapes: dict[str, tuple[int, ...]]) -> None:
        cuda, io = self.engine._double.cuda, self.engine._io
        require(
            all(address in cuda.device for address in addresses.values()), "a queued inference found a buffer freed"
        )
        feeds = {
            name: cuda.device[addresses[name]].view(NUMPY_TYPES[io[name][2]]).reshape(shapes[name])
            for name in self._inputs()
        }
        names = [output.name for output in self.engine.session.get_outputs()]
        for name, value in zip(names, self.engine.session.run(None, feeds), strict=True):
            value = np.ascontiguousarray(value, NUMPY_TYPES[io[name][2]])
            cuda.device[addresses[name]][:] = value.view(np.uint8).ravel()


class RuntimeBase:
    _double: TensorRTDouble

    def __init__(self, logger: Logger) -> None:
        require(isinstance(logger, Logger), f"Runtime(logger: ILogger): got {logger!r}")
        self._logger = logger

    def deserialize_cuda_engine(self, serialized_engine) -> Engine | None:
        require(
            isinstance(serialized_engine, (bytes, bytearray, memoryview)),
            f"deserialize_cuda_engine(serialized_engine: buffer): got {type(serialized_engine).__name__}",
        )
        data = bytes(serialized_engine)
        if self._double.take_failure("deserialize_cuda_engine") or not data.startswith(ENGINE_MAGIC):
            self._logger.log(Logger.ERROR, "the engine plan file is corrupt")
            return None
        header_line, onnx_bytes = data[len(ENGINE_MAGIC) :].split(b"\n", 1)
        header = json.loads(header_line)
        if header["tensorrt_version"] != self._double.version or header["gpu"][1:] != self._double.gpu[1:]:
            self._logger.log(
                Logger.ERROR, "the engine plan file is not compatible with this version of TensorRT or GPU"
            )
            return None
        if header["gpu"][0] != self._double.gpu[0]:
            self._logger.log(
                Logger.WARNING,
                "Using an engine plan file across different models of devices is not "
                "recommended and is likely to affect performance or even cause errors.",
            )
        return Engine(self._double, header, onnx_bytes)


def nptype(trt_type: DataType) -> type:
    if trt_type not in NUMPY_TYPES:
        raise TypeError(f"Could not resolve TensorRT datatype to an equivalent numpy datatype: {trt_type!r}")
    return NUMPY_TYPES[trt_type]


class TensorRTDouble:
    """The tensorrt module of one TensorRT version on the GPU the CUDA double shows first."""

    def __init__(self, cuda: CudaDouble, version: str) -> None:
        self.cuda, self.version = cuda, version
        self.major = int(version.split(".")[0])
        self.gpu = list(cuda.gpus[0]) if cuda.gpus else None
        self.cache_tag = f"{version} {self.gpu}".encode()
        self.BuilderFlag = builder_flag_enum(self.major)
        self.NetworkDefinitionCreationFlag = network_flag_enum(self.major)
        self.builds: list[dict] = []
        self._failures: set[str] = set()

    def fail_next(self, call: str) -> None:
        self._failures.add(call)

    def take_failure(self, call: str) -> bool:
        if call in self._failures:
            self._failures.discard(call)
            return True
        return False

    def module(self) -> types.ModuleType:
        trt = _module("tensorrt")
        trt.__version__ = self.version
        trt.BuilderFlag, trt.NetworkDefinitionCreationFlag = self.BuilderFlag, self.NetworkDefinitionCreationFlag
        trt.DataType, trt.TensorIOMode, trt.MemoryPoolType, trt.LayerType = (
            DataType,
            TensorIOMode,
            MemoryPoolType,
            LayerType,
        )
        trt.float32, trt.float16, trt.int8, trt.int32 = DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32
        trt.Logger, trt.nptype = Logger, nptype
        trt.Builder = type("Builder", (BuilderBase,), {"_double": self})
        trt.OnnxParser = type("OnnxParser", (OnnxParserBase,), {"_double": self})
        trt.Runtime = type("Runtime", (RuntimeBase,), {"_double": self})
        return trt


def _module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # importlib.util.find_spec needs one
    return module


class GpuDouble:
    """TensorRT of ``tensorrt_version`` and CUDA with ``gpus`` (name, major, minor), installed together."""

    def __init__(self, tensorrt_version: str = "10.3.0.30", gpus: Sequence[tuple[str, int, int]] = (("Orin", 8, 7),)):
        self.cuda = CudaDouble(gpus)
        self.tensorrt = TensorRTDouble(self.cuda, tensorrt_version)
        self.allow_leaks = False

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        cuda, bindings, utils = _module("cuda"), _module("cuda.bindings"), _module("cuda.bindings.utils")
        cuda.__path__, bindings.__path__ = [], []
        runtime = self.cuda.module()
        utils.get_cuda_native_handle = get_cuda_native_handle
        cuda.bindings, bindings.runtime, bindings.utils = bindings, runtime, utils
        modules = {
            "tensorrt": self.tensorrt.module(),
            "cuda": cuda,
            "cuda.bindings": bindings,
            "cuda.bindings.runtime": runtime,
            "cuda.bindings.utils": utils,
        }
        for name, module in modules.items():
            monkeypatch.setitem(sys.modules, name, module)

    def check_released(self) -> None:
        live = {what: count for what, count in self.cuda.live().items() if count}
        pending = [handle for handle, queue in self.cuda.streams.items() if queue]
        require(not live or self.allow_leaks, f"left allocated at the end of the test: {live}")
        require(not pending, f"work queued on streams {pending} was never synchronized")
        require(
            not self.cuda.deprecated_int_calls,
            "int() was called on a cudaStream_t (deprecated in cuda-bindings): "
            "take the handle from get_cuda_native_handle",
        )
