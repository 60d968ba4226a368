"""The one table of model forms: what each form is, the file it lives in, what it is built from, what runs it.

A form is one way of holding a trained model: the run directory `edgeseg train` writes ("pytorch") or a
file `edgeseg export` builds from it. Export builds the forms in this table's order (each after the form it
is built from), `eval` and `bench` find them in folders by their file names, the runtime tries the backends
of a form's kind in the order given here, and the names in edgeseg.core.names are derived from it.
Like Ultralytics' ``export_formats()``: adding a form is a row here and a builder in export (CONTRIBUTING.md).

This module imports nothing of edgeseg's: edgeseg.core.names derives its constants from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

# A run directory (from `edgeseg train`): the weights beside the model card (edgeseg.core.card.CARD_FILENAME).
WEIGHTS_FILENAME = "model.safetensors"

# The precisions a form can have. The parity gate judges a form by its precision's rules
# (edgeseg.export.parity.Tolerances: fp32 in probability, fp16 and int8 by the mask).
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ModelForm:
    """One row of the table: a form of a model, as export builds it and every command finds and opens it."""

    name: str  # what --format, the export report and the docs call it
    kind: str  # how it is opened: "torch" (a run directory), "onnx" or "engine" (a TensorRT plan)
    file: str  # its file name in an export folder; for engines a pattern (fnmatch), as the name carries the build
    precision: str  # one of PRECISIONS: the parity gate judges the form by that precision's rules
    built_from: str | None  # the form it is made from; None for the trained weights, which export does not build
    needs_gpu: bool  # building it needs an NVIDIA GPU with TensorRT
    description: str

    @property
    def exported(self) -> bool:
        """Whether `edgeseg export` builds it (everything but the trained weights)."""
        return self.built_from is not None

    def matches(self, file_name: str) -> bool:
        return fnmatchcase(file_name, self.file)


# In build order: each form after the one it is built from.
FORMS = (
    ModelForm(
        "pytorch",
        "torch",
        WEIGHTS_FILENAME,
        "fp32",
        None,
        False,
        "the training run: weights and card.json, run on PyTorch; every other form is checked against it",
    ),
    ModelForm("onnx", "onnx", "model.onnx", "fp32", "pytorch", False, "ONNX fp32: every other form starts from it"),
    ModelForm(
        "fp16",
        "onnx",
        "model.fp16.onnx",
        "fp16",
        "onnx",
        False,
        "ONNX FP16 with float32 input and output; the FP16 engine's source on TensorRT 10.12+",
    ),
    ModelForm(
        "int8",
        "onnx",
        "model.int8.onnx",
        "int8",
        "onnx",
        False,
        "ONNX INT8 for the CPU: static QDQ, U8 activations, int32 biases (fast on onnxruntime's CPU provider)",
    ),
    ModelForm(
        "int8-trt",
        "onnx",
        "model.int8-trt.onnx",
        "int8",
        "onnx",
        False,
        "ONNX INT8 for TensorRT: symmetric S8S8 QDQ with float biases, the only INT8 Q/DQ its parser takes",
    ),
    ModelForm(
        "engine",
        "engine",
        "model.trt*.fp16.engine",
        "fp16",
        "fp16",
        True,
        "TensorRT FP16 engine, built strongly typed from the FP16 ONNX on TensorRT 10.12+; TensorRT 10.0-10.11 "
        "(JetPack 6) builds it from the fp32 ONNX with its FP16 flag instead (edgeseg.export.export_run decides)",
    ),
    ModelForm(
        "engine-int8",
        "engine",
        "model.trt*.int8.engine",
        "int8",
        "int8-trt",
        True,
        "TensorRT INT8 engine, built from the S8S8 INT8 ONNX on every TensorRT version",
    ),
)


@dataclass(frozen=True)
class FormKind:
    """How a kind of form is opened and the backends that run it."""

    name: str
    backends: tuple[str, ...]  # every backend that runs it, fastest first
    needs_torch: bool  # opened through PyTorch (edgeseg.train), not the torch-free runtime
    auto: tuple[str, ...] | None = None  # what backend "auto" tries, in order; None: every backend, fastest first


# In the order the command line lists their backends (edgeseg.core.names.BACKENDS).
KINDS = (
    FormKind("onnx", ("onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu"), needs_torch=False),
    FormKind("engine", ("tensorrt",), needs_torch=False),
    # "auto" runs a run directory on PyTorch's CPU (edgeseg.loading.open.open_torch); on the GPU when torch-cuda is
    # asked for.
    FormKind("torch", ("torch-cuda", "torch-cpu"), needs_torch=True, auto=("torch-cpu",)),
)


class UnknownForm(LookupError):
    """A form or kind name the table does not hold (a bug in the caller: user input is checked before)."""


def form(name: str) -> ModelForm:
    """The table's row for the form ``name``."""
    for row in FORMS:
        if row.name == name:
            return row
    raise UnknownForm(f"unknown model form {name!r}; the forms are {', '.join(row.name for row in FORMS)}")


def exported_names() -> tuple[str, ...]:
    """The forms `edgeseg export` builds, in build order."""
    return tuple(row.name for row in FORMS if row.exported)


def source_of(name: str) -> str:
    """The form ``name`` is built from; UnknownForm for the trained weights, which are built from none."""
    source = form(name).built_from
    if source is None:
        raise UnknownForm(f"{name!r} is not built from another form: it is what export starts from")
    return source


def build_order(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` with every form they are built from, directly or not, in the table's (build) order."""
    needed: set[str] = set()
    for name in names:
        step: str | None = name
        while step is not None and step not in needed:
            needed.add(step)
            step = form(step).built_from
    return tuple(row.name for row in FORMS if row.name in needed)


def forms_of_kind(kind: str) -> tuple[ModelForm, ...]:
    return tuple(row for row in FORMS if row.kind == kind)


def form_of_file(file_name: str) -> ModelForm | None:
    """The form a file of this name is (e.g. "model.fp16.onnx" -> fp16); None for a name export does not write."""
    return next((row for row in FORMS if row.matches(file_name)), None)


def form_kind(name: str) -> FormKind:
    for row in KINDS:
        if row.name == name:
            return row
    raise UnknownForm(f"unknown kind of model form {name!r}; the kinds are {', '.join(row.name for row in KINDS)}")


def backends_for(kind_name: str) -> tuple[str, ...]:
    """The backends that run a form of this kind, fastest first."""
    return form_kind(kind_name).backends


def auto_backends(kind_name: str) -> tuple[str, ...]:
    """What backend "auto" tries for a form of this kind, in order."""
    row = form_kind(kind_name)
    return row.auto or row.backends


def runtime_backends() -> tuple[str, ...]:
    """The torch-free runtime's backends as people read them (--help, messages): kind by kind, each kind's from the
    one that runs anywhere to the fastest. Read from KINDS when called, so a backend added to it is in it at once."""
    return tuple(name for kind in KINDS if not kind.needs_torch for name in reversed(kind.backends))


def torch_backends() -> tuple[str, ...]:
    """PyTorch's backends, in the same order."""
    return tuple(name for kind in KINDS if kind.needs_torch for name in reversed(kind.backends))


def backend_names() -> tuple[str, ...]:
    """Every backend name a command takes: "auto", the runtime's, then PyTorch's (read from KINDS when called)."""
    return ("auto", *runtime_backends(), *torch_backends())


def listed_backends(kind_name: str) -> tuple[str, ...]:
    """The backends a form of this kind takes as people read them: "auto", then from the most portable up."""
    return ("auto", *reversed(backends_for(kind_name)))
