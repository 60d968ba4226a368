"""Inference backends behind one small interface: a context manager with ``infer(batch) -> logits``.

- ``OnnxRuntimeBackend``: an edgeseg ONNX (fp32, fp16 or int8) on onnxruntime's CPU, CUDA or
  TensorRT execution provider.
- ``TensorRTBackend``: a serialized TensorRT engine through the TensorRT Python API, with device
  memory handled by NVIDIA's cuda-python (no torch, no pycuda).
- ``open_backend(path, backend="auto")`` picks the fastest one this host can run and logs which;
  ``open_segmenter`` wraps it in a Segmenter with the card read from the model file.
- ``RUNNERS``: each backend's name and how it opens a model file. Adding a backend is an entry there and its
  name among its kind's backends in the table of forms (edgeseg.core.forms.KINDS): CONTRIBUTING.md, "Add a backend".

Each implements ``edgeseg.core.segmenter.Backend``: ``name``, ``precision`` ("fp32"/"fp16"/"int8"), ``card``
and ``infer`` from float32 (N, 3, H, W) to float32 logits (N, 1, H, W).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeseg.core import forms as form_table
from edgeseg.core import install_check
from edgeseg.core.names import is_engine
from edgeseg.core.segmenter import Backend, BackendUnavailable, Segmenter
from edgeseg.runtime.loaders import (
    REBUILD_FIX,
    RuntimeModelError,
    check_engine_host,
    read_engine_info,
    read_onnx_info,
    sha256_of,
)
from edgeseg.runtime.thread_plan import ThreadPlan, this_host_plan

if TYPE_CHECKING:  # edgeseg.runtime.cuda loads when a TensorRT engine opens
    from edgeseg.runtime.cuda import PinnedBuffer

log = logging.getLogger("edgeseg.runtime")

ORT_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
ORT_GPU_FIX = (
    "install onnxruntime's GPU build through edgeseg's extras, which bring the CUDA and cuDNN libraries it needs: "
    "pip install 'edgeseg[gpu]' (CUDA 12, with TensorRT for the TensorRT provider) or 'edgeseg[cuda12]' (CUDA 12, "
    "without TensorRT); 'edgeseg[gpu-cu13]' / 'edgeseg[cuda13]' for CUDA 13; remove the CPU build first "
    "(pip uninstall -y onnxruntime), one build per environment. On a Jetson, NVIDIA's onnxruntime-gpu wheel for your "
    "JetPack (docs/gpu-and-jetson.md, Support matrix). `edgeseg doctor` checks the install"
)
TENSORRT_FIX = "install TensorRT's Python bindings (pip install 'edgeseg[gpu]' on x86; part of JetPack on a Jetson)"


class ProviderNotInBuild(BackendUnavailable):
    """This onnxruntime build has no such execution provider (the CPU build has no GPU ones)."""


class _ContextManager:
    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pass


def tensorrt_cache_dir(onnx_path: Path, precision: str) -> Path:
    """onnxruntime's TensorRT engine cache for this very model file and precision.

    onnxruntime keys its engine cache by graph names and versions, not by weights, so one folder for
    every model would run a retrained model on the old model's engine. A folder per ONNX sha256 cannot.
    """
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeseg" / "onnxruntime-tensorrt"
    return base / f"{sha256_of(onnx_path)[:16]}-{precision}"


def tensorrt_engine_precision(name: str, precision: str) -> str:
    """What onnxruntime's TensorRT provider builds from an ONNX of this precision, said plainly."""
    if precision == "fp32":
        # The FP16 flag stays off for an fp32 ONNX: the engine keeps the form's precision, so timings and
        # parity of model.onnx on this provider are FP32 TensorRT's, not FP16's.
        return (
            f"FP32 TensorRT engine for {name} (an fp32 ONNX); for an FP16 engine run model.fp16.onnx on this "
            f"provider, or build one with `edgeseg export --format engine`"
        )
    if precision == "int8":
        return (
            f"INT8 TensorRT engine for {name} from its Q/DQ scales (TensorRT's parser takes only symmetric ones, "
            f"as in model.int8-trt.onnx)"
        )
    return f"FP16 TensorRT engine for {name} (an FP16 ONNX)"


def session_options(ort, threads: int | None, plan: ThreadPlan):
    """onnxruntime's SessionOptions: ``threads`` intra-op threads (None: the plan's), spinning as planned."""
    options = install_check.session_options(ort)  # onnxruntime: errors only, unless debugging
    options.intra_op_num_threads = threads or plan.inference_threads
    # Idle worker threads sleep instead of spinning unless the plan leaves the other threads cores of their
    # own: spinning steals the cores that capture, overlay, the encoder (and, in a benchmark or parity run,
    # PyTorch) need between two runs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if plan.inference_spinning else "0")
    return options


class OnnxRuntimeBackend(_ContextManager):
    """An edgeseg ONNX on one onnxruntime execution provider ("cpu", "cuda" or "tensorrt")."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None) -> None:
        if device not in ORT_PROVIDERS:
            raise ValueError(f"unknown onnxruntime device {device!r}; choose one of {sorted(ORT_PROVIDERS)}")
        path = Path(path)
        info = read_onnx_info(path)
        self.card, self.precision = info.card, info.precision
        self.name = f"onnxruntime-{device}"
        ort = install_check.import_onnxruntime(gpu=device != "cpu")  # none, or two builds at once: the fix
        provider = ORT_PROVIDERS[device]
        available = ort.get_available_providers()
        if provider not in available:
            raise ProviderNotInBuild(
                f"{self.name}: this onnxruntime ({ort.__version__}) has no {provider} (it has {', '.join(available)}); "
                f"to use it, {ORT_GPU_FIX}."
            )
        if device == "tensorrt":
            self._load_tensorrt_libraries()
        options = session_options(ort, threads, this_host_plan())
        try:
            self.session = ort.InferenceSession(str(path), options, providers=self._providers(device, path))
        except Exception as error:  # onnxruntime raises its own exception types for every failure
            if device != "cpu":  # the file was read above: a GPU provider that fails to start is the likelier cause
                self._refuse_old_driver(ort)
                raise BackendUnavailable(
                    f"{self.name}: onnxruntime could not start {provider} for {path} ({error}); "
                    f"{self._gpu_fix(device)}."
                ) from None
            raise RuntimeModelError(
                f"{path}: onnxruntime could not load it ({error}). Re-export it with `edgeseg export RUN_DIR`."
            ) from None
        used = self.session.get_providers()[0]
        if used != provider:
            self._refuse_old_driver(ort)
            raise BackendUnavailable(
                f"{self.name}: onnxruntime could not start {provider} and fell back to {used} (its CUDA/cuDNN/TensorRT "
                f"libraries are missing or do not match this onnxruntime, or no GPU is visible; see its log above). "
                f"To use it, {self._gpu_fix(device)}."
            )
        model_input = self.session.get_inputs()[0]
        self._input_name = model_input.name
        self._input_dtype = np.float16 if model_input.type == "tensor(float16)" else np.float32
        self._output_name = self.session.get_outputs()[0].name

    def _load_tensorrt_libraries(self) -> None:
        """Load TensorRT's libraries before the session is made: from a pip install nothing else loads them."""
        problem = install_check.load_tensorrt_libraries()
        if problem:
            raise BackendUnavailable(
                f"{self.name}: onnxruntime's TensorRT provider cannot start: {problem}; "
                f"{install_check.TENSORRT_PROVIDER_FIX}."
            )

    @staticmethod
    def _gpu_fix(device: str) -> str:
        return install_check.TENSORRT_PROVIDER_FIX if device == "tensorrt" else ORT_GPU_FIX

    def _refuse_old_driver(self, ort) -> None:
        """A GPU provider that did not start on a GPU whose driver is too old for this onnxruntime's CUDA: say so."""
        from edgeseg.runtime import cuda

        built_for = install_check.build_cuda_version(ort) or ""  # "12.2"; empty for a CPU build
        major = built_for.split(".")[0]
        problem = cuda.listed_driver_problem(int(major) if major.isdigit() else None)
        if problem:
            self.session = None
            raise BackendUnavailable(
                f"{self.name}: {problem} (onnxruntime {ort.__version__} is built for CUDA {built_for})."
            )

    def _providers(self, device: str, path: Path) -> list:
        if device == "cpu":
            return ["CPUExecutionProvider"]
        if device == "cuda":
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        # Building a TensorRT engine takes minutes; the cache makes later starts take seconds.
        cache = tensorrt_cache_dir(path, self.precision)
        log.info("onnxruntime-tensorrt: %s", tensorrt_engine_precision(path.name, self.precision))
        if not any(cache.glob("*.engine")):
            log.info(
                "onnxruntime-tensorrt: building TensorRT engines for %s (the first start takes minutes; cached in %s)",
                path.name,
                cache,
            )
        cache.mkdir(parents=True, exist_ok=True)
        options = {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,  # layer timings, valid across models: shared
            "trt_timing_cache_path": str(cache.parent / "timing"),
            "trt_fp16_enable": self.precision in ("fp16", "int8"),
            "trt_int8_enable": self.precision == "int8",  # the QDQ nodes carry the scales: no calibration
        }
        return [("TensorrtExecutionProvider", options), "CUDAExecutionProvider", "CPUExecutionProvider"]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype != self._input_dtype:
            batch = batch.astype(self._input_dtype)
        (logits,) = self.session.run([self._output_name], {self._input_name: batch})
        return logits.astype(np.float32, copy=False)

    def close(self) -> None:
        self.session = None


class TensorRTBackend(_ContextManager):
    """A serialized TensorRT engine (TensorRT 10/11 API) with its sidecar; buffers are allocated once.

    Written to the documented TensorRT and cuda-python APIs and tested against a strict double of them
    (tests/export/trt_double.py); on a real GPU only in the tests marked ``gpu``. Every return value that
    reports a failure is checked, and a failure after the first allocation frees everything again.
    """

    def __init__(self, engine_path: str | os.PathLike) -> None:
        engine_path = Path(engine_path)
        info = read_engine_info(engine_path)  # first: an incomplete engine file is named even where TensorRT is missing
        try:
            import tensorrt as trt
        except ImportError:
            raise BackendUnavailable(f"tensorrt: TensorRT is not installed here; {TENSORRT_FIX}.") from None
        from edgeseg.runtime import cuda

        gpu = visible_gpu(cuda)
        check_engine_host(info, engine_path, trt.__version__, gpu.compute_capability, gpu.name)
        self.card, self.precision, self.name = info.card, info.precision, "tensorrt"
        self._cuda = cuda
        self._buffers: list = []
        # TensorRT's objects and the CUDA stream: Any, as neither library ships type information.
        self._stream: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        try:
            self._load(trt, engine_path)
        except BaseException:
            for error in self._release():
                log.warning("tensorrt: while cleaning up after a failed start: %s", error)
            raise

    def _load(self, trt, engine_path: Path) -> None:
        """Deserialize the engine, make its context, a stream and the two buffers, and bind them."""
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise RuntimeModelError(
                f"{engine_path}: TensorRT could not deserialize this engine (see its log above). {REBUILD_FIX}."
            )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise RuntimeModelError(
                f"{engine_path}: TensorRT could not create an execution context (see its log above; "
                "often too little free GPU memory). Close other GPU programs and try again."
            )
        input_name, output_name = self._io_names(trt, engine_path)
        input_shape = self._input_shape(input_name, engine_path)
        output_shape = tuple(self._context.get_tensor_shape(output_name))
        if any(side < 0 for side in output_shape):
            raise RuntimeModelError(
                f"{engine_path}: TensorRT cannot tell the output shape {output_shape}. {REBUILD_FIX}."
            )
        self._stream = self._cuda.Stream()
        self._input = self._allocate(input_shape, trt.nptype(self._engine.get_tensor_dtype(input_name)))
        self._output = self._allocate(output_shape, trt.nptype(self._engine.get_tensor_dtype(output_name)))
        for name, buffer in ((input_name, self._input), (output_name, self._output)):
            if not self._context.set_tensor_address(name, buffer.device_pointer):
                raise RuntimeModelError(
                    f"{engine_path}: TensorRT refused the device buffer for tensor {name!r} "
                    f"(see its log above). {REBUILD_FIX}."
                )

    def _io_names(self, trt, engine_path: Path) -> tuple[str, str]:
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise RuntimeModelError(
                f"{engine_path}: expected one input and one output tensor, found {inputs} and {outputs}. {REBUILD_FIX}."
            )
        return inputs[0], outputs[0]

    def _input_shape(self, name: str, engine_path: Path) -> tuple[int, ...]:
        """The engine's input shape; a dynamic-shape engine is set to run at the card's size, batch 1."""
        shape = tuple(self._engine.get_tensor_shape(name))
        if all(side >= 0 for side in shape):
            return shape
        shape = (1, 3, *self.card.input_size)
        if not self._context.set_input_shape(name, shape):
            raise RuntimeModelError(
                f"{engine_path}: the engine does not take input {shape}, the size its sidecar's card "
                f"gives, so the engine and the sidecar do not belong together. {REBUILD_FIX}."
            )
        return shape

    def _allocate(self, shape: tuple[int, ...], dtype) -> PinnedBuffer:
        buffer = self._cuda.PinnedBuffer(shape, dtype)
        self._buffers.append(buffer)
        return buffer

    def infer(self, batch: np.ndarray) -> np.ndarray:
        host_input, host_output = self._input.host, self._output.host  # None once the buffers are freed
        if self._context is None or host_input is None or host_output is None:
            raise RuntimeError("this TensorRT backend is closed")
        if batch.shape != host_input.shape:
            raise ValueError(f"this engine takes input of shape {host_input.shape}, got {batch.shape}")
        np.copyto(host_input, batch, casting="same_kind")
        self._input.to_device(self._stream)
        if not self._context.execute_async_v3(self._stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed (see its log above)")
        self._output.to_host(self._stream)
        self._stream.synchronize()
        return host_output.astype(np.float32)  # a copy: the pinned buffer is reused by the next call

    def close(self) -> None:
        """Release the engine, its buffers and its stream; a second call does nothing."""
        errors = self._release()
        if errors:
            raise errors[0]

    def _release(self) -> list[Exception]:
        """Free everything this backend holds, going on past a failure; returns the CUDA errors met."""
        # TensorRT's objects go first, the context before the engine before the runtime: they may still
        # refer to the buffers and the stream.
        self._context = None
        self._engine = None
        self._runtime = None
        errors: list[Exception] = []
        buffers, self._buffers = self._buffers, []
        for buffer in buffers:
            try:
                buffer.free()
            except self._cuda.CudaError as error:
                errors.append(error)
        if self._stream is not None:
            stream, self._stream = self._stream, None
            try:
                stream.destroy()
            except self._cuda.CudaError as error:
                errors.append(error)
        return errors


def visible_gpu(cuda):
    """The GPU the TensorRT backend runs on; BackendUnavailable says why there is none (an old driver as such)."""
    try:
        gpu = cuda.device()
    except (ImportError, cuda.CudaError) as error:  # no cuda-python; a driver too old for it
        raise BackendUnavailable(f"tensorrt: {error}") from None
    if gpu is None:
        reason = cuda.gpu_unusable_reason(cuda.cuda_major(), "CUDA sees no GPU")
        raise BackendUnavailable(
            f"tensorrt: {reason or 'no CUDA GPU is visible on this host (check the driver and CUDA_VISIBLE_DEVICES).'}"
        )
    return gpu


# How a backend opens a model file: (the file, onnxruntime's intra-op threads or None for the host's plan) -> Backend.
Runner = Callable[[Path, int | None], Backend]


def onnxruntime_runner(device: str) -> Runner:
    """The runner of onnxruntime on one execution provider (a key of ORT_PROVIDERS)."""
    return lambda path, threads: OnnxRuntimeBackend(path, device=device, threads=threads)


# Every runtime backend by name. The table of forms says which kind of file each runs and the order "auto" tries
# them in (edgeseg.core.forms.KINDS); a name there and an entry here is all a new backend needs (CONTRIBUTING.md).
RUNNERS: dict[str, Runner] = {
    "onnxruntime-tensorrt": onnxruntime_runner("tensorrt"),
    "onnxruntime-cuda": onnxruntime_runner("cuda"),
    "onnxruntime-cpu": onnxruntime_runner("cpu"),
    "tensorrt": lambda path, threads: TensorRTBackend(path),  # TensorRT plans its own threads
}


def open_backend(path: str | os.PathLike, backend: str = "auto", threads: int | None = None) -> Backend:
    """Open ``path`` on ``backend``; "auto" picks the fastest this host can run and logs which and why.

    For a TensorRT engine that is the TensorRT backend; for an ONNX, onnxruntime's TensorRT provider,
    then its CUDA provider, then the CPU (the order of the table of forms, edgeseg.core.forms.KINDS).
    An explicit backend that cannot run raises BackendUnavailable.
    """
    path = Path(path)
    kind = "engine" if is_engine(path) else "onnx"
    check_backend(path, kind, backend)
    tried = form_table.auto_backends(kind)
    if backend == "auto" and len(tried) > 1:
        return open_fastest(path, tried, threads)
    chosen = RUNNERS[tried[0] if backend == "auto" else backend](path, threads)  # one to pick: its own error
    if kind == "engine":
        log.info("backend: %s (%s) for %s", chosen.name, chosen.precision, path.name)
    return chosen


def check_backend(path: Path, kind: str, backend: str) -> None:
    """BackendUnavailable, naming the backends that do, for a backend name that cannot run ``path``."""
    listed = ("auto", *form_table.runtime_backends())
    if backend not in listed:
        raise BackendUnavailable(
            f"{backend!r} is not a runtime backend; {path.name} runs on {', '.join(listed)}"
            + (" (PyTorch backends run a training run directory)" if backend.startswith("torch") else "")
        )
    if backend == "auto" or backend in form_table.backends_for(kind):
        return
    if kind == "engine":
        runs = " or ".join(repr(name) for name in form_table.backends_for("engine"))
        raise BackendUnavailable(
            f"{path} is a TensorRT engine, which only the {runs} backend runs; pass the model.onnx it was "
            f"built from to use {backend}."
        )
    raise BackendUnavailable(
        f"{path} is an ONNX model; the {backend!r} backend runs TensorRT engines. Build one on this device with "
        f"`edgeseg export RUN_DIR --format engine`, or use --backend onnxruntime-tensorrt."
    )


def open_fastest(path: Path, tried: tuple[str, ...], threads: int | None) -> Backend:
    """The first of ``tried`` that opens ``path`` here, logged with the faster ones it skipped and why."""
    skipped = []
    for name in tried:
        try:
            chosen = RUNNERS[name](path, threads)
        except install_check.OnnxRuntimeInstallError:
            raise  # the install, not this provider: every other one would fail the same way
        except ProviderNotInBuild as error:  # expected on a CPU build: not worth a line
            skipped.append(str(error))
            log.debug("backend auto: skipped %s: %s", name, error)
            continue
        except BackendUnavailable as error:  # a GPU build whose provider could not start: say why
            skipped.append(str(error))
            log.info("backend auto: skipped %s", error)  # the message starts with the backend's name
            continue
        note = f" (faster ones not available: {'; '.join(s.split(':')[0] for s in skipped)})" if skipped else ""
        log.info("backend: %s (%s) picked by auto%s", chosen.name, chosen.precision, note)
        return chosen
    raise BackendUnavailable("no backend can run here:\n  " + "\n  ".join(skipped))


def open_segmenter(
    path: str | os.PathLike,
    backend: str = "auto",
    threads: int | None = None,
    keep_largest: bool | None = None,
    mm_per_px: float | None = None,
) -> Segmenter:
    """A Segmenter over an edgeseg ONNX or TensorRT engine; the card comes from the model file."""
    return Segmenter(open_backend(path, backend, threads=threads), keep_largest=keep_largest, mm_per_px=mm_per_px)
