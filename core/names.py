"""The names every part agrees on: model files, forms, backends, image files. Each is defined here once.

Train writes these files, export writes and reads them, the runtime and the evaluation layer open
them; a name that two of them must agree on lives here and nowhere else. The names of the forms' files
and of the backends are read from the table of forms (edgeseg.core.forms).
"""

from __future__ import annotations

import os
from pathlib import Path

from edgeseg.core import forms
from edgeseg.core.card import CARD_FILENAME
from edgeseg.core.errors import EdgesegError
from edgeseg.core.forms import WEIGHTS_FILENAME  # re-exported: the table of forms names the run's weights

# The ONNX forms `edgeseg export` writes, by form name, in the order they are built and listed
# (edgeseg.core.forms.FORMS says what each is).
ONNX_FILENAMES = {row.name: row.file for row in forms.forms_of_kind("onnx")}

# Where an edgeseg ONNX carries its model card: a key of the model's metadata_props.
CARD_METADATA_KEY = "edgeseg_card"

# An fp32 ONNX whose weights are stored as float16, each cast back to float32 in the graph (`edgeseg
# export --half-weights`, edgeseg.export.half_weights) says so under this metadata key: its arithmetic is fp32.
WEIGHTS_STORAGE_KEY = "edgeseg_weights_storage"
WEIGHTS_STORED_FLOAT16 = "float16, cast to float32"

# TensorRT engine files (serialized plans); each has a JSON sidecar beside it.
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")

# What edgeseg writes for a segmented image NAME (`edgeseg run` on photos and --save-masks, Segmentation.save):
# its overlay, and its mask (0/255 at the image's size) in ISIC's naming, ISIC_0000000_segmentation.png.
OVERLAY_SUFFIX = "_overlay.jpg"
MASK_SUFFIX = "_segmentation.png"

# Images edgeseg reads, as data (with masks) or as frames to segment. Masks are always PNG.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Which backends can run which kind of model: a run directory ("torch"), an ONNX, an engine; as people read
# them, "auto" (the fastest this host can run) first, then from the one that runs anywhere to the fastest.
BACKENDS_FOR_KIND = {kind.name: forms.listed_backends(kind.name) for kind in forms.KINDS}

# Backends, one set of names for every command: the runtime's (no PyTorch), then PyTorch's.
RUNTIME_BACKENDS = forms.runtime_backends()
TORCH_BACKENDS = forms.torch_backends()
BACKENDS = forms.backend_names()


# Training losses (edgeseg.train.losses builds them; the CLI lists them without importing torch).
LOSSES = ("dice", "dice+bce", "lovasz")

# The model that ships with edgeseg: models/default/ in the source tree, package data of edgeseg.models
# once installed. `run`, `eval`, `bench` and `export` use it when no model is named.
DEFAULT_MODEL_PACKAGE = "edgeseg.models"
DEFAULT_MODEL_FILE = "default/" + ONNX_FILENAMES["onnx"]


# Real ISIC 2018 images with their masks that ship with edgeseg (models/reference/, package data of
# edgeseg.models): `edgeseg export` checks parity on its val split and calibrates INT8 on its train split
# when no data folder is named.
REFERENCE_SET_DIR = "reference"
REFERENCE_SET_NAME = "edgeseg's reference set"


class DefaultModelMissing(EdgesegError, FileNotFoundError):
    """This installation lacks the default model (a source checkout without models/, or a trimmed install)."""


def shipped_path(relative: str) -> Path | None:
    """Where a file or folder of edgeseg.models' package data is installed; None where the package is missing."""
    from importlib.resources import files

    try:
        return Path(str(files(DEFAULT_MODEL_PACKAGE) / relative))
    except ModuleNotFoundError:
        return None


def default_model_path() -> Path:
    """Where the default model is installed; DefaultModelMissing (with the fix) when it is not."""
    path = shipped_path(DEFAULT_MODEL_FILE)
    if path is None or not path.is_file():
        raise DefaultModelMissing(
            "edgeseg's default model is not installed here (reinstall edgeseg: pip install --force-reinstall edgeseg); "
            "or name a model: an ONNX or engine from `edgeseg export`, or a run directory from `edgeseg train`"
        )
    return path


def reference_set_path() -> Path:
    """Where the reference set is installed; DefaultModelMissing (with the fix) when it is not."""
    path = shipped_path(REFERENCE_SET_DIR)
    if path is None or not (path / "splits" / "val.txt").is_file():
        raise DefaultModelMissing(
            f"{REFERENCE_SET_NAME} is not installed here (reinstall edgeseg: pip install --force-reinstall edgeseg); "
            "or name a data folder with images and masks: --data DIR"
        )
    return path


def is_engine(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in ENGINE_SUFFIXES


def is_onnx(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def is_run_dir(path: str | os.PathLike) -> bool:
    """A training run: a folder holding the model card and the weights."""
    path = Path(path)
    return (path / CARD_FILENAME).is_file() and (path / WEIGHTS_FILENAME).is_file()


def model_kind(path: str | os.PathLike) -> str | None:
    """ "torch" for a run directory, "onnx" or "engine" for a model file, None for anything else."""
    if Path(path).is_dir():
        return "torch" if is_run_dir(path) else None
    if is_engine(path):
        return "engine"
    return "onnx" if is_onnx(path) else None
