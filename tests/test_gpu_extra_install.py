"""A GPU extra carries what the GPU commands need: a fresh environment with only what `edgeseg[gpu]` (and
`edgeseg[gpu-cu13]`) brings, less the GPU libraries themselves, exports the default model's FP16 and INT8
forms and runs one.

The environment gets edgeseg's base dependencies and every requirement the extra brings (its edgeseg[...]
references followed), with tensorrt-*, cuda-python and nvidia-* wheels dropped and onnxruntime-gpu replaced
by the CPU build `onnxruntime` of the same version range (the same module; the GPU build cannot run on a
machine without a GPU). edgeseg itself is a regular (non-editable) install without dependencies, so the
default model and the reference set must arrive as package data. There: no torch, onnx only where the extra
brings it, `edgeseg doctor` runs, `edgeseg export MODEL.onnx --format fp16,int8` passes its parity gate on
the shipped reference set, and `edgeseg run` segments one of its images. The CUDA 12 extra's onnxruntime is
1.26 at most, older than this project's own: its quantizer broke the default model's INT8 form until
export folded the padding arithmetic first (export/shape_folding.py).

What it proves: nothing export --fp16 --int8 or run imports is missing from the extra (onnx, sympy, ml_dtypes, ...),
and neither needs torch or a data folder. What it does not: no GPU library ran (no CUDA, cuDNN, TensorRT,
no onnxruntime-gpu provider); the CPU onnxruntime stands in for onnxruntime-gpu of the same version range.
It skips only where pip cannot fetch from the index.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
PIP_TIMEOUT_S = 900

# The GPU libraries themselves: never installed here.
GPU_ONLY = re.compile(r"^(tensorrt(-.*)?|cuda-python|cuda-bindings|cuda-toolkit|nvidia-.*)$")
# pip's words when it cannot reach an index (a spec no release meets, with the index reachable, is a failure).
CANNOT_FETCH = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Failed to establish a new connection",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "Max retries exceeded",
    "ProxyError",
    "(from versions: none)",
)


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def brought_by(extra: str, table: dict[str, list[str]], seen: frozenset = frozenset()) -> list[Requirement]:
    """Every requirement an extra brings, its edgeseg[...] references followed, in order."""
    assert extra in table, f"pyproject.toml has no extra {extra!r}"
    found = []
    for line in table[extra]:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == "edgeseg":
            for inner in sorted(requirement.extras - seen - {extra}):
                found += brought_by(inner, table, seen | {extra})
        else:
            found.append(requirement)
    return found


def cpu_stand_ins(extra: str) -> tuple[list[str], list[str]]:
    """What the environment gets for `extra` (base dependencies too), and what was left out as GPU-only."""
    project = pyproject()["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    requirements += brought_by(extra, project["optional-dependencies"])
    kept: list[str] = []
    dropped: list[str] = []
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name == "onnxruntime-gpu":  # its [cuda,cudnn] extras are CUDA's wheels: dropped with them
            marker = f"; {requirement.marker}" if requirement.marker else ""
            line = f"onnxruntime{requirement.specifier}{marker}"
            dropped.append(f"{requirement} (replaced by {line})")
        elif GPU_ONLY.match(name):
            dropped.append(str(requirement))
            continue
        else:
            line = str(requirement)
        if line not in kept:
            kept.append(line)
    return kept, dropped


def package_source(destination: Path) -> Path:
    """The repo's top-level files and package folders, copied: a regular build writes build/ and *.egg-info
    into the tree it builds, and this tree is someone's working copy."""
    package_dirs = pyproject()["tool"]["setuptools"]["package-dir"].values()
    destination.mkdir()
    for item in REPO_ROOT.iterdir():
        if item.is_file() and not item.name.startswith("."):
            shutil.copy2(item, destination / item.name)
    for folder in sorted({Path(path).parts[0] for path in package_dirs}):
        shutil.copytree(
            REPO_ROOT / folder, destination / folder, ignore=shutil.ignore_patterns("__pycache__", "*.py[cod]")
        )
    return destination


class Environment:
    def __init__(
        self, venv: Path, env: dict[str, str], work: Path, extra: str, requirements: list[str], dropped: list[str]
    ):
        self.venv, self.env, self.work, self.extra = venv, env, work, extra
        self.requirements, self.dropped = requirements, dropped
        self.python = venv / "bin" / "python"
        self.freeze = ""

    def context(self) -> str:
        return (
            f"\n[edgeseg[{self.extra}] less its GPU libraries] requirements: {'; '.join(self.requirements)}"
            f"\n  left out as GPU-only: {'; '.join(self.dropped) or 'nothing'}"
            + (f"\n  installed: {self.freeze}" if self.freeze else "")
        )

    def call(self, arguments: list[str], timeout: float) -> subprocess.CompletedProcess:
        started = time.monotonic()
        done = subprocess.run(
            [str(a) for a in arguments], cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        command = " ".join([Path(str(arguments[0])).name, *map(str, arguments[1:])])
        print(f"  [{time.monotonic() - started:6.1f} s] {command[:160]} -> {done.returncode}")
        return done

    def edgeseg(self, *arguments: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return self.call([self.venv / "bin" / "edgeseg", *arguments], timeout)

    def pip(self, *arguments: str) -> None:
        done = self.call([self.python, "-m", "pip", "install", "--progress-bar", "off", *arguments], PIP_TIMEOUT_S)
        if done.returncode != 0:
            output = done.stdout + done.stderr
            tail = "\n".join(output.strip().splitlines()[-15:])
            if any(sign in output for sign in CANNOT_FETCH):
                pytest.skip(f"pip cannot fetch here: {tail}")
            pytest.fail(f"pip install {' '.join(arguments)} failed (exit {done.returncode}):\n{tail}{self.context()}")

    def python_says(self, code: str) -> str:
        done = self.call([self.python, "-c", code], 120)
        assert done.returncode == 0, f"{code}: {done.stderr}{self.context()}"
        return done.stdout.strip()


def build_environment(extra: str, tmp_path: Path, fresh_venv: tuple[Path, dict[str, str]]) -> Environment:
    requirements, dropped = cpu_stand_ins(extra)
    work = tmp_path / "work"
    work.mkdir()
    environment = Environment(*fresh_venv, work, extra, requirements, dropped)
    print(f"\nedgeseg[{extra}] less its GPU libraries:{environment.context()}")
    environment.pip(*requirements)
    environment.pip("--no-deps", str(package_source(tmp_path / "source")))
    done = environment.call([environment.python, "-m", "pip", "freeze", "--all"], 120)
    environment.freeze = " ".join(done.stdout.split())
    print(f"  pip freeze: {environment.freeze}")
    check = environment.call([environment.python, "-m", "pip", "check"], 120)
    assert check.returncode == 0, f"pip check: {check.stdout}{check.stderr}{environment.context()}"
    return environment


@pytest.mark.slow
@pytest.mark.parametrize("extra", ["gpu", "gpu-cu13"])
def test_a_gpu_extra_without_its_gpu_libraries_exports_fp16_and_int8_and_runs(
    extra: str, tmp_path: Path, fresh_venv
) -> None:
    started = time.monotonic()
    env = build_environment(extra, tmp_path, fresh_venv)
    names = {canonicalize_name(Requirement(line).name) for line in env.requirements}
    installed = {canonicalize_name(line.split("==")[0].split(" @ ")[0]) for line in env.freeze.split()}
    gpu_installed = sorted(name for name in installed if GPU_ONLY.match(name) or name in {"onnxruntime-gpu", "torch"})
    assert not gpu_installed, f"GPU libraries or torch came in anyway: {gpu_installed}{env.context()}"

    # edgeseg is the installed copy, not the repo's; torch is absent; onnx is there exactly when the extra brings it.
    location = env.python_says("import edgeseg; print(edgeseg.__file__)")
    assert Path(location).is_relative_to(env.venv), f"edgeseg imported from {location}{env.context()}"
    torch = env.call([env.python, "-c", "import torch"], 120)
    assert torch.returncode != 0, f"import torch works in this environment{env.context()}"
    onnx = env.call([env.python, "-c", "import onnx"], 120)
    assert (onnx.returncode == 0) == ("onnx" in names), f"import onnx: {onnx.stderr.strip()}{env.context()}"

    doctor = env.edgeseg("doctor", timeout=120)
    print(doctor.stdout + doctor.stderr)
    assert doctor.returncode in (0, 1) and "Traceback" not in doctor.stderr, (
        f"edgeseg doctor (exit {doctor.returncode}):\n{doctor.stdout}{doctor.stderr}{env.context()}"
    )

    # The package data: the default model and the reference set came with a regular install.
    model = Path(env.python_says("from edgeseg.core.names import default_model_path; print(default_model_path())"))
    reference = Path(env.python_says("from edgeseg.core.names import reference_set_path; print(reference_set_path())"))
    for path in (model, reference):
        assert path.is_relative_to(env.venv), f"{path} is not the installed package data{env.context()}"
    assert model.read_bytes() == (REPO_ROOT / "models" / "default" / "model.onnx").read_bytes()
    shipped_root = REPO_ROOT / "models" / "reference"
    shipped = sorted(p.relative_to(shipped_root) for p in shipped_root.rglob("*") if p.is_file())
    missing = [str(p) for p in shipped if not (reference / p).is_file()]
    assert not missing, f"reference set files not installed: {missing[:5]} ({len(missing)}){env.context()}"

    out = tmp_path / "export"
    export = env.edgeseg(
        "export", str(model), "--format", "fp16,int8", "--out", str(out), "--latency-runs", "1", timeout=900
    )
    print(export.stdout[-3000:] + export.stderr[-3000:])
    assert export.returncode == 0, (
        f"edgeseg export --format fp16,int8 (exit {export.returncode}):\n"
        f"{export.stdout[-4000:]}{export.stderr[-4000:]}{env.context()}"
    )
    fp16_model, report_file = out / "model.fp16.onnx", out / "export-report.json"
    assert fp16_model.is_file() and report_file.is_file(), f"{sorted(p.name for p in out.iterdir())}{env.context()}"
    report = json.loads(report_file.read_text(encoding="utf-8"))
    forms = {form["name"]: form for form in report["forms"]}
    for name in ("fp16", "int8"):
        assert name in forms and forms[name]["status"] == "built" and forms[name]["passed"] is True, (
            f"the {name} form: {json.dumps(forms.get(name))[:2000]}{env.context()}"
        )
    assert report["passed"] is True and report["parity_images"]["reference_set"] is True, (
        f"{report['failures']} {report['parity_images']}{env.context()}"
    )

    image_id = (reference / "splits" / "val.txt").read_text(encoding="utf-8").split()[0]
    (image,) = reference.glob(f"*_Input/{image_id}.*")
    frames = tmp_path / "frames.jsonl"
    run = env.edgeseg("run", str(fp16_model), "--source", str(image), "--no-show", "--jsonl", str(frames), timeout=300)
    assert run.returncode == 0, f"edgeseg run (exit {run.returncode}):\n{run.stdout}{run.stderr}{env.context()}"
    lines = frames.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1, f"{len(lines)} JSONL records for one image{env.context()}"
    record = json.loads(lines[0])
    print(f"  run: {record}")
    assert record["name"] == image_id and record["lesion_present"] is True, f"{record}{env.context()}"
    assert record["area_px"] > 0 and record["max_diameter_px"] > 0 and record["regions"] >= 1, (
        f"{record}{env.context()}"
    )
    print(f"edgeseg[{extra}] environment test: {time.monotonic() - started:.0f} s")
    shutil.rmtree(env.venv, ignore_errors=True)  # about 0.7 GB each; kept only where the test failed
