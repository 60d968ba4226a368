"""`edgeseg export`, top to bottom: build every form, check each against PyTorch, time it, report.

One function per format builds its file (onnx_export, fp16_export, int8_export, tensorrt_export);
this module only decides which forms to build, runs the parity gate over all of them on the same
images, and gathers what the report shows. A form that cannot be built here is "skipped" with the
reason; one whose build raised is "failed" with the error; a built form "passed" or not by the gate.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.core import forms as form_table
from edgeseg.core.card import ModelCard
from edgeseg.core.errors import EdgesegError
from edgeseg.core.files import portable_path, remove_stale_temporaries
from edgeseg.core.install_check import quiet_onnxruntime_tools
from edgeseg.core.names import ONNX_FILENAMES, REFERENCE_SET_NAME, is_onnx
from edgeseg.core.segmenter import Segmenter
from edgeseg.export.parity import FormParity, Tolerances, run_parity
from edgeseg.loading.open import open_model

# The forms export builds, in build order. What each is, its precision (the gate's rules) and the form it is built
# from: the table of forms, edgeseg.core.forms.FORMS; how each is built: BUILDERS, below.
FORMS = form_table.exported_names()
# The FP16 engine is built from the FP16 ONNX (the table's source) on TensorRT 10.12+ only; 10.0-10.11 build it from
# the fp32 ONNX with their FP16 flag. So choosing the engine chooses only this source, found on every host;
# engine_source builds the FP16 ONNX (and the gate checks it) where this TensorRT needs it.
SOURCE_ON_EVERY_HOST = {"engine": "onnx"}
SIMULATED_FP16 = "fp16-simulated"
LATENCY_WARMUP = 2


class ExportError(EdgesegError, RuntimeError):
    """A problem with the run, the data or the host that stops the export; the message gives the fix."""


@dataclass(frozen=True)
class ExportOptions:
    formats: tuple[str, ...] = FORMS  # "onnx" is always built: every other form starts from it
    explicit: frozenset[str] = frozenset()  # forms asked for by name: not building them is an error
    dynamic: bool = False
    half_weights: bool = False  # the fp32 ONNX's weights stored as float16 (edgeseg.export.half_weights)
    parity_data: Path | None = None
    parity_n: int | None = None  # None: every image of the split
    calib: Path | None = None
    calib_n: int = 64
    tolerances: Tolerances = Tolerances()
    workspace_mib: int = 1024
    keep_norm_fp32: bool = False
    simulate_fp16: int = 0  # images for the PyTorch-float16-on-CPU simulation; 0 = off
    latency_runs: int = 10
    progress: bool = True


@dataclass
class FormResult:
    name: str
    precision: str
    path: Path | None = None
    status: str = "built"  # built | skipped | failed
    reason: str = ""
    parity: FormParity | None = None
    latency_ms: float | None = None
    notes: list[str] = field(default_factory=list)
    simulation: bool = False

    @property
    def passed(self) -> bool | None:
        """The gate's verdict: None when the form was skipped (nothing to judge)."""
        if self.status == "skipped":
            return None
        return self.status == "built" and self.parity is not None and self.parity.passed


@dataclass
class ExportReport:
    run_dir: Path
    out_dir: Path
    card: ModelCard
    forms: list[FormResult]
    tolerances: Tolerances
    parity_images: dict
    calibration: dict
    reference: dict
    host: dict

    def failures(self) -> list[str]:
        """Why the export did not pass: build failures and parity breaches (simulations are advisory)."""
        messages = []
        for form in self.forms:
            if form.simulation:
                continue
            if form.status == "failed":
                messages.append(f"{form.name}: build failed: {form.reason}")
            elif form.status == "built" and form.parity is not None:
                messages.extend(form.parity.breaches)
        return messages

    def unjudged(self) -> list[str]:
        """Rules on a mean that a built form was not judged by (too few parity images), each with why."""
        return [
            text
            for form in self.forms
            if form.status == "built" and form.parity and not form.simulation
            for text in form.parity.unjudged
        ]

    @property
    def passed(self) -> bool:
        return not self.failures()


def select_forms(
    formats: Sequence[str] = (), fp16: bool = False, int8: bool = False
) -> tuple[tuple[str, ...], frozenset[str]]:
    """The forms to build and those asked for explicitly, from --format, --fp16 and --int8.

    With none of them: every form (engines, and the INT8 form made for TensorRT unless asked for by
    name, are skipped on a host that cannot build engines). --fp16 adds every FP16 form (the FP16 ONNX and,
    where TensorRT is present, the FP16 engine); --int8 likewise for INT8. Each chosen form comes with the forms
    it is built from (the INT8 engine with its S8S8 ONNX), in build order.
    """
    exported = form_table.exported_names()
    unknown = [name for name in formats if name not in exported]
    if unknown:
        raise ExportError(f"unknown format(s) {unknown}; choose from {', '.join(exported)}")
    if not formats and not fp16 and not int8:
        return exported, frozenset()
    flagged = {precision for precision, asked in (("fp16", fp16), ("int8", int8)) if asked}
    chosen = {*formats, "onnx", *(row.name for row in form_table.FORMS if row.exported and row.precision in flagged)}
    return exported_order(chosen), frozenset(formats)


def exported_order(names: Collection[str]) -> tuple[str, ...]:
    """``names`` and the forms they are built from on every host (SOURCE_ON_EVERY_HOST), in build order; without
    the trained weights export starts from."""
    needed = {*names, *form_table.build_order(SOURCE_ON_EVERY_HOST.get(name, name) for name in names)}
    return tuple(row.name for row in form_table.FORMS if row.name in needed and row.exported)


def export_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    options: ExportOptions = ExportOptions(),
    echo: Callable[[str], None] = print,
) -> ExportReport:
    """Export a training run to the chosen forms, check each against PyTorch, and return the report.

    ``run_dir`` may also be an edgeseg ``model.onnx``: the other forms are then built from it and
    checked against it on onnxruntime's CPU provider, with no PyTorch needed (how engines are built
    on a Jetson, from the ONNX that was gated against PyTorch where it was exported).
    """
    from edgeseg.export.tensorrt_export import engine_unavailable_reason

    source = Path(run_dir)
    run_dir = source.parent if is_onnx(source) else source
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    engine_reason = engine_unavailable_reason()
    check_request(source, options, engine_reason)
    remove_stale_temporaries(out_dir)  # what a killed export left half-written
    model, card = load_reference(source)
    parity_data, calibration_data = data_sources(options.parity_data, options.calib)
    samples, parity_source = parity_samples(parity_data, options.parity_n)

    echo(f"exporting {run_dir} -> {out_dir}")
    if parity_data.reference_set:
        echo(
            f"  parity and INT8 calibration on {REFERENCE_SET_NAME} ({len(samples)} ISIC images for parity): a small "
            f"set; --data DIR checks on your own data"
        )
    results, calibration = build_forms(source, model, card, out_dir, options, calibration_data, engine_reason, echo)
    built = [form for form in results.values() if form.status == "built"]
    reference_row = check_parity(source, built, samples, options, echo)
    reference_row["name"] = f"onnxruntime-fp32 ({source.name})" if is_onnx(source) else "pytorch-fp32"
    retry_with_fp32_norms(source, card, results, samples, fp32_onnx_path(results), out_dir, options, echo)
    forms = [results[name] for name in form_table.exported_names() if name in results]
    if options.simulate_fp16:
        forms.append(simulate_fp16(model, card, samples[: options.simulate_fp16], options, echo))
    return ExportReport(
        run_dir=run_dir,
        out_dir=out_dir,
        card=card,
        forms=forms,
        tolerances=options.tolerances,
        parity_images=parity_source,
        calibration=calibration,
        reference=reference_row,
        host=report_host(engine_reason),
    )


def check_request(source: Path, options: ExportOptions, engine_reason: str | None) -> None:
    """Refuse, before any work, what this source or host cannot give."""
    if source.is_file() and not is_onnx(source):
        raise ExportError(f"{source}: pass a run directory (from `edgeseg train`) or an edgeseg model.onnx")
    asked_engines = sorted(name for name in options.explicit if form_table.form(name).needs_gpu)
    if engine_reason and asked_engines:
        raise ExportError(f"cannot build {', '.join(asked_engines)} on this host: {engine_reason}")
    if is_onnx(source) and options.simulate_fp16:
        raise ExportError(
            "simulate_fp16 (a --config file's [build] setting) runs the PyTorch model: "
            "pass the run directory, not an ONNX"
        )


@dataclass
class BuildContext:
    """What the builders share: the source and its model, where the forms go, the options, why engines cannot be
    built here (None: they can); the forms built so far, by name (each form's source among them), and the INT8
    calibration, gathered once for both INT8 forms."""

    source: Path
    model: Any
    card: ModelCard
    out_dir: Path
    options: ExportOptions
    calibration_data: DataSource
    engine_reason: str | None
    results: dict[str, FormResult] = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    images: list[Path] = field(default_factory=list)

    @property
    def onnx_path(self) -> Path:
        return fp32_onnx_path(self.results)

    def int8_images(self) -> list[Path]:
        if not self.images:
            self.images, self.calibration = calibration_images(self.calibration_data, self.options.calib_n)
        return self.images


def fp32_onnx_path(results: dict[str, FormResult]) -> Path:
    """The fp32 ONNX: built first; without it the export stops (build_onnx_form)."""
    onnx = results.get("onnx")
    if onnx is None or onnx.path is None:
        raise ExportError("the fp32 ONNX every other form starts from was not built")
    return onnx.path


def build_forms(
    source: Path,
    model,
    card: ModelCard,
    out_dir: Path,
    options: ExportOptions,
    calibration_data: DataSource,
    engine_reason: str | None,
    echo: Callable[[str], None],
) -> tuple[dict[str, FormResult], dict]:
    """Every chosen form and the forms it is built from, in build order, each by its builder; and the calibration."""
    step = BuildContext(source, model, card, out_dir, options, calibration_data, engine_reason)
    for name in exported_order(options.formats):
        result = step.results[name] = BUILDERS[name](step, name)
        echo(f"  {name}: {result.status} {result.path if result.status == 'built' else result.reason}")
    return step.results, step.calibration


def module_installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def fp16_without_onnx(options: ExportOptions, engine_reason: str | None) -> FormResult:
    """The FP16 ONNX where the `onnx` package is missing (a Jetson's JetPack has none): skipped where the FP16
    engine asked for is built without it (TensorRT < 10.12: from the fp32 ONNX with the FP16 flag), else failed."""
    fix = (
        "pip install onnx (edgeseg's GPU extras bring it; on a Jetson: pip install -c constraints/jetpack6.txt "
        "onnx sympy ml_dtypes)"
    )
    engine_from_fp32 = "engine" in options.formats and engine_reason is None and not engine_built_from_fp16_onnx()
    if engine_from_fp32 and "fp16" not in options.explicit:
        return FormResult(
            "fp16",
            "fp16",
            status="skipped",
            reason=(
                "the FP16 ONNX needs the onnx package, which is not installed here; the FP16 engine does not: this "
                f"TensorRT builds it from the fp32 ONNX with its FP16 flag. For the FP16 ONNX too: {fix}"
            ),
        )
    return FormResult("fp16", "fp16", status="failed", reason=f"the FP16 ONNX needs the onnx package: {fix}")


def build_fp32_onnx(source: Path, model, card: ModelCard, out_dir: Path, options: ExportOptions) -> FormResult:
    """The fp32 ONNX every other form starts from; given, when the source is an ONNX already."""
    if is_onnx(source):
        return FormResult(
            "onnx",
            "fp32",
            path=source,
            status="skipped",
            reason="given: the reference the other forms are checked against",
        )
    from edgeseg.export.onnx_export import export_onnx

    path = out_dir / ONNX_FILENAMES["onnx"]
    result = attempt(
        "onnx", lambda: export_onnx(model, card, path, dynamic=options.dynamic, half_weights=options.half_weights), card
    )
    if options.half_weights:
        # Rounding the weights moves probabilities by about 1e-3, beyond the fp32 rule: the mask rules of FP16 apply.
        result.precision = "fp16"
        result.notes.append(
            "weights stored as float16, cast to float32 in the graph (--half-weights): half the file, "
            "fp32 arithmetic; judged by the FP16 rules"
        )
    return result


# --- the builders: one per exported form, each (context, form name) -> its FormResult ----------------


def build_onnx_form(step: BuildContext, name: str) -> FormResult:
    """The fp32 ONNX every other form starts from: without it the export stops."""
    result = build_fp32_onnx(step.source, step.model, step.card, step.out_dir, step.options)
    if result.path is None:
        raise ExportError(f"the fp32 ONNX export failed, so no other form can be built: {result.reason}")
    return result


def build_fp16_form(step: BuildContext, name: str) -> FormResult:
    if not module_installed("onnx"):
        return fp16_without_onnx(step.options, step.engine_reason)
    keep_norm_fp32 = step.options.keep_norm_fp32
    result = attempt(name, lambda: build_fp16(step.onnx_path, step.card, step.out_dir, keep_norm_fp32), step.card)
    if keep_norm_fp32:
        result.notes.append("normalisation and Resize layers kept in FP32 (keep_norm_fp32)")
    return result


def build_int8_form(step: BuildContext, name: str) -> FormResult:
    """An INT8 ONNX ("int8" or "int8-trt", build_int8), calibrated on the images both INT8 forms share."""
    images = step.int8_images()
    result = attempt(
        name,
        lambda: build_int8(name, step.onnx_path, step.card, step.out_dir, images, step.options.progress),
        step.card,
    )
    result.notes.extend(int8_float_notes(result))
    return result


def build_int8_trt_form(step: BuildContext, name: str) -> FormResult:
    """The S8S8 INT8 ONNX; skipped where the INT8 engine it is made for cannot be built, unless asked for by name."""
    if step.engine_reason and name not in step.options.explicit:
        return FormResult(
            name,
            form_table.form(name).precision,
            status="skipped",
            reason=(
                "made for the INT8 TensorRT engine, which this host cannot build; `--format int8-trt` builds "
                "and gates it here"
            ),
        )
    return build_int8_form(step, name)


def build_engine_result(step: BuildContext, name: str) -> FormResult:
    """A TensorRT engine ("engine" or "engine-int8") from the ONNX engine_source names; skipped without TensorRT."""
    precision = form_table.form(name).precision
    if step.engine_reason:
        return FormResult(name, precision, status="skipped", reason=step.engine_reason)
    options = step.options
    try:
        source = engine_source(name, step.onnx_path, step.results, step.card, step.out_dir, options.keep_norm_fp32)
    except ExportError as error:
        return FormResult(name, precision, status="failed", reason=str(error))
    return attempt(name, lambda: build_engine_form(name, source, step.card, step.out_dir, options), step.card)


# Exported form -> its builder. Every exported row of the table of forms has one (tests/core/test_forms_table.py).
BUILDERS: dict[str, Callable[[BuildContext, str], FormResult]] = {
    "onnx": build_onnx_form,
    "fp16": build_fp16_form,
    "int8": build_int8_form,
    "int8-trt": build_int8_trt_form,
    "engine": build_engine_result,
    "engine-int8": build_engine_result,
}


def engine_source(
    name: str, onnx_path: Path, results: dict[str, FormResult], card: ModelCard, out_dir: Path, keep_norm_fp32: bool
) -> Path:
    """The ONNX an engine is built from, the form the table names: for "engine-int8" the symmetric S8S8 ONNX
    ("int8-trt", the only INT8 Q/DQ TensorRT's parser takes, on every TensorRT version); for "engine" the
    FP16 ONNX the gate checks from TensorRT 10.12 on (strongly typed), built here (and then gated as the
    "fp16" form) when it is not among ``results``; TensorRT 10.0-10.11 builds it from the fp32 ONNX instead."""
    source = form_table.source_of(name)
    if source == "fp16" and not engine_built_from_fp16_onnx():
        return onnx_path  # with its FP16 flag (weakly typed)
    if source == "fp16" and "fp16" not in results:
        results["fp16"] = attempt("fp16", lambda: build_fp16(onnx_path, card, out_dir, keep_norm_fp32), card)
        results["fp16"].notes.append(
            "built for the FP16 engine: TensorRT 10.12+ builds it strongly typed from this ONNX"
        )
    built = results.get(source)
    if built is None or built.status != "built" or built.path is None:
        reason = f": {built.reason}" if built is not None and built.reason else ""
        raise ExportError(f"the {source} form it is built from ({form_table.form(source).file}) failed{reason}")
    return built.path


def engine_built_from_fp16_onnx() -> bool:
    """Whether this host's TensorRT builds the FP16 engine strongly typed, from the FP16 ONNX."""
    from edgeseg.export.tensorrt_export import builds_strongly_typed, import_tensorrt

    return builds_strongly_typed(import_tensorrt().__version__)


# --- building -------------------------------------------------------------------------------------


def attempt(name: str, build: Callable[[], Path], card: ModelCard) -> FormResult:
    """Run one format's builder; a failure becomes a "failed" row with the error, not a crash."""
    result = FormResult(name, form_table.form(name).precision)
    try:
        with quiet_onnxruntime_tools():  # the quantizer's prints and warnings: nothing a user can act on
            result.path = Path(build())
        if result.path.suffix == ".onnx":
            check_embedded_card(result.path, card)
    except Exception as error:  # the report must show every form, whatever went wrong with one
        result.status, result.reason = "failed", f"{type(error).__name__}: {error}"
    return result


def check_embedded_card(path: Path, card: ModelCard) -> None:
    """The runtime reads the card from the file: it must be the run's card, unchanged."""
    from edgeseg.runtime.loaders import read_card

    if read_card(path) != card:
        raise RuntimeError(f"{path}: the card embedded in the model differs from the run's card")


def build_fp16(onnx_path: Path, card: ModelCard, out_dir: Path, keep_norm_fp32: bool) -> Path:
    from edgeseg.export.fp16_export import export_fp16

    return export_fp16(onnx_path, card, out_dir / ONNX_FILENAMES["fp16"], keep_norm_fp32=keep_norm_fp32)


def build_int8(name: str, onnx_path: Path, card: ModelCard, out_dir: Path, images: list[Path], progress: bool) -> Path:
    """The CPU's INT8 form ("int8": float32 where a sensitivity pass measures it matters) or the S8S8 one made for
    TensorRT ("int8-trt": float32 down to a quarter of the input), from the same calibration images."""
    from edgeseg.export.int8_export import export_int8, export_int8_tensorrt

    if name == "int8-trt":
        return export_int8_tensorrt(onnx_path, card, out_dir / ONNX_FILENAMES[name], images, progress=progress)
    return export_int8(
        onnx_path, card, out_dir / ONNX_FILENAMES[name], images, progress=progress, measure_float_blocks=True
    )


def int8_float_notes(form: FormResult) -> list[str]:
    """Which layers of a built INT8 form stayed float32 and why, as its file records it."""
    from edgeseg.export.int8_export import float_choice_note, read_float_choice

    if form.status != "built" or form.path is None:
        return []
    note = float_choice_note(read_float_choice(form.path))
    return [note] if note else []


def build_engine_form(
    name: str, source: Path, card: ModelCard, out_dir: Path, options: ExportOptions, keep_norm_fp32: bool | None = None
) -> Path:
    from edgeseg.export.tensorrt_export import build_engine

    return build_engine(
        source,
        card,
        out_dir,
        precision=form_table.form(name).precision,
        workspace_mib=options.workspace_mib,
        keep_norm_fp32=options.keep_norm_fp32 if keep_norm_fp32 is None else keep_norm_fp32,
    )


# --- data -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSource:
    """A folder of images with masks that parity or calibration reads, and how the report names it."""

    root: Path
    name: str
    option: str  # the option that names such a folder, for the messages
    reference_set: bool = False


def data_sources(parity_data: Path | None, calib: Path | None) -> tuple[DataSource, DataSource]:
    """The folders parity and INT8 calibration read: each as named; one named serves both; none, the reference set.

    Never a folder recorded in the model's card: that names the machine that trained it, not this one.
    """
    named = parity_data or calib
    if named is None:
        from edgeseg.core.names import DefaultModelMissing, reference_set_path

        try:
            root = reference_set_path()
        except DefaultModelMissing as error:
            raise ExportError(str(error)) from None
        reference = DataSource(root, REFERENCE_SET_NAME, "--data", reference_set=True)
        return reference, reference
    return (data_source(parity_data or named, "--data"), data_source(calib or named, "--calib"))


def data_source(root: Path, option: str) -> DataSource:
    if not Path(root).is_dir():
        raise ExportError(f"{root}: data folder not found; pass {option} DIR with images and masks")
    return DataSource(Path(root), portable_path(root), option)


def discover(root: Path, split: str, option: str) -> tuple[list, str]:
    """Samples of ``split`` when root/splits/<split>.txt exists, else every pair under root."""
    from edgeseg.core.data import DataError, discover_samples

    chosen = split if (root / "splits" / f"{split}.txt").is_file() else None
    try:
        samples = discover_samples(root, split=chosen)
    except DataError as error:
        raise ExportError(f"{option}: {error}") from None
    if not samples:
        raise ExportError(
            f"{root}: no image/mask pairs found{f' in split {chosen!r}' if chosen else ''}; pass {option} DIR"
        )
    return samples, chosen or "all"


def spread(items: Sequence, n: int | None) -> list:
    """n items evenly spaced over the sequence (all when n is None or not less than their number)."""
    if n is None or n >= len(items):
        return list(items)
    return [items[index * len(items) // n] for index in range(n)]


def parity_samples(data: DataSource, n: int | None) -> tuple[list, dict]:
    samples, split = discover(data.root, "val", data.option)
    chosen = spread(samples, n)
    return chosen, {
        "data": data.name,
        "reference_set": data.reference_set,
        "split": split,
        "count": len(chosen),
        "ids": [sample.id for sample in chosen],
    }


def calibration_images(data: DataSource, n: int) -> tuple[list[Path], dict]:
    samples, split = discover(data.root, "train", "--calib")
    chosen = spread(samples, n)
    return [sample.image for sample in chosen], {
        "data": data.name,
        "reference_set": data.reference_set,
        "split": split,
        "count": len(chosen),
    }


# --- checking -------------------------------------------------------------------------------------


def open_form(form: FormResult) -> Segmenter:
    """A built form as the gate runs it: on its kind's backend that runs anywhere (an engine on TensorRT, an ONNX
    on onnxruntime's CPU provider)."""
    if form.path is None:
        raise ExportError(f"the {form.name} form has no file to check: it was not built")
    return open_model(form.path, gate_backend(form_table.form(form.name).kind))


def gate_backend(kind: str) -> str:
    """The backend the gate runs a kind of form on: its slowest, the one every host that runs the kind has."""
    return form_table.backends_for(kind)[-1]


def load_reference(source: Path):
    """What every form is checked against: the run's PyTorch model, or (for an ONNX source) its path."""
    if is_onnx(source):
        from edgeseg.runtime.loaders import read_card

        return source, read_card(source)
    try:
        from edgeseg.train.network import load_model
    except ImportError as error:
        raise ExportError(
            f"exporting a run directory needs PyTorch ({error.name} is missing): pip install 'edgeseg[export]', "
            f"or pass its model.onnx to build the other forms from it without PyTorch"
        ) from None
    return load_model(source)


def open_reference(source: Path) -> Segmenter:
    """What every form is checked against: the run on PyTorch fp32, or the given ONNX on onnxruntime's CPU."""
    return open_model(source, gate_backend("onnx" if is_onnx(source) else "torch"))


def check_parity(
    source: Path, forms: list[FormResult], samples: list, options: ExportOptions, echo: Callable[[str], None]
) -> dict:
    """Parity and latency of every built form in one pass over the images; returns the reference's row."""
    with contextlib.ExitStack() as stack:
        reference = stack.enter_context(open_reference(source))
        reference_ms = latency_ms(reference, samples[0], options.latency_runs)  # before onnxruntime runs
        segmenters = {form.name: stack.enter_context(open_form(form)) for form in forms}
        echo(f"parity on {len(samples)} images: {', '.join(segmenters)} against {reference.backend.name} fp32")
        parities = run_parity(
            reference,
            {form.name: (segmenters[form.name], form.precision) for form in forms},
            samples,
            options.tolerances,
            progress=options.progress,
        )
        for form in forms:
            form.parity = parities[form.name]
            form.latency_ms = latency_ms(segmenters[form.name], samples[0], options.latency_runs)
    accuracy = next(iter(parities.values())) if parities else None
    return {
        "name": "pytorch-fp32",
        "latency_ms": reference_ms,
        "accuracy": {"dice": accuracy.reference_dice, "threshold_jaccard": accuracy.reference_threshold_jaccard}
        if accuracy
        else None,
    }


def retry_with_fp32_norms(
    source: Path,
    card: ModelCard,
    results: dict[str, FormResult],
    samples: list,
    onnx_path: Path,
    out_dir: Path,
    options: ExportOptions,
    echo: Callable[[str], None],
) -> None:
    """An FP16 form that fails parity is rebuilt once with normalisation and Resize layers in FP32.

    A strongly typed FP16 engine computes in its FP16 ONNX's types, so there the two are rebuilt together:
    the engine failing rebuilds the FP16 ONNX this way, and the engine is rebuilt from the new FP16 ONNX.
    """
    if options.keep_norm_fp32:
        return
    engine = results.get("engine")
    why = fp32_norm_retries(results, engine is not None and engine.status == "built" and engine_built_from_fp16_onnx())
    for name in ("fp16", "engine"):
        if name not in why:
            continue
        echo(f"  {name}: rebuilding with normalisation and Resize layers in FP32: {why[name]}")
        if name == "fp16":
            rebuilt = attempt(name, lambda: build_fp16(onnx_path, card, out_dir, keep_norm_fp32=True), card)
        else:
            rebuilt = attempt(
                name,
                lambda: build_engine_form(
                    "engine",
                    engine_source("engine", onnx_path, results, card, out_dir, True),
                    card,
                    out_dir,
                    options,
                    keep_norm_fp32=True,
                ),
                card,
            )
        rebuilt.notes.append(f"rebuilt with normalisation and Resize layers kept in FP32: {why[name]}")
        if rebuilt.status == "built":
            check_parity(source, [rebuilt], samples, options, echo)
        results[name] = rebuilt


def fp32_norm_retries(results: dict[str, FormResult], engine_from_fp16_onnx: bool) -> dict[str, str]:
    """Which of "fp16" and "engine" to rebuild with normalisation and Resize in FP32, and why."""
    breaches = {
        name: "; ".join(form.parity.breaches)
        for name, form in results.items()
        if name in ("fp16", "engine") and form.status == "built" and form.parity is not None and not form.parity.passed
    }
    why = {name: f"it failed parity ({text})" for name, text in breaches.items()}
    if why and engine_from_fp16_onnx:
        if "engine" in breaches:
            why.setdefault("fp16", f"the strongly typed engine built from it failed parity ({breaches['engine']})")
        why.setdefault("engine", "the FP16 ONNX it is built from (strongly typed) was rebuilt")
    return why


def simulate_fp16(
    model, card: ModelCard, samples: list, options: ExportOptions, echo: Callable[[str], None]
) -> FormResult:
    """PyTorch in float16 on the CPU: a slow simulation of the FP16 forms, labelled as such.

    Not the engine: TensorRT picks its own kernels and may keep layers in FP32. It shows the
    arithmetic risk (overflow, lost precision in GroupNorm and upsampling) where no GPU is at hand.
    """
    import copy

    from edgeseg.train.torch_backend import TorchBackend

    result = FormResult(SIMULATED_FP16, "fp16", simulation=True)
    result.notes.append("SIMULATION: PyTorch float16 on the CPU, not a TensorRT engine; advisory, not part of the gate")
    echo(f"FP16 simulation (PyTorch float16 on the CPU) on {len(samples)} images; slow")
    half_model = copy.deepcopy(model)  # TorchBackend converts the model it is given in place
    reference = Segmenter(TorchBackend(model, card, device="cpu"))
    half = Segmenter(TorchBackend(half_model, card, precision="fp16"))
    with reference, half:
        result.parity = run_parity(
            reference,
            {SIMULATED_FP16: (half, "fp16")},
            samples,
            options.tolerances,
            progress=options.progress,
            simulation=(SIMULATED_FP16,),
        )[SIMULATED_FP16]
        result.latency_ms = latency_ms(half, samples[0], runs=1)
    return result


def latency_ms(segmenter: Segmenter, sample, runs: int) -> float:
    """Median milliseconds of the inference stage on one image (a quick figure, not a benchmark)."""
    from edgeseg.core.files import read_image

    segmenter.refine = False  # the network's own time, whatever the image
    prepared = segmenter.prepare(read_image(sample.image))
    for _ in range(LATENCY_WARMUP if runs > 1 else 0):
        segmenter.infer(prepared)
    return statistics.median(segmenter.infer(prepared).timings_ms["inference"] for _ in range(max(1, runs)))


def report_host(engine_reason: str | None) -> dict:
    """What this report's figures were measured on (edgeseg.core.host), and whether engines could be built here."""
    from edgeseg.core.host import host_info

    info = host_info()
    info["engines"] = engine_reason or "buildable"
    if engine_reason is None:
        from edgeseg.export.tensorrt_export import gpu_properties

        gpu = gpu_properties()
        info["engine_gpu"] = {"name": gpu.name, "compute_capability": gpu.compute_capability}
    return info
