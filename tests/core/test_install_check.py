"""One onnxruntime build per environment: the extras cannot bring two, and the runtime says when an install has
two or none."""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core import host, install_check
from edgeseg.core.install_check import (
    BOTH_FIX,
    OnnxRuntimeInstallError,
    check_onnxruntime_install,
    import_onnxruntime,
    onnxruntime_distributions,
)
from edgeseg.core.segmenter import BackendUnavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
ONNXRUNTIME_BUILDS = {"onnxruntime", "onnxruntime-gpu"}


def fake_distribution(site: Path, name: str, version: str, top_level: str | None = "onnxruntime\n") -> None:
    """A distribution's metadata as pip leaves it (no module files needed: only the metadata is read)."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if top_level is None:
        (info / "RECORD").write_text("onnxruntime/__init__.py,,\n")
    else:
        (info / "top_level.txt").write_text(top_level)


# --- the extras -----------------------------------------------------------------------------------


def project() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def requirement_names(extra: str | None, extras: dict[str, list[str]], base: list[str]) -> set[str]:
    """Every distribution an extra brings, its own extras (edgeseg[a,b]) followed."""
    names = set()
    for requirement in base if extra is None else extras[extra]:
        match = re.match(r"([A-Za-z0-9_.-]+)(?:\[([^\]]*)\])?", requirement)
        name, sub = match.group(1).lower(), match.group(2)
        if name == "edgeseg":
            for part in sub.split(","):
                names |= requirement_names(part.strip(), extras, base)
        else:
            names.add(name)
    return names


def test_no_install_the_extras_allow_holds_two_onnxruntime_builds():
    spec = project()
    extras, base = spec["optional-dependencies"], spec["dependencies"]
    assert not requirement_names(None, extras, base) & ONNXRUNTIME_BUILDS  # the base leaves the choice open
    assert "onnxruntime" in requirement_names("cpu", extras, base)
    assert "onnxruntime" in requirement_names("all", extras, base)  # make test / make demo get a working build
    for gpu in ("gpu", "gpu-cu13", "cuda12", "cuda13"):
        assert requirement_names(gpu, extras, base) & ONNXRUNTIME_BUILDS == {"onnxruntime-gpu"}, gpu
        for other in extras:  # whatever else a user adds, the CPU build never comes with a GPU extra
            if other not in ("cpu", "all"):
                assert "onnxruntime" not in requirement_names(other, extras, base), other


def test_each_gpu_extra_pins_one_cuda_major():
    extras = project()["optional-dependencies"]
    for extra, major in (("gpu", 12), ("gpu-cu13", 13)):
        text = " ".join(extras[extra] + extras[f"cuda{major}"])
        assert f"tensorrt-cu{major}" in text and f"cuda-python>={major}" in text and f",<{major + 1}" in text, extra
        other = {12: 13, 13: 12}[major]
        assert f"cu{other}" not in text and f"cuda-python>={other}" not in text, extra


# --- the install check ----------------------------------------------------------------------------


def test_this_environment_holds_exactly_one_build():
    found = onnxruntime_distributions()
    assert len(found) == 1 and set(found) <= ONNXRUNTIME_BUILDS, found
    check_onnxruntime_install()
    assert import_onnxruntime().get_available_providers()


def test_two_builds_are_refused_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake_distribution(tmp_path, "onnxruntime-gpu", "1.26.0")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = onnxruntime_distributions()
    assert "onnxruntime-gpu" in found and len(found) == 2
    with pytest.raises(OnnxRuntimeInstallError) as raised:
        import_onnxruntime()
    message = str(raised.value)
    assert "onnxruntime-gpu 1.26.0" in message and "same module" in message and BOTH_FIX in message
    assert isinstance(raised.value, BackendUnavailable)  # the runtime's auto choice reports it like any backend


def test_a_build_without_top_level_txt_is_found_by_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake_distribution(tmp_path, "onnxruntime-openvino", "1.20.0", top_level=None)
    fake_distribution(tmp_path, "onnxruntime-extensions", "0.15.2", top_level="onnxruntime_extensions\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = onnxruntime_distributions()
    assert "onnxruntime-openvino" in found and "onnxruntime-extensions" not in found


def test_no_onnxruntime_names_the_extras(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(install_check, "onnxruntime_distributions", lambda: {})
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(OnnxRuntimeInstallError, match=r"onnxruntime is not installed") as raised:
        import_onnxruntime()
    assert "edgeseg[cpu]" in str(raised.value) and "edgeseg[gpu]" in str(raised.value) and "Jetson" in str(raised.value)


# --- edgeseg doctor -------------------------------------------------------------------------------


def fake_nvidia_smi(directory: Path, name: str, driver: str) -> None:
    path = directory / "nvidia-smi"
    path.write_text(f'#!/bin/sh\necho "{name}, {driver}"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_doctor_on_this_install_is_ok():
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "onnxruntime" in result.output and result.output.rstrip().splitlines()[-1].startswith("OK")


def test_doctor_reports_two_builds_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake_distribution(tmp_path, "onnxruntime-gpu", "1.26.0")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 1 and BOTH_FIX in result.output and "Not OK" in result.output


def test_doctor_reports_an_old_driver_as_an_old_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake_nvidia_smi(tmp_path, "NVIDIA A100-SXM4-40GB", "470.82.01")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(install_check, "build_cuda_version", lambda module: "12.2")  # as onnxruntime-gpu 1.26 says
    result = CliRunner().invoke(main, ["doctor", "--json", str(tmp_path / "doctor.json")])
    assert result.exit_code == 1, result.output
    assert "NVIDIA driver 470.82.01 is older than CUDA 12 needs (>= 525.60.13)" in result.output
    assert "NVIDIA A100-SXM4-40GB, driver 470.82.01" in result.output
    assert '"problems"' in (tmp_path / "doctor.json").read_text()
    fake_nvidia_smi(tmp_path, "NVIDIA A100-SXM4-40GB", "535.104.05")
    assert "older than CUDA 12" not in CliRunner().invoke(main, ["doctor"]).output


# --- edgeseg doctor: onnxruntime's TensorRT provider and TensorRT's driver minimum -----------------


GPU_BUILD = {
    "distributions": {"onnxruntime-gpu": "1.22.0"},
    "version": "1.22.0",
    "cuda": "12.2",
    "problem": None,
    "providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def no_library(name: str) -> None:
    raise OSError(f"{name}: cannot open shared object file: No such file or directory")


def fake_tensorrt(monkeypatch: pytest.MonkeyPatch, version: str | None) -> None:
    """`import tensorrt` gives a module of ``version``, or fails as where TensorRT is not installed (None)."""
    module = None
    if version is not None:
        module = type(sys)("tensorrt")
        module.__version__ = version
    monkeypatch.setitem(sys.modules, "tensorrt", module)


@pytest.mark.parametrize(
    "version, loads, why_not",
    [
        ("10.9.0.34", True, None),
        (None, True, None),  # TensorRT on the loader's path without its Python module (a .deb or .tar install)
        (None, False, "TensorRT is not installed"),
        (
            "11.1.0.5",
            False,
            "TensorRT 11.1.0.5 is installed, but onnxruntime's TensorRT provider is built against TensorRT 10 "
            "(libnvinfer.so.10)",
        ),
        ("10.9.0.34", False, "libnvinfer.so.10 cannot be loaded (libnvinfer.so.10: cannot open shared object file"),
    ],
)
def test_whether_the_tensorrt_provider_can_start_is_told_from_the_libraries(
    monkeypatch: pytest.MonkeyPatch, version: str | None, loads: bool, why_not: str | None
) -> None:
    fake_tensorrt(monkeypatch, version)
    monkeypatch.setattr(install_check, "_load_library", (lambda name: None) if loads else no_library)
    problem = install_check.tensorrt_provider_problem(GPU_BUILD)
    assert problem == why_not if why_not is None else problem.startswith(why_not), problem


def test_the_tensorrt_provider_of_a_cpu_build_is_not_looked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install_check, "_load_library", lambda name: pytest.fail("TensorRT was loaded for a CPU build"))
    cpu_build = {**GPU_BUILD, "providers": ["CPUExecutionProvider"], "cuda": None}
    assert "has no TensorRT provider (onnxruntime-gpu has it)" in install_check.tensorrt_provider_problem(cpu_build)
    assert install_check.tensorrt_provider_problem({**GPU_BUILD, "providers": None}) == "onnxruntime is not installed"


def test_doctor_says_whether_the_tensorrt_provider_can_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    line = CliRunner().invoke(main, ["doctor"]).output
    assert "ORT TensorRT" in line  # on this install too, whatever it holds
    monkeypatch.setattr(install_check, "onnxruntime_build", lambda: dict(GPU_BUILD))
    monkeypatch.setattr(install_check, "cuda_software", lambda build: {})
    monkeypatch.setattr(install_check, "_load_library", no_library)
    fake_tensorrt(monkeypatch, None)
    result = CliRunner().invoke(main, ["doctor"])  # onnxruntime-gpu alone (extra cuda12): a note, not a problem
    assert result.exit_code == 0, result.output
    assert "ORT TensorRT cannot start: TensorRT is not installed" in result.output
    assert "note: onnxruntime's TensorRT provider cannot start" in result.output and "edgeseg[gpu]" in result.output
    fake_distribution(tmp_path, "tensorrt-cu12", "10.9.0.34", top_level="tensorrt\n")  # the gpu extra's TensorRT
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(main, ["doctor", "--json", str(tmp_path / "doctor.json")])
    assert result.exit_code == 1, result.output
    assert "problem: onnxruntime's TensorRT provider cannot start: TensorRT is not installed" in result.output
    assert '"can_start": false' in (tmp_path / "doctor.json").read_text()
    monkeypatch.setattr(install_check, "_load_library", lambda name: None)
    fake_tensorrt(monkeypatch, "10.9.0.34")
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "ORT TensorRT can start (libnvinfer.so.10 loads" in result.output


def test_doctor_reports_a_driver_older_than_tensorrt_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(install_check, "cuda_software", lambda build: {"onnxruntime 1.22.0": 12})
    monkeypatch.setattr(host, "tensorrt_version", lambda: ("10.9.0.34", None))
    fake_nvidia_smi(tmp_path, "NVIDIA L4", "530.30.02")  # new enough for CUDA 12 (525.60.13), not for TensorRT 10
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 1, result.output
    assert "NVIDIA driver 530.30.02 is older than TensorRT needs (r535 or newer)" in result.output
    assert "older than CUDA 12" not in result.output
    fake_nvidia_smi(tmp_path, "NVIDIA L4", "535.54.03")
    assert "older than TensorRT" not in CliRunner().invoke(main, ["doctor"]).output
    monkeypatch.setattr(host, "tensorrt_version", lambda: (None, "not installed"))  # no TensorRT: CUDA 12's minimum
    fake_nvidia_smi(tmp_path, "NVIDIA L4", "530.30.02")
    assert "older than" not in CliRunner().invoke(main, ["doctor"]).output
