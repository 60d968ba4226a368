"""TensorRT engines (FP16, or INT8 from the QDQ model) built with the TensorRT 10 Python API.

Kept small and apart from the other forms: TensorRT and an NVIDIA GPU exist only on the device
(a Jetson with JetPack's TensorRT) or a GPU host (`pip install 'edgeseg[gpu]'`). The engine file is
pure TensorRT (so `trtexec` opens it) and is named by TensorRT version, GPU compute capability and
precision, e.g. ``model.trt10.3.sm87.fp16.engine``; beside it ``<engine>.json`` records the card, the
checksum of the ONNX it came from and the build, which the runtime checks before it loads the engine.

Written to the documented TensorRT 10 API; not run on the machines this project was developed on
(neither had TensorRT), so the first build on a GPU host is its first test.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edgeseg.card import ModelCard
from edgeseg.errors import EdgesegError
from edgeseg.files import write_bytes_atomic, write_text_atomic
from edgeseg.runtime.model_file import sha256_of, sidecar_path

log = logging.getLogger("edgeseg.export")

PRECISIONS = ("fp16", "int8")
DEFAULT_WORKSPACE_MIB = 1024
WHERE_TO_BUILD = (
    "Build TensorRT engines on the machine that will run them: on the Jetson (JetPack ships TensorRT) "
    "or on an NVIDIA GPU host after `pip install 'edgeseg[gpu]'`, e.g. `edgeseg export RUN_DIR --format engine`. "
    "Engines are specific to the GPU and TensorRT version they were built with."
)


class EngineUnavailable(EdgesegError, RuntimeError):
    """This host cannot build a TensorRT engine (no TensorRT, no CUDA, no GPU, or no fast FP16)."""


@dataclass(frozen=True)
class Gpu:
    name: str
    major: int
    minor: int

    @property
    def compute_capability(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def has_fast_fp16(self) -> bool:
        # NVIDIA's table of arithmetic throughput: full-rate FP16 from sm_53, except sm_61 (Pascal GeForce).
        return (self.major, self.minor) >= (5, 3) and (self.major, self.minor) != (6, 1)


def gpu_properties(device: int = 0) -> Gpu:
    """The GPU's name and compute capability through cuda-python (no torch on the device)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python before 12.6 names the module this way
        except ImportError:
            raise EngineUnavailable(f"cuda-python is not installed. {WHERE_TO_BUILD}") from None
    error, properties = cudart.cudaGetDeviceProperties(device)
    if error != cudart.cudaError_t.cudaSuccess:
        raise EngineUnavailable(f"no usable NVIDIA GPU here (CUDA says {error.name}). {WHERE_TO_BUILD}")
    name = properties.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode()
    return Gpu(name=str(name), major=int(properties.major), minor=int(properties.minor))


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineUnavailable(f"TensorRT is not installed here. {WHERE_TO_BUILD}") from None
    if int(trt.__version__.split(".")[0]) != 10:
        raise EngineUnavailable(f"edgeseg builds engines with TensorRT 10; this host has TensorRT {trt.__version__}.")
    return trt


def engine_unavailable_reason() -> str | None:
    """Why this host cannot build engines, or None when it can."""
    try:
        import_tensorrt()
        gpu_properties()
    except EngineUnavailable as error:
        return str(error)
    return None


def engine_filename(stem: str, tensorrt_version: str, gpu: Gpu, precision: str) -> str:
    """e.g. ``model.trt10.3.sm87.fp16.engine``."""
    return f"{stem}.{_build_tag(tensorrt_version, gpu)}.{precision}.engine"


def timing_cache_filename(stem: str, tensorrt_version: str, gpu: Gpu) -> str:
    """e.g. ``model.trt10.3.sm87.timing.cache``: one cache serves both precisions."""
    return f"{stem}.{_build_tag(tensorrt_version, gpu)}.timing.cache"


def _build_tag(tensorrt_version: str, gpu: Gpu) -> str:
    """e.g. ``trt10.3.sm87``: what an engine or a timing cache is only valid for."""
    major_minor = ".".join(tensorrt_version.split(".")[:2])
    return f"trt{major_minor}.sm{gpu.major}{gpu.minor}"


def build_engine(
    onnx_path: str | Path,
    card: ModelCard,
    out_dir: str | Path,
    precision: str = "fp16",
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    keep_norm_fp32: bool = False,
    stem: str = "model",
) -> Path:
    """Build a TensorRT engine from ``onnx_path`` (the fp32 ONNX for fp16, the QDQ ONNX for int8).

    Raises EngineUnavailable on a host that cannot build it, and never falls back to FP32: a GPU
    without fast FP16 is an error. ``keep_norm_fp32`` pins the normalisation and resize layers to
    float32 (OBEY_PRECISION_CONSTRAINTS), the known FP16 hazards of smp's FPN decoder.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown engine precision {precision!r}; choose one of {PRECISIONS}")
    trt = import_tensorrt()
    gpu = gpu_properties()
    _require_fast_fp16(gpu)
    onnx_path = Path(onnx_path)
    out_dir = Path(out_dir)
    engine_path = out_dir / engine_filename(stem, trt.__version__, gpu, precision)
    cache_path = out_dir / timing_cache_filename(stem, trt.__version__, gpu)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = _parse_onnx(trt, builder, logger, onnx_path)
    config = _builder_config(trt, builder, network, card, precision, workspace_mib, keep_norm_fp32)
    _use_timing_cache(config, cache_path)
    engine_bytes, build_seconds = _build_serialized_engine(builder, network, config, precision, onnx_path)

    sidecar = _engine_sidecar(card, onnx_path, engine_bytes, trt.__version__, gpu, precision, build_seconds,
                              workspace_mib)
    # The engine and its sidecar straight after each other: the runtime refuses an engine without one.
    write_bytes_atomic(engine_path, engine_bytes)
    write_text_atomic(sidecar_path(engine_path), json.dumps(sidecar, indent=2) + "\n")
    _save_timing_cache(config, cache_path)
    return engine_path


def _require_fast_fp16(gpu: Gpu) -> None:
    if not gpu.has_fast_fp16:
        raise EngineUnavailable(
            f"{gpu.name} (sm_{gpu.major}{gpu.minor}) has no fast FP16; edgeseg does not build an FP32 engine "
            "in place of the FP16 one asked for. Run the fp32 ONNX with onnxruntime instead."
        )


def _parse_onnx(trt, builder, logger, onnx_path: Path):
    """The TensorRT network of ``onnx_path``; RuntimeError with the parser's errors if it rejects the model."""
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT's ONNX parser rejected the model: {errors}")
    return network


def _builder_config(trt, builder, network, card: ModelCard, precision: str, workspace_mib: int,
                    keep_norm_fp32: bool):
    """Workspace, precision flags, optional FP32 pinning, and a static profile for a dynamic-shape ONNX."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # scales come from the QDQ nodes; no calibrator
    if keep_norm_fp32:
        pinned = _pin_norm_layers_fp32(trt, network)
        if pinned:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    _add_static_profile(trt, builder, network, config, card)
    return config


def _use_timing_cache(config, cache_path: Path) -> None:
    """Start from an earlier build's timing cache, if there is one and TensorRT takes it; else from none."""
    try:
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        accepted = config.set_timing_cache(cache, ignore_mismatch=False)
    except (OSError, RuntimeError, TypeError) as error:
        log.warning("%s: timing cache not usable (%s); building without it", cache_path, error)
        accepted = False
    if not accepted:
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def _save_timing_cache(config, cache_path: Path) -> None:
    """Keep the build's tactic timings for the next build; losing them only costs time, never the engine."""
    try:
        write_bytes_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    except (OSError, RuntimeError) as error:
        log.warning("%s: could not save the timing cache (%s); the engine is built", cache_path, error)


def _build_serialized_engine(builder, network, config, precision: str, onnx_path: Path) -> tuple[bytes, float]:
    """The serialized engine and how many seconds TensorRT took to build it."""
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - started
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build a {precision} engine from {onnx_path}; see its log above")
    return bytes(serialized), build_seconds


def _engine_sidecar(card: ModelCard, onnx_path: Path, engine_bytes: bytes, tensorrt_version: str, gpu: Gpu,
                    precision: str, build_seconds: float, workspace_mib: int) -> dict:
    """What the runtime checks before it loads the engine: the card, checksums, and the build."""
    return {
        "card": card.to_dict(),
        "onnx_sha256": sha256_of(onnx_path),
        "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        "tensorrt_version": tensorrt_version,
        "gpu_name": gpu.name,
        "compute_capability": gpu.compute_capability,
        "precision": precision,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(build_seconds, 2),
        "workspace_mib": workspace_mib,
    }


def _pin_norm_layers_fp32(trt, network) -> int:
    """Set float32 precision on normalisation and resize layers; returns how many were pinned.

    Chosen by layer type alone: TensorRT's ONNX parser makes an InstanceNormalization a NORMALIZATION
    layer, while a match on names would also catch the constants and element-wise layers around it.
    """
    kinds = {trt.LayerType.NORMALIZATION, trt.LayerType.RESIZE}
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type in kinds:
            layer.precision = trt.float32
            for output in range(layer.num_outputs):
                layer.set_output_type(output, trt.float32)
            pinned += 1
    return pinned


def _add_static_profile(trt, builder, network, config, card: ModelCard) -> None:
    """A dynamic-shape ONNX gets one profile fixed at the card's input size, batch 1."""
    tensor = network.get_input(0)
    if all(dimension > 0 for dimension in tensor.shape):
        return
    shape = (1, 3, *card.input_size)
    profile = builder.create_optimization_profile()
    profile.set_shape(tensor.name, shape, shape, shape)
    config.add_optimization_profile(profile)
