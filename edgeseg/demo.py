"""`edgeseg demo`: the whole toolchain in one command, on synthetic data or a real ISIC folder.

Each step runs the real `edgeseg` command a user would type, in a child process, so the demo shows
exactly what the tools do (and needs no second copy of their logic); the summary is assembled from
the JSON files those commands write.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import cv2
import numpy as np

from edgeseg.core.card import CARD_FILENAME
from edgeseg.core.click_types import INPUT_SIZE, old_spelling, renamed, size_text
from edgeseg.core.files import read_image, write_bytes_atomic, write_text_atomic
from edgeseg.core.names import ONNX_FILENAMES
from edgeseg.core.progress import is_quiet, note, quiet_option

VIDEO_SIZE = (640, 480)  # a typical dermatoscope camera frame
MARKER = ".edgeseg-demo"  # marks a folder the demo made, so --overwrite never deletes anything else
FRAMES_PER_IMAGE = 6


@dataclass
class Step:
    name: str
    command: list[str]
    seconds: float = 0.0
    exit_code: int | None = None


@dataclass
class DemoPlan:
    out: Path
    data: Path | None
    images: int
    image_size: int
    input_size: tuple[int, int]
    time_budget_minutes: float
    epochs: int
    encoder_weights: str
    decoder_channels: str
    parity_n: int
    bench_runs: int
    steps: list[Step] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.data if self.data is not None else self.out / "data"

    @property
    def run_dir(self) -> Path:
        return self.out / "run"


def edgeseg_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "edgeseg", *arguments]


def run_step(plan: DemoPlan, name: str, command: list[str], allowed_exit_codes: tuple[int, ...] = (0,)) -> Step:
    """Run one edgeseg command with its own progress output (-q passed on); stop the demo if it fails unexpectedly."""
    if is_quiet():
        command = [*command, "-q"]
    note(click.style(f"\n== {name}: {' '.join(command[2:])}", fg="cyan"))
    step = Step(name, command)
    started = time.perf_counter()
    step.exit_code = subprocess.run(command).returncode
    step.seconds = time.perf_counter() - started
    plan.steps.append(step)
    if step.exit_code not in allowed_exit_codes:
        raise click.ClickException(f"step '{name}' failed (exit {step.exit_code}); its output is above")
    return step


def make_video(images: list[Path], path: Path, fps: float = 12.0) -> Path:
    """A slow pan and zoom over each image, as a hand-held dermatoscope would show it."""
    width, height = VIDEO_SIZE
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise click.ClickException(f"OpenCV cannot write {path} (no mp4v encoder in this OpenCV build)")
    try:
        for image_path in images:
            image = read_image(image_path)
            for step in range(FRAMES_PER_IMAGE):
                writer.write(pan_frame(image, step / max(1, FRAMES_PER_IMAGE - 1), width, height))
    finally:
        writer.release()
    temporary.replace(path)
    return path


def pan_frame(image: np.ndarray, t: float, width: int, height: int) -> np.ndarray:
    """A crop of ``image`` with the frame's aspect, zooming in from 100% to 85% as t goes 0 -> 1."""
    image_height, image_width = image.shape[:2]
    crop_width = min(image_width, image_height * width / height) * (1.0 - 0.15 * t)
    crop_height = crop_width * height / width
    x = (image_width - crop_width) * (0.5 + 0.2 * (t - 0.5))
    y = (image_height - crop_height) / 2
    crop = image[int(y) : int(y + crop_height), int(x) : int(x + crop_width)]
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)


def overlay_strip(video: Path, count: int = 4, tile_width: int = 320) -> np.ndarray | None:
    """A row of frames taken evenly from the overlay video."""
    capture = cv2.VideoCapture(str(video))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    for index in np.linspace(0, max(0, total - 1), count).astype(int):
        capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
        ok, frame = capture.read()
        if ok:
            tile_height = round(frame.shape[0] * tile_width / frame.shape[1])
            frames.append(cv2.resize(frame, (tile_width, tile_height), interpolation=cv2.INTER_AREA))
    capture.release()
    return np.hstack(frames) if frames else None


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def val_images(data_dir: Path, limit: int) -> list[Path]:
    from edgeseg.core.data import discover_samples

    samples = discover_samples(data_dir, split="val")
    return [sample.image for sample in samples[:limit]]


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _p50(timing: dict) -> float | None:
    return (((timing.get("stages") or {}).get("end_to_end")) or {}).get("p50_ms")


FORMS_TABLE_HEADER = (
    "| form | status | gate | mean mask IoU vs PyTorch | max abs dp | Dice | size MiB | bench p50 ms | FPS |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)
TERMINAL_HEADER = f"{'form':<16}{'status':<10}{'gate':<7}{'Dice':>7}{'p50 ms':>9}{'FPS':>7}"
ACCURACY_METRICS = ("dice", "jaccard", "threshold_jaccard", "sensitivity", "specificity", "accuracy")
CLOSING_NOTE = """Measurements are descriptive, not a diagnosis. Synthetic data show the toolchain working; they say
nothing about accuracy on real dermoscopy."""


@dataclass(frozen=True)
class FormRow:
    """One form's line in the forms table, every figure already formatted."""

    name: str  # in the terminal table
    label: str  # in the summary page
    status: str
    gate: str
    mean_mask_iou: str
    max_abs_dp: str
    dice: str
    size_mib: str
    p50_ms: str
    fps: str


def summary_tables(plan: DemoPlan) -> tuple[str, str]:
    """The summary page (markdown) and the short terminal table, from the steps' JSON outputs."""
    evaluation = read_json(plan.out / "eval.json")
    export = read_json(plan.run_dir / "export-report.json")
    bench = read_json(plan.out / "bench.json")
    frames = read_jsonl(plan.out / "frames.jsonl")
    card = read_json(plan.run_dir / CARD_FILENAME)
    rows = form_rows(export, bench)
    sections = [
        page_heading(plan, card),
        accuracy_section(evaluation),
        forms_section(export, bench, rows),
        runtime_section(frames),
        curves_section(plan.run_dir / "plots"),
        steps_section(plan.steps),
        CLOSING_NOTE,
    ]
    return "\n\n".join(sections) + "\n", terminal_table(rows)


def measured_timings(bench: dict) -> dict[str, dict]:
    """`edgeseg bench` results that were measured, by form."""
    return {row["form"]: row for row in bench.get("results", []) if row.get("status") == "ok"}


def form_rows(export: dict, bench: dict) -> list[FormRow]:
    """The PyTorch reference, then each exported form in the export report's order."""
    timings = measured_timings(bench)
    return [reference_row(export, timings), *(exported_form_row(form, timings) for form in export.get("forms", []))]


def reference_row(export: dict, timings: dict[str, dict]) -> FormRow:
    timing = timings.get("pytorch", {})
    dice = ((export.get("reference") or {}).get("accuracy") or {}).get("dice")  # on the parity images
    return FormRow(
        name="pytorch",
        label="PyTorch (reference)",
        status="trained",
        gate="-",
        mean_mask_iou="-",
        max_abs_dp="-",
        dice=fmt(dice),
        size_mib="-",
        p50_ms=fmt(_p50(timing), 1),
        fps=fmt(timing.get("fps"), 1),
    )


def exported_form_row(form: dict, timings: dict[str, dict]) -> FormRow:
    parity = form.get("parity") or {}
    accuracy = form.get("accuracy") or {}
    timing = timings.get(Path(form.get("path") or "").name, {})  # bench names forms by file name
    size = form.get("size_bytes")
    return FormRow(
        name=form["name"],
        label=form["name"],
        status=form["status"],
        gate={True: "pass", False: "FAIL", None: "-"}[form.get("passed")],
        mean_mask_iou=fmt(parity.get("mean_mask_iou"), 4),
        max_abs_dp=fmt(parity.get("max_abs_probability"), 6),
        dice=fmt(accuracy.get("dice")),
        size_mib=fmt(size / 2**20 if size else None, 1),
        p50_ms=fmt(_p50(timing), 1),
        fps=fmt(timing.get("fps"), 1),
    )


def terminal_table(rows: list[FormRow]) -> str:
    lines = [TERMINAL_HEADER]
    for row in rows:
        lines.append(f"{row.name:<16}{row.status:<10}{row.gate:<7}{row.dice:>7}{row.p50_ms:>9}{row.fps:>7}")
    return "\n".join(lines)


def markdown_row(cells: list) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def page_heading(plan: DemoPlan, card: dict) -> str:
    data_kind = "synthetic dermoscopy-like images" if plan.data is None else "your data"
    threshold = (card.get("output") or {}).get("threshold")
    return f"""# edgeseg demo

Data: `{plan.data_dir}` ({data_kind});
model: FPN `{card.get("encoder", "?")}` at {fmt(card.get("input_size"))}, threshold {fmt(threshold)}
(chosen by the threshold analysis on the validation split)."""


def accuracy_section(evaluation: dict) -> str:
    mean = evaluation.get("mean", {})
    values = [
        evaluation.get("split", "-"),
        evaluation.get("images", "-"),
        *(fmt(mean.get(metric)) for metric in ACCURACY_METRICS),
    ]
    return f"""## Validation accuracy (ISIC metrics, per image at original resolution, mean over images)

| split | images | Dice | Jaccard (IoU) | thresholded Jaccard | sensitivity | specificity | accuracy |
| --- | --- | --- | --- | --- | --- | --- | --- |
{markdown_row(values)}"""


def forms_section(export: dict, bench: dict, rows: list[FormRow]) -> str:
    parity_images = len((export.get("parity_images") or {}).get("ids", []))
    table = "\n".join(
        markdown_row(
            [
                row.label,
                row.status,
                row.gate,
                row.mean_mask_iou,
                row.max_abs_dp,
                row.dice,
                row.size_mib,
                row.p50_ms,
                row.fps,
            ]
        )
        for row in rows
    )
    return f"""## Exported forms: parity with PyTorch, and latency on this host

Dice here is on the {parity_images} parity images (the table above: every val image).

{FORMS_TABLE_HEADER}
{table}

Latency: `edgeseg bench`, {bench.get("runs", "-")} interleaved runs after warm-up, end to end
(preprocess + inference + postprocess) on a 640x480 frame. Details: `bench.md`, `run/export-report.md`."""


def runtime_section(frames: list[dict]) -> str:
    lesion_frames = sum(1 for frame in frames if frame.get("lesion_present"))
    return f"""## Live runtime over a video

`edgeseg run` processed {len(frames)} frames of `video.mp4` ({lesion_frames} with a lesion) and wrote
`overlay.mp4` and `frames.jsonl`.

![overlay frames](overlay-strip.png)"""


def curves_section(plots_dir: Path) -> str:
    plots = sorted(plots_dir.glob("*.png"))
    links = "\n".join(f"![{plot.stem}](run/plots/{plot.name})" for plot in plots)
    return f"## Training curves and threshold analysis\n\n{links}"


def steps_section(steps: list[Step]) -> str:
    rows = "\n".join(
        markdown_row([step.name, f"`{' '.join(step.command[2:])}`", f"{step.seconds:.0f} s", step.exit_code])
        for step in steps
    )
    return f"""## Steps

| step | command | time | exit |
| --- | --- | --- | --- |
{rows}"""


EXAMPLE = """\b
Examples:
  edgeseg demo                                        synthetic data; a few minutes on a laptop CPU
  edgeseg demo --out demo-out --time-budget 5
  edgeseg demo --data data/isic2018 --time-budget 30
"""


@click.command("demo", epilog=EXAMPLE)
@click.option(
    "-d",
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A real ISIC-layout folder with splits (default: generate synthetic data).",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-out"),
    show_default=True,
    help="Folder for everything the demo makes.",
)
@click.option(
    "--time-budget",
    "time_budget_minutes",
    type=click.FloatRange(min=0.05),
    default=4.0,
    show_default=True,
    help="Minutes of training (as `edgeseg train --time-budget`).",
)
@old_spelling(
    "--train-minutes",
    "--train-minutes of `demo` is now spelled --time-budget (minutes, as in `edgeseg train`)",
    type=click.FloatRange(min=0.05),
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Most epochs training may run inside the time budget.",
)
@click.option(
    "-n",
    "--images",
    type=click.IntRange(min=8),
    default=160,
    show_default=True,
    help="Synthetic images to generate (without --data).",
)
@click.option(
    "--image-size",
    type=click.IntRange(min=32),
    default=256,
    show_default=True,
    help="Side of the synthetic images in px.",
)
@click.option(
    "--size",
    "input_size",
    type=INPUT_SIZE,
    default="160",
    show_default=True,
    help="Network input size: 160 or HEIGHTxWIDTH, each a multiple of 32.",
)
@click.option("--encoder-weights", default="imagenet", show_default=True, help="imagenet, none, or a PATH.")
@click.option("--decoder-channels", default="128,64", show_default=True, help="FPN decoder channels.")
@click.option(
    "--parity-n", type=click.IntRange(min=1), default=16, show_default=True, help="Images for the export parity gate."
)
@click.option(
    "--bench-runs",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Timed runs per form in the benchmark.",
)
@click.option("--overwrite", is_flag=True, help="Replace an earlier demo's output in --out.")
@quiet_option
@click.pass_context
def demo_command(
    ctx: click.Context,
    data: Path | None,
    out: Path,
    time_budget_minutes: float,
    epochs: int,
    images: int,
    image_size: int,
    input_size: tuple[int, int],
    encoder_weights: str,
    decoder_channels: str,
    parity_n: int,
    bench_runs: int,
    overwrite: bool,
    old_train_minutes: float | None,
) -> None:
    """Run the whole toolchain: data, train, eval, export (parity-gated), bench, run; then a summary.

    Without --data it generates synthetic dermoscopy-like images first. Everything lands in --out:
    the run directory with its exported forms and reports, bench.md, an overlay video, and
    summary.md, a page with the key figures, curves and overlay frames.
    """
    plan = DemoPlan(
        out=out,
        data=data,
        images=images,
        image_size=image_size,
        input_size=input_size,
        time_budget_minutes=renamed(ctx, "time_budget_minutes", "old_train_minutes"),
        epochs=epochs,
        encoder_weights=encoder_weights,
        decoder_channels=decoder_channels,
        parity_n=parity_n,
        bench_runs=bench_runs,
    )
    prepare_out(plan, overwrite)
    started = time.perf_counter()
    run_steps(plan)
    strip = overlay_strip(out / "overlay.mp4")
    if strip is not None:
        ok, png = cv2.imencode(".png", strip)
        if ok:
            write_bytes_atomic(out / "overlay-strip.png", png.tobytes())
    page, terminal = summary_tables(plan)
    write_text_atomic(out / "summary.md", page)
    click.echo("\n" + terminal)
    click.echo(f"\ndemo finished in {(time.perf_counter() - started) / 60:.1f} min; summary: {out / 'summary.md'}")


def prepare_out(plan: DemoPlan, overwrite: bool) -> None:
    """The output folder, marked as the demo's; an earlier demo's replaced only with --overwrite."""
    out = plan.out
    if overwrite and (out / MARKER).is_file():
        shutil.rmtree(out)
    if plan.run_dir.exists() and any(plan.run_dir.iterdir()):
        hint = " (or --overwrite)" if (out / MARKER).is_file() else ""
        raise click.ClickException(f"{plan.run_dir} already holds a run; pick another --out{hint} or remove it")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by edgeseg demo; `edgeseg demo --overwrite` may delete this folder\n")


def run_steps(plan: DemoPlan) -> None:
    """Every step of the flow, each the edgeseg command a user would type."""
    if plan.data is None:
        run_step(plan, "synthesise data", command_for_synth(plan))
    run_step(plan, "check data", edgeseg_command("data", "check", str(plan.data_dir)))
    write_train_settings(plan)
    run_step(plan, "train", command_for_train(plan))
    run_step(plan, "evaluate", command_for_eval(plan))
    # A form that breaks its parity gate makes export exit 1: the demo reports it rather than stopping.
    run_step(plan, "export", command_for_export(plan), allowed_exit_codes=(0, 1))
    run_step(plan, "benchmark", command_for_bench(plan))
    make_video(val_images(plan.data_dir, limit=12), plan.out / "video.mp4")
    run_step(plan, "run the runtime", command_for_run(plan))


def command_for_synth(plan: DemoPlan) -> list[str]:
    sizes = ("--images", str(plan.images), "--image-size", str(plan.image_size))
    return edgeseg_command("synth", str(plan.data_dir), *sizes, "--seed", "0", "--overwrite")


def train_settings_path(plan: DemoPlan) -> Path:
    return plan.out / "train.toml"


def write_train_settings(plan: DemoPlan) -> None:
    """The demo's training settings that have no flag, as the --config file a user would write."""
    from edgeseg.train.config import toml_value  # torch-free: the run's own config.toml is written with it

    channels = [int(side) for side in plan.decoder_channels.split(",")]
    settings = {"decoder_channels": channels, "seed": 0}
    lines = [f"{key} = {toml_value(value)}" for key, value in settings.items()]
    text = "# edgeseg demo: training settings (edgeseg train --config)\n" + "\n".join(lines) + "\n"
    write_text_atomic(train_settings_path(plan), text)


def command_for_train(plan: DemoPlan) -> list[str]:
    folders = ("--data", str(plan.data_dir), "--out", str(plan.run_dir))
    budget = ("--epochs", str(plan.epochs), "--time-budget", str(plan.time_budget_minutes))
    network = ("--size", size_text(plan.input_size), "--encoder-weights", plan.encoder_weights)
    return edgeseg_command("train", *folders, *network, *budget, "--config", str(train_settings_path(plan)))


def command_for_eval(plan: DemoPlan) -> list[str]:
    report = ("--json", str(plan.out / "eval.json"))
    return edgeseg_command("eval", str(plan.run_dir), "--data", str(plan.data_dir), "--split", "val", *report)


def command_for_export(plan: DemoPlan) -> list[str]:
    samples = ("--images", str(plan.parity_n), "--calib-n", "32")
    return edgeseg_command("export", str(plan.run_dir), "--data", str(plan.data_dir), *samples)


def command_for_bench(plan: DemoPlan) -> list[str]:
    runs = ("--runs", str(plan.bench_runs), "--warmup", "5")
    reports = ("--json", str(plan.out / "bench.json"), "--md", str(plan.out / "bench.md"))
    return edgeseg_command("bench", str(plan.run_dir), *runs, *reports)


def command_for_run(plan: DemoPlan) -> list[str]:
    source = ("--source", str(plan.out / "video.mp4"), "--no-show")
    outputs = ("--save", str(plan.out / "overlay.mp4"), "--jsonl", str(plan.out / "frames.jsonl"))
    return edgeseg_command("run", str(plan.run_dir / ONNX_FILENAMES["onnx"]), *source, *outputs)
