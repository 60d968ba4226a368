"""The parity gate as data, form selection, engine naming; TensorRT engine tests (GPU only)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgeseg.card import ModelCard
from edgeseg.export import tensorrt_export
from edgeseg.export.parity import ImageComparison, Tolerances, compare_image, mask_iou, summarize
from edgeseg.export.export_run import ExportError, select_forms
from edgeseg.export.tensorrt_export import (EngineUnavailable, Gpu, build_engine, engine_filename,
                                             engine_unavailable_reason)
from edgeseg.runtime.model_file import sidecar_path


def row(image: str, iou: float = 1.0, dice: float = 0.8, reference_dice: float = 0.8, dp: float = 0.0, finite: bool = True,
        confident_flips: int = 0, confident_pixels: int = 10_000):
    return ImageComparison(image=image, max_abs_probability=dp, mean_abs_probability=dp / 2, flipped_fraction=1 - iou,
                           mask_iou=iou, dice=dice, threshold_jaccard=dice, reference_dice=reference_dice,
                           reference_threshold_jaccard=reference_dice, finite=finite, empty=False, reference_empty=False,
                           confident_pixels=confident_pixels, confident_flips=confident_flips)


def test_rounding_near_the_threshold_alone_does_not_fail_fp16():
    # The old false alarm: an unsure lesion whose mask moves by 3% (IoU 0.97) although no pixel the
    # reference is sure of flips, and Dice against the truth is unchanged.
    parity = summarize("fp16", "fp16", [row("ISIC_0013306", iou=0.97), row("b"), row("c")], Tolerances())
    assert parity.passed and parity.min_mask_iou == pytest.approx(0.97)


def test_fp16_gate_names_the_rule_the_image_and_the_number():
    rows = [row("ISIC_1"), row("ISIC_2", confident_flips=120), row("ISIC_3")]
    parity = summarize("engine", "fp16", rows, Tolerances())
    assert not parity.passed and parity.max_image_confident_flip_image == "ISIC_2"
    assert "engine: confident pixels flipped in one image: 0.0120 on ISIC_2 > 0.005" in parity.breaches
    assert any(message.startswith("engine: confident pixels flipped (|p - threshold| >= 0.1): 0.00400 of all")
               for message in parity.breaches)


def test_one_image_that_got_worse_fails_and_is_named():
    rows = [row("a"), row("b", dice=0.72, reference_dice=0.80), row("c")]
    parity = summarize("fp16", "fp16", rows, Tolerances(fp16_abs_delta_dice=1.0, fp16_abs_delta_threshold_jaccard=1.0))
    assert parity.breaches == ["fp16: Dice lost on one image 0.0800 on b > 0.02"]
    assert summarize("int8", "int8", rows, Tolerances(int8_abs_delta_dice=1.0, int8_abs_delta_threshold_jaccard=1.0)).passed


def test_int8_gate_on_dice_change_and_nan():
    rows = [row("a", 0.99, dice=0.80), row("b", 0.99, dice=0.75, reference_dice=0.80, finite=False)]
    parity = summarize("int8", "int8", rows, Tolerances())
    assert "int8: |delta Dice| against the truth 0.0250 (largest change -0.0500 on b) > 0.005" in parity.breaches
    assert "int8: |delta thresholded Jaccard| against the truth 0.0250 > 0.01" in parity.breaches
    assert parity.nonfinite_images == ["b"] and parity.breaches[0].startswith("int8: NaN or Inf")
    assert summarize("int8", "int8", [row("a", 0.99, confident_flips=15)], Tolerances()).passed  # 0.0015 <= 0.002


def test_fp32_gate_is_on_probability():
    assert summarize("onnx", "fp32", [row("a", dp=5e-5)], Tolerances()).passed
    failed = summarize("onnx", "fp32", [row("a", dp=5e-5), row("b", dp=0.02)], Tolerances())
    assert failed.breaches == ["onnx: max |delta probability| 0.02 > 0.0001 on b"]


def test_a_mask_shifted_by_a_few_pixels_fails_on_confident_pixels():
    # A form whose mask sits 4 px off: each pixel near the threshold may move, but these are sure pixels.
    height, width = 256, 256
    rows_, columns = np.mgrid[0:height, 0:width]
    distance = np.hypot(rows_ - 128, columns - 128)
    reference = 1 / (1 + np.exp((distance - 60) / 4))  # a confident disc, a soft 60 px edge
    shifted = np.roll(reference, 4, axis=1)
    truth = distance < 60
    comparison = compare_image("ISIC_shift", reference.astype(np.float32), reference > 0.5,
                               shifted.astype(np.float32), shifted > 0.5, truth, threshold=0.5, margin=0.1)
    assert comparison.confident_flips > 0
    for precision in ("fp16", "int8"):
        parity = summarize(precision, precision, [comparison], Tolerances())
        assert not parity.passed and any("confident pixels flipped" in m for m in parity.breaches), parity.breaches


def test_mask_iou_counts_both_empty_as_agreement_and_compare_image_sees_nan():
    empty = np.zeros((4, 4), bool)
    assert mask_iou(empty, empty) == 1.0
    full = np.ones((4, 4), bool)
    assert mask_iou(full, empty) == 0.0
    probability = np.full((4, 4), 0.9, np.float32)
    broken = probability.copy()
    broken[0, 0] = np.nan
    result = compare_image("x", probability, full, broken, full, truth=full)
    assert not result.finite and result.max_abs_probability == np.inf


def test_select_forms():
    assert select_forms() == (("onnx", "fp16", "int8", "engine", "engine-int8"), frozenset())
    assert select_forms(fp16=True) == (("onnx", "fp16", "engine"), frozenset())
    assert select_forms(["engine-int8"]) == (("onnx", "int8", "engine-int8"), frozenset({"engine-int8"}))
    with pytest.raises(ExportError, match="unknown format"):
        select_forms(["tflite"])


def test_engine_file_is_named_by_tensorrt_gpu_and_precision():
    orin = Gpu("Orin", 8, 7)
    assert engine_filename("model", "10.3.0.30", orin, "fp16") == "model.trt10.3.sm87.fp16.engine"
    assert sidecar_path(Path("/m/model.trt10.3.sm87.fp16.engine")) == Path("/m/model.trt10.3.sm87.fp16.engine.json")
    assert orin.has_fast_fp16 and not Gpu("GTX 1080", 6, 1).has_fast_fp16


# --- build_engine against a stand-in for the TensorRT 10 API (it records what the builder is asked) ------

class FakeLayer:
    def __init__(self, kind: str, name: str):
        self.type, self.name, self.num_outputs = kind, name, 2
        self.precision, self.output_types = None, {}

    def set_output_type(self, index: int, dtype: str) -> None:
        self.output_types[index] = dtype


class FakeNetwork:
    def __init__(self, input_shape: tuple[int, ...]):
        self.layers = [FakeLayer("CONVOLUTION", "conv"), FakeLayer("RESIZE", "up"),
                       FakeLayer("NORMALIZATION", "/decoder/InstanceNormalization"),
                       FakeLayer("CONSTANT", "/decoder/Normalization_scale")]  # a name match would catch it
        self.num_layers = len(self.layers)
        self.input = SimpleNamespace(name="image", shape=input_shape)

    def get_layer(self, index: int) -> FakeLayer:
        return self.layers[index]

    def get_input(self, index: int):
        return self.input


class FakeTimingCache:
    def __init__(self, data: bytes):
        self.data = data

    def serialize(self) -> bytes:
        return self.data + b"+tuned"


class FakeConfig:
    def __init__(self):
        self.flags, self.pools, self.profiles, self.cache = set(), {}, [], None

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.pools[pool] = size

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def add_optimization_profile(self, profile) -> None:
        self.profiles.append(profile)

    def create_timing_cache(self, data: bytes) -> FakeTimingCache:
        return FakeTimingCache(data)

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        """As TensorRT's: False when it refuses the cache (here: one whose bytes say it is corrupt)."""
        assert ignore_mismatch is False
        if cache.data.startswith(b"corrupt"):
            return False
        self.cache = cache
        return True

    def get_timing_cache(self) -> FakeTimingCache:
        return self.cache


class FakeProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name: str, smallest, best, largest) -> None:
        self.shapes[name] = (smallest, best, largest)


def fake_tensorrt(input_shape=(-1, 3, -1, -1), parser_errors=(), engine: bytes | None = b"ENGINE"):
    """A tensorrt module stand-in; ``trt.built`` holds the network and config the build was given."""
    trt = SimpleNamespace(__version__="10.3.0.30", float32="float32", built={})
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.BuilderFlag = SimpleNamespace(FP16="FP16", INT8="INT8", OBEY_PRECISION_CONSTRAINTS="OBEY")
    trt.LayerType = SimpleNamespace(NORMALIZATION="NORMALIZATION", RESIZE="RESIZE")
    trt.Logger = type("Logger", (), {"WARNING": "WARNING", "__init__": lambda self, severity: None})

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags: int) -> FakeNetwork:
            return FakeNetwork(input_shape)

        def create_builder_config(self) -> FakeConfig:
            return FakeConfig()

        def create_optimization_profile(self) -> FakeProfile:
            return FakeProfile()

        def build_serialized_network(self, network: FakeNetwork, config: FakeConfig):
            trt.built.update(network=network, config=config)
            return engine

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = len(parser_errors)

        def parse_from_file(self, path: str) -> bool:
            return not parser_errors

        def get_error(self, index: int) -> str:
            return parser_errors[index]

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt


@pytest.fixture
def fake_build(monkeypatch, tmp_path: Path):
    """Point build_engine at a fake TensorRT and an Orin; returns a function that installs a fake."""
    (tmp_path / "model.onnx").write_bytes(b"onnx bytes")
    monkeypatch.setattr(tensorrt_export, "gpu_properties", lambda: Gpu("Orin", 8, 7))

    def install(**fake_options):
        trt = fake_tensorrt(**fake_options)
        monkeypatch.setattr(tensorrt_export, "import_tensorrt", lambda: trt)
        return trt
    return install


def test_int8_engine_build_with_fp32_pinning_profile_and_timing_cache(fake_build, tmp_path: Path):
    trt = fake_build()
    card = ModelCard(input_size=(64, 64))
    cache_path = tmp_path / "model.trt10.3.sm87.timing.cache"
    cache_path.write_bytes(b"earlier")
    engine = build_engine(tmp_path / "model.onnx", card, tmp_path, precision="int8", workspace_mib=512,
                          keep_norm_fp32=True)

    assert engine == tmp_path / "model.trt10.3.sm87.int8.engine" and engine.read_bytes() == b"ENGINE"
    assert cache_path.read_bytes() == b"earlier+tuned"
    config, network = trt.built["config"], trt.built["network"]
    assert config.flags == {"FP16", "INT8", "OBEY"} and config.pools == {"WORKSPACE": 512 << 20}
    assert [layer.precision for layer in network.layers] == [None, "float32", "float32", None]
    assert network.layers[1].output_types == {0: "float32", 1: "float32"}
    assert [profile.shapes for profile in config.profiles] == [{"image": ((1, 3, 64, 64),) * 3}]
    sidecar = json.loads(sidecar_path(engine).read_text())
    assert ModelCard.from_dict(sidecar["card"]) == card
    assert sidecar["onnx_sha256"] == hashlib.sha256(b"onnx bytes").hexdigest()
    assert sidecar["engine_sha256"] == hashlib.sha256(b"ENGINE").hexdigest()
    assert {key: sidecar[key] for key in ("tensorrt_version", "gpu_name", "compute_capability", "precision",
                                          "workspace_mib")} == {
        "tensorrt_version": "10.3.0.30", "gpu_name": "Orin", "compute_capability": "8.7", "precision": "int8",
        "workspace_mib": 512}
    assert sidecar["built_at"] and sidecar["build_seconds"] >= 0


def test_fp16_engine_of_a_static_onnx_needs_no_profile_and_pins_nothing(fake_build, tmp_path: Path):
    trt = fake_build(input_shape=(1, 3, 64, 64))
    engine = build_engine(tmp_path / "model.onnx", ModelCard(input_size=(64, 64)), tmp_path)
    assert engine.name == "model.trt10.3.sm87.fp16.engine"
    config, network = trt.built["config"], trt.built["network"]
    assert config.flags == {"FP16"} and config.pools == {"WORKSPACE": 1024 << 20} and config.profiles == []
    assert all(layer.precision is None for layer in network.layers)
    assert (tmp_path / "model.trt10.3.sm87.timing.cache").read_bytes() == b"+tuned"


def test_engine_build_failures_say_why(fake_build, monkeypatch, tmp_path: Path):
    onnx_path, card = tmp_path / "model.onnx", ModelCard(input_size=(64, 64))
    fake_build()
    with pytest.raises(ValueError, match="unknown engine precision 'fp32'"):
        build_engine(onnx_path, card, tmp_path, precision="fp32")
    fake_build(parser_errors=("bad node", "bad shape"))
    with pytest.raises(RuntimeError, match="rejected the model: bad node; bad shape"):
        build_engine(onnx_path, card, tmp_path)
    fake_build(engine=None)
    with pytest.raises(RuntimeError, match="failed to build a fp16 engine"):
        build_engine(onnx_path, card, tmp_path)
    assert not list(tmp_path.glob("*.engine*"))
    monkeypatch.setattr(tensorrt_export, "gpu_properties", lambda: Gpu("GTX 1080", 6, 1))
    with pytest.raises(EngineUnavailable, match="no fast FP16"):
        build_engine(onnx_path, card, tmp_path)


# --- on a GPU host with TensorRT ------------------------------------------------------------------

needs_engine = pytest.mark.skipif(engine_unavailable_reason() is not None,
                                  reason=f"no TensorRT engine build here: {engine_unavailable_reason()}")


@pytest.mark.gpu
@needs_engine
def test_engine_build_naming_and_sidecar(trained_run_dir: Path, tmp_path: Path):
    import tensorrt as trt

    from edgeseg.card import load_card
    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.export.tensorrt_export import build_engine, gpu_properties
    from edgeseg.runtime.model_file import read_card, sha256_of
    from edgeseg.train.model import load_model

    model, card = load_model(trained_run_dir)
    onnx_path = export_onnx(model, card, tmp_path / "model.onnx")
    engine = build_engine(onnx_path, card, tmp_path, precision="fp16", workspace_mib=512)
    gpu = gpu_properties()
    assert engine.name == engine_filename("model", trt.__version__, gpu, "fp16")
    sidecar = json.loads(sidecar_path(engine).read_text())
    assert sidecar["onnx_sha256"] == sha256_of(onnx_path) and sidecar["engine_sha256"] == sha256_of(engine)
    assert sidecar["precision"] == "fp16" and sidecar["compute_capability"] == gpu.compute_capability
    assert sidecar["card"] == load_card(trained_run_dir).to_dict() and read_card(engine) == card
    assert list(tmp_path.glob("*.timing.cache"))  # kept for the next build


@pytest.mark.gpu
@needs_engine
def test_engine_parity(trained_run_dir: Path, tmp_path: Path):
    from click.testing import CliRunner

    from edgeseg.cli import main

    result = CliRunner().invoke(main, ["export", str(trained_run_dir), "--out", str(tmp_path), "--format", "engine",
                                       "--latency-runs", "2"], catch_exceptions=False)
    report = json.loads((tmp_path / "export-report.json").read_text())
    engine = next(form for form in report["forms"] if form["name"] == "engine")
    assert engine["status"] == "built", engine["reason"]
    assert engine["passed"] is True and result.exit_code == 0, result.output


def test_a_corrupt_timing_cache_is_set_aside_and_the_engine_still_builds(fake_build, tmp_path: Path):
    fake_build()
    cache_path = tmp_path / "model.trt10.3.sm87.timing.cache"
    cache_path.write_bytes(b"corrupt bytes")
    engine = build_engine(tmp_path / "model.onnx", ModelCard(input_size=(64, 64)), tmp_path, precision="fp16")
    assert engine.read_bytes() == b"ENGINE" and sidecar_path(engine).is_file()
    assert cache_path.read_bytes() == b"+tuned"  # rebuilt from an empty cache, then saved over the corrupt one
