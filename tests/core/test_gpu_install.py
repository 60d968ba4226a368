"""What a GPU host and a Jetson install: the GPU extras carry the export's ONNX tools, the Jetson
constraints keep JetPack's numpy 1 and OpenCV, and the Jetson recipe agrees with the support matrix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO_ROOT / "constraints" / "jetpack6.txt"


def extras() -> dict[str, list[str]]:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def brought_by(extra: str, table: dict[str, list[str]]) -> dict[str, Requirement]:
    """Every requirement an extra brings, by name, its edgeseg[...] references followed."""
    found = {}
    for line in table[extra]:
        requirement = Requirement(line)
        if requirement.name == "edgeseg":
            for inner in requirement.extras:
                found.update(brought_by(inner, table))
        else:
            found[requirement.name.lower().replace("_", "-")] = requirement
    return found


@pytest.mark.parametrize("extra", ["gpu", "gpu-cu13"])
def test_the_gpu_extras_bring_what_export_from_an_onnx_imports(extra: str) -> None:
    brought = brought_by(extra, extras())
    # onnx: the FP16 and INT8 ONNX (TensorRT >= 10.12 builds its FP16 engine from the FP16 one); sympy and
    # ml_dtypes: imported by onnxruntime's FP16 converter and quantizer, optional in onnxruntime-gpu >= 1.25.
    for name in ("onnx", "sympy", "ml-dtypes", "onnxruntime-gpu", "cuda-python"):
        assert name in brought and brought[name].specifier, f"{extra} lacks {name} or its floor"
    tensorrt = brought[f"tensorrt-cu{12 if extra == 'gpu' else 13}"].specifier  # 10: what onnxruntime links
    assert tensorrt.contains("10.13.0") and not tensorrt.contains("11.0.0")
    assert not {"torch", "onnxruntime"} & set(brought), extra  # no PyTorch, no second onnxruntime build


def constraints() -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in CONSTRAINTS.read_text().splitlines()]
    return {Requirement(line).name: Requirement(line) for line in lines if line}


def test_the_jetson_constraints_keep_numpy_1_and_jetpacks_opencv() -> None:
    pinned = constraints()
    assert pinned["numpy"].specifier.contains("1.26.4") and not pinned["numpy"].specifier.contains("2.0.0")
    for name in ("opencv-python", "opencv-python-headless", "onnxruntime"):  # never installed over JetPack's
        assert not any(pinned[name].specifier.contains(v) for v in ("0.0.1", "1.22.0", "4.10.0.84", "99")), name
    assert pinned["cuda-python"].specifier.contains("12.6.2") and not pinned["cuda-python"].specifier.contains("12.2.1")


def jetson_section() -> str:
    text = (REPO_ROOT / "benchmarks" / "README.md").read_text()
    start = text.index("## Running on a Jetson")
    return text[start : text.index("\n## ", start + 1)]


def test_the_jetson_recipe_uses_the_constraints_and_jetpack_6_1s_versions() -> None:
    section = jetson_section()
    installs = [line.strip() for line in section.splitlines() if line.strip().startswith("pip install")]
    assert installs and all("-c constraints/jetpack6.txt" in line for line in installs)
    assert any("--no-deps ." in line for line in installs)  # edgeseg without the PyPI opencv-python
    assert "cuda-python==12.6.*" in section and "12.2" not in section  # 12.2 is JetPack 6.0's (TensorRT 8.6)
    assert "model.int8-trt.onnx" in section
    assert not re.search(r"(needs|requires)[^.]*PyTorch for Jetson", section)  # the README: no PyTorch needed


def test_the_support_matrix_states_tensorrts_driver_and_points_at_the_constraints() -> None:
    readme = (REPO_ROOT / "docs" / "gpu-and-jetson.md").read_text()
    rows = {row.split("|")[1].strip(): row for row in readme.splitlines() if row.startswith("| ")}
    assert "constraints/jetpack6.txt" in rows["Jetson, JetPack 6.1 / 6.2 (L4T 36.4)"]
    assert "r535" in rows["x86 + NVIDIA GPU, CUDA 12"]
