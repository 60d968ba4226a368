"""The engine builder and the TensorRT backend end to end against a strict double of TensorRT and CUDA.

The double (trt_double.py) computes with onnxruntime on the ONNX the engine was built from, so these
tests compare real outputs; it also fails a test on a wrong call order, argument type, buffer size, a
buffer or stream left allocated, or work never synchronized.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core import host
from edgeseg.core.card import ModelCard, Provenance
from edgeseg.core.names import default_model_path
from edgeseg.export.tensorrt_export import EngineUnavailable, build_engine
from edgeseg.runtime.backends import BackendUnavailable, OnnxRuntimeBackend, TensorRTBackend, open_backend
from edgeseg.runtime.cuda import CudaError
from edgeseg.runtime.loaders import RuntimeModelError, read_card, sha256_of, sidecar_path

from .trt_double import ApiMisuse, GpuDouble, cudaError_t, cudaStream_t

onnx = pytest.importorskip("onnx")

WEAK, STRONG, TRT11 = "10.3.0.30", "10.12.0.36", "11.0.0.12"
CARD = ModelCard(input_size=(32, 32))


def small_onnx(path: Path, card: ModelCard = CARD, dynamic: bool = False) -> Path:
    """A 32 px edgeseg ONNX with the parts that matter here: Conv, InstanceNormalization, Resize."""
    from onnx import TensorProto, helper, numpy_helper

    from edgeseg.export.onnx_export import set_card_metadata

    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.normal(0, 0.3, (4, 3, 3, 3)),
        "b1": np.zeros(4),
        "scale": np.ones(4),
        "shift": np.zeros(4),
        "w2": rng.normal(0, 0.5, (1, 4, 1, 1)),
        "b2": np.full(1, 0.1),
        "scales": np.array([1, 1, 2, 2]),
    }
    initializers = [numpy_helper.from_array(value.astype(np.float32), name) for name, value in weights.items()]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("InstanceNormalization", ["c1", "scale", "shift"], ["n1"], name="norm"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("Resize", ["c2", "", "scales"], ["logits"], name="up", mode="linear"),
    ]
    side = ["h", "w"] if dynamic else list(card.input_size)
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, *side] if dynamic else [1, 3, *side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 1, *side] if dynamic else [1, 1, *side])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    set_card_metadata(model, card)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def fp16_of(onnx_path: Path, keep_norm_fp32: bool = False) -> Path:
    from edgeseg.export.fp16_export import export_fp16

    return export_fp16(
        onnx_path, read_card(onnx_path), onnx_path.with_name("model.fp16.onnx"), keep_norm_fp32=keep_norm_fp32
    )


@pytest.fixture(scope="module")
def calibration_images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("calibration")
    rng = np.random.default_rng(1)
    paths = []
    for index in range(4):
        path = folder / f"image{index}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def int8_of(onnx_path: Path, images: list[Path], form: str = "int8-trt") -> Path:
    """An INT8 form of export: "int8-trt" (symmetric S8S8, float biases: what TensorRT takes), "int8" (the CPU's:
    U8 activations, int32 biases), or "s8-int32-bias" (symmetric, but with onnxruntime's int32 biases)."""
    from edgeseg.export.int8_export import export_int8, export_int8_tensorrt

    card = read_card(onnx_path)
    if form == "int8-trt":
        return export_int8_tensorrt(onnx_path, card, onnx_path.with_name("model.int8-trt.onnx"), images)
    activations = "s8" if form == "s8-int32-bias" else "u8"
    return export_int8(onnx_path, card, onnx_path.with_name(f"model.{form}.onnx"), images, activations=activations)


def random_batch(card: ModelCard = CARD, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, *card.input_size)).astype(np.float32)


def onnxruntime_logits(path: Path, batch: np.ndarray) -> np.ndarray:
    with OnnxRuntimeBackend(path) as backend:
        return backend.infer(batch)


# --- the version decides the path ------------------------------------------------------------------


@pytest.mark.parametrize("version", [WEAK, "10.11.0.33"])
def test_weakly_typed_tensorrt_builds_fp16_from_the_fp32_onnx_with_the_fp16_flag(gpu_double, tmp_path: Path, version):
    double = gpu_double(version)
    engine = build_engine(small_onnx(tmp_path / "model.onnx"), CARD, tmp_path)
    (build,) = double.tensorrt.builds
    assert build["strongly_typed"] is False and build["flags"] == ["FP16"] and build["pinned"] == []
    sidecar = json.loads(sidecar_path(engine).read_text())
    assert sidecar["onnx_file"] == "model.onnx" and sidecar["onnx_sha256"] == sha256_of(tmp_path / "model.onnx")
    assert sidecar["typing"] == "weak" and sidecar["precision"] == "fp16" and sidecar["tensorrt_version"] == version


@pytest.mark.parametrize("version", [STRONG, TRT11])
def test_strongly_typed_tensorrt_builds_fp16_from_the_fp16_onnx_without_precision_flags(
    gpu_double, tmp_path: Path, version
):
    double = gpu_double(version)
    fp16 = fp16_of(small_onnx(tmp_path / "model.onnx"))
    engine = build_engine(fp16, CARD, tmp_path)
    (build,) = double.tensorrt.builds
    assert build["strongly_typed"] is True and build["flags"] == []
    sidecar = json.loads(sidecar_path(engine).read_text())
    assert sidecar["onnx_file"] == "model.fp16.onnx" and sidecar["typing"] == "strong"
    with TensorRTBackend(engine) as backend:  # it computes what the FP16 ONNX computes
        np.testing.assert_array_equal(backend.infer(random_batch()), onnxruntime_logits(fp16, random_batch()))


@pytest.mark.parametrize("version", [STRONG, TRT11])
def test_a_strongly_typed_build_refuses_the_fp32_onnx_and_says_which_to_give(gpu_double, tmp_path: Path, version):
    gpu_double(version)
    with pytest.raises(
        ValueError, match=r"model.onnx is a fp32 ONNX; TensorRT .* strongly typed.*pass model.fp16.onnx"
    ):
        build_engine(small_onnx(tmp_path / "model.onnx"), CARD, tmp_path)
    assert not list(tmp_path.glob("*.engine"))


def test_a_weakly_typed_build_refuses_the_fp16_onnx(gpu_double, tmp_path: Path):
    gpu_double(WEAK)
    with pytest.raises(ValueError, match="from the fp32 ONNX and its FP16 flag: pass model.onnx"):
        build_engine(fp16_of(small_onnx(tmp_path / "model.onnx")), CARD, tmp_path)


def test_fp32_norms_come_from_the_fp16_onnx_when_strongly_typed(gpu_double, tmp_path: Path):
    double = gpu_double(TRT11)
    onnx_path = small_onnx(tmp_path / "model.onnx")
    with pytest.raises(ValueError, match="compute in float16 .*keep_norm_fp32"):
        build_engine(fp16_of(onnx_path), CARD, tmp_path, keep_norm_fp32=True)
    engine = build_engine(fp16_of(onnx_path, keep_norm_fp32=True), CARD, tmp_path, keep_norm_fp32=True)
    assert double.tensorrt.builds[-1]["pinned"] == []  # nothing set on the network: the ONNX carries the types
    assert json.loads(sidecar_path(engine).read_text())["keep_norm_fp32"] is True


def test_weakly_typed_int8_with_fp32_norms_sets_int8_and_pins_by_layer_type(
    gpu_double, tmp_path: Path, calibration_images
):
    double = gpu_double(WEAK)
    int8 = int8_of(small_onnx(tmp_path / "model.onnx"), calibration_images)
    engine = build_engine(int8, CARD, tmp_path, precision="int8", keep_norm_fp32=True)
    (build,) = double.tensorrt.builds
    assert build["flags"] == ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"]
    assert set(build["pinned"]) == {"norm", "up"}
    assert engine.name == "model.trt10.3.sm87-orin.int8.engine"
    with TensorRTBackend(engine) as backend:
        np.testing.assert_allclose(backend.infer(random_batch()), onnxruntime_logits(int8, random_batch()), atol=1e-6)


@pytest.mark.parametrize("version", [STRONG, TRT11])
def test_strongly_typed_int8_comes_from_the_symmetric_qdq_onnx_without_flags(
    gpu_double, tmp_path: Path, version, calibration_images
):
    double = gpu_double(version)
    onnx_path = small_onnx(tmp_path / "model.onnx")
    engine = build_engine(int8_of(onnx_path, calibration_images), CARD, tmp_path, precision="int8")
    assert double.tensorrt.builds[-1]["flags"] == [] and double.tensorrt.builds[-1]["strongly_typed"] is True
    assert json.loads(sidecar_path(engine).read_text())["onnx_file"] == "model.int8-trt.onnx"
    with pytest.raises(ValueError, match="an INT8 engine takes its scales from the symmetric QDQ ONNX"):
        build_engine(onnx_path, CARD, tmp_path, precision="int8")
    # The double's parser refuses what TensorRT's does: the CPU's U8 form, and int32 bias DequantizeLinear.
    with pytest.raises(RuntimeError, match="parser rejected the model: .*zero point must be int8 0"):
        build_engine(int8_of(onnx_path, calibration_images, "int8"), CARD, tmp_path, precision="int8")
    with pytest.raises(RuntimeError, match="parser rejected the model: .*only activation types allowed .*INT32"):
        build_engine(int8_of(onnx_path, calibration_images, "s8-int32-bias"), CARD, tmp_path, precision="int8")


def test_a_dynamic_shape_onnx_gets_a_profile_at_the_card_size_and_runs(gpu_double, tmp_path: Path):
    double = gpu_double(WEAK)
    onnx_path = small_onnx(tmp_path / "model.onnx", dynamic=True)
    engine = build_engine(onnx_path, CARD, tmp_path)
    assert double.tensorrt.builds[0]["profile"] == {"image": [[1, 3, 32, 32]] * 3}
    with TensorRTBackend(engine) as backend:
        np.testing.assert_array_equal(backend.infer(random_batch()), onnxruntime_logits(onnx_path, random_batch()))


def test_tensorrt_outside_10_and_11_is_refused(gpu_double, tmp_path: Path):
    for version in ("8.6.1", "12.0.0"):
        gpu_double(version)
        with pytest.raises(EngineUnavailable, match=f"TensorRT 10 or 11; this host has TensorRT {version}"):
            build_engine(small_onnx(tmp_path / "model.onnx"), CARD, tmp_path)


def test_build_failures_say_why_and_leave_no_files(gpu_double, tmp_path: Path):
    onnx_path = small_onnx(tmp_path / "model.onnx")
    double = gpu_double(WEAK)
    with pytest.raises(ValueError, match="unknown engine precision 'fp32'"):
        build_engine(onnx_path, CARD, tmp_path, precision="fp32")
    double.tensorrt.fail_next("build_serialized_network")
    with pytest.raises(RuntimeError, match="failed to build a fp16 engine"):
        build_engine(onnx_path, CARD, tmp_path)
    assert not list(tmp_path.glob("*.engine*"))
    gpu_double(WEAK, gpus=[("GeForce GTX 1080", 6, 1)])
    with pytest.raises(EngineUnavailable, match="no fast FP16"):
        build_engine(onnx_path, CARD, tmp_path)
    gpu_double(WEAK, gpus=[])
    with pytest.raises(EngineUnavailable, match="no usable NVIDIA GPU"):
        build_engine(onnx_path, CARD, tmp_path)


def test_timing_cache_is_reused_and_a_corrupt_one_set_aside(gpu_double, tmp_path: Path):
    gpu_double(WEAK)
    onnx_path = small_onnx(tmp_path / "model.onnx")
    cache = tmp_path / "model.trt10.3.sm87-orin.timing.cache"
    cache.write_bytes(b"corrupt bytes")
    engine = build_engine(onnx_path, CARD, tmp_path)
    assert engine.is_file() and cache.read_bytes().startswith(b"TRT-DOUBLE-TIMING-CACHE")


# --- the backend ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [WEAK, TRT11])
def test_backend_runs_the_engine_twice_and_frees_everything_at_close(gpu_double, tmp_path: Path, version):
    double = gpu_double(version)
    onnx_path = small_onnx(tmp_path / "model.onnx")
    source = fp16_of(onnx_path) if version == TRT11 else onnx_path
    backend = open_backend(build_engine(source, CARD, tmp_path), "tensorrt")
    assert (backend.name, backend.precision, backend.card) == ("tensorrt", "fp16", CARD)
    assert double.cuda.live() == {"pinned host buffers": 2, "device buffers": 2, "streams": 1}
    first = backend.infer(random_batch(seed=1))
    second = backend.infer(random_batch(seed=2))
    np.testing.assert_array_equal(first, onnxruntime_logits(source, random_batch(seed=1)))
    np.testing.assert_array_equal(second, onnxruntime_logits(source, random_batch(seed=2)))
    backend.close()
    backend.close()  # idempotent
    assert double.cuda.live() == {"pinned host buffers": 0, "device buffers": 0, "streams": 0}
    with pytest.raises(RuntimeError, match="closed"):
        backend.infer(random_batch())


@pytest.mark.parametrize(
    ("layer", "call", "error", "message"),
    [
        ("tensorrt", "deserialize_cuda_engine", RuntimeModelError, "could not deserialize"),
        ("tensorrt", "create_execution_context", RuntimeModelError, "could not create an execution context"),
        ("tensorrt", "set_tensor_address", RuntimeModelError, "refused the device buffer for tensor 'image'"),
        ("cuda", "cudaStreamCreate", CudaError, "cudaStreamCreate failed: cudaErrorMemoryAllocation"),
        ("cuda", "cudaMalloc", CudaError, "cudaMalloc failed"),
        ("cuda", "cudaMallocHost", CudaError, "cudaMallocHost failed"),
    ],
)
def test_a_failed_start_frees_every_buffer_and_the_stream(gpu_double, tmp_path: Path, layer, call, error, message):
    double = gpu_double(WEAK)
    engine = build_engine(small_onnx(tmp_path / "model.onnx"), CARD, tmp_path)
    getattr(double, layer).fail_next(call)
    with pytest.raises(error, match=message):
        TensorRTBackend(engine)
    assert double.cuda.live() == {"pinned host buffers": 0, "device buffers": 0, "streams": 0}


def test_a_dynamic_engine_that_refuses_the_card_size_is_refused_and_freed(gpu_double, tmp_path: Path):
    double = gpu_double(WEAK)
    engine = build_engine(small_onnx(tmp_path / "model.onnx", dynamic=True), CARD, tmp_path)
    double.tensorrt.fail_next("set_input_shape")
    with pytest.raises(RuntimeModelError, match=r"does not take input \(1, 3, 32, 32\)"):
        TensorRTBackend(engine)
    assert not any(double.cuda.live().values())


def test_execute_failure_and_close_failure_are_reported(gpu_double, tmp_path: Path):
    double = gpu_double(WEAK)
    backend = TensorRTBackend(build_engine(small_onnx(tmp_path / "model.onnx"), CARD, tmp_path))
    double.tensorrt.fail_next("execute_async_v3")
    with pytest.raises(RuntimeError, match="execute_async_v3 failed"):
        backend.infer(random_batch())
    double.cuda.run_queue(next(iter(double.cuda.streams)))  # the copy queued before the failure
    double.cuda.fail_next("cudaFree")
    with pytest.raises(CudaError, match="cudaFree failed"):
        backend.close()
    # The other buffer, both pinned halves and the stream were still released; only the failed free leaks.
    assert double.cuda.live() == {"pinned host buffers": 0, "device buffers": 1, "streams": 0}
    double.allow_leaks = True


def test_an_engine_from_another_gpu_of_the_same_capability_warns(gpu_double, tmp_path: Path, caplog):
    gpu_double(WEAK, gpus=[("NVIDIA GeForce RTX 4090", 8, 9)])
    engine = build_engine(small_onnx(tmp_path / "model.onnx"), CARD, tmp_path)
    assert engine.name == "model.trt10.3.sm89-geforce-rtx-4090.fp16.engine"
    double = gpu_double(WEAK, gpus=[("NVIDIA L4", 8, 9)])
    with caplog.at_level(logging.WARNING, logger="edgeseg.runtime"), TensorRTBackend(engine) as backend:
        backend.infer(random_batch())  # TensorRT loads it, with a warning of its own
    assert not any(double.cuda.live().values())
    assert (
        "built on a NVIDIA GeForce RTX 4090, and this GPU is a NVIDIA L4 (the same compute capability 8.9)"
        in caplog.text
    )
    gpu_double(WEAK, gpus=[("Orin", 8, 7)])
    with pytest.raises(RuntimeModelError, match=r"built for NVIDIA GeForce RTX 4090 \(compute capability 8.9\)"):
        TensorRTBackend(engine)


def test_an_engine_whose_onnx_beside_it_changed_is_refused_with_the_rebuild_command(gpu_double, tmp_path: Path):
    gpu_double(WEAK)
    onnx_path = small_onnx(tmp_path / "model.onnx")
    engine = build_engine(onnx_path, CARD, tmp_path)
    small_onnx(onnx_path, CARD.replace(provenance=Provenance(notes="retrained")))  # exported again: other bytes
    with pytest.raises(RuntimeModelError, match="built from another ONNX than the one beside it") as error:
        TensorRTBackend(engine)
    assert f"edgeseg export {onnx_path} --format engine" in str(error.value)
    onnx_path.unlink()  # with no ONNX beside it, there is nothing to compare
    assert read_card(engine) == CARD


# --- an old driver is reported as an old driver, not as "no GPU" ------------------------------------

OLD_DRIVER = [{"name": "NVIDIA GeForce RTX 3090", "driver": "470.82.01"}]


def cuda_major_from(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the backend learns the CUDA major: cudaRuntimeGetVersion, the cuda-bindings package, or nowhere."""
    from cuda.bindings import runtime

    if source == "runtime":
        monkeypatch.setattr(runtime, "cudaRuntimeGetVersion", lambda: (cudaError_t.cudaSuccess, 12060), raising=False)
    versions = {"package": {"cuda-bindings": "13.0.2"}, "runtime": {}, "unknown": {}}[source]
    monkeypatch.setattr(
        host, "package_version", lambda name: (versions.get(name), None if name in versions else "absent")
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("runtime", "NVIDIA driver 470.82.01 is older than CUDA 12 needs (>= 525.60.13): install a newer driver"),
        ("package", "NVIDIA driver 470.82.01 is older than CUDA 13 needs (>= 580)"),
        (
            "unknown",
            "(driver 470.82.01), but CUDA reports cudaErrorInsufficientDriver: check that the driver is new enough "
            "for the CUDA installed (CUDA 12 needs >= 525.60.13, CUDA 13 needs >= 580)",
        ),
    ],
)
def test_an_insufficient_driver_is_reported_with_its_version_and_the_minimum(
    gpu_double, tmp_path: Path, monkeypatch, source, expected
):
    double = gpu_double(WEAK)
    engine = build_engine(small_onnx(tmp_path / "model.onnx"), CARD, tmp_path)
    monkeypatch.setattr(host, "nvidia_smi_gpus", lambda: (OLD_DRIVER, None))
    cuda_major_from(source, monkeypatch)
    double.cuda.fail_next("cudaGetDeviceCount", cudaError_t.cudaErrorInsufficientDriver)
    with pytest.raises(BackendUnavailable) as error:
        open_backend(engine, "auto")
    assert expected in str(error.value) and "no CUDA GPU" not in str(error.value)
    assert not any(double.cuda.live().values())
    double.cuda.fail_next("cudaGetDeviceCount", cudaError_t.cudaErrorInsufficientDriver)
    assert read_card(engine) == CARD  # the card is still read; the host is checked when the engine is opened


def test_no_gpu_is_no_gpu_only_where_nvidia_smi_lists_none(gpu_double, tmp_path: Path, monkeypatch):
    double = gpu_double(WEAK)
    engine = build_engine(small_onnx(tmp_path / "model.onnx"), CARD, tmp_path)
    cuda_major_from("runtime", monkeypatch)
    monkeypatch.setattr(host, "nvidia_smi_gpus", lambda: (None, "nvidia-smi not found on PATH"))
    double.cuda.fail_next(
        "cudaGetDeviceCount", cudaError_t.cudaErrorInsufficientDriver
    )  # CUDA's answer without a driver
    with pytest.raises(BackendUnavailable, match="tensorrt: no CUDA GPU is visible on this host"):
        TensorRTBackend(engine)
    gpu_double(WEAK, gpus=[])  # cudaErrorNoDevice
    cuda_major_from("runtime", monkeypatch)
    with pytest.raises(BackendUnavailable, match="tensorrt: no CUDA GPU is visible on this host"):
        TensorRTBackend(engine)
    monkeypatch.setattr(host, "nvidia_smi_gpus", lambda: (OLD_DRIVER, None))
    with pytest.raises(BackendUnavailable, match=r"470\.82\.01 is older than CUDA 12 needs \(>= 525\.60\.13\)"):
        TensorRTBackend(engine)
    monkeypatch.setattr(host, "nvidia_smi_gpus", lambda: ([{"name": "NVIDIA L4", "driver": "550.54.15"}], None))
    with pytest.raises(
        BackendUnavailable,
        match=r"nvidia-smi lists NVIDIA L4 \(driver 550\.54\.15\), but CUDA sees no "
        r"GPU: .*CUDA_VISIBLE_DEVICES",
    ):
        TensorRTBackend(engine)


# --- the double is strict --------------------------------------------------------------------------


def test_the_double_catches_misuse_of_the_execution_context(gpu_double, tmp_path: Path):
    double = gpu_double(WEAK)
    engine_path = build_engine(small_onnx(tmp_path / "model.onnx", dynamic=True), CARD, tmp_path)
    import tensorrt as trt
    from cuda.bindings import runtime

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_path.read_bytes())
    context = engine.create_execution_context()
    with pytest.raises(ApiMisuse, match="before set_input_shape"):
        context.get_tensor_shape("logits")
    assert context.set_input_shape("image", (1, 3, 32, 32)) and not context.set_input_shape("image", (1, 3, 64, 64))
    _, stream = runtime.cudaStreamCreate()
    with pytest.raises(ApiMisuse, match="before set_tensor_address"):
        context.execute_async_v3(stream._handle)
    _, host = runtime.cudaMallocHost(3 * 32 * 32 * 4)
    with pytest.raises(ApiMisuse, match="not a live cudaMalloc allocation"):
        context.set_tensor_address("image", host)
    _, wrong = runtime.cudaMalloc(3 * 32 * 32 * 2)  # sized for float16, the tensor is float32
    _, output = runtime.cudaMalloc(32 * 32 * 4)
    assert context.set_tensor_address("image", wrong) and context.set_tensor_address("logits", output)
    with pytest.raises(ApiMisuse, match="execute_async_v3\\(stream_handle: int\\)"):
        context.execute_async_v3(stream)
    with pytest.raises(ApiMisuse, match="6144 bytes"):
        context.execute_async_v3(stream._handle)
    with pytest.raises(ApiMisuse, match="allocations of 12288 and 6144 bytes"):
        runtime.cudaMemcpyAsync(wrong, host, 3 * 32 * 32 * 4, runtime.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)
    with pytest.raises(ApiMisuse, match="CUstream or cudaStream_t"):
        runtime.cudaStreamSynchronize(stream._handle)
    for pointer in (wrong, output):
        runtime.cudaFree(pointer)
    runtime.cudaFreeHost(host)
    runtime.cudaStreamDestroy(stream)
    assert not any(double.cuda.live().values())


def test_the_double_refuses_precision_on_a_strongly_typed_network_and_tensorrt_11_has_no_fp16_flag(gpu_double):
    for version in (STRONG, TRT11):
        gpu_double(version)
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.WARNING)
        flag = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = trt.Builder(logger).create_network(flag)
        network.populate(
            onnx.helper.make_model(
                onnx.helper.make_graph(
                    [onnx.helper.make_node("Relu", ["x"], ["y"])],
                    "g",
                    [onnx.helper.make_tensor_value_info("x", 1, [1])],
                    [onnx.helper.make_tensor_value_info("y", 1, [1])],
                )
            ),
            b"",
        )
        with pytest.raises(ApiMisuse, match="Setting layer precision and layer output types is not allowed"):
            network.get_layer(0).precision = trt.float32
        if version == TRT11:
            assert not hasattr(trt.BuilderFlag, "FP16") and not hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS")
            continue
        config = trt.Builder(logger).create_builder_config()
        config.set_flag(trt.BuilderFlag.FP16)
        with pytest.raises(ApiMisuse, match=r"builder flags \['FP16'\] are not allowed"):
            trt.Builder(logger).build_serialized_network(network, config)


def test_the_double_fails_a_test_that_leaks_never_synchronizes_or_calls_int_on_a_stream():
    double = GpuDouble()
    kind = double.cuda.module().cudaMemcpyKind.cudaMemcpyHostToDevice
    _, pointer = double.cuda.cudaMalloc(16)
    with pytest.raises(ApiMisuse, match="left allocated"):
        double.check_released()
    _, stream = double.cuda.cudaStreamCreate()
    _, host = double.cuda.cudaMallocHost(16)
    double.cuda.cudaMemcpyAsync(pointer, host, 16, kind, stream)
    double.allow_leaks = True
    with pytest.raises(ApiMisuse, match="never synchronized"):
        double.check_released()
    double.cuda.cudaStreamDestroy(stream)  # runs what was queued, as CUDA completes it
    double.cuda.cudaFree(pointer)
    double.cuda.cudaFreeHost(host)
    double.allow_leaks = False
    double.check_released()
    assert isinstance(stream, cudaStream_t)
    with pytest.deprecated_call():
        int(stream)  # as in cuda-bindings 13: the handle comes from get_cuda_native_handle instead
    with pytest.raises(ApiMisuse, match="int\\(\\) was called on a cudaStream_t"):
        double.check_released()


# --- end to end: `edgeseg export` and `edgeseg run` --------------------------------------------------


@pytest.fixture(scope="module")
def default_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("default_model")
    shutil.copy(default_model_path(), folder / "model.onnx")
    return folder


@pytest.fixture(scope="module")
def lesion_images(tmp_path_factory: pytest.TempPathFactory, synthetic_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("frames")
    for image in sorted(synthetic_dir.rglob("*.jpg"))[:3]:
        shutil.copy(image, folder / image.name)
    return folder


# These tests are about which ONNX an engine comes from, not about FP16 or INT8 on 2 synthetic images. (On 2 of
# them the default model's INT8 forms, the U8 one as much as the S8S8 one, lose about 0.1 Dice: unsure masks.)
RELAXED_FP16 = [
    "--tolerance",
    "fp16-abs-delta-dice=0.05",
    "--tolerance",
    "fp16-image-dice-loss=0.05",
    "--tolerance",
    "fp16-abs-delta-threshold-jaccard=0.05",
]
# Two synthetic parity images: thresholded Jaccard is all or nothing per image (0 under 0.65), so its mean
# can only move by 0 or by about a third or more; these tests are about the build path, not the accuracy.
RELAXED_INT8 = [
    "--tolerance",
    "int8-confident-flips=0.05",
    "--tolerance",
    "int8-image-confident-flips=0.2",
    "--tolerance",
    "int8-abs-delta-dice=0.3",
    "--tolerance",
    "int8-abs-delta-threshold-jaccard=1",
    "--tolerance",
    "int8-image-dice-loss=0.5",
]


def export(source: Path, parity_data: Path, *options: str):
    return CliRunner().invoke(
        main,
        [
            "export",
            str(source),
            "--format",
            "engine",
            "--parity-data",
            str(parity_data),
            "--parity-n",
            "2",
            "--latency-runs",
            "1",
            *options,
        ],
        catch_exceptions=False,
    )


def run_masks(model: Path, backend: str, images: Path, out: Path) -> dict[str, np.ndarray]:
    result = CliRunner().invoke(
        main,
        ["run", str(model), "--source", str(images), "--backend", backend, "--no-show", "--save-masks", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return {path.name: cv2.imread(str(path), cv2.IMREAD_UNCHANGED) for path in sorted(out.iterdir())}


@pytest.mark.parametrize("version", [WEAK, TRT11])
def test_export_builds_the_engine_from_the_right_onnx_and_run_gives_the_same_masks(
    gpu_double, default_model_dir: Path, lesion_images: Path, synthetic_dir: Path, tmp_path: Path, version
):
    double = gpu_double(version)
    source = tmp_path / "model.onnx"
    shutil.copy(default_model_dir / "model.onnx", source)
    result = export(source, synthetic_dir, *RELAXED_FP16)
    report = json.loads((tmp_path / "export-report.json").read_text())
    rows = {row["name"]: row for row in report["forms"]}
    assert rows["engine"]["status"] == "built" and rows["engine"]["passed"] is True, result.output
    (engine,) = tmp_path.glob("*.fp16.engine")
    built_from = json.loads(sidecar_path(engine).read_text())["onnx_file"]
    if version == WEAK:
        assert built_from == "model.onnx" and "fp16" not in rows and double.tensorrt.builds[0]["flags"] == ["FP16"]
    else:  # strongly typed: the FP16 ONNX was built for it and gated as a form of its own
        assert built_from == "model.fp16.onnx" and double.tensorrt.builds[0]["flags"] == []
        assert (
            rows["fp16"]["status"] == "built"
            and rows["fp16"]["passed"] is True
            and "strongly typed" in rows["fp16"]["notes"][0]
        )
    assert result.exit_code == 0, result.output
    masks = run_masks(engine, "tensorrt", lesion_images, tmp_path / "trt")
    expected = run_masks(tmp_path / built_from, "onnxruntime-cpu", lesion_images, tmp_path / "ort")
    assert list(masks) == list(expected) and len(masks) == 3
    for name, mask in masks.items():
        np.testing.assert_array_equal(mask, expected[name], err_msg=name)
    assert not any(double.cuda.live().values())  # `edgeseg run` closed the backend


@pytest.mark.parametrize("version", [WEAK, TRT11])
def test_export_fp16_without_the_onnx_package_builds_the_engine_where_tensorrt_needs_no_fp16_onnx(
    gpu_double, default_model_dir: Path, synthetic_dir: Path, tmp_path: Path, monkeypatch, version
):
    """A Jetson's JetPack has no `onnx`: TensorRT 10.3 builds the FP16 engine from the fp32 ONNX with its FP16
    flag, so `export --fp16` builds that engine and skips the FP16 ONNX with the reason; a strongly typed
    TensorRT needs the FP16 ONNX, and the export fails saying how to install onnx."""
    from edgeseg.export import export_run

    double = gpu_double(version)
    real_module_installed = export_run.module_installed
    monkeypatch.setattr(export_run, "module_installed", lambda name: name != "onnx" and real_module_installed(name))
    source = tmp_path / "model.onnx"
    shutil.copy(default_model_dir / "model.onnx", source)
    result = CliRunner().invoke(
        main,
        [
            "export",
            str(source),
            "--fp16",
            "--parity-data",
            str(synthetic_dir),
            "--parity-n",
            "2",
            "--latency-runs",
            "1",
            *RELAXED_FP16,
        ],
        catch_exceptions=False,
    )
    rows = {row["name"]: row for row in json.loads((tmp_path / "export-report.json").read_text())["forms"]}
    assert not (tmp_path / "model.fp16.onnx").exists()
    if version == WEAK:
        assert result.exit_code == 0, result.output
        assert rows["fp16"]["status"] == "skipped" and "fp32 ONNX with its FP16 flag" in rows["fp16"]["reason"]
        assert rows["engine"]["status"] == "built" and rows["engine"]["passed"] is True
        assert double.tensorrt.builds[0]["flags"] == ["FP16"]
    else:
        assert result.exit_code == 1 and "pip install onnx" in result.output
        assert rows["fp16"]["status"] == "failed" and rows["engine"]["status"] == "failed"
        assert not double.tensorrt.builds


@pytest.mark.parametrize("version", [WEAK, TRT11])
def test_export_builds_the_int8_engine_from_the_s8s8_onnx_and_run_gives_its_masks(
    gpu_double, default_model_dir: Path, lesion_images: Path, synthetic_dir: Path, tmp_path: Path, version
):
    """No bias folding or other help: the S8S8 form export writes is what the strict parser takes."""
    double = gpu_double(version)
    source = tmp_path / "model.onnx"
    shutil.copy(default_model_dir / "model.onnx", source)
    result = CliRunner().invoke(
        main,
        [
            "export",
            str(source),
            "--format",
            "engine-int8",
            "--parity-data",
            str(synthetic_dir),
            "--parity-n",
            "2",
            "--calib",
            str(synthetic_dir),
            "--calib-n",
            "4",
            "--latency-runs",
            "1",
            *RELAXED_INT8,
        ],
        catch_exceptions=False,
    )
    rows = {row["name"]: row for row in json.loads((tmp_path / "export-report.json").read_text())["forms"]}
    assert set(rows) == {"onnx", "int8-trt", "engine-int8"}, rows  # the CPU's U8 form is not needed for the engine
    for name in ("int8-trt", "engine-int8"):
        assert rows[name]["status"] == "built" and rows[name]["passed"] is True, (name, rows[name], result.output)
    assert result.exit_code == 0, result.output
    (engine,) = tmp_path.glob("*.int8.engine")
    sidecar = json.loads(sidecar_path(engine).read_text())
    assert sidecar["onnx_file"] == "model.int8-trt.onnx" and sidecar["onnx_sha256"] == sha256_of(
        tmp_path / "model.int8-trt.onnx"
    )
    (build,) = double.tensorrt.builds
    assert build["flags"] == ([] if version == TRT11 else ["FP16", "INT8"]) and build["strongly_typed"] is (
        version == TRT11
    )
    masks = run_masks(engine, "tensorrt", lesion_images, tmp_path / "trt")
    expected = run_masks(tmp_path / "model.int8-trt.onnx", "onnxruntime-cpu", lesion_images, tmp_path / "ort")
    assert list(masks) == list(expected) and len(masks) == 3
    for name, mask in masks.items():
        np.testing.assert_array_equal(mask, expected[name], err_msg=name)
    assert not any(double.cuda.live().values())


def test_a_strongly_typed_engine_failing_parity_rebuilds_its_fp16_onnx_with_fp32_norms_and_itself(
    gpu_double, default_model_dir: Path, synthetic_dir: Path, tmp_path: Path
):
    double = gpu_double(TRT11)
    source = tmp_path / "model.onnx"
    shutil.copy(default_model_dir / "model.onnx", source)
    result = export(source, synthetic_dir, "--tolerance", "fp16-image-dice-loss=-1")  # unreachable: forces the retry
    assert result.exit_code == 1
    assert "engine: rebuilding with normalisation and Resize layers in FP32: it failed parity" in result.output
    assert "fp16: rebuilding with normalisation and Resize layers in FP32: it failed parity" in result.output
    rows = {row["name"]: row for row in json.loads((tmp_path / "export-report.json").read_text())["forms"]}
    assert any("kept in FP32" in note for note in rows["fp16"]["notes"]) and rows["engine"]["status"] == "built"
    (engine,) = tmp_path.glob("*.fp16.engine")
    sidecar = json.loads(sidecar_path(engine).read_text())
    assert sidecar["keep_norm_fp32"] is True and sidecar["onnx_sha256"] == sha256_of(tmp_path / "model.fp16.onnx")
    assert len(double.tensorrt.builds) == 2 and read_card(engine) == read_card(
        source
    )  # the rebuilt pair belongs together
