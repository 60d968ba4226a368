"""Recordings that play in a browser (H.264 .mp4, VP9 .webm), the mp4v fallback, and --loop."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.runtime import recording
from edgeseg.runtime.sources import SourceError, open_source

from .conftest import lesion_image


def run(*args: str):
    return CliRunner().invoke(main, ["run", *args], catch_exceptions=False)


def video_stream(path: Path) -> tuple[str, int, tuple[int, int], float]:
    """(codec, frames, (width, height), seconds) as a player would read them."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame for frame in container.decode(stream)]
        seconds = float(frames[-1].pts * stream.time_base)
        return stream.codec_context.name, len(frames), (stream.width, stream.height), seconds


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "h264"), (".webm", "vp9")])
def test_recordings_are_browser_codecs_with_every_frame(
    tiny_onnx: Path, video_20: Path, tmp_path: Path, suffix: str, codec: str
) -> None:
    video = tmp_path / f"overlay{suffix}"
    result = run(str(tiny_onnx), "--source", str(video_20), "--no-show", "--save", str(video))
    assert result.exit_code == 0, result.output
    got_codec, frames, size, seconds = video_stream(video)
    assert (got_codec, frames, size) == (codec, 20, (640, 480))
    assert seconds == pytest.approx(19 / 30, abs=0.01), "a 30 fps file keeps its own timing"
    assert not list(tmp_path.glob(".*tmp*"))


def test_odd_frame_sizes_are_recorded_at_the_nearest_even_size(tiny_onnx: Path, tmp_path: Path) -> None:
    import cv2

    image = tmp_path / "odd.png"
    cv2.imwrite(str(image), lesion_image(161, 121))
    result = run(str(tiny_onnx), "--source", str(image), "--no-show", "--save", str(tmp_path / "odd.mp4"))
    assert result.exit_code == 0, result.output
    assert video_stream(tmp_path / "odd.mp4")[:3] == ("h264", 1, (160, 120))


def test_without_a_browser_encoder_an_mp4_falls_back_to_mp4v_and_says_so(monkeypatch, tmp_path: Path, caplog) -> None:
    monkeypatch.setattr(recording, "browser_codec_problem", lambda suffix: "PyAV is not installed (pip install av)")
    with caplog.at_level(logging.WARNING, logger="edgeseg.runtime"):
        writer = recording.open_recording(tmp_path / "a.mp4", tmp_path / "a.tmp.mp4", (64, 48), 30.0)
    for index in range(3):
        writer.write(lesion_image(64, 48, seed=index), index * 33)
    writer.close()
    assert writer.codec == "mp4v" and "browsers do not play" in caplog.text
    assert video_stream(tmp_path / "a.tmp.mp4")[:2] == ("mpeg4", 3)
    with pytest.raises(OSError, match="WebM"):
        recording.open_recording(tmp_path / "a.webm", tmp_path / "a.tmp.webm", (64, 48), 30.0)


def test_live_timestamps_set_the_playback_speed(tmp_path: Path) -> None:
    writer = recording.open_recording(tmp_path / "live.mp4", tmp_path / "live.mp4", (64, 48), 30.0)
    for milliseconds in (0, 100, 100, 450):  # dropped frames, and two frames in one millisecond
        writer.write(lesion_image(64, 48), milliseconds)
    writer.close()
    codec, frames, _, seconds = video_stream(tmp_path / "live.mp4")
    assert (codec, frames) == ("h264", 4) and seconds == pytest.approx(0.45, abs=0.002)


def test_loop_replays_a_video_with_increasing_frame_numbers(video_20: Path) -> None:
    with open_source(str(video_20), loop=True) as source:
        frames = source.frames()
        indexes = [next(frames).index for _ in range(45)]
    assert indexes == list(range(45))


def test_loop_replays_images_and_reports_a_broken_one_once(image_folder: Path) -> None:
    with open_source(str(image_folder), loop=True) as source:
        frames = source.frames()
        names = [next(frames).name for _ in range(7)]
        assert len(source.skipped) == 1
    assert names == ["ISIC_0000001", "ISIC_0000002", "visit3"] * 2 + ["ISIC_0000001"]


def test_loop_over_nothing_readable_ends_instead_of_spinning(tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with open_source(str(tmp_path / "broken.jpg"), loop=True) as source:
        assert list(source.frames()) == []


def test_loop_is_refused_for_a_live_source() -> None:
    with pytest.raises(SourceError, match="--loop replays"):
        open_source(camera=0, loop=True)
    with pytest.raises(SourceError, match="--loop replays"):
        open_source("rtsp://192.0.2.1/scope", loop=True)
