"""TensorRT engines (FP16, or INT8 from the QDQ model) built with the TensorRT 10 or 11 Python API.

Kept small and apart from the other forms: TensorRT and an NVIDIA GPU exist only on the device
(a Jetson with JetPack's TensorRT) or a GPU host (`pip install 'edgeseg[gpu]'`). The engine file is
pure TensorRT (so `trtexec` opens it) and is named by TensorRT version, GPU (compute capability and
name) and precision, e.g. ``model.trt10.3.sm87-orin.fp16.engine``; beside it ``<engine>.json``
records the card, the ONNX it came from (name and checksum) and the build, which the runtime checks
before it loads the engine.

How FP16 is built depends on the TensorRT version (``builds_strongly_typed``). TensorRT 11 removed
weak typing (no FP16/INT8 builder flags, no precision constraints) and 10.12+ builds strongly typed
networks: there the FP16 engine is built from the FP16 ONNX the parity gate checked, so it computes in
the types that were verified, and FP32 normalisation is part of that ONNX. TensorRT 10.0-10.11
(JetPack 6 ships 10.3) keeps weak typing: the fp32 ONNX with the FP16 flag, FP32 pinning by precision
constraints. An INT8 engine comes from the QDQ ONNX on both paths (the INT8 flag only on weak typing).

Written to the documented TensorRT Python API and tested against a strict double of it
(tests/export/trt_double.py); the first build on a GPU host is still its first real test.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edgeseg.core.card import ModelCard
from edgeseg.core.errors import EdgesegError
from edgeseg.core.files import write_bytes_atomic, write_text_atomic
from edgeseg.runtime.cuda import Device
from edgeseg.runtime.loaders import read_onnx_info, sha256_of, sidecar_path

log = logging.getLogger("edgeseg.export")

PRECISIONS = ("fp16", "int8")
DEFAULT_WORKSPACE_MIB = 1024
TENSORRT_MAJORS = (10, 11)
STRONGLY_TYPED_FROM = (10, 12)  # from here on, FP16 engines are built strongly typed from the FP16 ONNX
WHERE_TO_BUILD = (
    "Build TensorRT engines on the machine that will run them: on the Jetson (JetPack ships TensorRT) "
    "or on an NVIDIA GPU host after `pip install 'edgeseg[gpu]'`, e.g. `edgeseg export RUN_DIR --format engine`. "
    "Engines are specific to the GPU and TensorRT version they were built with."
)


class EngineUnavailable(EdgesegError, RuntimeError):
    """This host cannot build a TensorRT engine (no TensorRT, no CUDA, no GPU, or no fast FP16)."""


@dataclass(frozen=True)
class Gpu(Device):
    """The GPU an engine is built for: the runtime's Device, and whether it computes FP16 at full rate."""

    @property
    def has_fast_fp16(self) -> bool:
        # NVIDIA's table of arithmetic throughput: full-rate FP16 from sm_53, except sm_61 (Pascal GeForce).
        return (self.major, self.minor) >= (5, 3) and (self.major, self.minor) != (6, 1)


def gpu_properties(device: int = 0) -> Gpu:
    """The GPU's name and compute capability through cuda-python (no torch on the device)."""
    from edgeseg.runtime import cuda

    try:
        found = cuda.device(device)
    except ImportError:
        raise EngineUnavailable(f"cuda-python is not installed. {WHERE_TO_BUILD}") from None
    except cuda.CudaError as error:  # e.g. a driver too old for this CUDA: the message says so
        raise EngineUnavailable(f"{error} {WHERE_TO_BUILD}") from None
    if found is None:
        raise EngineUnavailable(
            f"no usable NVIDIA GPU here (CUDA sees none: check the driver and CUDA_VISIBLE_DEVICES). {WHERE_TO_BUILD}"
        )
    return Gpu(name=found.name, major=found.major, minor=found.minor)


def tensorrt_major_minor(version: str) -> tuple[int, int]:
    """(10, 3) for "10.3.0.30"."""
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        raise EngineUnavailable(f"cannot read TensorRT's version {version!r}") from None
    return major, minor


def builds_strongly_typed(tensorrt_version: str) -> bool:
    """Whether this TensorRT builds the FP16 engine strongly typed from the FP16 ONNX (10.12 on, and all
    of 11, which has no weak typing), rather than from the fp32 ONNX with the FP16 flag (10.0-10.11)."""
    return tensorrt_major_minor(tensorrt_version) >= STRONGLY_TYPED_FROM


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineUnavailable(f"TensorRT is not installed here. {WHERE_TO_BUILD}") from None
    if tensorrt_major_minor(trt.__version__)[0] not in TENSORRT_MAJORS:
        raise EngineUnavailable(
            f"edgeseg builds engines with TensorRT 10 or 11; this host has TensorRT {trt.__version__}."
        )
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
    """e.g. ``model.trt10.3.sm87-orin.fp16.engine``."""
    return f"{stem}.{_build_tag(tensorrt_version, gpu)}.{precision}.engine"


def timing_cache_filename(stem: str, tensorrt_version: str, gpu: Gpu) -> str:
    """e.g. ``model.trt10.3.sm87-orin.timing.cache``: one cache serves both precisions."""
    return f"{stem}.{_build_tag(tensorrt_version, gpu)}.timing.cache"


def gpu_slug(name: str) -> str:
    """A GPU's name as a short part of a file name: "NVIDIA GeForce RTX 4090" -> "geforce-rtx-4090"."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower().removeprefix("nvidia ")).strip("-")
    return slug[:32].rstrip("-") or "gpu"


def _build_tag(tensorrt_version: str, gpu: Gpu) -> str:
    """e.g. ``trt10.3.sm87-orin``: what an engine or a timing cache is valid for. The name tells apart two
    GPUs of one compute capability (an RTX 4090 and an L4 are both sm89), each tuned for separately."""
    major, minor = tensorrt_major_minor(tensorrt_version)
    return f"trt{major}.{minor}.sm{gpu.major}{gpu.minor}-{gpu_slug(gpu.name)}"


def build_engine(
    onnx_path: str | Path,
    card: ModelCard,
    out_dir: str | Path,
    precision: str = "fp16",
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    keep_norm_fp32: bool = False,
    stem: str = "model",
) -> Path:
    """Build a TensorRT engine from ``onnx_path`` into ``out_dir``, with its sidecar beside it.

    The ONNX to give: the QDQ ONNX for int8; for fp16 the FP16 ONNX where ``builds_strongly_typed``
    (its types become the engine's), else the fp32 ONNX. Raises EngineUnavailable on a host that cannot
    build it, and never falls back to FP32: a GPU without fast FP16 is an error. ``keep_norm_fp32``:
    weakly typed, the normalisation and resize layers (the known FP16 hazards of smp's FPN decoder) are
    pinned to float32 (OBEY_PRECISION_CONSTRAINTS); strongly typed, the FP16 ONNX must already keep them
    in float32 (``export_fp16(keep_norm_fp32=True)``), which is checked.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown engine precision {precision!r}; choose one of {PRECISIONS}")
    trt = import_tensorrt()
    gpu = gpu_properties()
    _require_fast_fp16(gpu)
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    strongly_typed = builds_strongly_typed(trt.__version__)
    _check_onnx_fits(onnx_path, precision, trt.__version__, keep_norm_fp32)
    engine_path = out_dir / engine_filename(stem, trt.__version__, gpu, precision)
    cache_path = out_dir / timing_cache_filename(stem, trt.__version__, gpu)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = _parse_onnx(trt, builder, logger, onnx_path, strongly_typed)
    config = _builder_config(trt, builder, network, card, precision, workspace_mib, keep_norm_fp32)
    _use_timing_cache(config, cache_path)
    engine_bytes, build_seconds = _build_serialized_engine(builder, network, config, precision, onnx_path)

    sidecar = _engine_sidecar(
        card, onnx_path, engine_bytes, trt.__version__, gpu, precision, build_seconds, workspace_mib
    )
    sidecar.update(typing="strong" if strongly_typed else "weak", keep_norm_fp32=keep_norm_fp32)
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


def _check_onnx_fits(onnx_path: Path, precision: str, tensorrt_version: str, keep_norm_fp32: bool) -> None:
    """Refuse an ONNX this TensorRT would not build ``precision`` from: a strongly typed build of the fp32
    ONNX would quietly be an FP32 engine, and an INT8 engine needs the QDQ ONNX's scales."""
    strongly_typed = builds_strongly_typed(tensorrt_version)
    wanted = "int8" if precision == "int8" else ("fp16" if strongly_typed else "fp32")
    found = read_onnx_info(onnx_path).precision
    if found != wanted:
        fix = {
            "int8": "an INT8 engine takes its scales from the symmetric QDQ ONNX made for TensorRT: pass "
            "model.int8-trt.onnx (`edgeseg export --format int8-trt` makes it)",
            "fp16": f"TensorRT {tensorrt_version} builds FP16 engines strongly typed, in the ONNX's own types: pass "
            "model.fp16.onnx (`edgeseg export --fp16` makes it)",
            "fp32": f"TensorRT {tensorrt_version} builds FP16 engines from the fp32 ONNX and its FP16 flag: "
            "pass model.onnx",
        }[wanted]
        raise ValueError(f"{onnx_path} is a {found} ONNX; {fix}")
    if strongly_typed and precision == "fp16" and keep_norm_fp32:
        half = _half_precision_norms(onnx_path)
        if half:
            raise ValueError(
                f"{onnx_path}: FP32 normalisation was asked for, but {len(half)} normalisation/Resize nodes of this "
                f"FP16 ONNX compute in float16 (e.g. {half[0]}), and a strongly typed engine computes in the ONNX's "
                "types: make the FP16 ONNX with keep_norm_fp32 = true in a --config file's [build] table "
                "(export_fp16(keep_norm_fp32=True)), then the engine"
            )


def _half_precision_norms(onnx_path: Path) -> list[str]:
    """The normalisation and Resize nodes of an ONNX whose data input is float16."""
    import onnx

    from edgeseg.export.fp16_export import NORM_OPS

    graph = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path))).graph
    types = {value.name: value.type.tensor_type.elem_type for value in [*graph.value_info, *graph.input, *graph.output]}
    types.update({initializer.name: initializer.data_type for initializer in graph.initializer})
    return [
        node.name or node.op_type
        for node in graph.node
        if node.op_type in NORM_OPS and types.get(node.input[0]) == onnx.TensorProto.FLOAT16
    ]


def _parse_onnx(trt, builder, logger, onnx_path: Path, strongly_typed: bool):
    """The TensorRT network of ``onnx_path``; RuntimeError with the parser's errors if it rejects the model."""
    network = builder.create_network(_network_flags(trt, strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT's ONNX parser rejected the model: {errors}")
    return network


def _network_flags(trt, strongly_typed: bool) -> int:
    """0 (explicit batch is the only mode since TensorRT 10), or the STRONGLY_TYPED bit."""
    if not strongly_typed:
        return 0
    # TensorRT 11 is always strongly typed and keeps this flag only for compatibility; a later one may drop it.
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def _builder_config(trt, builder, network, card: ModelCard, precision: str, workspace_mib: int, keep_norm_fp32: bool):
    """Workspace and a static profile for a dynamic-shape ONNX; weakly typed, also the precision flags and the
    optional FP32 pinning (a strongly typed network takes its types from the ONNX and rejects both)."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if not builds_strongly_typed(trt.__version__):
        config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # scales come from the QDQ nodes; no calibrator
        if keep_norm_fp32 and _pin_norm_layers_fp32(trt, network):
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


def _engine_sidecar(
    card: ModelCard,
    onnx_path: Path,
    engine_bytes: bytes,
    tensorrt_version: str,
    gpu: Gpu,
    precision: str,
    build_seconds: float,
    workspace_mib: int,
) -> dict:
    """What the runtime checks before it loads the engine: the card, checksums, and the build."""
    return {
        "card": card.to_dict(),
        "onnx_file": onnx_path.name,
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
    if config.add_optimization_profile(profile) < 0:
        raise RuntimeError(
            f"TensorRT refused the optimization profile {shape} for input {tensor.name!r}; see its log above"
        )
