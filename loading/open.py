"""Opening any form of a model: ``open_model(path, backend)`` is the one door every command and benchmark uses.

A form is a training run directory (run on PyTorch, through ``edgeseg.train``), an edgeseg ONNX or a
TensorRT engine (run by the torch-free runtime). Whatever the form, the result is a
``edgeseg.core.segmenter.Segmenter`` with the form's model card, so every form is fed and read alike.
PyTorch is imported only when a run directory is opened.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from edgeseg.core import forms as form_table
from edgeseg.core.errors import EdgesegError
from edgeseg.core.forms import backend_names, listed_backends
from edgeseg.core.names import ONNX_FILENAMES, is_engine, is_run_dir, model_kind
from edgeseg.core.segmenter import (
    FILL_HOLES_DEFAULT,
    REFINE_DEFAULT,
    TTA_DEFAULT,
    BackendUnavailable,
    Segmenter,
    check_settings,
)


class ModelPathError(EdgesegError, ValueError):
    """A path that holds no model form; the message says what a model form is."""


NOT_A_MODEL = (
    "pass a run directory (card.json + model.safetensors, from `edgeseg train`), an export directory (*.onnx, "
    "*.engine, from `edgeseg export`), or a model file (.onnx, or a TensorRT .engine with its sidecar)"
)


def open_model(
    path: str | os.PathLike,
    backend: str = "auto",
    size: tuple[int, int] | None = None,
    keep_largest: bool | None = None,
    mm_per_px: float | None = None,
    threads: int | None = None,
    tta: str = TTA_DEFAULT,
    refine: bool = REFINE_DEFAULT,
    fill_holes: bool = FILL_HOLES_DEFAULT,
) -> Segmenter:
    """A Segmenter for the model form at ``path`` on ``backend`` (one of ``edgeseg.core.forms.backend_names()``).

    ``size`` (height, width) changes the input size where the form allows it: a run directory (FPN
    takes any multiple of 32) or a dynamic-shape ONNX; other forms keep their card's size.
    ``threads`` sets onnxruntime's threads (PyTorch keeps its own setting). ``keep_largest``,
    ``mm_per_px``, ``tta``, ``refine`` and ``fill_holes`` go to the Segmenter (see there).
    Raises ValueError for a backend name or setting that does not exist (before anything is opened),
    BackendUnavailable when the backend cannot run here (with what to install), and ModelPathError
    when ``path`` is not a model form.
    """
    if backend not in backend_names():
        raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(backend_names())}")
    check_settings(tta, mm_per_px)
    path = Path(path)
    kind = model_kind(path)
    if kind is None:
        raise ModelPathError(f"{path}: not a model form; {NOT_A_MODEL}")
    if backend not in listed_backends(kind):
        raise BackendUnavailable(
            f"{path}: a {describe_kind(kind)} runs on {', '.join(listed_backends(kind))}, not on {backend}"
        )
    if kind == "torch":
        opened = open_torch(path, backend, size)
    else:
        from edgeseg.runtime.backends import open_backend

        opened = open_backend(path, backend, threads=threads)
    card = opened.card  # a run directory's already at ``size``: TorchBackend checks its input against it
    if size is not None and takes_any_size(opened):
        card = card.replace(input_size=size)
    return Segmenter(
        opened,
        card,
        keep_largest=keep_largest,
        mm_per_px=mm_per_px,
        fill_holes=fill_holes,
        tta=tta,
        refine=refine,
        model_path=path,
    )


def describe_kind(kind: str) -> str:
    return {"torch": "training run (PyTorch)", "onnx": "ONNX model", "engine": "TensorRT engine"}[kind]


def open_torch(run_dir: Path, backend: str, size: tuple[int, int] | None):
    """A TorchBackend (PyTorch eager) for a run directory, on the CPU or the GPU, at ``size`` if given."""
    try:
        import torch

        from edgeseg.train.network import load_model
        from edgeseg.train.torch_backend import TorchBackend
    except ImportError as error:
        raise BackendUnavailable(
            f"running a training run needs PyTorch ({error.name} is missing): pip install 'edgeseg[train]', or use "
            f"its exported {ONNX_FILENAMES['onnx']}, which needs no PyTorch"
        ) from None
    if backend == "auto":  # the first that this PyTorch can run, of those the table of forms has auto try
        tried = form_table.auto_backends("torch")
        backend = next((name for name in tried if name != "torch-cuda" or torch.cuda.is_available()), tried[-1])
    device = backend.removeprefix("torch-")
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("torch-cuda: this PyTorch sees no CUDA GPU")
    model, card = load_model(run_dir)
    if size is not None:
        card = card.replace(input_size=size)
    return TorchBackend(model, card, device=device)


def takes_any_size(backend) -> bool:
    """True for an onnxruntime session whose input height and width are free (a dynamic-shape export)."""
    session = getattr(backend, "session", None)
    if session is None:
        return False
    height, width = session.get_inputs()[0].shape[2:]
    return not (isinstance(height, int) and isinstance(width, int))


# --- finding the forms in folders ------------------------------------------------------------------


@dataclass(frozen=True)
class Form:
    """One model form: a run directory ("torch"), an ONNX ("onnx") or a TensorRT engine ("engine")."""

    label: str
    path: Path
    kind: str
    form: str | None = None  # its row in the table of forms (edgeseg.core.forms); None for a file of another name


def forms_in_directory(directory: Path) -> list[Form]:
    """PyTorch for a run directory, and every ONNX and engine file in it (`edgeseg export` writes there).

    Each kind in the table of forms' order (the forms `edgeseg export` writes, in build order), then the other
    files of that kind by name; a file is labelled by its name, a run directory "pytorch".
    """
    run = form_table.forms_of_kind("torch")[0]
    forms = [Form(run.name, directory, "torch", run.name)] if is_run_dir(directory) else []
    onnx_files = [path for path in directory.glob("*.onnx") if path.is_file()]
    engines = [path for path in directory.iterdir() if is_engine(path) and path.is_file()]
    return forms + files_in_table_order(onnx_files, "onnx") + files_in_table_order(engines, "engine")


def files_in_table_order(paths: list[Path], kind: str) -> list[Form]:
    """The files of one kind as forms, in the table's order; files the table does not name after them, by name."""
    rows = form_table.forms_of_kind(kind)
    found = []
    for path in paths:
        rank = next((index for index, row in enumerate(rows) if row.matches(path.name)), len(rows))
        found.append((rank, path.name, Form(path.name, path, kind, rows[rank].name if rank < len(rows) else None)))
    return [form for _, _, form in sorted(found, key=lambda item: item[:2])]


def discover_forms(paths: list[Path]) -> list[Form]:
    """Expand model arguments (folders or files) into forms with unique labels; a path holding none is an error."""
    forms: list[Form] = []
    for path in paths:
        if path.is_dir():
            found = forms_in_directory(path)
            if not found:
                raise ModelPathError(f"{path}: no model here; {NOT_A_MODEL}")
            forms += found
        elif (kind := model_kind(path)) is not None:
            row = form_table.form_of_file(path.name)
            forms.append(Form(path.name, path, kind, row.name if row else None))
        else:
            raise ModelPathError(f"{path}: not a model form; {NOT_A_MODEL}")
    return unique_labels(forms)


def unique_labels(forms: list[Form]) -> list[Form]:
    """Where two forms share a label (model.onnx of two runs), label them by their paths instead."""
    counts: dict[str, int] = {}
    for form in forms:
        counts[form.label] = counts.get(form.label, 0) + 1
    relabelled = []
    for form in forms:
        if counts[form.label] > 1:
            label = f"{form.path} (pytorch)" if form.kind == "torch" else str(form.path)
            form = replace(form, label=label)
        relabelled.append(form)
    return relabelled
