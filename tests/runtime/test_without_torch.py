"""A Jetson has no PyTorch: run, eval, bench and `export model.onnx --format engine` work without it.

Each command runs in a child process in which `import torch` fails. Here (no TensorRT) the engine
export must fail on TensorRT's absence alone, with its message, not on a missing PyTorch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUN_WITHOUT_TORCH = (
    "import sys\n"
    "for name in ('torch', 'torchvision', 'segmentation_models_pytorch', 'timm'):\n"
    "    sys.modules[name] = None  # `import torch` now raises ImportError, as where it is not installed\n"
    "from edgeseg.cli import main\n"
    "main(sys.argv[1:], prog_name='edgeseg')\n"
)


def edgeseg_without_torch(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_TORCH, *arguments], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_the_runtime_commands_work_without_torch(tiny_onnx: Path, synthetic_dir: Path, tmp_path: Path):
    images = str(synthetic_dir / "ISIC2018_Task1-2_Training_Input")
    commands = [
        [
            "run",
            str(tiny_onnx),
            "--source",
            images,
            "--no-show",
            "--max-frames",
            "2",
            "--jsonl",
            str(tmp_path / "f.jsonl"),
        ],
        ["eval", str(tiny_onnx), "--data", str(synthetic_dir), "--out", str(tmp_path / "eval")],
        ["bench", str(tiny_onnx), "--runs", "2", "--warmup", "0"],
    ]
    for arguments in commands:
        done = edgeseg_without_torch(*arguments, cwd=tmp_path)
        assert done.returncode == 0, (arguments, done.stdout, done.stderr)
        assert "torch" not in done.stderr.lower(), done.stderr


def test_engine_export_without_torch_fails_only_on_tensorrt(tiny_onnx: Path, synthetic_dir: Path, tmp_path: Path):
    from edgeseg.export.tensorrt_export import engine_unavailable_reason

    if engine_unavailable_reason() is None:
        pytest.skip("this host can build TensorRT engines")
    done = edgeseg_without_torch(
        "export",
        str(tiny_onnx),
        "--format",
        "engine",
        "--parity-data",
        str(synthetic_dir),
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert "cannot build engine on this host: TensorRT is not installed here" in done.stderr
    assert "torch" not in done.stderr.lower() and "Traceback" not in done.stderr


@pytest.mark.slow
def test_forms_are_built_from_an_onnx_without_torch(tiny_onnx: Path, synthetic_dir: Path, tmp_path: Path):
    done = edgeseg_without_torch(
        "export",
        str(tiny_onnx),
        "--format",
        "fp16",
        "--parity-data",
        str(synthetic_dir),
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "model.fp16.onnx").is_file()
