"""`edgeseg run`: live lesion segmentation from a camera, a video, images or a stream.

Only click and core modules are imported at the top: `edgeseg --help` imports this module to list
the command, and the runtime parts load when the command runs.
"""

from __future__ import annotations

import logging
import signal
from contextlib import ExitStack, contextmanager
from pathlib import Path

import click

from edgeseg.click_types import overwrite_option
from edgeseg.names import RUNTIME_BACKENDS
from edgeseg.segmenter import REFINE_DEFAULT, TTA_DEFAULT, TTA_MODES

HELP = """Segment skin lesions live from a camera, a video, images or a stream, with a torch-free runtime.

MODEL is an edgeseg ONNX (model.onnx, or its fp16/int8 forms) or a TensorRT engine with its
sidecar JSON, made by `edgeseg export`; without one, edgeseg's default model (it ships with edgeseg). Input size, preprocessing and threshold come from the model's
card. A window shows the overlay where a display exists (`q` quits, `s` saves a snapshot);
--serve shows it in any browser (a device without a screen: the clinician's tablet or laptop),
with the lesion figures updating live and a snapshot button; --save (a video that plays in a
browser), --save-masks and --jsonl record it. Ctrl-C (or SIGTERM, as systemd and docker stop a service)
stops cleanly and closes every output.

Live sources (camera, URL, GStreamer pipeline) always process the newest frame, so latency does not
build up; skipped frames are counted as dropped. Files are processed frame by frame.

The measurements (area, bounding box, perimeter, maximum diameter; in mm with --mm-per-px) are
descriptive, for documentation and follow-up. They are not a diagnosis and must not be read as one.

\b
Examples:
  edgeseg run --camera 0                          # the default model that ships with edgeseg
  edgeseg run model.onnx --camera 0
  edgeseg run model.onnx --camera 0 --width 1280 --height 720 --fps 30 --mm-per-px 0.02
  edgeseg run --camera 0 --no-show --serve 8080              # watch at http://localhost:8080/
  edgeseg run --camera 0 --no-show --serve 0.0.0.0:8080      # from a tablet: open the URL (with its token) it prints
  edgeseg run --source /dev/video0                           # a V4L2 camera by path (also /dev/v4l/by-id/...)
  edgeseg run --source csi://0 --width 1280 --height 720 --fps 60   # Jetson CSI camera (JetPack's OpenCV, GStreamer)
  edgeseg run model.onnx --source clinic.mp4 --no-show --save overlay.mp4 --jsonl frames.jsonl
  edgeseg run model.onnx --source 'photos/*.jpg' --no-show --save-masks masks/
  edgeseg run model.fp16.engine --source rtsp://192.168.1.20:8554/scope
  edgeseg run model.onnx --source 'nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1'
"""


@click.command("run", help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("model", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--camera", type=int, help="Camera index (OpenCV; /dev/videoN on Linux is N).")
@click.option("--source", help="A video, image, folder or glob of images; a camera (N, /dev/videoN, csi://N); an RTSP/HTTP URL; "
                                "or a GStreamer pipeline.")
@click.option("--backend", type=click.Choice(("auto", *RUNTIME_BACKENDS)), default="auto", show_default=True,
              help="auto picks the fastest this host can run: a TensorRT engine, else onnxruntime with TensorRT, CUDA, then CPU.")
@click.option("--show/--no-show", default=None, help="Show the overlay in a window [default: show when a display exists].")
@click.option("--save", "save_video", type=click.Path(dir_okay=False, path_type=Path), help="Record the overlay here: .mp4 (H.264) or .webm (VP9), both play in browsers; "
                   "mp4v where PyAV lacks an H.264 encoder.")
@click.option("--save-masks", type=click.Path(file_okay=False, path_type=Path),
              help="Write each frame's mask here: 0/255 PNG at the original size, named NAME_segmentation.png (ISIC naming).")
@click.option("--jsonl", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="Write one JSON record per frame here ('-': stdout, e.g. to pipe into jq).")
@overwrite_option
@click.option("--mm-per-px", type=click.FloatRange(min=0, min_open=True), help="Scale of the image (from the dermatoscope's calibration); adds mm values.")
@click.option("--width", type=click.IntRange(min=1), help="Camera: requested frame width (a csi:// camera: 1920).")
@click.option("--height", type=click.IntRange(min=1), help="Camera: requested frame height (a csi:// camera: 1080).")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), help="Camera: requested frame rate (a csi:// camera: 30).")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after this many frames.")
@click.option("--loop", is_flag=True, help="Replay a video or image files from the start when they end (a demo, a soak test).")
@click.option("--all-regions", is_flag=True, help="Keep every lesion region in the mask, not only the largest.")
@click.option("--tta", type=click.Choice(TTA_MODES), default=TTA_DEFAULT, show_default=True,
              help="Flip test-time augmentation: average each frame's prediction with its horizontal flip (hflip) or all "
                   "four flips (hvflip); a little more accurate, 2 or 4 network runs per frame.")
@click.option("--refine/--no-refine", default=REFINE_DEFAULT, show_default=True,
              help="Look again, closer: where the lesion is small in the frame, segment a square around it a second "
                   "time at the network's full input and draw that outline (a second network run on those frames).")
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime threads [default: onnxruntime's choice].")
@click.option("--serve", "serve", metavar="[HOST:]PORT", callback=lambda ctx, param, value: serve_address(value),
              help="Serve the live overlay and figures to browsers at http://HOST:PORT/ (localhost unless HOST is given, "
                   "e.g. 0.0.0.0:8080 for every interface); every browser needs the token the run prints, once.")
@click.option("--snapshot-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
              help="Where `s` in the window saves snapshots.")
def run_command(model: Path | None, camera: int | None, source: str | None, backend: str, show: bool | None, save_video: Path | None,
                save_masks: Path | None, jsonl: Path | None, mm_per_px: float | None, width: int | None, height: int | None,
                fps: float | None, max_frames: int | None, all_regions: bool, tta: str, refine: bool, threads: int | None, serve,
                snapshot_dir: Path, loop: bool, overwrite: bool) -> None:
    from edgeseg.click_types import model_or_default
    from edgeseg.runtime.backends import open_segmenter
    from edgeseg.runtime.run_loop import RunOptions, run_pipeline
    from edgeseg.runtime.sources import open_source

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if (camera is None) == (source is None):
        raise click.UsageError("give exactly one of --camera N or --source PATH/URL/PIPELINE")
    check_outputs(save_video, save_masks, jsonl, overwrite)
    show = window_wanted(show)
    model = model_or_default(model)
    frames = open_source(source, camera, width, height, fps, loop=loop)
    with ExitStack() as stack:
        stack.enter_context(sigterm_stops_like_ctrl_c())
        stack.callback(frames.close)  # stops the source's reader thread, whatever happens after
        segmenter = stack.enter_context(open_segmenter(model, backend, threads=threads, keep_largest=False if all_regions else None,
                                                       mm_per_px=mm_per_px))
        segmenter.tta, segmenter.refine = tta, refine
        opened = segmenter.backend
        click.echo(f"model {model.name}: {opened.name} ({opened.precision}), input {opened.card.input_size[0]}x{opened.card.input_size[1]}; "
                   f"source: {frames.description}", err=True)
        live_view = stack.enter_context(live_view_served_at(serve)) if serve else None
        options = RunOptions(show=show, save_video=save_video, save_masks=save_masks, jsonl=jsonl, max_frames=max_frames,
                             snapshot_dir=snapshot_dir, live_view=live_view)
        summary = run_pipeline(segmenter, frames, options)
    records = None if jsonl is not None and str(jsonl) == "-" else jsonl
    report_run(summary, frames, {"overlay video": save_video, "masks": save_masks, "per-frame records": records})


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


def check_outputs(save_video: Path | None, save_masks: Path | None, jsonl: Path | None, overwrite: bool) -> None:
    """Before anything opens: the video's format, then the overwrite rule (which also removes what a killed run left)."""
    from edgeseg.files import prepare_outputs
    from edgeseg.runtime.recording import RECORDING_SUFFIXES

    if save_video is not None and save_video.suffix.lower() not in RECORDING_SUFFIXES:
        raise click.BadParameter(f"{save_video}: give a {' or '.join(RECORDING_SUFFIXES)} path", param_hint="--save")
    prepare_outputs([("--save", save_video), ("--save-masks", save_masks), ("--jsonl", jsonl)], overwrite)


def window_wanted(show: bool | None) -> bool:
    from edgeseg.runtime.run_loop import display_available

    if show is None:
        show = display_available()
        if not show:
            click.echo("no display found (DISPLAY/WAYLAND_DISPLAY unset): running without a window", err=True)
    elif show and not display_available():
        raise click.UsageError("--show needs a display (DISPLAY or WAYLAND_DISPLAY); use --no-show with --serve, --save or --jsonl on a headless device")
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
        click.echo(f"live view: {server.address_url}", err=True)
        click.echo(f"open it once with its token (the browser then keeps it in a cookie; share it only with viewers): {server.url}", err=True)
        yield view


def report_run(summary, frames, outputs: dict[str, Path | None]) -> None:
    stages = ", ".join(f"{stage} {ms:.1f}" for stage, ms in summary.stage_ms.items())
    click.echo(f"{summary.frames} frames in {summary.seconds:.1f} s ({summary.fps:.1f} FPS); dropped {summary.dropped}; "
               f"mean ms per frame: {stages}", err=True)
    for label, path in outputs.items():
        if path is not None:
            click.echo(f"{label}: {path}", err=True)
    for problem in summary.skipped:
        click.echo(f"skipped: {problem}", err=True)
    if summary.source_lost:
        raise click.ClickException(f"{frames.description} was lost and did not come back; the outputs hold the frames before it")
    if summary.frames == 0:
        raise click.ClickException(f"no frame could be processed from {frames.description}")
