"""benchmarks/gpu_check.py: without a CUDA GPU it says so and writes nothing; its parts 2-4 run as written (on the CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"


def run_script(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO_ROOT)


def test_without_a_cuda_gpu_it_skips_writes_nothing_and_exits_0(tmp_path: Path, load_benchmark):
    pytest.importorskip("torch")
    gpu_check = load_benchmark("gpu_check")
    gpu, _, _ = gpu_check.cuda_gpu()
    if gpu is not None:
        pytest.skip(f"this host has a CUDA GPU ({gpu['name']}): the check would run for real")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    env["PATH"] = os.pathsep.join(part for part in env["PATH"].split(os.pathsep) if not (Path(part) / "nvidia-smi").exists())
    done = run_script("--out", str(tmp_path), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: skipped: no CUDA GPU found"), done.stdout
    assert lines[0].endswith("nothing written")
    assert list(tmp_path.iterdir()) == []


def test_names_and_budgets(load_benchmark):
    gpu_check = load_benchmark("gpu_check")
    assert gpu_check.slug("NVIDIA GeForce RTX 4090") == "nvidia-geforce-rtx-4090"
    assert gpu_check.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu_check.slug("Orin (nvgpu)") == "orin-nvgpu"
    assert sum(gpu_check.BUDGETS_S.values()) <= 8 * 60 - 30  # start-up and the report fit in the rest


@pytest.mark.slow
def test_parts_2_to_4_run_as_written_on_the_cpu(tmp_path: Path):
    pytest.importorskip("torch")
    done = run_script("--simulate-on-cpu", "--out", str(tmp_path), timeout=480)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "gpu-check-simulated-on-the-cpu.json").read_text())
    parts = report["parts"]
    assert parts["buffers"]["status"] == "skipped"
    train = parts["train"]
    assert train["status"] == "passed" and train["killed"] and train["epochs_before_kill"] >= 1
    assert train["epochs"] == list(range(1, len(train["epochs"]) + 1)) and len(train["epochs"]) > train["epochs_before_kill"]
    assert parts["eval"]["status"] == "passed" and parts["eval"]["abs_delta"]["dice"] == 0.0  # same backend twice
    assert parts["bench"]["status"] == "passed" and parts["bench"]["backends"]["torch-cpu"]["fps"] > 0
    text = (tmp_path / "gpu-check-simulated-on-the-cpu.md").read_text()
    assert "| train | passed |" in text and "killed (SIGKILL) after epoch" in text and "Host:" in text


def test_a_gpu_torch_cannot_use_is_a_failure_with_the_reason(tmp_path: Path):
    torch = pytest.importorskip("torch")
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text('#!/bin/sh\necho "NVIDIA A10, 470.82.01"\n')
    smi.chmod(0o755)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PATH": f"{smi.parent}{os.pathsep}{os.environ['PATH']}"}
    done = run_script("--out", str(tmp_path), env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    line = done.stdout.strip()
    assert line.startswith("gpu_check: cannot run: ") and line.endswith("nothing written")
    if torch.version.cuda:  # an old driver is reported as an old driver, not as "no GPU"
        major = torch.version.cuda.split(".")[0]
        assert f"NVIDIA driver 470.82.01 is older than CUDA {major} needs" in line
    else:
        assert "NVIDIA A10" in line and "CPU build" in line
    assert [path.name for path in tmp_path.iterdir()] == ["bin"]
