"""`edgeseg run`: lesion segmentation of photos (results per image), or live from a camera, a video or a stream.

Only click and core modules are imported at the top: `edgeseg --help` imports this module to list
the command, and the runtime parts load when the command runs.
"""

from __future__ import annotations

import logging
import os
import signal
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from edgeseg.core.click_types import RUNTIME_BACKEND_CHOICE, overwrite_option
from edgeseg.core.names import ENGINE_SUFFIXES
from edgeseg.core.progress import is_quiet, note, quiet_option
from edgeseg.core.segmenter import REFINE_DEFAULT, TTA_DEFAULT, TTA_MODES, Backend, Segmenter

if TYPE_CHECKING:  # the runtime parts load when the command runs
    from edgeseg.runtime.photos import PhotoOutputs
    from edgeseg.runtime.sources import Source

HELP = """Segment skin lesions in photos, or live from a camera, a video or a stream, with a torch-free runtime.

MODEL is an edgeseg ONNX (model.onnx, or its fp16/int8 forms) or a TensorRT engine with its
sidecar JSON, made by `edgeseg export`; without one, edgeseg's default model (it ships with edgeseg).
Input size, preprocessing and threshold come from the model's card.

Photos: IMAGES (or --source) are image files, folders (with their subfolders) or globs
('photos/**/*.jpg'). Each image gets a line of figures on stdout, and NAME_overlay.jpg and
NAME_segmentation.png (0/255 mask, ISIC naming) in a results folder with results.csv (a row per image):
edgeseg-results/run1, run2, ... (a new one each run) or the folder --save names; --save IMAGE.png
takes a single photo's overlay. NAME keeps the subfolders, so equal names never clash. No window
unless --show. Unreadable images are skipped with a line each. With --save-masks or --jsonl alone,
only those are written.

A camera or video shows its overlay in a window where a display exists (`q` quits, `s` saves a
snapshot); --serve shows it in any browser (a device without a screen: the clinician's tablet or
laptop), with the lesion figures updating live and a snapshot button; --save (a video that plays in a
browser), --save-masks and --jsonl record it. Ctrl-C (or SIGTERM, as systemd and docker stop a
service) stops cleanly and closes every output.

Live sources (camera, URL, GStreamer pipeline) always process the newest frame, so latency does not
build up; skipped frames are counted as dropped. Files are processed frame by frame.

The measurements (area, bounding box, perimeter, maximum diameter; in mm with --mm-per-px) are
descriptive, for documentation and follow-up. They are not a diagnosis and must not be read as one.

\b
Examples:
  edgeseg run photos/                             # results in edgeseg-results/runN: overlays, masks, results.csv
  edgeseg run ISIC_0012345.jpg -o overlay.png     # one photo's overlay
  edgeseg run model.onnx 'photos/**/*.jpg' -o results/ --mm-per-px 0.02
  edgeseg run --camera 0                          # the default model that ships with edgeseg
  edgeseg run model.onnx --camera 0
  edgeseg run model.onnx -c 0 --width 1280 --height 720 --fps 30 --mm-per-px 0.02
  edgeseg run -c 0 --no-show --serve 8080              # watch at http://localhost:8080/
  edgeseg run -c 0 --no-show --serve 0.0.0.0:8080      # from a tablet: open the URL (with its token) it prints
  edgeseg run -s /dev/video0                           # a V4L2 camera by path (also /dev/v4l/by-id/...)
  edgeseg run -s csi://0 --width 1280 --height 720 --fps 60   # Jetson CSI camera (JetPack's OpenCV, GStreamer)
  edgeseg run model.onnx -s clinic.mp4 --no-show -o overlay.mp4 --jsonl frames.jsonl
  edgeseg run model.fp16.engine -s rtsp://192.168.1.20:8554/scope
  edgeseg run model.onnx --source 'nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1'
"""  # noqa: E501 - the GStreamer example is one shell line, to copy as it is

MODEL_SUFFIXES = (".onnx", *ENGINE_SUFFIXES)
SAVE_HELP = (
    "Where the overlay goes. Photos: a folder (no suffix, or one that exists) for the results [default: "
    "edgeseg-results/runN], or an image (.png, .jpg) for a single photo's overlay. A camera or video: "
    ".mp4 (H.264) or .webm (VP9), both play in browsers; mp4v where PyAV lacks an H.264 encoder."
)


@dataclass
class Outputs:
    """What a run writes, decided before anything opens."""

    video: Path | None = None  # --save VIDEO
    photos: PhotoOutputs | None = None  # photos: the line per image, and their results
    numbered: bool = False  # the results folder is the next edgeseg-results/runN, made once the model has opened


@click.command("run", help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("inputs", nargs=-1, metavar="[MODEL] [IMAGES]...")
@click.option("-c", "--camera", type=int, help="Camera index (OpenCV; /dev/videoN on Linux is N).")
@click.option(
    "-s",
    "--source",
    help="A video, image, folder or glob of images; a camera (N, /dev/videoN, csi://N); an "
    "RTSP/HTTP URL; or a GStreamer pipeline.",
)
@click.option(
    "-b",
    "--backend",
    type=RUNTIME_BACKEND_CHOICE,
    default="auto",
    show_default=True,
    help="auto picks the fastest this host can run: a TensorRT engine, else onnxruntime with TensorRT, CUDA, then CPU.",
)
@click.option(
    "--show/--no-show",
    default=None,
    help="Show the overlay in a window [default: for a camera or video, when a display exists; never for photos].",
)
@click.option("-o", "--save", type=click.Path(path_type=Path), help=SAVE_HELP)
@click.option(
    "--save-masks",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write each frame's mask here: 0/255 PNG at the original size, named NAME_segmentation.png (ISIC naming).",
)
@click.option(
    "--jsonl",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Write one JSON record per frame here ('-': stdout, e.g. to pipe into jq).",
)
@overwrite_option
@click.option(
    "--mm-per-px",
    type=click.FloatRange(min=0, min_open=True),
    help="Scale of the image (from the dermatoscope's calibration); adds mm values.",
)
@click.option("--width", type=click.IntRange(min=1), help="Camera: requested frame width (a csi:// camera: 1920).")
@click.option("--height", type=click.IntRange(min=1), help="Camera: requested frame height (a csi:// camera: 1080).")
@click.option(
    "--fps", type=click.FloatRange(min=0, min_open=True), help="Camera: requested frame rate (a csi:// camera: 30)."
)
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after this many frames.")
@click.option(
    "--loop", is_flag=True, help="Replay a video or image files from the start when they end (a demo, a soak test)."
)
@click.option("--all-regions", is_flag=True, help="Keep every lesion region in the mask, not only the largest.")
@click.option(
    "--tta",
    type=click.Choice(TTA_MODES),
    default=TTA_DEFAULT,
    show_default=True,
    help="Flip test-time augmentation: average each frame's prediction with its horizontal flip (hflip) or all "
    "four flips (hvflip); a little more accurate, 2 or 4 network runs per frame.",
)
@click.option(
    "--refine/--no-refine",
    default=REFINE_DEFAULT,
    show_default=True,
    help="Look again, closer: where the lesion is small in the frame, segment a square around it a second "
    "time at the network's full input and draw that outline (a second network run on those frames).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="onnxruntime threads [default: one per usable core, runtime/thread_plan.py].",
)
@click.option(
    "--serve",
    "serve",
    metavar="[HOST:]PORT",
    callback=lambda ctx, param, value: serve_address(value),
    help="Serve the live overlay and figures to browsers at http://HOST:PORT/ (localhost unless HOST is given, "
    "e.g. 0.0.0.0:8080 for every interface: the run prints this machine's LAN addresses); every browser "
    "needs the token the run prints, once.",
)
@click.option(
    "--snapshot-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where `s` in the window saves snapshots.",
)
@quiet_option
def run_command(
    inputs: tuple[str, ...],
    camera: int | None,
    source: str | None,
    backend: str,
    show: bool | None,
    save: Path | None,
    save_masks: Path | None,
    jsonl: Path | None,
    mm_per_px: float | None,
    width: int | None,
    height: int | None,
    fps: float | None,
    max_frames: int | None,
    all_regions: bool,
    tta: str,
    refine: bool,
    threads: int | None,
    serve,
    snapshot_dir: Path,
    loop: bool,
    overwrite: bool,
) -> None:
    from edgeseg.core.click_types import model_or_default
    from edgeseg.runtime.photos import numbered_results_folder
    from edgeseg.runtime.run_loop import RunOptions, run_pipeline

    logging.basicConfig(level=logging.WARNING if is_quiet() else logging.INFO, format="%(message)s")
    model, images = split_inputs(inputs)
    check_one_source(images, camera, source)
    save_kind = kind_of_save(save)
    model = model_or_default(model)
    with ExitStack() as stack:
        stack.enter_context(sigterm_stops_like_ctrl_c())
        frames = open_frames(images, source, camera, width, height, fps, loop)
        stack.callback(frames.close)  # stops the source's reader thread, whatever happens after
        outputs = plan_outputs(frames, save, save_kind, save_masks, jsonl, loop, overwrite)
        show = window_wanted(show, photos=outputs.photos is not None)
        segmenter = open_run_segmenter(stack, model, backend, threads, all_regions, mm_per_px)
        segmenter.tta, segmenter.refine = tta, refine
        note(opened_line(model, segmenter.backend, frames))
        live_view = stack.enter_context(live_view_served_at(serve)) if serve else None
        # The numbered folder is made once everything has opened: a run that cannot start leaves no empty folder.
        if outputs.numbered and outputs.photos is not None:
            outputs.photos.folder = numbered_results_folder()
        options = RunOptions(
            show=show,
            save_video=outputs.video,
            save_masks=save_masks,
            jsonl=jsonl,
            max_frames=max_frames,
            snapshot_dir=snapshot_dir,
            live_view=live_view,
            photos=outputs.photos,
        )
        summary = run_pipeline(segmenter, frames, options)
    records = None if jsonl is not None and str(jsonl) == "-" else jsonl
    written = {"overlay video": outputs.video, "masks": save_masks, "per-frame records": records}
    report_run(summary, frames, written, outputs.photos)


def open_run_segmenter(
    stack: ExitStack, model: Path, backend: str, threads: int | None, all_regions: bool, mm_per_px: float | None
) -> Segmenter:
    """The model on its backend, closed with the stack; --all-regions keeps every region rather than the largest."""
    from edgeseg.runtime.backends import open_segmenter

    keep_largest = False if all_regions else None
    segmenter = open_segmenter(model, backend, threads=threads, keep_largest=keep_largest, mm_per_px=mm_per_px)
    return stack.enter_context(segmenter)


def opened_line(model: Path, opened: Backend, frames: Source) -> str:
    """The note that says what runs: the model, its backend and precision, its input size, and the source."""
    height, width = opened.card.input_size
    return (
        f"model {model.name}: {opened.name} ({opened.precision}), input {height}x{width}; source: {frames.description}"
    )


def split_inputs(inputs: tuple[str, ...]) -> tuple[Path | None, list[str]]:
    """MODEL and the IMAGES: the first word is the model unless it names images (an image file, a folder or a glob)."""
    from edgeseg.core.card import CARD_FILENAME
    from edgeseg.runtime.sources import is_image_input

    if not inputs:
        return None, []
    first, *rest = inputs
    path = Path(first).expanduser()
    if path.is_dir() and (path / CARD_FILENAME).is_file():
        raise click.BadParameter(
            f"{first} is a model's run folder, not images: name its exported model (e.g. "
            f"{path / 'model.onnx'}; `edgeseg export {first}` makes it)",
            param_hint="MODEL",
        )
    if is_image_input(first):
        return None, list(inputs)
    if not path.is_file():
        camera = f"; a camera is given with --camera {first}" if first.isdigit() else ""
        raise click.BadParameter(
            f"{first}: no such model file (nor an image, a folder or a glob of images){camera}", param_hint="MODEL"
        )
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise click.BadParameter(
            f"{first}: not a model ({', '.join(MODEL_SUFFIXES)}) nor images; a video is given "
            f"with --source, e.g. --source {first}",
            param_hint="MODEL",
        )
    return path, rest


def check_one_source(images: list[str], camera: int | None, source: str | None) -> None:
    given = [
        name
        for name, value in (("IMAGES", images or None), ("--camera", camera), ("--source", source))
        if value is not None
    ]
    if len(given) > 1:
        raise click.UsageError(f"give one of {' or '.join(given)}, not both: what to segment comes from one place")
    if not given:
        raise click.UsageError(
            "give exactly one of --camera N or --source PATH/URL/PIPELINE, or images as arguments "
            "(e.g. edgeseg run photos/)"
        )


def open_frames(
    images: list[str],
    source: str | None,
    camera: int | None,
    width: int | None,
    height: int | None,
    fps: float | None,
    loop: bool,
):
    from edgeseg.runtime.sources import open_images, open_source

    if images:
        return open_images(images, loop=loop)
    return open_source(source, camera, width, height, fps, loop=loop)


def kind_of_save(save: Path | None) -> str | None:
    """What --save names, by its suffix: "folder" (no suffix, or a folder that exists), "image" or "video"."""
    from edgeseg.runtime.photos import OVERLAY_IMAGE_SUFFIXES
    from edgeseg.runtime.recording import RECORDING_SUFFIXES

    if save is None:
        return None
    suffix = save.suffix.lower()
    if save.is_dir() or (not suffix and not save.exists()):
        return "folder"
    if suffix in RECORDING_SUFFIXES:
        return "video"
    if suffix in OVERLAY_IMAGE_SUFFIXES:
        return "image"
    raise click.BadParameter(
        f"{save}: give a folder (no suffix) for photos' results, an image path "
        f"({', '.join(OVERLAY_IMAGE_SUFFIXES)}) for one photo's overlay, or a video path "
        f"({' or '.join(RECORDING_SUFFIXES)}) for a camera's or a video's overlay",
        param_hint="--save",
    )


def plan_outputs(
    frames,
    save: Path | None,
    save_kind: str | None,
    save_masks: Path | None,
    jsonl: Path | None,
    loop: bool,
    overwrite: bool,
) -> Outputs:
    """What the run writes: for photos (image files read once) their results, else what the options name; then the
    overwrite rule (which also removes what a killed run left), before anything opens."""
    from edgeseg.core.files import prepare_outputs
    from edgeseg.runtime.photos import PhotoOutputs
    from edgeseg.runtime.sources import ImageFiles

    photos = isinstance(frames, ImageFiles) and not loop
    check_save_fits(frames, save, save_kind, photos, loop)
    prepare_outputs([("--save", save), ("--save-masks", save_masks), ("--jsonl", jsonl)], overwrite)
    if not photos:
        return Outputs(video=save)
    photo_outputs = PhotoOutputs(lines_to_stderr=jsonl is not None and str(jsonl) == "-")
    outputs = Outputs(video=save if save_kind == "video" else None, photos=photo_outputs)
    if save_kind == "folder":
        photo_outputs.folder = save
    elif save_kind == "image":
        photo_outputs.overlay_file = save
    elif save is None and save_masks is None and jsonl is None:
        outputs.numbered = True
    return outputs


def check_save_fits(frames, save: Path | None, save_kind: str | None, photos: bool, loop: bool) -> None:
    """A results folder or an image path is for photos, read once; an image path for one photo only."""
    if save_kind in ("folder", "image") and not photos:
        what = "a results folder" if save_kind == "folder" else "an image path"
        replayed = " replayed with --loop" if loop else ""
        raise click.BadParameter(
            f"{save}: {what} is for photos; for {frames.description}{replayed} give a .mp4 or "
            ".webm path for the overlay video",
            param_hint="--save",
        )
    if save is not None and save_kind == "image" and len(frames.paths) != 1:
        raise click.BadParameter(
            f"{save}: an image path takes a single photo's overlay, not those of "
            f"{frames.description}; give a folder for their results, e.g. "
            f"--save {save.with_suffix('')}",
            param_hint="--save",
        )


@contextmanager
def sigterm_stops_like_ctrl_c():
    """A service manager's stop (systemd, docker stop) ends the run as Ctrl-C does: every output finished and closed."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def window_wanted(show: bool | None, photos: bool = False) -> bool:
    """--show as given; by default a window for a camera or video where a display exists, never for photos."""
    from edgeseg.runtime.run_loop import display_available

    if show is None:
        if photos:
            return False
        show = display_available()
        if not show:
            note("no display found (DISPLAY/WAYLAND_DISPLAY unset): running without a window")
    elif show and not display_available():
        raise click.UsageError(
            "--show needs a display (DISPLAY or WAYLAND_DISPLAY); use --no-show with --serve, --save or --jsonl "
            "on a headless device"
        )
    return show


def serve_address(value: str | None):
    """--serve's [HOST:]PORT, checked when the command line is read."""
    if value is None:
        return None
    from edgeseg.runtime.serve import ServeError, parse_serve_address

    try:
        return parse_serve_address(value)
    except ServeError as error:
        raise click.BadParameter(str(error), param_hint="--serve") from None


@contextmanager
def live_view_served_at(address):
    from edgeseg.runtime.serve import LiveServer, LiveView

    view = LiveView()
    with LiveServer(view, address) as server:
        urls = server.address_urls
        for url in urls:
            note(f"live view: {url}")
        note(
            "open it once with its token (the browser then keeps it in a cookie; share it only with viewers): "
            + ", ".join(server.token_url(url) for url in urls)
        )
        yield view


def report_run(summary, frames, outputs: dict[str, Path | None], photos=None) -> None:
    """The summary (a note), then where the outputs are (always): the last line says where the results are."""
    unit = "image" if photos is not None else "frame"
    stages = ", ".join(f"{stage} {ms:.1f}" for stage, ms in summary.stage_ms.items())
    dropped = f"{len(summary.skipped)} skipped" if photos is not None else f"dropped {summary.dropped}"
    plural = "" if summary.frames == 1 else "s"
    note(
        f"{summary.frames} {unit}{plural} in {summary.seconds:.1f} s ({summary.fps:.1f} FPS); {dropped}; "
        f"mean ms per {unit}: {stages}"
    )
    for label, path in outputs.items():
        if path is not None:
            click.echo(f"{label}: {path}", err=True)
    if photos is None:
        for problem in summary.skipped:  # a photo's was said when it was met
            click.echo(f"skipped: {problem}", err=True)
    else:
        report_photos(summary, photos)
    if summary.source_lost:
        raise click.ClickException(
            f"{frames.description} was lost and did not come back; the outputs hold the frames before it"
        )
    if summary.frames == 0:
        raise click.ClickException(f"no frame could be processed from {frames.description}")


def report_photos(summary, photos) -> None:
    from edgeseg.runtime.photos import RESULTS_CSV

    if photos.overlay_file is not None and summary.frames:
        click.echo(f"overlay: {photos.overlay_file}", err=True)
    folder = photos.folder
    if folder is None:
        return
    if summary.frames:
        click.echo(f"results: {folder}{os.sep} ({summary.frames} overlays and masks, {RESULTS_CSV})", err=True)
    elif not any(folder.iterdir()):  # nothing was done: no empty results folder is left behind
        folder.rmdir()
