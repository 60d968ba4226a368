"""The table of model forms (edgeseg.core.forms): its invariants, and every part reading its names from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeseg.core import forms, names
from edgeseg.core.forms import FORMS, KINDS, ModelForm
from edgeseg.export import export_run
from edgeseg.export.parity import Tolerances
from edgeseg.loading.open import forms_in_directory

ROWS = {row.name: row for row in FORMS}


def test_names_and_files_are_unique_and_each_kind_is_listed():
    assert len(ROWS) == len(FORMS)
    assert len({row.file for row in FORMS}) == len(FORMS)
    assert {row.kind for row in FORMS} == {kind.name for kind in KINDS}


def test_each_form_comes_after_the_form_it_is_built_from():
    order = [row.name for row in FORMS]
    assert [row.name for row in FORMS if row.built_from is None] == ["pytorch"]  # the trained weights, not exported
    for row in FORMS:
        if row.built_from is not None:
            assert row.built_from in ROWS, row
            assert order.index(row.built_from) < order.index(row.name), row


def test_build_order_adds_every_source_and_keeps_the_table_order():
    assert forms.build_order(["engine-int8"]) == ("pytorch", "onnx", "int8-trt", "engine-int8")
    assert forms.build_order(["engine", "int8"]) == ("pytorch", "onnx", "fp16", "int8", "engine")
    for row in FORMS:
        order = forms.build_order([row.name])
        assert order[-1] == row.name
        if row.built_from is not None:
            assert order.index(row.built_from) < order.index(row.name)


def test_precisions_are_those_the_gate_has_rules_for():
    tolerances = Tolerances()
    assert tolerances.fp32_max_abs_probability > 0  # fp32 is judged in probability
    for precision in forms.PRECISIONS[1:]:
        assert tolerances.for_precision(precision), precision  # reduced precisions by their mask rules
    assert {row.precision for row in FORMS} <= set(forms.PRECISIONS)


def test_only_engines_need_a_gpu_to_build():
    assert {row.name for row in FORMS if row.needs_gpu} == {row.name for row in forms.forms_of_kind("engine")}


def test_an_unknown_form_is_named_with_the_forms_there_are():
    with pytest.raises(forms.UnknownForm, match="'tflite'; the forms are pytorch, onnx, fp16"):
        forms.form("tflite")
    with pytest.raises(forms.UnknownForm, match="the kinds are onnx, engine, torch"):
        forms.backends_for("tflite")
    assert forms.source_of("engine-int8") == "int8-trt"
    with pytest.raises(forms.UnknownForm, match="'pytorch' is not built from another form"):
        forms.source_of("pytorch")


def test_files_are_known_by_their_names():
    from edgeseg.export.tensorrt_export import Gpu, engine_filename

    orin = Gpu("Orin", 8, 7)
    for precision, name in (("fp16", "engine"), ("int8", "engine-int8")):
        assert forms.form_of_file(engine_filename("model", "10.3.0.30", orin, precision)).name == name
    assert forms.form_of_file("model.int8-trt.onnx").name == "int8-trt"
    assert forms.form_of_file("model.safetensors").name == "pytorch"
    assert forms.form_of_file("copy.onnx") is None


def test_the_names_module_derives_its_constants_from_the_table():
    assert names.ONNX_FILENAMES == {row.name: row.file for row in FORMS if row.kind == "onnx"}
    assert names.WEIGHTS_FILENAME == ROWS["pytorch"].file
    for kind in KINDS:
        assert names.BACKENDS_FOR_KIND[kind.name] == ("auto", *reversed(kind.backends))
        assert set(forms.auto_backends(kind.name)) <= set(kind.backends)
    assert set(names.TORCH_BACKENDS) == set(forms.backends_for("torch"))
    assert set(names.RUNTIME_BACKENDS) == set(forms.backends_for("onnx") + forms.backends_for("engine"))
    # The order people read in every --help and error message: pinned.
    assert names.BACKENDS == (
        "auto",
        "onnxruntime-cpu",
        "onnxruntime-cuda",
        "onnxruntime-tensorrt",
        "tensorrt",
        "torch-cpu",
        "torch-cuda",
    )


def test_auto_tries_the_table_order():
    from edgeseg.runtime.backends import RUNNERS

    assert forms.auto_backends("onnx") == ("onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")
    assert set(RUNNERS) == set(names.RUNTIME_BACKENDS)  # each runtime backend of the table opens through one
    assert forms.auto_backends("torch") == ("torch-cpu",)  # a run directory: on the GPU only when asked for


def test_export_has_a_builder_for_every_exported_form_and_none_other():
    assert set(export_run.BUILDERS) == {row.name for row in FORMS if row.exported}
    assert export_run.FORMS == forms.exported_names()
    assert export_run.gate_backend("onnx") == "onnxruntime-cpu" and export_run.gate_backend("engine") == "tensorrt"


def test_select_forms_brings_each_forms_sources():
    for row in FORMS:
        if row.exported:
            chosen, explicit = export_run.select_forms([row.name])
            assert explicit == {row.name} and chosen[-1] == row.name
            source = export_run.SOURCE_ON_EVERY_HOST.get(row.name, row.built_from)
            assert chosen == tuple(name for name in forms.build_order([source]) if name != "pytorch") + (row.name,)
    # Only TensorRT 10.12+ builds the FP16 engine from the FP16 ONNX: export builds that one there when it is needed.
    assert export_run.select_forms(["engine"])[0] == ("onnx", "engine")


def test_forms_in_a_folder_are_listed_in_build_order_each_with_its_form(tmp_path: Path):
    files = (
        "model.trt10.3.sm87-orin.int8.engine",
        "model.int8.onnx",
        "copy.onnx",
        "model.trt10.3.sm87-orin.fp16.engine",
        "model.onnx",
        "model.fp16.onnx",
        "other.engine",
    )
    for name in files:
        (tmp_path / name).write_bytes(b"")
    found = [(form.label, form.form) for form in forms_in_directory(tmp_path)]
    assert found == [
        ("model.onnx", "onnx"),
        ("model.fp16.onnx", "fp16"),
        ("model.int8.onnx", "int8"),
        ("copy.onnx", None),
        ("model.trt10.3.sm87-orin.fp16.engine", "engine"),
        ("model.trt10.3.sm87-orin.int8.engine", "engine-int8"),
        ("other.engine", None),
    ]


# --- a toy form, registered as the recipe in CONTRIBUTING.md says: a row in the table, a builder in export ----

TOY = ModelForm("toy", "onnx", "model.toy.onnx", "fp32", "onnx", False, "a test's own form")


@pytest.fixture
def toy_form(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The toy row after the table's ONNX forms; fake builders for it and the fp32 ONNX; the order they ran in."""
    rows = list(FORMS)
    rows.insert(rows.index(ROWS["int8-trt"]) + 1, TOY)
    monkeypatch.setattr(forms, "FORMS", tuple(rows))
    built: list[str] = []

    def fake_builder(step: export_run.BuildContext, name: str) -> export_run.FormResult:
        built.append(name)
        path = step.out_dir / forms.form(name).file
        path.write_bytes(b"")
        return export_run.FormResult(name, forms.form(name).precision, path=path)

    monkeypatch.setitem(export_run.BUILDERS, "onnx", fake_builder)
    monkeypatch.setitem(export_run.BUILDERS, "toy", fake_builder)
    return built


def test_a_toy_form_is_chosen_built_and_found_through_the_table(toy_form: list[str], tmp_path: Path):
    chosen, explicit = export_run.select_forms(["toy"])
    assert chosen == ("onnx", "toy") and explicit == {"toy"}
    lines: list[str] = []
    options = export_run.ExportOptions(formats=chosen, explicit=explicit)
    results, _ = export_run.build_forms(tmp_path, None, None, tmp_path, options, None, None, lines.append)
    assert toy_form == ["onnx", "toy"] and results["toy"].status == "built"
    assert lines[-1] == f"  toy: built {tmp_path / 'model.toy.onnx'}"
    assert [(form.label, form.form) for form in forms_in_directory(tmp_path)] == [
        ("model.onnx", "onnx"),
        ("model.toy.onnx", "toy"),
    ]
