"""`edgeseg info [MODEL]`: what a model is (its card), the forms beside it, and what this host can run it on.

It only reads: the card from an ONNX's metadata, an engine's sidecar or a run directory's card.json (never
PyTorch, never an inference session), the sizes of the forms beside it and their verdicts in the export
report, and what `edgeseg doctor` finds on this host (edgeseg.core.install_check). The parts it reads through
(evaluate, runtime, export) are imported inside the functions, so `edgeseg --help` stays light.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import click

from edgeseg.core import forms as form_table
from edgeseg.core.card import ModelCard
from edgeseg.core.click_types import JSON_HELP, JSON_OUTPUT, json_to_stdout, model_or_default, write_json
from edgeseg.core.forms import listed_backends
from edgeseg.core.names import model_kind
from edgeseg.core.progress import quiet_option

EXAMPLES = """\b
Examples:
  edgeseg info                              the default model
  edgeseg info runs/lite0                   a training run (its card; PyTorch is not needed)
  edgeseg info runs/lite0/model.int8.onnx --json - | python -m json.tool
"""

# The figures shown in the text (the JSON holds every one the card records), with their names for people.
SHOWN_METRICS = {"dice": "Dice", "jaccard": "Jaccard", "threshold_jaccard": "thr. Jaccard"}
KIND_NAMES = {"torch": "training run (PyTorch)", "onnx": "ONNX", "engine": "TensorRT engine"}
FORM_KINDS = {"torch": "PyTorch", "onnx": "ONNX", "engine": "TensorRT"}
WRAP = 100


@click.command("info", epilog=EXAMPLES)
@click.argument("model", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("-j", "--json", "json_path", type=JSON_OUTPUT, help=f"Also write all of it as JSON to FILE {JSON_HELP}.")
@quiet_option
def info_command(model: Path | None, json_path: Path | None) -> None:
    """What MODEL is, the forms beside it, and what this host can run it on.

    MODEL is an ONNX, a TensorRT engine with its sidecar, a training run directory or an export folder;
    without one, edgeseg's default model. Prints its model card (input size, preprocessing,
    threshold, post-processing, architecture, the data it was trained on and its licence, how and
    when it was trained, the figures the card records), the forms of the model in its folder with
    their sizes and their parity-gate verdicts, and which backends can run it here, and why not.
    Reads files only: no PyTorch, no inference.
    """
    report = model_info(model_or_default(model))
    click.echo("\n".join(info_lines(report)), err=json_to_stdout(json_path))
    if json_path is not None:
        write_json(json_path, report)


# --- gathering ------------------------------------------------------------------------------------


def model_info(path: Path) -> dict[str, Any]:
    """Everything `info` says about the model at ``path``, JSON-ready; an EdgesegError names a bad model file."""
    from edgeseg.doctor import doctor_findings

    path, kind = resolve_model(path)
    card, precision, engine = read_form(path, kind)
    findings = doctor_findings()
    backends = [
        {"backend": backend, "why_not": why_not(backend, findings, path)}
        for backend in listed_backends(kind)
        if backend != "auto"
    ]
    runnable = {row["backend"] for row in backends if row["why_not"] is None}
    build = findings["onnxruntime"]
    return {
        "model": str(path),
        "kind": kind,
        "precision": precision,
        "card": card.to_dict(),
        "engine": engine,
        "forms": form_rows(path.parent if kind != "torch" else path, path),
        "host": {
            "onnxruntime": build["version"],
            "onnxruntime_cuda": build["cuda"],
            "providers": build["providers"],
            "gpus": findings["gpus"],
            "gpus_reason": findings["gpus_reason"],
            "tensorrt": findings["tensorrt"],
            "torch": findings["torch"],
            "jetson": findings["jetson"],
        },
        "backends": backends,
        # What "auto" picks: the first of the backends it tries, in the table of forms' order, that runs here.
        "auto": next((backend for backend in form_table.auto_backends(kind) if backend in runnable), None),
    }


def resolve_model(path: Path) -> tuple[Path, str]:
    """The model form at ``path`` and its kind; a folder of exported forms speaks through its first one."""
    from edgeseg.loading.open import NOT_A_MODEL, ModelPathError, forms_in_directory

    kind = model_kind(path)
    if kind is not None:
        return path, kind
    if path.is_dir():
        forms = forms_in_directory(path)
        if forms:
            return forms[0].path, forms[0].kind
        raise ModelPathError(f"{path}: no model here; {NOT_A_MODEL}")
    raise ModelPathError(f"{path}: not a model form; {NOT_A_MODEL}")


def read_form(path: Path, kind: str) -> tuple[ModelCard, str, dict[str, str] | None]:
    """(card, precision, the engine's build or None) of one form, read from its files alone."""
    if kind == "torch":
        from edgeseg.core.card import load_card

        return load_card(path), "fp32", None
    from edgeseg.runtime.loaders import read_engine_info, read_onnx_info

    if kind == "onnx":
        info = read_onnx_info(path)
        return info.card, info.precision, None
    engine = read_engine_info(path)
    built = {
        "tensorrt_version": engine.tensorrt_version,
        "gpu_name": engine.gpu_name,
        "compute_capability": engine.compute_capability,
        "onnx_file": engine.onnx_file,
    }
    return engine.card, engine.precision, built


def form_rows(directory: Path, asked: Path) -> list[dict[str, Any]]:
    """Each form in ``directory``: name, kind, precision, size, its export-report verdict, whether it is ``asked``."""
    from edgeseg.core.errors import EdgesegError
    from edgeseg.evaluate.latency import size_bytes
    from edgeseg.loading.open import forms_in_directory
    from edgeseg.runtime.loaders import sidecar_path

    verdicts = gate_verdicts(directory)
    rows = []
    for form in forms_in_directory(directory):
        row = {
            "name": form.label,
            "path": str(form.path),
            "kind": form.kind,
            "precision": None,
            "problem": None,
            "size_bytes": size_bytes(form),
            "this": form.path == asked,
            **verdicts.get(form.path.name, {}),
        }
        if form.kind == "engine":
            sidecar = sidecar_path(form.path)
            row["sidecar"] = sidecar.name if sidecar.is_file() else None
        try:
            row["precision"] = read_form(form.path, form.kind)[1]
        except EdgesegError as error:  # a broken form beside a sound one: said, not fatal
            row["problem"] = str(error)
        rows.append(row)
    return rows


def gate_verdicts(directory: Path) -> dict[str, dict[str, Any]]:
    """File name -> {"gate": "passed" | "failed", "gate_reason"} from the export report in ``directory``, if any."""
    import json

    from edgeseg.export.report import JSON_NAME

    try:
        report = json.loads((directory / JSON_NAME).read_text(encoding="utf-8"))
        forms = [form for form in report["forms"] if form.get("path") and form.get("passed") is not None]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # no report, or not one edgeseg wrote
        return {}
    return {
        Path(form["path"]).name: {
            "gate": "passed" if form["passed"] else "failed",
            "gate_reason": form.get("reason") or None,
        }
        for form in forms
    }


def why_not(backend: str, findings: dict[str, Any], model: Path) -> str | None:
    """Why ``backend`` cannot run ``model`` on this host, from what `edgeseg doctor` finds; None when it can."""
    no_gpu = None if findings["gpus"] or findings["jetson"] else f"no NVIDIA GPU ({findings['gpus_reason']})"
    if backend.startswith("onnxruntime-"):
        return onnxruntime_problem(backend, findings) or (None if backend == "onnxruntime-cpu" else no_gpu)
    if backend == "tensorrt":
        return tensorrt_problem(findings, model, no_gpu)
    if findings["torch"] is None:
        return "PyTorch is not installed: pip install 'edgeseg[train]', or run the model's exported ONNX"
    return no_gpu if backend == "torch-cuda" else None


def onnxruntime_problem(backend: str, findings: dict[str, Any]) -> str | None:
    """Why this onnxruntime install has no working provider for ``backend``, or None."""
    from edgeseg.runtime.backends import ORT_PROVIDERS

    build = findings["onnxruntime"]
    if build["problem"] or build["providers"] is None:
        return build["problem"] or "onnxruntime is not installed"
    provider = ORT_PROVIDERS[backend.removeprefix("onnxruntime-")]
    if provider not in build["providers"]:
        made = f"built for CUDA {build['cuda']}" if build["cuda"] else "the CPU build"
        return f"this onnxruntime ({build['version']}, {made}) has no {provider}"
    if backend == "onnxruntime-tensorrt":
        return findings["tensorrt_provider"]["why_not"]
    return None


def tensorrt_problem(findings: dict[str, Any], engine: Path, no_gpu: str | None) -> str | None:
    """Why the TensorRT backend cannot run ``engine`` here: no TensorRT, no GPU, or an engine built for another."""
    from edgeseg.runtime.backends import TENSORRT_FIX
    from edgeseg.runtime.loaders import RuntimeModelError, check_engine_host, engine_host, read_engine_info

    if not findings["tensorrt"]:
        return f"TensorRT is not installed; {TENSORRT_FIX}"
    if no_gpu:
        return no_gpu
    host = engine_host()
    if host is None:
        return "TensorRT cannot reach a GPU here (cuda-python missing, or CUDA sees no GPU; `edgeseg doctor` says more)"
    try:
        check_engine_host(read_engine_info(engine), engine, *host)
    except RuntimeModelError as error:
        return str(error)
    return None


# --- saying it ------------------------------------------------------------------------------------


def info_lines(report: dict[str, Any]) -> list[str]:
    card = ModelCard.from_dict(report["card"], source=report["model"])
    path = Path(report["model"])
    lines = [f"{path.name}: {KIND_NAMES[report['kind']]}, {report['precision']} ({path})"]
    if report["engine"]:
        engine = report["engine"]
        built_for = f"{engine['gpu_name'] or 'a GPU'} (compute capability {engine['compute_capability']})"
        lines.append(row("engine", f"built with TensorRT {engine['tensorrt_version']} for {built_for}"))
    lines += card_lines(card) + provenance_lines(card) + figure_lines(card)
    lines += form_lines(report["forms"], path.parent if report["kind"] != "torch" else path)
    lines += host_lines(report)
    return lines


def row(name: str, text: str, width: int = 14) -> str:
    """One labelled line, wrapped under its text where it is long."""
    return textwrap.fill(
        text, WRAP, initial_indent=f"  {name:<{width}} ", subsequent_indent=" " * (width + 3), break_on_hyphens=False
    )


def card_lines(card: ModelCard) -> list[str]:
    pre, out = card.preprocessing, card.output
    extra = ", ".join(f"{key}={value}" for key, value in card.architecture_kwargs.items())
    height, width = card.input_size
    mean, std = (", ".join(f"{value:g}" for value in values) for values in (pre.mean, pre.std))
    return [
        row(
            "architecture",
            f"{card.architecture}, encoder {card.encoder}"
            + (f" ({extra})" if extra else "")
            + f"; classes: {', '.join(card.classes)}",
        ),
        row(
            "input",
            f"{height}x{width} (height x width), {pre.color_order}; the image is resized to it "
            f"({pre.resize}, {pre.interpolation} interpolation), scaled by {scale_text(pre.scale)}, "
            f"mean {mean}, std {std}",
        ),
        row(
            "output",
            f"{out.activation}, threshold {out.threshold}, probability upsampled {out.upsample}; "
            + ("the largest region kept" if out.keep_largest_region else "every region kept"),
        ),
    ]


def scale_text(scale: float) -> str:
    """1/255 as people write it, where it is one over a whole number; else the number."""
    inverse = 1.0 / scale if scale else 0.0
    return f"1/{round(inverse)}" if inverse >= 1 and abs(inverse - round(inverse)) < 1e-6 else f"{scale:g}"


def provenance_lines(card: ModelCard) -> list[str]:
    made = card.provenance
    if not (made.data or made.created or made.epochs):
        return [row("provenance", "not recorded in this card")]
    hashes = ", ".join(
        f"{what} {digest.removeprefix('sha256:')[:12]}"
        for what, digest in (("files", made.data_files_hash), ("split", made.split_hash))
        if digest
    )
    lines = [
        row(
            "data",
            f"{made.data or '?'}: {made.train_images} training, {made.val_images} validation images"
            + (f" (sha256 of its {hashes})" if hashes else ""),
        )
    ]
    if made.data_licence:
        lines.append(row("licence", made.data_licence))
    versions = ", ".join(
        f"{name} {version}"
        for name, version in made.versions.items()
        if name in ("edgeseg", "torch", "segmentation_models_pytorch", "timm")
    )
    lines.append(
        row(
            "trained",
            f"{made.created or 'when: not recorded'}; {made.epochs} epochs, best {made.best_epoch}"
            + (f"; {versions}" if versions else ""),
        )
    )
    if made.notes:
        lines.append(row("notes", made.notes))
    return lines


def figure_lines(card: ModelCard) -> list[str]:
    """The figures the card records: the training's val scores, then each further evaluation, with intervals."""
    made = card.provenance
    figures = {"val_metrics": {**made.val_metrics, "images": made.val_images}} if made.val_metrics else {}
    figures.update(made.evaluations)
    if not figures:
        return ["figures: none recorded in this card"]
    lines = [
        "figures (ISIC metrics, each image at its own resolution, mean over images; [95% interval] where recorded):"
    ]
    for name, values in figures.items():
        shown = [
            f"{label} {values[key]:.4f}" + interval(values, key)
            for key, label in SHOWN_METRICS.items()
            if key in values
        ]
        images = f"{int(values['images'])} images" if "images" in values else ""
        lines.append(f"  {name:<28}{images:>11}  " + "  ".join(shown))
    return lines


def interval(values: dict[str, float], key: str) -> str:
    low, high = values.get(f"{key}_low"), values.get(f"{key}_high")
    return f" [{low:.4f}, {high:.4f}]" if low is not None and high is not None else ""


def form_lines(forms: list[dict[str, Any]], directory: Path) -> list[str]:
    lines = [f"forms in {directory}:"]
    width = max((len(form["name"]) for form in forms), default=0) + 2
    for form in forms:
        what = f"{FORM_KINDS[form['kind']]} {form['precision'] or ''}".strip()
        text = f"  {form['name']:<{width}}{what:<14}{form['size_bytes'] / 1e6:7.1f} MB"
        if form["kind"] == "engine":
            text += "  with its sidecar" if form["sidecar"] else "  no sidecar"
        if form.get("gate"):
            text += f"  gate {form['gate']}" + (f" ({form['gate_reason']})" if form.get("gate_reason") else "")
        if form["problem"]:
            text += f"  unreadable: {form['problem']}"
        lines.append(text + ("  <- this one" if form["this"] else ""))
    return lines


def host_lines(report: dict[str, Any]) -> list[str]:
    host = report["host"]
    built_for = f"CUDA {host['onnxruntime_cuda']}" if host["onnxruntime_cuda"] else "CPU"
    runtime = f"onnxruntime {host['onnxruntime']} ({built_for} build)" if host["onnxruntime"] else "no onnxruntime"
    gpus = ", ".join(gpu["name"] for gpu in host["gpus"] or []) or f"no NVIDIA GPU ({host['gpus_reason']})"
    if host["jetson"]:
        gpus = "a Jetson"
    lines = [
        textwrap.fill(
            f"this host: {runtime}; {gpus}; TensorRT {host['tensorrt'] or 'not installed'}; "
            f"PyTorch {host['torch'] or 'not installed'}",
            WRAP,
            subsequent_indent="    ",
        )
    ]
    for backend in report["backends"]:
        verdict = "can run it" + (" (auto picks it)" if backend["backend"] == report["auto"] else "")
        text = verdict if backend["why_not"] is None else f"cannot: {backend['why_not']}"
        lines.append(row(backend["backend"], text, width=20))
    if any(backend["why_not"] for backend in report["backends"]):
        lines.append("`edgeseg doctor` checks this install and says what to add for the others.")
    return lines
