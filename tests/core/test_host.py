"""Host information: present, sane, JSON-ready; every null has a reason; Jetson probes parse real output."""

from __future__ import annotations

import json
import os
import platform
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseg.core import host
from edgeseg.core.host import clocks_locked, host_info, parse_jetson_clocks

# `jetson_clocks --show` on a Jetson Nano whose CPUs were pinned but GPU left to scale (public example).
NANO_SHOW = """SOC family:tegra210  Machine:NVIDIA Jetson Nano Developer Kit
Online CPUs: 0-1
cpu0: Online=1 Governor=schedutil MinFreq=921600 MaxFreq=921600 CurrentFreq=921600 IdleStates: WFI=1 c7=1
cpu1: Online=1 Governor=schedutil MinFreq=921600 MaxFreq=921600 CurrentFreq=921600 IdleStates: WFI=1 c7=1
cpu2: Online=0 Governor=schedutil MinFreq=102000 MaxFreq=921600 CurrentFreq=921600 IdleStates: WFI=1 c7=1
GPU MinFreq=76800000 MaxFreq=614400000 CurrentFreq=460800000
EMC MinFreq=204000000 MaxFreq=1600000000 CurrentFreq=1600000000 FreqOverride=0
"""
LOCKED_SHOW = """cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: C1=0
cpu1: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: C1=0
GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1
"""


def null_leaves(value: object, prefix: str = "") -> list[str]:
    """Dotted keys of every None in nested dicts (not descending into lists)."""
    if value is None:
        return [prefix]
    if isinstance(value, dict):
        return [key for name, item in value.items() for key in null_leaves(item, f"{prefix}{name}.")]
    return []


def test_host_info_is_sane_and_every_null_has_a_reason() -> None:
    info = host_info()
    json.dumps(info)  # JSON-ready
    assert info["cpu"]["logical_cores"] >= 1
    assert info["cpu"]["physical_cores"] is None or 1 <= info["cpu"]["physical_cores"] <= info["cpu"]["logical_cores"]
    assert isinstance(info["cpu"]["model"], str) and info["cpu"]["model"].strip()
    assert info["python"] == platform.python_version()
    assert info["versions"]["numpy"] == np.__version__
    if info["memory_gib"] is not None:
        assert info["memory_gib"] > 0
    reasons = info.pop("reasons")
    missing = [key.rstrip(".") for key in null_leaves(info)]
    assert all(reasons.get(key) for key in missing), {key: reasons.get(key) for key in missing}
    assert (info["jetson"] is None) == (not host.is_jetson())


def test_onnxruntime_providers_include_the_cpu() -> None:
    providers, reason = host.onnxruntime_providers()
    assert reason is None and "CPUExecutionProvider" in providers


def test_host_info_does_not_import_torch() -> None:
    code = "import sys; from edgeseg.core.host import host_info; host_info(); assert 'torch' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_jetson_clocks_show_is_parsed_conservatively() -> None:
    nano = parse_jetson_clocks(NANO_SHOW)
    assert set(nano) == {"cpu0", "cpu1", "GPU", "EMC"}  # offline cpu2 left out
    assert nano["GPU"] == {"min": 76800000, "max": 614400000, "current": 460800000}
    assert clocks_locked(nano) == (False, None)  # CPUs pinned, GPU free: not locked
    assert clocks_locked(parse_jetson_clocks(LOCKED_SHOW)) == (True, None)
    locked, reason = clocks_locked({"cpu0": {"min": 1, "max": 1, "current": 1}})
    assert locked is None and "GPU" in reason  # a partial reading never says "locked" or "not locked"


def fake_command(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_power_mode_from_nvpmodel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_command(tmp_path, "nvpmodel", 'printf "NVPM WARN: a warning\\nNV Power Mode: MAXN\\n0\\n"')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert host.power_mode() == ({"name": "MAXN", "id": 0}, None)


def test_commands_that_fail_or_hang_give_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_command(tmp_path, "needs-root", 'echo "Error: Run this script as a root user" >&2; exit 1')
    fake_command(tmp_path, "hangs", "sleep 5")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    value, reason = host.run_command("needs-root")
    assert value is None and "exited 1" in reason and "root user" in reason
    value, reason = host.run_command("hangs", timeout=0.2)
    assert value is None and "did not answer" in reason
    value, reason = host.run_command("no-such-command-here")
    assert value is None and "not found on PATH" in reason


def test_l4t_release_is_read_not_guessed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = tmp_path / "nv_tegra_release"
    release.write_text(
        "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May  6\n"
    )
    monkeypatch.setattr(host, "TEGRA_RELEASE", release)
    assert host.l4t_release() == ("36.3.0", None)
    release.write_text("something else\n")
    value, reason = host.l4t_release()
    assert value is None and "REVISION" in reason
    monkeypatch.setattr(host, "TEGRA_RELEASE", tmp_path / "absent")
    value, reason = host.l4t_release()
    assert value is None and "cannot read" in reason


def test_device_tree_model_strips_the_nul(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    monkeypatch.setattr(host, "DEVICE_TREE_MODEL", model)
    assert host.device_tree_model() == ("NVIDIA Jetson AGX Orin Developer Kit", None)
