"""`edgeseg doctor`: the install as the runtime sees it (edgeseg.core.install_check), its problems and their fixes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeseg.core import host, install_check
from edgeseg.core.click_types import JSON_HELP, JSON_OUTPUT, json_to_stdout, write_json
from edgeseg.core.progress import quiet_option


def doctor_findings() -> dict[str, Any]:
    """The install as the runtime sees it, the problems (each with its fix) and notes."""
    build = install_check.onnxruntime_build()
    gpus, gpu_reason = host.nvidia_smi_gpus()
    software = install_check.cuda_software(build)
    tensorrt = host.tensorrt_version()[0]
    problems = [build["problem"]] if build["problem"] else []
    problems += install_check.driver_problems(gpus, software, tensorrt)
    provider_problem = install_check.tensorrt_provider_problem(build)
    notes: list[str] = []
    if provider_problem and "TensorrtExecutionProvider" in (build["providers"] or []):
        # With the gpu extra installed the provider is meant to start: then it is a problem, else a note.
        (problems if install_check.pip_tensorrt_10() else notes).append(
            f"onnxruntime's TensorRT provider cannot start: {provider_problem}; {install_check.TENSORRT_PROVIDER_FIX}"
        )
    if gpus and build["providers"] and "CUDAExecutionProvider" not in build["providers"]:
        notes.append(
            "an NVIDIA GPU is here but this onnxruntime has no CUDA provider (the CPU build): for the GPU, "
            "pip uninstall -y onnxruntime && pip install 'edgeseg[gpu]'"
        )
    if len(set(software.values())) > 1:
        notes.append(
            "CUDA software for more than one CUDA major is installed ("
            + ", ".join(f"{what}: {major}" for what, major in software.items())
            + "); the driver must suit the newest; keep one major where you can (extras gpu or gpu-cu13)"
        )
    return {
        "onnxruntime": build,
        "cuda_software": software,
        "gpus": gpus,
        "gpus_reason": gpu_reason,
        "tensorrt": tensorrt,
        "tensorrt_provider": {"can_start": provider_problem is None, "why_not": provider_problem},
        "torch": host.package_version("torch")[0],
        "jetson": host.is_jetson(),
        "problems": problems,
        "notes": notes,
    }


def doctor_lines(findings: dict[str, Any]) -> list[str]:
    build = findings["onnxruntime"]
    if build["version"]:
        names = ", ".join(f"{name} {version}" for name, version in build["distributions"].items()) or "no pip metadata"
        kind = f"built for CUDA {build['cuda']}" if build["cuda"] else "CPU build"
        runtime = f"{build['version']} ({names}; {kind}); providers: {', '.join(build['providers'])}"
    else:
        runtime = "not installed"
    gpus = "; ".join(f"{gpu['name']}, driver {gpu['driver']}" for gpu in findings["gpus"] or [])
    provider = findings["tensorrt_provider"]
    provider_line = (
        f"can start ({install_check.ONNXRUNTIME_TENSORRT_LIBRARY} loads; the GPU is checked when a model starts)"
        if provider["can_start"]
        else f"cannot start: {provider['why_not']}"
    )
    rows = [
        ("onnxruntime", runtime),
        ("TensorRT", findings["tensorrt"] or "not installed"),
        ("ORT TensorRT", provider_line),
        (
            "CUDA builds",
            ", ".join(f"{what} (CUDA {major})" for what, major in findings["cuda_software"].items()) or "-",
        ),
        ("PyTorch", findings["torch"] or "not installed"),
        ("GPU", gpus or f"none ({findings['gpus_reason']})"),
        ("Jetson", "yes" if findings["jetson"] else "no"),
    ]
    lines = [f"  {name:<13}{value}" for name, value in rows]
    lines += [f"problem: {problem}" for problem in findings["problems"]]
    lines += [f"note: {note}" for note in findings["notes"]]
    if findings["problems"]:
        lines.append("Not OK: fix the problems above.")
    else:
        driver = (
            "the driver suits the CUDA software installed" if findings["gpus"] else "no NVIDIA GPU, no driver to check"
        )
        lines.append(f"OK: one onnxruntime build; {driver}.")
    return lines


@click.command("doctor")
@click.option(
    "-j", "--json", "json_path", type=JSON_OUTPUT, help=f"Also write the findings as JSON to FILE {JSON_HELP}."
)
@quiet_option
def doctor_command(json_path: Path | None) -> None:
    """Check this install: one onnxruntime build, its providers, the GPU and its driver.

    Finds two onnxruntime builds in one environment (onnxruntime and onnxruntime-gpu install the same
    module; the last one installed wins) or none, and an NVIDIA driver older than the CUDA software
    or TensorRT installed needs, each with its fix. Says whether onnxruntime's TensorRT provider can
    start (its libraries; no GPU needed to tell) and why not: a problem where the gpu extra's TensorRT
    is installed, a note otherwise. Exit status 0 when nothing is wrong, 1 otherwise.

    \b
    Example:
      edgeseg doctor
      edgeseg doctor --json - | python -m json.tool
    """
    findings = doctor_findings()
    click.echo("\n".join(doctor_lines(findings)), err=json_to_stdout(json_path))
    if json_path is not None:
        write_json(json_path, findings)
    raise SystemExit(1 if findings["problems"] else 0)
