"""Which onnxruntime build this environment holds, and the two ways that install goes wrong.

`onnxruntime` (CPU) and `onnxruntime-gpu` (CUDA and TensorRT providers) are two distributions of one
module, `onnxruntime/`. pip does not know they clash: an environment can hold both, and then the files
of whichever was installed last win, often the CPU build's, so no CUDA provider exists although
`pip list` shows onnxruntime-gpu. edgeseg's extras each bring exactly one build (`cpu`, `gpu` or
`cuda12` for CUDA 12, `gpu-cu13` or `cuda13` for CUDA 13; on a Jetson, JetPack's onnxruntime-gpu wheel
and no extra), and ``import_onnxruntime`` refuses both at once and none at all, with the fix.

``edgeseg doctor`` (edgeseg/doctor.py) prints the whole picture: the build, its CUDA major, its providers, whether
onnxruntime's TensorRT provider can start (its libraries), the GPU and whether its driver is new enough
for the CUDA software and TensorRT installed.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
from collections.abc import Iterator
from importlib import metadata
from typing import Any

from edgeseg.core import host
from edgeseg.core.segmenter import BackendUnavailable

EXTRAS_HINT = (
    "pip install 'edgeseg[cpu]' (any machine), 'edgeseg[gpu]' (NVIDIA GPU, CUDA 12) or "
    "'edgeseg[gpu-cu13]' (CUDA 13); on a Jetson, JetPack's onnxruntime-gpu wheel "
    "(docs/gpu-and-jetson.md, Support matrix)"
)
BOTH_FIX = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'edgeseg[gpu]'"
CUDA_EXTRAS = {12: "gpu", 13: "gpu-cu13"}
TENSORRT_CUDA = {"tensorrt-cu12": 12, "tensorrt-cu13": 13}
# onnxruntime-gpu's TensorRT provider is built against TensorRT 10 and links this library by name.
ONNXRUNTIME_TENSORRT_MAJOR = 10
ONNXRUNTIME_TENSORRT_LIBRARY = "libnvinfer.so.10"
TENSORRT_PROVIDER_FIX = (
    "install TensorRT 10 beside onnxruntime-gpu, which its TensorRT provider is built against: "
    "pip install 'edgeseg[gpu]' (CUDA 12) or 'edgeseg[gpu-cu13]' (CUDA 13); on a Jetson it is "
    "JetPack's TensorRT (docs/gpu-and-jetson.md, Support matrix). `edgeseg doctor` says whether the provider can start"
)
_preloaded = False


class OnnxRuntimeInstallError(BackendUnavailable):
    """No onnxruntime, or two builds of it in one environment; the message gives the fix."""


def _provides_onnxruntime(distribution: metadata.Distribution) -> bool:
    top_level = distribution.read_text("top_level.txt")
    if top_level is not None:
        return "onnxruntime" in top_level.split()
    name = (distribution.metadata["Name"] or "").lower()
    if not name.startswith(("onnxruntime", "ort")):  # reading RECORD is slow: only for likely names
        return False
    return any(str(path) == "onnxruntime/__init__.py" for path in distribution.files or ())


def onnxruntime_distributions() -> dict[str, str]:
    """Every installed distribution that installs the module `onnxruntime`, name -> version."""
    found: dict[str, str] = {}
    for distribution in metadata.distributions():
        if _provides_onnxruntime(distribution):
            found.setdefault(distribution.metadata["Name"], distribution.version)
    return found


def check_onnxruntime_install(distributions: dict[str, str] | None = None) -> None:
    """Raise OnnxRuntimeInstallError when two onnxruntime builds share this environment."""
    distributions = onnxruntime_distributions() if distributions is None else distributions
    if len(distributions) > 1:
        names = " and ".join(f"{name} {version}" for name, version in sorted(distributions.items()))
        raise OnnxRuntimeInstallError(
            f"{names} are installed together: they install the same module `onnxruntime`, so the files of the "
            f"one installed last won and the GPU providers may be missing. Keep exactly one: {BOTH_FIX} "
            f"('edgeseg[gpu-cu13]' for CUDA 13, 'edgeseg[cpu]' on a host without an NVIDIA GPU; on a Jetson, "
            f"reinstall JetPack's onnxruntime-gpu wheel instead)."
        )


def _not_installed(distributions: dict[str, str], error: Exception) -> str:
    found = f" ({', '.join(distributions)} is installed but cannot be imported: {error})" if distributions else ""
    return f"onnxruntime is not installed{found}. Install exactly one build: {EXTRAS_HINT}."


def import_onnxruntime(gpu: bool = False) -> Any:
    """The `onnxruntime` module, after checking the install; ``gpu`` loads CUDA's libraries from their wheels.

    With ``gpu``, a CUDA build's ``preload_dlls()`` (onnxruntime >= 1.21) loads the CUDA and cuDNN
    libraries that the GPU extras install as wheels (nvidia-*), which onnxruntime's CUDA provider does
    not find by itself unless PyTorch loaded them first; it is called once per process.
    """
    global _preloaded
    distributions = onnxruntime_distributions()
    check_onnxruntime_install(distributions)
    try:
        import onnxruntime
    except ImportError as error:
        raise OnnxRuntimeInstallError(_not_installed(distributions, error)) from None
    if gpu and not _preloaded and build_cuda_version(onnxruntime) and hasattr(onnxruntime, "preload_dlls"):
        onnxruntime.preload_dlls()
        _preloaded = True
    return onnxruntime


# onnxruntime's log severities: 0 verbose, 1 info, 2 warning (its default), 3 error, 4 fatal.
ONNXRUNTIME_WARNINGS = 2
ONNXRUNTIME_ERRORS_ONLY = 3


def debugging() -> bool:
    """EDGESEG_DEBUG=1 (`edgeseg --debug` sets it): tracebacks of every error, and onnxruntime's own warnings."""
    return os.environ.get("EDGESEG_DEBUG") == "1"


def session_options(ort: Any) -> Any:
    """SessionOptions for a session edgeseg makes: onnxruntime logs its errors only, unless debugging.

    Its warnings (the coloured "Could not find a CPU kernel and hence can't constant fold Ceil node" of an
    FP16 graph, for one) say nothing a user can act on, and would reach the terminal of every command.
    """
    options = ort.SessionOptions()
    if not debugging():
        options.log_severity_level = ONNXRUNTIME_ERRORS_ONLY
    return options


@contextlib.contextmanager
def quiet_onnxruntime_tools() -> Iterator[None]:
    """Keep what onnxruntime's Python tools (the quantizer and its calibration) print off the terminal.

    The quantizer prints its steps on stdout (which `--json -` keeps for the JSON alone), warns through the
    root logger ("WARNING:root:Axis 1 is out-of-range ..."), and its calibration sessions log at onnxruntime's
    default severity. Inside this block: errors only. Unchanged when debugging.
    """
    try:
        import onnxruntime
    except ImportError:  # a build that needs no onnxruntime (a TensorRT engine from an ONNX)
        onnxruntime = None
    if debugging() or onnxruntime is None:
        yield
        return
    root, tools = logging.getLogger(), logging.getLogger("onnxruntime")
    errors_only, tools_level = _ErrorsOnly(), tools.level
    # logging.warning() gives a root logger without handlers a stderr handler for good: give it one for now that
    # prints as Python does without any (edgeseg's own warnings still show).
    stand_in = logging.lastResort if not root.handlers and logging.lastResort is not None else None
    if stand_in is not None:
        root.addHandler(stand_in)
    root.addFilter(errors_only)
    tools.setLevel(logging.ERROR)
    onnxruntime.set_default_logger_severity(ONNXRUNTIME_ERRORS_ONLY)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        onnxruntime.set_default_logger_severity(ONNXRUNTIME_WARNINGS)
        tools.setLevel(tools_level)
        root.removeFilter(errors_only)
        if stand_in is not None:
            root.removeHandler(stand_in)


class _ErrorsOnly(logging.Filter):
    """Records logged on the root logger itself (onnxruntime's tools use logging.warning()) pass from ERROR up."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def _load_library(name: str) -> None:
    ctypes.CDLL(name)


def _import_tensorrt() -> str | None:
    """Import TensorRT's Python module (which loads the libraries of a pip install); why it could not, or None."""
    try:
        import tensorrt
    except ModuleNotFoundError as error:
        if error.name == "tensorrt":
            return "TensorRT is not installed"
        return f"TensorRT's Python module cannot be imported ({error})"
    except Exception as error:  # a broken install raises anything from ImportError to OSError
        return f"TensorRT's Python module cannot be imported ({error})"
    version = str(getattr(tensorrt, "__version__", "?"))
    if _major(version) != ONNXRUNTIME_TENSORRT_MAJOR:
        return (
            f"TensorRT {version} is installed, but onnxruntime's TensorRT provider is built against TensorRT "
            f"{ONNXRUNTIME_TENSORRT_MAJOR} ({ONNXRUNTIME_TENSORRT_LIBRARY})"
        )
    return None


def load_tensorrt_libraries() -> str | None:
    """Load the TensorRT library onnxruntime's TensorRT provider links; why it cannot be loaded, or None.

    The provider links libnvinfer.so.10 without a RUNPATH. JetPack and NVIDIA's .deb and .tar installs
    put it on the loader's path; a pip install (tensorrt-cu12/-cu13) puts it in site-packages/tensorrt_libs,
    where it loads only when `import tensorrt` loads it: onnxruntime's preload_dlls() loads CUDA's and
    cuDNN's libraries, not TensorRT's. Once loaded, the loader finds it by name when onnxruntime opens
    the provider. No GPU is needed for this.
    """
    import_problem = _import_tensorrt()
    try:
        _load_library(ONNXRUNTIME_TENSORRT_LIBRARY)
    except OSError as error:
        return import_problem or f"{ONNXRUNTIME_TENSORRT_LIBRARY} cannot be loaded ({error})"
    return None


def build_cuda_version(onnxruntime: Any) -> str | None:
    """The CUDA version this onnxruntime was built with ("12.2"), None for a CPU build."""
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:
        return None
    return getattr(info, "cuda_version", None) or None


def onnxruntime_build() -> dict[str, Any]:
    """What the runtime will use: the distributions, version, CUDA build and providers, and any problem."""
    distributions = onnxruntime_distributions()
    build: dict[str, Any] = {
        "distributions": distributions,
        "version": None,
        "cuda": None,
        "providers": None,
        "problem": None,
    }
    try:
        check_onnxruntime_install(distributions)
    except OnnxRuntimeInstallError as error:
        build["problem"] = str(error)  # and still say which build's files won
    try:
        import onnxruntime
    except ImportError as error:
        build["problem"] = build["problem"] or _not_installed(distributions, error)
        return build
    build.update(
        version=onnxruntime.__version__,
        cuda=build_cuda_version(onnxruntime),
        providers=list(onnxruntime.get_available_providers()),
    )
    return build


# --- edgeseg doctor -------------------------------------------------------------------------------


def _major(version: str | None) -> int | None:
    head = (version or "").split(".")[0]
    return int(head) if head.isdigit() else None


def cuda_software(build: dict[str, Any]) -> dict[str, int]:
    """The CUDA major each installed piece of CUDA software was built for, from its build or package name."""
    majors: dict[str, int] = {}
    if onnxruntime_major := _major(build["cuda"]):
        majors[f"onnxruntime {build['version']}"] = onnxruntime_major
    for name in ("cuda-bindings", "cuda-python"):
        version, _ = host.package_version(name)
        if bindings_major := _major(version):
            majors[f"{name} {version}"] = bindings_major
            break
    for name, major in TENSORRT_CUDA.items():
        version, _ = host.package_version(name)
        if version:
            majors[f"{name} {version}"] = major
    return majors


def tensorrt_provider_problem(build: dict[str, Any]) -> str | None:
    """Why onnxruntime's TensorRT provider cannot start here, or None; from the libraries alone, no GPU needed."""
    if build["providers"] is None:
        return "onnxruntime is not installed"
    if "TensorrtExecutionProvider" not in build["providers"]:
        return f"this onnxruntime ({build['version']}) has no TensorRT provider (onnxruntime-gpu has it)"
    return load_tensorrt_libraries()


def pip_tensorrt_10() -> bool:
    """Whether TensorRT 10 is pip-installed as the GPU extras install it (tensorrt-cu12 or tensorrt-cu13)."""
    return any(_major(host.package_version(name)[0]) == ONNXRUNTIME_TENSORRT_MAJOR for name in TENSORRT_CUDA)


def driver_problems(gpus: list[dict] | None, software: dict[str, int], tensorrt: str | None) -> list[str]:
    """Each GPU driver older than the CUDA software installed needs, or than TensorRT needs."""
    problems = []
    drivers = sorted({gpu["driver"] for gpu in gpus or []})
    for major in sorted(set(software.values())):
        built = ", ".join(what for what, its_major in software.items() if its_major == major)
        for driver in drivers:
            problem = host.driver_problem(driver, major)
            if problem:
                problems.append(f"{problem} ({built}: built for CUDA {major})")
    for driver in drivers if tensorrt else []:
        problem = host.tensorrt_driver_problem(driver)
        if problem:
            problems.append(f"{problem} (TensorRT {tensorrt} is installed)")
    return problems
