"""Backends: onnxruntime matches raw onnxruntime, unavailable backends say why, GPU backends agree with CPU."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgeseg.core import host, install_check
from edgeseg.core.card import CardError, ModelCard
from edgeseg.runtime.backends import BackendUnavailable, OnnxRuntimeBackend, TensorRTBackend, open_backend
from edgeseg.runtime.loaders import RuntimeModelError, read_onnx_info, sha256_of, sidecar_path


def random_batch(card: ModelCard, n: int = 1, seed: int = 0) -> np.ndarray:
    height, width = card.input_size
    return np.random.default_rng(seed).standard_normal((n, 3, height, width)).astype(np.float32)


def test_onnxruntime_backend_matches_raw_onnxruntime(tiny_onnx: Path, tiny_card: ModelCard) -> None:
    batch = random_batch(tiny_card)
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {tiny_card.tensor_names.input: batch})
    with OnnxRuntimeBackend(tiny_onnx) as backend:
        logits = backend.infer(batch)
        assert (backend.name, backend.precision, backend.card) == ("onnxruntime-cpu", "fp32", tiny_card)
    assert logits.dtype == np.float32 and logits.shape == (1, 1, *tiny_card.input_size)
    np.testing.assert_array_equal(logits, expected)


def test_auto_picks_a_backend_this_host_runs_and_says_which(tiny_onnx: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="edgeseg.runtime"):
        backend = open_backend(tiny_onnx, "auto")
    available = ort.get_available_providers()
    expected = next(
        name
        for name, provider in (
            ("onnxruntime-tensorrt", "TensorrtExecutionProvider"),
            ("onnxruntime-cuda", "CUDAExecutionProvider"),
            ("onnxruntime-cpu", "CPUExecutionProvider"),
        )
        if provider in available
    )
    if expected == "onnxruntime-cpu":
        assert backend.name == "onnxruntime-cpu"
    assert f"backend: {backend.name}" in caplog.text


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime has CUDA")
def test_explicit_cuda_without_onnxruntime_gpu_says_what_to_install(tiny_onnx: Path) -> None:
    with pytest.raises(BackendUnavailable, match=r"has no CUDAExecutionProvider") as error:
        open_backend(tiny_onnx, "onnxruntime-cuda")
    message = str(error.value)
    assert "pip install 'edgeseg[gpu]'" in message and "'edgeseg[cuda12]'" in message and "Jetson" in message
    assert (
        "pip install onnxruntime-gpu" not in message
    )  # beside the CPU build it would make two builds in one environment


def test_two_onnxruntime_builds_or_none_get_the_install_checks_fix(tiny_onnx: Path, monkeypatch) -> None:
    monkeypatch.setattr(
        install_check, "onnxruntime_distributions", lambda: {"onnxruntime": "1.22.0", "onnxruntime-gpu": "1.22.0"}
    )
    for backend in ("onnxruntime-cpu", "auto"):  # auto stops at once: every provider would fail the same way
        with pytest.raises(install_check.OnnxRuntimeInstallError, match="installed together") as error:
            open_backend(tiny_onnx, backend)
        assert install_check.BOTH_FIX in str(error.value) and "no backend can run here" not in str(error.value)
    monkeypatch.setattr(install_check, "onnxruntime_distributions", lambda: {})
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(install_check.OnnxRuntimeInstallError, match=r"onnxruntime is not installed.*edgeseg\[cpu\]"):
        OnnxRuntimeBackend(tiny_onnx)


class FakeCudaOnnxRuntime:
    """onnxruntime-gpu built for CUDA 12 whose CUDA provider fails to start: it raises, or falls back to the CPU."""

    __version__ = "1.22.0"
    SessionOptions = ort.SessionOptions

    def __init__(self, falls_back: bool) -> None:
        self.falls_back = falls_back

    def get_available_providers(self) -> list[str]:
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]

    def InferenceSession(self, path, options, providers):  # onnxruntime's name
        if not self.falls_back:
            raise RuntimeError("CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version")
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("falls_back", [False, True], ids=["raises", "falls_back"])
@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_a_gpu_provider_on_an_old_driver_says_the_driver_and_the_minimum(
    tiny_onnx: Path, monkeypatch, tmp_path: Path, device: str, falls_back: bool
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(install_check, "import_onnxruntime", lambda gpu=False: FakeCudaOnnxRuntime(falls_back))
    monkeypatch.setattr(install_check, "build_cuda_version", lambda module: "12.2")
    monkeypatch.setattr(install_check, "load_tensorrt_libraries", lambda: None)  # TensorRT's libraries load
    monkeypatch.setattr(host, "nvidia_smi_gpus", lambda: ([{"name": "Tesla T4", "driver": "470.82.01"}], None))
    with pytest.raises(BackendUnavailable) as error:
        OnnxRuntimeBackend(tiny_onnx, device)
    message = str(error.value)
    assert "Tesla T4" in message and "NVIDIA driver 470.82.01 is older than CUDA 12 needs (>= 525.60.13)" in message
    monkeypatch.setattr(host, "nvidia_smi_gpus", lambda: ([{"name": "Tesla T4", "driver": "550.54.15"}], None))
    with pytest.raises(BackendUnavailable, match="could not start") as error:  # a new enough driver: the libraries
        OnnxRuntimeBackend(tiny_onnx, device)
    assert "older than" not in str(error.value) and "'edgeseg[gpu]'" in str(error.value)


# --- onnxruntime's TensorRT provider: TensorRT's libraries first --------------------------------


class StartedSession:
    """A CPU session that reports the provider it was asked for, as a GPU session that started would."""

    def __init__(self, session, provider: str) -> None:
        self._session, self._provider = session, provider

    def get_providers(self) -> list[str]:
        return [self._provider, "CPUExecutionProvider"]

    def __getattr__(self, name: str):
        return getattr(self._session, name)


class FakeGpuOnnxRuntime:
    """onnxruntime-gpu whose first provider asked for starts; every session made is recorded in ``events``."""

    __version__ = "1.22.0"
    SessionOptions = ort.SessionOptions

    def __init__(self, events: list) -> None:
        self.events = events
        self.provider_options: dict = {}

    def get_available_providers(self) -> list[str]:
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]

    def InferenceSession(self, path, options, providers):  # onnxruntime's name
        first = providers[0]
        name, self.provider_options = first if isinstance(first, tuple) else (first, {})
        self.events.append(f"session {name}")
        return StartedSession(ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]), name)


@pytest.fixture
def gpu_onnxruntime(monkeypatch, tmp_path: Path) -> FakeGpuOnnxRuntime:
    """A fake onnxruntime-gpu in place of this one, TensorRT's engine cache in tmp_path, and TensorRT absent
    until a test puts a fake of it on the path (whatever is imported is forgotten afterwards)."""
    events: list[str] = []
    fake = FakeGpuOnnxRuntime(events)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(install_check, "import_onnxruntime", lambda gpu=False: fake)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # restored (removed) afterwards, even if imported below
    monkeypatch.setitem(sys.modules, "_edgeseg_test_events", events)  # where a fake tensorrt records its import
    return fake


def no_library(name: str) -> None:
    raise OSError(f"{name}: cannot open shared object file: No such file or directory")


def fake_tensorrt_on_path(folder: Path, version: str, monkeypatch) -> None:
    """A `tensorrt` package whose import is recorded, as a pip install's import loads TensorRT's libraries."""
    package = folder / "tensorrt"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        f'import _edgeseg_test_events\n_edgeseg_test_events.append("import tensorrt")\n__version__ = "{version}"\n'
    )
    monkeypatch.syspath_prepend(str(folder))
    del sys.modules["tensorrt"]  # the fixture's None: let the import find the fake


def test_tensorrt_libraries_are_loaded_before_the_tensorrt_provider_session(
    tiny_onnx: Path, gpu_onnxruntime: FakeGpuOnnxRuntime, monkeypatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_tensorrt_on_path(tmp_path / "site", "10.9.0.34", monkeypatch)
    monkeypatch.setattr(install_check, "_load_library", lambda name: gpu_onnxruntime.events.append(f"load {name}"))
    with caplog.at_level(logging.INFO, logger="edgeseg.runtime"):
        backend = OnnxRuntimeBackend(tiny_onnx, "tensorrt")
    assert gpu_onnxruntime.events == ["import tensorrt", "load libnvinfer.so.10", "session TensorrtExecutionProvider"]
    assert backend.name == "onnxruntime-tensorrt" and backend.precision == "fp32"
    assert gpu_onnxruntime.provider_options["trt_fp16_enable"] is False  # the form's precision, not FP16
    assert f"FP32 TensorRT engine for {tiny_onnx.name}" in caplog.text  # and that is said, not left to guess


@pytest.mark.parametrize(
    "version, expected",
    [
        (None, "TensorRT is not installed"),
        (
            "11.1.0.5",
            "TensorRT 11.1.0.5 is installed, but onnxruntime's TensorRT provider is built against TensorRT 10",
        ),
    ],
)
def test_tensorrt_provider_without_tensorrt_10_names_the_tensorrt_fix(
    tiny_onnx: Path, gpu_onnxruntime: FakeGpuOnnxRuntime, monkeypatch, tmp_path: Path, version, expected
) -> None:
    if version:
        fake_tensorrt_on_path(tmp_path / "site", version, monkeypatch)
    monkeypatch.setattr(install_check, "_load_library", no_library)
    with pytest.raises(BackendUnavailable) as error:
        open_backend(tiny_onnx, "onnxruntime-tensorrt")
    message = str(error.value)
    assert (
        message.startswith("onnxruntime-tensorrt: onnxruntime's TensorRT provider cannot start: ")
        and expected in message
    )
    assert "pip install 'edgeseg[gpu]'" in message and "'edgeseg[gpu-cu13]'" in message and "JetPack" in message
    assert "pip uninstall -y onnxruntime" not in message  # ORT_GPU_FIX's advice, about the wrong thing here
    assert not any(event.startswith("session") for event in gpu_onnxruntime.events)  # refused before any session


def test_auto_says_why_it_skipped_the_tensorrt_provider(
    tiny_onnx: Path, gpu_onnxruntime: FakeGpuOnnxRuntime, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(install_check, "_load_library", no_library)
    with caplog.at_level(logging.INFO, logger="edgeseg.runtime"):
        backend = open_backend(tiny_onnx, "auto")
    assert backend.name == "onnxruntime-cuda"
    skipped = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "skipped" in r.getMessage()]
    assert len(skipped) == 1 and "onnxruntime-tensorrt" in skipped[0] and "TensorRT is not installed" in skipped[0]


def test_auto_on_a_cpu_build_skips_the_gpu_providers_quietly(tiny_onnx: Path, caplog: pytest.LogCaptureFixture) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has GPU providers")
    with caplog.at_level(logging.INFO, logger="edgeseg.runtime"):
        open_backend(tiny_onnx, "auto")
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and "skipped" in r.getMessage()]


def test_tensorrt_backend_refuses_an_onnx_and_onnxruntime_refuses_an_engine(tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="--format engine"):
        open_backend(tiny_onnx, "tensorrt")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    with pytest.raises(BackendUnavailable, match="only the 'tensorrt' backend runs"):
        open_backend(engine, "onnxruntime-cpu")


def sound_engine(folder: Path, card: ModelCard) -> Path:
    """An engine file with a sidecar that holds (the bytes are no real engine: only TensorRT would know)."""
    engine = folder / "model.trt10.3.sm87-orin.fp16.engine"
    engine.write_bytes(b"\x00" * 64)
    sidecar = {
        "card": card.to_dict(),
        "engine_sha256": sha256_of(engine),
        "tensorrt_version": "10.3.0.30",
        "gpu_name": "Orin",
        "compute_capability": "8.7",
        "precision": "fp16",
    }
    sidecar_path(engine).write_text(json.dumps(sidecar))
    return engine


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_backend_without_tensorrt_says_what_to_install(tmp_path: Path, tiny_card: ModelCard) -> None:
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        TensorRTBackend(sound_engine(tmp_path, tiny_card))


@pytest.mark.parametrize(
    "sidecar", [None, "{not json", '{"card": {}}', "[]"], ids=["missing", "not_json", "bad_card", "no_card"]
)
@pytest.mark.parametrize("backend", ["tensorrt", "auto"])
def test_an_incomplete_engine_file_is_named_before_tensorrt_is_looked_for(
    tmp_path: Path, tiny_card: ModelCard, monkeypatch, sidecar, backend
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # TensorRT missing, here or not
    engine = sound_engine(tmp_path, tiny_card)
    if sidecar is None:
        sidecar_path(engine).unlink()
    else:
        sidecar_path(engine).write_text(sidecar)
    with pytest.raises((RuntimeModelError, CardError), match=engine.name) as error:
        open_backend(engine, backend)
    assert "TensorRT is not installed" not in str(error.value)


def test_foreign_onnx_fails_before_a_session_is_built(tmp_path: Path) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x08\x07" + b"\xff" * 20)
    with pytest.raises(RuntimeModelError, match=str(path)):
        open_backend(path, "onnxruntime-cpu")


# --- ONNX external data stays in the model's folder (hostile files) ------------------------------


def external_data_model(folder: Path, source: Path, location: str = "weights.bin") -> Path:
    """``source`` saved as ``folder``/model.onnx with its weights in weights.bin beside it, then pointed at
    ``location``."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save_model(
        onnx.load(str(source)),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    if location != "weights.bin":
        model = onnx.load(str(path), load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save(model, str(path))
    return path


def test_onnx_with_its_weights_beside_it_loads_and_runs(tiny_onnx: Path, tiny_card: ModelCard, tmp_path: Path) -> None:
    path = external_data_model(tmp_path / "model", tiny_onnx)
    assert path.stat().st_size < tiny_onnx.stat().st_size / 10  # the weights really are in weights.bin
    batch = random_batch(tiny_card, seed=5)
    with OnnxRuntimeBackend(path) as external, OnnxRuntimeBackend(tiny_onnx) as inline:
        np.testing.assert_array_equal(external.infer(batch), inline.infer(batch))


OUTSIDE = {
    "parent": "../outside/weights.bin",
    "through_a_subfolder": "sub/../../outside/weights.bin",
    "absolute": "{outside}",
    "etc_passwd": "/etc/passwd",
    "symlink": "weights.bin",
}


@pytest.mark.parametrize("way", list(OUTSIDE))
def test_onnx_external_data_outside_its_folder_is_refused_before_onnxruntime_opens_it(
    tiny_onnx: Path, tmp_path: Path, monkeypatch, way: str
) -> None:
    outside = external_data_model(tmp_path / "outside", tiny_onnx).with_name("weights.bin")  # real weights, elsewhere
    (tmp_path / "model" / "sub").mkdir(parents=True)
    location = OUTSIDE[way].format(outside=outside)
    path = external_data_model(tmp_path / "model", tiny_onnx, location)
    (path.parent / "weights.bin").unlink()
    if way == "symlink":  # weights.bin beside the model, but a link to a file elsewhere
        (path.parent / "weights.bin").symlink_to(outside)
    monkeypatch.setattr(install_check, "import_onnxruntime", lambda gpu=False: pytest.fail("onnxruntime was reached"))
    for backend in ("onnxruntime-cpu", "auto"):
        with pytest.raises(RuntimeModelError) as error:
            open_backend(path, backend)
        assert str(path) in str(error.value) and repr(location) in str(error.value)
        assert "outside the model's folder" in str(error.value)


def test_external_data_of_a_constant_node_is_checked_too(tiny_onnx: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(tiny_onnx))
    value = helper.make_tensor("value", TensorProto.FLOAT, [1], [0.0])
    value.ClearField("float_data")
    value.data_location = TensorProto.EXTERNAL
    value.external_data.add(key="location", value="../../secret.bin")
    model.graph.node.append(helper.make_node("Constant", [], ["unused"], value=value))
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    with pytest.raises(RuntimeModelError, match=r"'\.\./\.\./secret\.bin'"):
        read_onnx_info(path)


# --- GPU: skipped without one --------------------------------------------------------------------


@pytest.mark.gpu
def test_onnxruntime_cuda_agrees_with_cpu(tiny_onnx: Path, tiny_card: ModelCard) -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here has no CUDA provider (install onnxruntime-gpu)")
    batch = random_batch(tiny_card, seed=3)
    with OnnxRuntimeBackend(tiny_onnx, "cpu") as cpu, OnnxRuntimeBackend(tiny_onnx, "cuda") as cuda:
        np.testing.assert_allclose(cuda.infer(batch), cpu.infer(batch), atol=1e-3, rtol=1e-3)


@pytest.mark.gpu
def test_tensorrt_engine_agrees_with_cpu(tiny_onnx: Path, tiny_card: ModelCard, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here")
    from edgeseg.export.export_run import engine_source
    from edgeseg.export.tensorrt_export import EngineUnavailable, build_engine

    try:
        # The ONNX export builds it from: the fp32 one with precision constraints on TensorRT 10.0-10.11, the
        # FP16 one with its norms kept in float32 from 10.12 on (strongly typed builds take no constraints).
        source = engine_source("engine", tiny_onnx, {}, tiny_card, tmp_path, keep_norm_fp32=True)
        engine = build_engine(source, tiny_card, tmp_path, precision="fp16", keep_norm_fp32=True)
    except EngineUnavailable as error:
        pytest.skip(str(error))
    assert json.loads(sidecar_path(engine).read_text())["engine_sha256"] == sha256_of(engine)
    batch = random_batch(tiny_card, seed=4)
    with OnnxRuntimeBackend(tiny_onnx, "cpu") as cpu, open_backend(engine, "auto") as trt_backend:
        assert (trt_backend.name, trt_backend.precision) == ("tensorrt", "fp16")
        first = trt_backend.infer(batch)
        np.testing.assert_array_equal(trt_backend.infer(batch), first)  # reused buffers give the same answer
        reference = cpu.infer(batch)
    probability = 1 / (1 + np.exp(-first))
    expected = 1 / (1 + np.exp(-reference))
    assert np.abs(probability - expected).max() < 0.02


def test_tensorrt_provider_cache_is_keyed_by_the_model_file_and_precision(tiny_onnx: Path, tmp_path: Path, monkeypatch):
    """A retrained model must never run on the engine onnxruntime cached for the old one."""
    from edgeseg.runtime.backends import tensorrt_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    retrained = tmp_path / "model.onnx"
    retrained.write_bytes(tiny_onnx.read_bytes() + b"\0")  # same names and shapes, other bytes
    first = tensorrt_cache_dir(tiny_onnx, "fp16")
    assert first == tensorrt_cache_dir(tiny_onnx, "fp16") and first.is_relative_to(tmp_path / "cache")
    assert tensorrt_cache_dir(retrained, "fp16") != first
    assert tensorrt_cache_dir(tiny_onnx, "int8") != first
