"""What a benchmark ran on, read from the system: CPU, memory, library versions, GPU, and Jetson state.

Every probe is a small function that returns ``(value, reason)``: the value read from the system, or
None with the reason it could not be read. Nothing is guessed: a Jetson's JetPack release, for one,
is the installed ``nvidia-jetpack`` package's version or null, never a value inferred from the L4T
release. Probes are tolerant: missing files, missing commands, commands that need root and commands
that hang (a short timeout) all end as null with a reason, never as an exception.

``host_info()`` gathers them into one JSON-ready dict; ``reasons`` maps the dotted key of every null
field to why it is null.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

COMMAND_TIMEOUT_S = 5.0
Probe = tuple[Any, str | None]

CPUINFO = Path("/proc/cpuinfo")
MEMINFO = Path("/proc/meminfo")
CPU_SYSFS = Path("/sys/devices/system/cpu")
DEVFREQ = Path("/sys/class/devfreq")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
CUDA_VERSION_FILES = (Path("/usr/local/cuda/version.json"), Path("/usr/local/cuda/version.txt"))


# --- helpers ------------------------------------------------------------------------------------


def read_text(path: Path) -> Probe:
    try:
        return path.read_text(encoding="utf-8", errors="replace"), None
    except OSError as error:
        return None, f"cannot read {path} ({error.strerror or error})"


def run_command(*command: str, timeout: float = COMMAND_TIMEOUT_S) -> Probe:
    """stdout of a command, or None with why (not on PATH, timed out, non-zero exit)."""
    if shutil.which(command[0]) is None:
        return None, f"{command[0]} not found on PATH"
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env={**os.environ, "LC_ALL": "C"}
        )
    except subprocess.TimeoutExpired:
        return None, f"`{' '.join(command)}` did not answer within {timeout:g} s"
    except OSError as error:
        return None, f"`{' '.join(command)}` could not run ({error})"
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        detail = message[-1] if message else "no output"
        return None, f"`{' '.join(command)}` exited {done.returncode}: {detail}"
    return done.stdout, None


def package_version(distribution: str) -> Probe:
    """A package's installed version from its metadata, without importing it."""
    try:
        return metadata.version(distribution), None
    except metadata.PackageNotFoundError:
        return None, f"{distribution} is not installed (no package metadata)"


# --- CPU and memory -----------------------------------------------------------------------------


def cpu_model() -> Probe:
    """/proc/cpuinfo's "model name" (x86 and some ARM), else its "Hardware" line, else platform's name."""
    text, reason = read_text(CPUINFO)
    for key in ("model name", "Hardware", "Processor"):
        for line in (text or "").splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip(), None
    named = platform.processor() or platform.machine()
    if named:
        return named, None
    return None, reason or "no model name in /proc/cpuinfo and platform gives none"


def physical_cores() -> Probe:
    """Distinct (package, core) pairs in sysfs topology, else in /proc/cpuinfo."""
    pairs = set()
    for cpu in CPU_SYSFS.glob("cpu[0-9]*"):
        package, _ = read_text(cpu / "topology" / "physical_package_id")
        core, _ = read_text(cpu / "topology" / "core_id")
        if package is not None and core is not None:
            pairs.add((package.strip(), core.strip()))
    if pairs:
        return len(pairs), None
    text, reason = read_text(CPUINFO)
    package = None
    for line in (text or "").splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "physical id":
            package = value.strip()
        elif name.strip() == "core id":
            pairs.add((package, value.strip()))
    if pairs:
        return len(pairs), None
    return None, reason or "no CPU topology in sysfs or /proc/cpuinfo"


def usable_cores() -> Probe:
    """Cores this process may run on (a container or taskset may allow fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)), None
    return None, "os.sched_getaffinity is not available on this platform"


def cpu_quota() -> Probe:
    """The cgroup v2 CPU limit in cores (cpu.max), which caps a container below its visible cores."""
    text, reason = read_text(Path("/sys/fs/cgroup/cpu.max"))
    if text is None:
        return None, reason
    fields = text.split()
    quota, period = fields[0], fields[1] if len(fields) > 1 else "100000"
    if quota == "max":
        return None, "no cgroup CPU limit (cpu.max is 'max')"
    return round(int(quota) / int(period), 2), None


def load_average() -> Probe:
    """1, 5 and 15 minute load averages: above the core count, other work competed with the benchmark."""
    try:
        return [round(value, 2) for value in os.getloadavg()], None
    except (AttributeError, OSError):
        return None, "os.getloadavg is not available on this platform"


def memory_gib() -> Probe:
    text, reason = read_text(MEMINFO)
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", text or "", re.MULTILINE)
    if match is None:
        return None, reason or "no MemTotal in /proc/meminfo"
    return round(int(match.group(1)) / 1024**2, 1), None


# --- libraries ----------------------------------------------------------------------------------


def opencv_version() -> Probe:
    """cv2's own version: a Jetson's system OpenCV has no pip metadata."""
    try:
        import cv2
    except ImportError as error:
        return None, f"OpenCV cannot be imported ({error})"
    return cv2.__version__, None


def onnxruntime_providers() -> Probe:
    try:
        import onnxruntime
    except ImportError as error:
        return None, f"onnxruntime cannot be imported ({error})"
    return list(onnxruntime.get_available_providers()), None


def tensorrt_version() -> Probe:
    """From package metadata (pip wheels), else from the module (JetPack's apt package may have none)."""
    for distribution in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu11"):
        version, _ = package_version(distribution)
        if version:
            return version, None
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return None, "TensorRT's Python bindings are not installed"
    try:
        import tensorrt
    except Exception as error:  # a broken install raises anything from ImportError to OSError
        return None, f"tensorrt is present but cannot be imported ({error})"
    return str(tensorrt.__version__), None


def onnxruntime_version() -> Probe:
    """The CPU wheel, the GPU wheel or a Jetson build: all install the module `onnxruntime`."""
    for distribution in ("onnxruntime", "onnxruntime-gpu"):
        version, _ = package_version(distribution)
        if version:
            return version, None
    return None, "onnxruntime is not installed (neither onnxruntime nor onnxruntime-gpu)"


def library_versions() -> dict[str, Probe]:
    import numpy

    return {
        "numpy": (numpy.__version__, None),
        "opencv": opencv_version(),
        "onnxruntime": onnxruntime_version(),
        "torch": package_version("torch"),
        "tensorrt": tensorrt_version(),
        "cuda_python": package_version("cuda-python"),
    }


# --- GPU ----------------------------------------------------------------------------------------


def nvidia_smi_gpus() -> Probe:
    """Name and driver of each GPU, from nvidia-smi."""
    text, reason = run_command("nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader")
    if text is None:
        return None, reason
    gpus = []
    for line in text.strip().splitlines():
        name, _, driver = line.rpartition(",")
        gpus.append({"name": name.strip(), "driver": driver.strip()})
    if not gpus:
        return None, "nvidia-smi lists no GPU"
    return gpus, None


def cuda_driver_version() -> Probe:
    """The newest CUDA the driver supports, from nvidia-smi's header ("CUDA Version: 12.4")."""
    text, reason = run_command("nvidia-smi")
    if text is None:
        return None, reason
    match = re.search(r"CUDA Version:\s*([\d.]+)", text)
    if match is None:
        return None, "nvidia-smi prints no 'CUDA Version'"
    return match.group(1), None


def cuda_toolkit_version() -> Probe:
    """The CUDA toolkit installed under /usr/local/cuda (how JetPack ships it)."""
    for path in CUDA_VERSION_FILES:
        text, _ = read_text(path)
        if text is None:
            continue
        match = re.search(r'"cuda"\s*:\s*\{[^}]*"version"\s*:\s*"([\d.]+)"', text) or re.search(
            r"CUDA Version\s+([\d.]+)", text
        )
        if match:
            return match.group(1), None
    return None, "no CUDA toolkit at /usr/local/cuda (version.json / version.txt)"


# The oldest Linux driver that runs software built with each CUDA major (CUDA minor version
# compatibility: NVIDIA's CUDA Toolkit release notes and "CUDA Compatibility", table "CUDA Toolkit and
# Minimum Required Driver Version"). A newer driver runs older CUDA majors too (backward compatibility).
CUDA_DRIVER_MINIMUM = {11: "450.80.02", 12: "525.60.13", 13: "580"}
# TensorRT 10 asks more than CUDA 12 does: r535 or newer on Linux (TensorRT's installation guide,
# "Prerequisites"; its CUDA 13 builds need r580, which CUDA_DRIVER_MINIMUM[13] already asks).
TENSORRT_DRIVER_MINIMUM = "535"


def _version_numbers(version: str) -> tuple[int, ...] | None:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)*)\s*", version)
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def _older_than(driver_version: str, minimum: str) -> bool | None:
    """Whether a driver version is older than ``minimum``; None when it is not dotted numbers."""
    found, needed = _version_numbers(driver_version), _version_numbers(minimum)
    if found is None or needed is None:
        return None
    width = max(len(found), len(needed))
    return found + (0,) * (width - len(found)) < needed + (0,) * (width - len(needed))


def driver_problem(driver_version: str, cuda_major: int) -> str | None:
    """Why this NVIDIA driver (nvidia-smi's "535.104.05") cannot run CUDA ``cuda_major`` software, or None.

    None also when it cannot be judged: a CUDA major not in CUDA_DRIVER_MINIMUM, or a driver version
    that is not dotted numbers. Nothing is guessed. An old driver is reported as an old driver, so
    that "no CUDA GPU is visible" is never the only thing a user with a GPU hears.
    """
    minimum = CUDA_DRIVER_MINIMUM.get(cuda_major)
    if minimum is None or not _older_than(driver_version, minimum):
        return None
    other = " (or, for CUDA 12 instead: pip install 'edgeseg[gpu]')" if cuda_major == 13 else ""
    return (
        f"NVIDIA driver {driver_version.strip()} is older than CUDA {cuda_major} needs (>= {minimum}): "
        f"install a newer driver{other}"
    )


def tensorrt_driver_problem(driver_version: str) -> str | None:
    """Why this NVIDIA driver is too old for TensorRT (older than r535), or None (also when it cannot be judged)."""
    if not _older_than(driver_version, TENSORRT_DRIVER_MINIMUM):
        return None
    return (
        f"NVIDIA driver {driver_version.strip()} is older than TensorRT needs (r{TENSORRT_DRIVER_MINIMUM} or "
        f"newer): install a newer driver, or go without TensorRT: 'edgeseg[cuda12]' in a fresh environment "
        f"(onnxruntime's CUDA provider, which runs on drivers from {CUDA_DRIVER_MINIMUM[12]} on)"
    )


# --- Jetson -------------------------------------------------------------------------------------


def device_tree_model() -> Probe:
    text, reason = read_text(DEVICE_TREE_MODEL)
    if text is None:
        return None, reason
    model = text.replace("\x00", "").strip()
    return (model, None) if model else (None, f"{DEVICE_TREE_MODEL} is empty")


def is_jetson() -> bool:
    model, _ = device_tree_model()
    return TEGRA_RELEASE.is_file() or bool(model and "jetson" in model.lower())


def l4t_release() -> Probe:
    """The L4T release from /etc/nv_tegra_release, e.g. "# R36 (release), REVISION: 3.0, ..." -> "36.3.0"."""
    text, reason = read_text(TEGRA_RELEASE)
    if text is None:
        return None, reason
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if match is None:
        return None, f"{TEGRA_RELEASE} has no 'R<major> (release), REVISION: <minor>' line: {text.strip()[:80]!r}"
    return f"{match.group(1)}.{match.group(2)}", None


def dpkg_version(package: str) -> Probe:
    text, reason = run_command("dpkg-query", "-W", "-f=${Version}", package)
    if text is None:
        return None, reason
    version = text.strip()
    return (version, None) if version else (None, f"dpkg lists {package} without a version")


def power_mode() -> Probe:
    """`nvpmodel -q`: "NV Power Mode: MAXN" then the mode number."""
    text, reason = run_command("nvpmodel", "-q")
    if text is None:
        return None, reason
    match = re.search(r"NV Power Mode:\s*(.+)", text)
    if match is None:
        return None, f"`nvpmodel -q` printed no 'NV Power Mode': {text.strip()[:80]!r}"
    lines = text[match.end() :].split()
    mode_id = int(lines[0]) if lines and lines[0].isdigit() else None
    return {"name": match.group(1).strip(), "id": mode_id}, None


CLOCK_LINE = re.compile(
    r"^(?P<domain>cpu\d+|GPU|EMC)\b.*?MinFreq=(?P<min>\d+)\s+MaxFreq=(?P<max>\d+)\s+CurrentFreq=(?P<current>\d+)"
)


def parse_jetson_clocks(text: str) -> dict[str, dict[str, Any]]:
    """Each clock domain's Min/Max/CurrentFreq from `jetson_clocks --show` (offline CPUs left out)."""
    domains = {}
    for line in text.splitlines():
        match = CLOCK_LINE.match(line.strip())
        if match is None or "Online=0" in line:
            continue
        domain = {key: int(match.group(key)) for key in ("min", "max", "current")}
        override = re.search(r"FreqOverride=(\d)", line)
        if override:
            domain["override"] = override.group(1) == "1"
        domains[match.group("domain")] = domain
    return domains


def sysfs_clocks() -> dict[str, dict[str, Any]]:
    """The same Min/Max/Current for CPUs (cpufreq) and the GPU (devfreq), readable without root."""
    domains = {}
    for cpu in sorted(CPU_SYSFS.glob("cpu[0-9]*")):
        frequencies = [
            read_text(cpu / "cpufreq" / name)[0]
            for name in ("scaling_min_freq", "scaling_max_freq", "scaling_cur_freq")
        ]
        if all(value and value.strip().isdigit() for value in frequencies):
            domains[cpu.name] = dict(zip(("min", "max", "current"), (int(v) for v in frequencies), strict=True))
    for device in sorted(DEVFREQ.glob("*")):
        if (
            "gpu" not in device.name
            and "ga10b" not in device.name
            and "gv11b" not in device.name
            and "gp10b" not in device.name
        ):
            continue
        frequencies = [read_text(device / name)[0] for name in ("min_freq", "max_freq", "cur_freq")]
        if all(value and value.strip().isdigit() for value in frequencies):
            domains["GPU"] = dict(zip(("min", "max", "current"), (int(v) for v in frequencies), strict=True))
    return domains


def clocks_locked(domains: dict[str, dict[str, Any]]) -> Probe:
    """True only when every CPU and the GPU run with MinFreq == MaxFreq (what `jetson_clocks` sets).

    The memory clock (EMC) counts as locked when jetson_clocks reports FreqOverride=1. Anything
    short of CPU and GPU readings gives None: an unlocked reading is never assumed from a partial one.
    """
    cpus = [name for name in domains if name.startswith("cpu")]
    if not cpus or "GPU" not in domains:
        return None, f"clock readings incomplete (found {sorted(domains) or 'none'}; need the CPUs and the GPU)"
    locked = all(domains[name]["min"] == domains[name]["max"] for name in (*cpus, "GPU"))
    if "EMC" in domains and "override" in domains["EMC"]:
        locked = locked and domains["EMC"]["override"]
    return locked, None


def jetson_clocks() -> tuple[Probe, Probe]:
    """(clocks locked?, the readings): `jetson_clocks --show` (root), else the same values from sysfs."""
    text, reason = run_command("jetson_clocks", "--show")
    source = "jetson_clocks --show"
    domains = parse_jetson_clocks(text) if text else {}
    if not domains:
        domains, source = sysfs_clocks(), "sysfs cpufreq/devfreq"
    if not domains:
        why = f"{reason or 'jetson_clocks --show printed no clock lines'}; no cpufreq/devfreq readings in sysfs either"
        return (None, why), (None, why)
    locked, locked_reason = clocks_locked(domains)
    return (locked, locked_reason), ({"source": source, "domains": domains}, None)


def jetson_info() -> dict[str, Probe]:
    (locked, locked_reason), (clocks, clocks_reason) = jetson_clocks()
    return {
        "board": device_tree_model(),
        "l4t": l4t_release(),
        "l4t_core_package": dpkg_version("nvidia-l4t-core"),
        "jetpack": dpkg_version("nvidia-jetpack"),
        "power_mode": power_mode(),
        "clocks_locked": (locked, locked_reason),
        "clocks": (clocks, clocks_reason),
    }


# --- everything together ------------------------------------------------------------------------


def _collect(probes: dict[str, Probe], prefix: str, reasons: dict[str, str]) -> dict[str, Any]:
    values = {}
    for key, (value, reason) in probes.items():
        values[key] = value
        if value is None:
            reasons[f"{prefix}{key}"] = reason or "not available"
    return values


def host_info() -> dict[str, Any]:
    """The host, as a JSON-ready dict; ``reasons`` says why each null field is null."""
    from edgeseg.core.version import __version__

    reasons: dict[str, str] = {}
    info: dict[str, Any] = {
        "os": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "edgeseg": __version__,
    }
    info["cpu"] = _collect(
        {
            "model": cpu_model(),
            "physical_cores": physical_cores(),
            "logical_cores": (os.cpu_count(), None if os.cpu_count() else "os.cpu_count() gives none"),
            "usable_cores": usable_cores(),
            "cgroup_quota_cores": cpu_quota(),
        },
        "cpu.",
        reasons,
    )
    info.update(_collect({"memory_gib": memory_gib(), "load_average": load_average()}, "", reasons))
    info["versions"] = _collect(library_versions(), "versions.", reasons)
    info.update(_collect({"onnxruntime_providers": onnxruntime_providers()}, "", reasons))
    gpus, gpu_reason = nvidia_smi_gpus()
    info.update(
        _collect(
            {
                "gpus": (gpus, gpu_reason),
                "cuda_driver": cuda_driver_version() if gpus else (None, gpu_reason),
                "cuda_toolkit": cuda_toolkit_version(),
            },
            "",
            reasons,
        )
    )
    if is_jetson():
        info["jetson"] = _collect(jetson_info(), "jetson.", reasons)
    else:
        info["jetson"] = None
        reasons["jetson"] = f"not a Jetson (no {TEGRA_RELEASE}, and {DEVICE_TREE_MODEL} names no Jetson)"
    info["reasons"] = reasons
    return info


def describe_host(info: dict[str, Any]) -> list[str]:
    """Short human lines for a terminal or a results file."""
    cpu = info["cpu"]
    cores = f"{cpu['physical_cores'] or '?'} physical / {cpu['logical_cores'] or '?'} logical cores"
    if cpu.get("usable_cores") and cpu["usable_cores"] != cpu["logical_cores"]:
        cores += f", {cpu['usable_cores']} usable by this process"
    if cpu.get("cgroup_quota_cores"):
        cores += f", cgroup limit {cpu['cgroup_quota_cores']} cores"
    lines = [
        f"OS: {info['os']} ({info['machine']}), Python {info['python']}, edgeseg {info['edgeseg']}",
        f"CPU: {cpu['model'] or 'unknown'}, {cores}; memory {info['memory_gib'] or '?'} GiB; "
        f"load average (1/5/15 min) {'/'.join(map(str, info['load_average'] or [])) or '?'}",
        "versions: " + ", ".join(f"{name} {version or '-'}" for name, version in info["versions"].items()),
        f"onnxruntime providers: {', '.join(info['onnxruntime_providers'] or []) or '-'}",
    ]
    if info["gpus"]:
        names = "; ".join(f"{gpu['name']} (driver {gpu['driver']})" for gpu in info["gpus"])
        lines.append(f"GPU: {names}; CUDA (driver) {info['cuda_driver'] or '-'}, toolkit {info['cuda_toolkit'] or '-'}")
    else:
        lines.append(f"GPU: none ({info['reasons'].get('gpus', '')}); CUDA toolkit {info['cuda_toolkit'] or '-'}")
    jetson = info["jetson"]
    if jetson is not None:
        mode = jetson["power_mode"]
        lines.append(
            f"Jetson: {jetson['board'] or '?'}, L4T {jetson['l4t'] or '?'}, "
            f"JetPack package {jetson['jetpack'] or '-'}, "
            f"power mode {mode['name'] + ' (' + str(mode['id']) + ')' if mode else '?'}, "
            f"clocks locked: {'unknown' if jetson['clocks_locked'] is None else jetson['clocks_locked']}"
        )
    return lines
