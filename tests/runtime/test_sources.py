"""Sources: files are read in full, live sources keep only the newest frame and survive a lost camera."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeseg.core.card import ModelCard
from edgeseg.core.segmenter import Segmenter
from edgeseg.runtime.run_loop import RunOptions, run_pipeline
from edgeseg.runtime.sources import ImageFiles, LiveSource, SourceError, VideoFile, open_source


class FakeCamera:
    """A capture that delivers numbered frames quickly, and fails after ``fail_after`` frames."""

    def __init__(self, fail_after: int | None = None, interval_s: float = 0.001) -> None:
        self.delivered = 0
        self.fail_after = fail_after
        self.interval_s = interval_s
        self.released = False

    def read(self) -> tuple[bool, np.ndarray | None]:
        time.sleep(self.interval_s)
        if self.fail_after is not None and self.delivered >= self.fail_after:
            return False, None
        image = np.full((32, 48, 3), self.delivered % 256, dtype=np.uint8)
        self.delivered += 1
        return True, image

    def release(self) -> None:
        self.released = True


class SlowBackend:
    """A model that takes 30 ms a frame: much slower than the fake camera."""

    name, precision = "slow-fake", "fp32"

    def __init__(self, card: ModelCard) -> None:
        self.card = card

    def infer(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(0.03)
        return np.zeros((batch.shape[0], 1, *batch.shape[2:]), dtype=np.float32)

    def close(self) -> None:
        pass


def test_live_reader_drops_stale_frames_and_hands_out_the_newest() -> None:
    camera = FakeCamera(interval_s=0.005)
    source = LiveSource(lambda: camera, "fake camera")
    seen = []
    try:
        for frame in source.frames():
            lag = camera.delivered - 1 - frame.index  # frames captured after this one, before it was handed out
            seen.append((frame.index, lag))
            time.sleep(0.05)  # a consumer ten times slower than the camera: a queue would lag ~10 more each frame
            if len(seen) == 6:
                break
    finally:
        source.close()
    indices = [index for index, _ in seen]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert indices[-1] - indices[0] > len(indices), "a slow consumer must skip frames, not queue them"
    assert source.dropped > 0
    assert max(lag for _, lag in seen) <= 4, f"handed-out frames were stale: {seen}"


def test_pipeline_with_a_slow_backend_processes_fresh_frames(tiny_card: ModelCard, tmp_path: Path) -> None:
    source = LiveSource(lambda: FakeCamera(), "fake camera")
    segmenter = Segmenter(SlowBackend(tiny_card), tiny_card)
    summary = run_pipeline(segmenter, source, RunOptions(jsonl=tmp_path / "frames.jsonl", max_frames=5))
    assert summary.frames == 5 and summary.dropped > 0
    lines = (tmp_path / "frames.jsonl").read_text().splitlines()
    assert len(lines) == 5


def test_lost_camera_is_retried_then_the_run_ends_cleanly() -> None:
    opened = []

    def reopen() -> FakeCamera:
        if opened:
            raise SourceError("camera 7 did not open")
        opened.append(FakeCamera(fail_after=3))
        return opened[-1]

    source = LiveSource(reopen, "camera 7", reconnect_delays=(0.01, 0.01))
    frames = list(source.frames())  # ends by itself
    source.close()
    assert 1 <= len(frames) <= 3 and source.lost and opened[0].released


def test_camera_that_comes_back_keeps_the_run_going() -> None:
    cameras = [FakeCamera(fail_after=2), FakeCamera(fail_after=2)]
    source = LiveSource(
        lambda: cameras.pop(0) if cameras else (_ for _ in ()).throw(SourceError("gone")),
        "camera 3",
        reconnect_delays=(0.01, 0.01),
    )
    indices = []
    for frame in source.frames():
        indices.append(frame.index)
        time.sleep(0.005)
    source.close()
    assert source.lost and len(indices) >= 2 and indices[-1] >= 2, indices  # frames from the second camera


def test_folder_with_a_corrupt_image_skips_it_and_reports_it(image_folder: Path) -> None:
    source = open_source(str(image_folder))
    assert isinstance(source, ImageFiles)
    frames = list(source.frames())
    source.close()
    assert [frame.name for frame in frames] == ["ISIC_0000001", "ISIC_0000002", "visit3"]
    assert frames[0].image.shape == (90, 120, 3)
    assert len(source.skipped) == 1 and "ISIC_0000009.jpg" in source.skipped[0]


def test_glob_and_single_image_and_video(image_folder: Path, video_20: Path) -> None:
    assert len(list(open_source(str(image_folder / "ISIC_*.*")).frames())) == 2  # the corrupt one is skipped
    assert [f.name for f in open_source(str(image_folder / "visit3.jpg")).frames()] == ["visit3"]
    video = open_source(str(video_20))
    assert isinstance(video, VideoFile) and not video.live and video.fps == pytest.approx(30.0)
    assert len(list(video.frames())) == 20


def frame_names(source) -> list[str]:
    try:
        return [frame.name for frame in source.frames()]
    finally:
        source.close()


def test_a_glob_through_symlink_loops_processes_each_image_once(image_folder: Path) -> None:
    nested = image_folder / "visit4"
    nested.mkdir()
    cv2.imwrite(str(nested / "close-up.jpg"), np.full((40, 60, 3), 90, dtype=np.uint8))
    # Two links back up: glob's own '**' follows each until the OS refuses (about 40 deep), and two of
    # them multiply: 2**40 paths to walk. Each real folder is walked once instead.
    (nested / "up").symlink_to("..")
    (nested / "again").symlink_to("../..")
    started = time.perf_counter()
    source = open_source(str(image_folder / "**" / "*.jpg"))
    assert time.perf_counter() - started < 5
    assert sorted(path.name for path in source.paths) == [
        "ISIC_0000001.jpg",
        "ISIC_0000009.jpg",
        "close-up.jpg",
        "visit3.jpg",
    ]
    # the corrupt one is skipped; an image in a subfolder is named with it, as its outputs are
    assert sorted(frame_names(source)) == ["ISIC_0000001", "visit3", "visit4/close-up"]


def test_the_same_file_twice_is_processed_once(image_folder: Path) -> None:
    (image_folder / "same-as-visit3.jpg").symlink_to(image_folder / "visit3.jpg")
    (image_folder / "visit3-again.jpg").symlink_to("same-as-visit3.jpg")
    assert frame_names(open_source(str(image_folder))) == ["ISIC_0000001", "ISIC_0000002", "visit3"]
    assert frame_names(open_source(str(image_folder / "*3*.jpg"))) == ["visit3"]


def test_missing_path_and_empty_glob_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or folder"):
        open_source(str(tmp_path / "absent.mp4"))
    with pytest.raises(SourceError, match="no images match"):
        open_source(str(tmp_path / "*.jpg"))


def test_video_that_does_not_decode_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"not a video at all")
    with pytest.raises(SourceError, match="cannot open this video"):
        open_source(str(path))


def test_camera_that_does_not_exist_fails_with_a_clear_message() -> None:
    with pytest.raises(SourceError, match="camera 99 did not open"):
        open_source(camera=99)


def test_gstreamer_pipeline_without_gstreamer_says_so() -> None:
    from edgeseg.runtime.sources import has_gstreamer

    if has_gstreamer():
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(SourceError, match="without GStreamer"):
        open_source("videotestsrc num-buffers=1 ! videoconvert ! appsink")


class FakeCapture:
    """Stands in for cv2.VideoCapture: records how it was opened, delivers blank frames."""

    opened: list[tuple] = []

    def __init__(self, *args: object) -> None:
        FakeCapture.opened.append(args)

    def isOpened(self) -> bool:  # OpenCV's name
        return True

    def read(self) -> tuple[bool, np.ndarray]:
        time.sleep(0.001)
        return True, np.zeros((24, 32, 3), dtype=np.uint8)

    def get(self, prop: int) -> float:
        return 0.0

    def set(self, prop: int, value: float) -> bool:
        return True

    def release(self) -> None:
        pass


@pytest.fixture
def fake_capture(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    import cv2

    FakeCapture.opened = []
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    return FakeCapture.opened


def test_digits_open_a_live_camera_by_index(fake_capture: list[tuple]) -> None:
    source = open_source("0")
    try:
        assert isinstance(source, LiveSource) and source.live and source.description == "camera 0"
        assert fake_capture == [(0,)]  # cv2.VideoCapture(0): an index, not a file called "0"
        assert next(source.frames()).image.shape == (24, 32, 3)
    finally:
        source.close()
    with open_source("12"):
        assert fake_capture[-1] == (12,)


def test_dev_video_path_opens_a_live_camera_with_v4l2(
    fake_capture: list[tuple], monkeypatch: pytest.MonkeyPatch
) -> None:
    import cv2

    from edgeseg.runtime import sources

    monkeypatch.setattr(
        sources, "_is_char_device", lambda path: str(path) == "/dev/video3"
    )  # no camera on this machine
    with open_source("/dev/video3") as source:
        assert isinstance(source, LiveSource) and source.description == "camera /dev/video3"
    assert fake_capture == [("/dev/video3", cv2.CAP_V4L2)]


def test_link_to_a_character_device_counts_as_a_camera(fake_capture: list[tuple], tmp_path: Path) -> None:
    import cv2

    link = tmp_path / "usb-Dermlite_Camera-video-index0"  # like /dev/v4l/by-id/...; /dev/null is a character device
    link.symlink_to("/dev/null")
    with open_source(str(link)) as source:
        assert isinstance(source, LiveSource)
    assert fake_capture == [(str(link), cv2.CAP_V4L2)]  # opened by the stable link, re-resolved on each reconnect


def test_missing_dev_video_names_it_and_says_how_to_list_cameras(fake_capture: list[tuple]) -> None:
    if Path("/dev/video99").exists():
        pytest.skip("this machine has a /dev/video99")
    with pytest.raises(SourceError, match=r"/dev/video99: no such camera device.*v4l2-ctl --list-devices"):
        open_source("/dev/video99")
    assert fake_capture == []


def test_csi_pipeline_carries_sensor_size_and_rate() -> None:
    from edgeseg.runtime.sources import csi_pipeline

    assert csi_pipeline(1, 1280, 720, 60) == (
        "nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=60/1 ! "
        "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1"
    )
    assert "width=1920,height=1080,framerate=30/1 !" in csi_pipeline(0)
    assert "framerate=2997/100 !" in csi_pipeline(0, fps=29.97)


def test_csi_without_gstreamer_fails_at_once_and_says_what_to_do(
    fake_capture: list[tuple], monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeseg.runtime import sources

    monkeypatch.setattr(sources, "has_gstreamer", lambda: False)
    with pytest.raises(SourceError, match=r"without it.*apt install python3-opencv.*--system-site-packages"):
        open_source("csi://0")
    assert fake_capture == []  # nothing was tried


def test_csi_with_gstreamer_opens_the_pipeline_live(fake_capture: list[tuple], monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    from edgeseg.runtime import sources

    monkeypatch.setattr(sources, "has_gstreamer", lambda: True)
    with open_source("csi://1", width=1280, height=720, fps=60) as source:
        assert isinstance(source, LiveSource) and source.description == "CSI camera 1"
    assert fake_capture == [(sources.csi_pipeline(1, 1280, 720, 60), cv2.CAP_GSTREAMER)]


@pytest.mark.parametrize("spec", ["csi://x", "csi://", "csi://-1", "csi://0/1"])
def test_csi_with_a_bad_sensor_id_is_a_clear_error(spec: str, fake_capture: list[tuple]) -> None:
    with pytest.raises(SourceError, match="csi://N with N the sensor id"):
        open_source(spec)
    assert fake_capture == []


def test_urls_and_pipelines_still_go_to_open_stream(fake_capture: list[tuple]) -> None:
    import cv2

    with open_source("rtsp://camera.local/stream") as stream:
        assert stream.description == "stream rtsp://camera.local/stream"
    with open_source("videotestsrc ! appsink") as pipeline:
        assert pipeline.description == "GStreamer pipeline"
    assert fake_capture == [("rtsp://camera.local/stream",), ("videotestsrc ! appsink", cv2.CAP_GSTREAMER)]


def test_reader_thread_stops_on_close(video_20: Path) -> None:
    source = open_source(str(video_20))
    frames = source.frames()
    next(frames)
    source.close()
    assert not any(thread.name == "edgeseg-reader" and thread.is_alive() for thread in threading.enumerate())


class InterruptingBackend(SlowBackend):
    """Raises KeyboardInterrupt (what Ctrl-C does) on its sixth frame."""

    calls = 0

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == 6:
            raise KeyboardInterrupt
        return np.zeros((batch.shape[0], 1, *batch.shape[2:]), dtype=np.float32)


def test_ctrl_c_ends_the_run_cleanly_and_keeps_the_outputs(
    tiny_card: ModelCard, video_20: Path, tmp_path: Path
) -> None:
    from .conftest import count_video_frames

    options = RunOptions(save_video=tmp_path / "overlay.mp4", jsonl=tmp_path / "frames.jsonl")
    summary = run_pipeline(Segmenter(InterruptingBackend(tiny_card), tiny_card), open_source(str(video_20)), options)
    assert summary.interrupted and summary.frames == 5
    assert count_video_frames(tmp_path / "overlay.mp4") == (5, (640, 480))
    assert len((tmp_path / "frames.jsonl").read_text().splitlines()) == 5


def test_window_shows_overlays_saves_a_snapshot_on_s_and_stops_on_q(
    tiny_card: ModelCard, video_20: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cv2

    shown = []
    keys = iter([-1, -1, ord("s")] + [-1] * 3 + [ord("q")] + [-1] * 20)

    def wait_key(delay: int) -> int:
        time.sleep(0.05)  # let the finisher thread draw the overlays
        return next(keys)

    monkeypatch.setattr(cv2, "imshow", lambda name, image: shown.append(image.shape))
    monkeypatch.setattr(cv2, "waitKey", wait_key)
    monkeypatch.setattr(cv2, "getWindowProperty", lambda name, prop: 1.0)
    monkeypatch.setattr(cv2, "destroyAllWindows", lambda: None)
    options = RunOptions(show=True, snapshot_dir=tmp_path)
    summary = run_pipeline(Segmenter(SlowBackend(tiny_card), tiny_card), open_source(str(video_20)), options)
    assert summary.interrupted and summary.frames == 7
    assert shown and all(shape == (480, 640, 3) for shape in shown)
    assert len(summary.snapshots) == 1 and summary.snapshots[0].is_file()
    assert cv2.imread(str(summary.snapshots[0])).shape == (480, 640, 3)


def test_a_video_cut_short_is_processed_up_to_the_cut_and_reported(tmp_path: Path) -> None:
    import cv2

    from .conftest import lesion_image

    whole = tmp_path / "whole.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
    for index in range(40):
        writer.write(lesion_image(160, 120, shift=index, seed=index))
    writer.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # as a copy interrupted half-way leaves it
    with open_source(str(cut)) as source:
        frames = list(source.frames())
    assert 10 < len(frames) < 40
    assert (
        len(source.skipped) == 1
        and "cut.avi" in source.skipped[0]
        and f"after {len(frames)} of its 40 frames" in source.skipped[0]
    )
    with open_source(str(whole)) as source:
        assert len(list(source.frames())) == 40 and source.skipped == []
