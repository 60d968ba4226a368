"""benchmarks/gpu_check.py: without a CUDA GPU every part is skipped with its reason and the record says so; parts 2-6
run as written on the CPU; the PyTorch forms and onnxruntime's IO binding run on the CPU where CUDA is not needed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeseg.core.card import load_card

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"


def run_script(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO_ROOT
    )


def without_a_gpu() -> dict[str, str]:
    """The environment of a host without a GPU: no visible CUDA device, no nvidia-smi on PATH."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    paths = env["PATH"].split(os.pathsep)
    env["PATH"] = os.pathsep.join(part for part in paths if not (Path(part) / "nvidia-smi").exists())
    return env


def test_without_a_cuda_gpu_every_part_is_skipped_with_its_reason_and_the_record_says_so(
    tmp_path: Path, load_benchmark
):
    gpu_check = load_benchmark("gpu_check")
    if importlib.util.find_spec("torch") is not None:
        gpu, _, _ = gpu_check.cuda_gpu()
        if gpu is not None:
            pytest.skip(f"this host has a CUDA GPU ({gpu['name']}): the check would run for real")
    done = run_script("--out", str(tmp_path), env=without_a_gpu())
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("gpu_check: skipped: no CUDA GPU found"), done.stdout
    assert lines[1].startswith("gpu_check: wrote ")
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "gpu-check-no-cuda-gpu.json",
        "gpu-check-no-cuda-gpu.md",
    ]
    report = json.loads((tmp_path / "gpu-check-no-cuda-gpu.json").read_text())
    assert report["gpu"]["name"] == "no CUDA GPU" and report["gpu"]["reason"].startswith("no CUDA GPU found")
    assert list(report["parts"]) == list(gpu_check.BUDGETS_S)
    assert all(part["status"] == "skipped" and part["reason"] for part in report["parts"].values())
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in providers:  # onnxruntime's part names what it misses, not just the GPU
        assert report["parts"]["onnxruntime_cuda"]["reason"] == (
            f"onnxruntime-gpu not installed: CUDAExecutionProvider missing (providers: {', '.join(providers)})"
        )
    text = (tmp_path / "gpu-check-no-cuda-gpu.md").read_text()
    assert text.startswith("# GPU check: no CUDA GPU\n")
    assert f"CPU: {report['host']['cpu']['model']}" in text and "every GPU part skipped" in text
    for name in gpu_check.BUDGETS_S:
        assert f"| {name} | skipped | - | {report['parts'][name]['reason']} |" in text


def test_names_and_budgets(load_benchmark):
    gpu_check = load_benchmark("gpu_check")
    assert gpu_check.slug("NVIDIA GeForce RTX 4090") == "nvidia-geforce-rtx-4090"
    assert gpu_check.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu_check.slug("Orin (nvgpu)") == "orin-nvgpu"
    assert sum(gpu_check.BUDGETS_S.values()) <= 8 * 60 - 30  # start-up and the report fit in the rest
    assert list(gpu_check.BUDGETS_S) == ["buffers", "train", "eval", "bench", "torch_forms", "onnxruntime_cuda"]


@pytest.mark.slow
def test_parts_2_to_6_run_as_written_on_the_cpu(tmp_path: Path):
    pytest.importorskip("torch")
    done = run_script("--simulate-on-cpu", "--out", str(tmp_path), timeout=480)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "gpu-check-simulated-on-the-cpu.json").read_text())
    parts = report["parts"]
    assert parts["buffers"]["status"] == "skipped"
    train = parts["train"]
    assert train["status"] == "passed" and train["killed"] and train["epochs_before_kill"] >= 1
    assert (
        train["epochs"] == list(range(1, len(train["epochs"]) + 1))
        and len(train["epochs"]) > train["epochs_before_kill"]
    )
    assert parts["eval"]["status"] == "passed" and parts["eval"]["abs_delta"]["dice"] == 0.0  # same backend twice
    assert parts["bench"]["status"] == "passed" and parts["bench"]["backends"]["torch-cpu"]["fps"] > 0
    for name, measured in (
        ("torch_forms", ["eager fp32", "eager fp16"]),
        ("onnxruntime_cuda", ["fp32 io binding", "fp16 io binding"]),
    ):
        forms = parts[name]["forms"]
        assert parts[name]["status"] == "passed" and parts[name]["device"] == "cpu", parts[name]
        assert [form for form, figures in forms.items() if figures["status"] == "measured"] == measured
    text = (tmp_path / "gpu-check-simulated-on-the-cpu.md").read_text()
    assert "| train | passed |" in text and "killed (SIGKILL) after epoch" in text and "Host:" in text
    assert "| torch_forms | eager fp16 | measured |" in text
    assert "| onnxruntime_cuda | fp16 io binding | measured |" in text


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


# --- parts 5 and 6: what decides, what compares, and the forms that run without a GPU ---------------------------


def test_onnxruntime_part_runs_only_with_the_cuda_provider_and_says_which_providers_there_are(load_benchmark):
    gpu_check = load_benchmark("gpu_check")
    assert gpu_check.ort_cuda_skip_reason(["CUDAExecutionProvider", "CPUExecutionProvider"]) is None
    assert gpu_check.ort_cuda_skip_reason(["TensorrtExecutionProvider", "CUDAExecutionProvider"]) is None
    assert gpu_check.ort_cuda_skip_reason(["AzureExecutionProvider", "CPUExecutionProvider"]) == (
        "onnxruntime-gpu not installed: CUDAExecutionProvider missing "
        "(providers: AzureExecutionProvider, CPUExecutionProvider)"
    )
    assert gpu_check.ort_cuda_skip_reason([]).endswith("(providers: none)")


def test_cuda_graph_forms_are_planned_on_cuda_only(load_benchmark):
    gpu_check = load_benchmark("gpu_check")
    for forms in (gpu_check.TORCH_FORMS, gpu_check.ORT_FORMS):
        assert gpu_check.form_plan(forms, "cuda") == dict.fromkeys(forms)
        on_cpu = gpu_check.form_plan(forms, "cpu")
        eager = [name for name, (_, graph) in forms.items() if not graph]
        assert [name for name, why in on_cpu.items() if why is None] == eager
        assert {why for why in on_cpu.values() if why} == {"CUDA graphs need a CUDA GPU"}
        first_precision, first_graph = next(iter(forms.values()))
        assert (first_precision, first_graph) == ("fp32", False)  # the reference of the others runs everywhere


def test_agreement_counts_probability_mask_and_confident_flips(load_benchmark):
    gpu_check = load_benchmark("gpu_check")
    reference = [np.array([[[[4.0, -4.0], [0.1, -0.1]]]], np.float32)]  # sure lesion, sure background, two unsure
    same = gpu_check.agreement(reference, [reference[0].copy()], threshold=0.5, margin=0.1)
    assert same == {"max_abs_dprob": 0.0, "mask_dice_mean": 1.0, "mask_dice_min": 1.0, "confident_flip_share": 0.0}
    assert gpu_check.within_gate("fp32", same) and gpu_check.within_gate("fp16", same)
    unsure_flip = gpu_check.agreement(reference, [np.array([[[[4.0, -4.0], [-0.1, -0.1]]]], np.float32)], 0.5, 0.1)
    assert unsure_flip["mask_dice_mean"] == pytest.approx(2 / 3) and unsure_flip["confident_flip_share"] == 0.0
    assert gpu_check.within_gate("fp16", unsure_flip) and not gpu_check.within_gate("fp32", unsure_flip)
    sure_flip = gpu_check.agreement(reference, [np.array([[[[-4.0, -4.0], [0.1, -0.1]]]], np.float32)], 0.5, 0.1)
    assert sure_flip["confident_flip_share"] == 0.5  # 1 of the 2 sure pixels
    assert sure_flip["mask_dice_min"] == pytest.approx(2 / 3)
    assert sure_flip["max_abs_dprob"] == pytest.approx(1 / (1 + np.exp(-4.0)) - 1 / (1 + np.exp(4.0)))
    assert not gpu_check.within_gate("fp16", sure_flip)


def test_io_binding_on_the_cpu_gives_what_a_plain_run_gives_and_keeps_each_output(
    load_benchmark, tiny_onnx: Path, tiny_card
):
    import onnxruntime

    gpu_check = load_benchmark("gpu_check")
    session = gpu_check.ort_session(tiny_onnx, "cpu", cuda_graph=False)
    shape = (1, 3, *tiny_card.input_size)
    infer = gpu_check.io_bound_form(session, "cpu", shape)
    batches = [np.random.default_rng(seed).standard_normal(shape, dtype=np.float32) for seed in (1, 2)]
    outputs = [infer(batch) for batch in batches]
    plain = onnxruntime.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    for batch, output in zip(batches, outputs, strict=True):  # the first output is not overwritten by the second run
        expected = plain.run(None, {plain.get_inputs()[0].name: batch})[0]
        assert output.dtype == np.float32 and output.shape == expected.shape
        np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)
    assert not np.array_equal(outputs[0], outputs[1])
    with pytest.raises(ValueError, match="CUDA provider"):
        gpu_check.ort_session(tiny_onnx, "cpu", cuda_graph=True)


def test_parts_5_and_6_on_the_cpu_compare_time_and_record_every_form(
    load_benchmark, trained_run_dir: Path, synthetic_dir: Path, tmp_path: Path
):
    gpu_check = load_benchmark("gpu_check")
    parts = {
        "torch_forms": gpu_check.part_torch_forms(60, trained_run_dir, synthetic_dir, "cpu"),
        "onnxruntime_cuda": gpu_check.part_onnxruntime_cuda(60, trained_run_dir, synthetic_dir, tmp_path, "cpu"),
    }
    for name, forms in (("torch_forms", gpu_check.TORCH_FORMS), ("onnxruntime_cuda", gpu_check.ORT_FORMS)):
        part = parts[name]
        assert part["status"] == "passed", part
        assert list(part["forms"]) == list(forms) and part["reference"] == next(iter(forms))
        assert part["images"] == len(gpu_check.val_batches(synthetic_dir, load_card(trained_run_dir))) > 0
        for form_name, (precision, graph) in forms.items():
            form = part["forms"][form_name]
            if graph:
                assert form == {"status": "skipped", "reason": "CUDA graphs need a CUDA GPU"}
                continue
            assert form["status"] == "measured" and form["precision"] == precision
            assert form["runs"] == gpu_check.FORM_ROUNDS["cpu"][1] and 0 < form["p50_ms"] <= form["p95_ms"]
            if precision == "fp16":  # against the fp32 reference on the same images
                assert 0 < form["max_abs_dprob"] < 0.05 and form["mask_dice_min"] > 0.9 and form["within_gate"]
    text = "\n".join(gpu_check.forms_table(parts))
    assert "| torch_forms | eager fp32 | measured |" in text and text.count("| reference |") == 2
    assert "| onnxruntime_cuda | fp32 io binding + cuda graph | skipped | - |" in text
    assert "measured on cpu" in gpu_check.summary("torch_forms", parts["torch_forms"])


def test_a_form_that_fails_to_build_fails_the_part_with_its_reason_and_one_line_in_the_table(load_benchmark):
    gpu_check = load_benchmark("gpu_check")
    batches = [np.zeros((1, 3, 32, 32), np.float32)]

    def refused():
        raise RuntimeError("capture refused:\nnodes on the CPU | see log")

    builders = {"reference": ("fp32", lambda: lambda batch: batch[:, :1]), "broken": ("fp16", refused)}
    plan = {"reference": None, "broken": None}
    part = gpu_check.forms_part(plan, builders, batches, 0.5, "cpu", time.monotonic() + 30)
    assert part["status"] == "failed" and part["reason"].startswith("broken: RuntimeError: capture refused")
    assert part["forms"]["reference"]["status"] == "measured" and part["forms"]["broken"]["status"] == "failed"
    (row,) = [line for line in gpu_check.forms_table({"torch_forms": part}) if "| broken |" in line]
    assert row.endswith("| RuntimeError: capture refused: nodes on the CPU / see log |")


# --- on a GPU: skipped without one ---------------------------------------------------------------------------------


@pytest.mark.gpu
def test_torch_forms_on_a_cuda_gpu_measure_all_four(load_benchmark, trained_run_dir: Path, synthetic_dir: Path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here")
    part = load_benchmark("gpu_check").part_torch_forms(45, trained_run_dir, synthetic_dir, "cuda")
    assert part["status"] == "passed", part
    assert all(form["status"] == "measured" for form in part["forms"].values())
    assert part["forms"]["cuda graph fp32"]["max_abs_dprob"] < 1e-4  # the same kernels, replayed


@pytest.mark.gpu
def test_onnxruntime_cuda_forms_measure_all_four(
    load_benchmark, trained_run_dir: Path, synthetic_dir: Path, tmp_path: Path
):
    onnxruntime = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime here has no CUDA provider (install onnxruntime-gpu)")
    part = load_benchmark("gpu_check").part_onnxruntime_cuda(60, trained_run_dir, synthetic_dir, tmp_path, "cuda")
    assert part["status"] == "passed", part
    assert all(form["status"] == "measured" for form in part["forms"].values())
