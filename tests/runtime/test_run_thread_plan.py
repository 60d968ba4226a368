"""The thread plan of `edgeseg run`: cores -> inference threads, spinning, encoder threads and preset, priority."""

from __future__ import annotations

import itertools
import os
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from edgeseg.core.names import default_model_path
from edgeseg.runtime import thread_plan
from edgeseg.runtime.backends import OnnxRuntimeBackend, session_options
from edgeseg.runtime.recording import encoder_options, open_recording
from edgeseg.runtime.thread_plan import ThreadPlan, plan_threads

from .conftest import lesion_image

SPINNING = "session.intra_op.allow_spinning"
PRESETS_CHEAP_TO_GOOD = ("ultrafast", "veryfast")


@pytest.mark.parametrize(
    ("cores", "physical", "inference", "spinning", "encoder", "preset"),
    [
        (1, None, 1, False, 1, "ultrafast"),
        (2, None, 2, False, 1, "ultrafast"),  # the 2-core EPYC: the model keeps both cores, the encoder is cheap
        (2, 1, 1, False, 1, "ultrafast"),  # two SMT siblings of one core: one inference thread
        (4, None, 4, False, 2, "ultrafast"),
        (6, None, 6, False, 2, "ultrafast"),
        (8, None, 8, False, 2, "veryfast"),
        (16, 8, 8, True, 4, "veryfast"),  # 8 SMT siblings left over: the rest has cores of its own, spinning pays
        (64, None, 64, False, 4, "veryfast"),
    ],
)
def test_the_plan_is_a_rule_of_the_cores(
    cores: int, physical: int | None, inference: int, spinning: bool, encoder: int, preset: str
) -> None:
    plan = plan_threads(cores, physical)
    assert (plan.inference_threads, plan.inference_spinning, plan.encoder_threads, plan.x264_preset) == (
        inference,
        spinning,
        encoder,
        preset,
    )
    assert plan.cores == cores and plan.finisher_nice > 0


def test_more_cores_never_get_fewer_threads_or_a_cheaper_preset() -> None:
    plans = [plan_threads(cores) for cores in range(1, 129)]
    for smaller, bigger in itertools.pairwise(plans):
        assert bigger.inference_threads >= smaller.inference_threads
        assert bigger.encoder_threads >= smaller.encoder_threads
        assert PRESETS_CHEAP_TO_GOOD.index(bigger.x264_preset) >= PRESETS_CHEAP_TO_GOOD.index(smaller.x264_preset)
    assert all(1 <= plan.inference_threads <= plan.cores for plan in plans)


def test_the_host_plan_counts_the_cores_this_process_may_use(monkeypatch) -> None:
    monkeypatch.setattr(thread_plan.host, "usable_cores", lambda: (3, None))  # a container limited to 3 of 64
    monkeypatch.setattr(thread_plan.host, "physical_cores", lambda: (32, None))
    plan = thread_plan.this_host_plan()
    assert (plan.cores, plan.inference_threads) == (3, 3)
    monkeypatch.undo()
    if hasattr(os, "sched_getaffinity"):
        assert thread_plan.this_host_plan().cores == len(os.sched_getaffinity(0))


def test_session_options_carry_the_planned_threads_and_spinning() -> None:
    import onnxruntime as ort

    options = session_options(ort, None, plan_threads(2))
    assert options.intra_op_num_threads == 2 and options.get_session_config_entry(SPINNING) == "0"
    options = session_options(ort, 3, plan_threads(16, physical=8))  # --threads wins over the plan
    assert options.intra_op_num_threads == 3 and options.get_session_config_entry(SPINNING) == "1"


def test_the_backend_opens_its_session_with_the_plan(monkeypatch) -> None:
    monkeypatch.setattr(thread_plan, "this_host_plan", lambda: plan_threads(2))
    monkeypatch.setattr("edgeseg.runtime.backends.this_host_plan", lambda: plan_threads(2))
    with OnnxRuntimeBackend(default_model_path()) as backend:
        options = backend.session.get_session_options()
        assert options.intra_op_num_threads == 2 and options.get_session_config_entry(SPINNING) == "0"


def test_encoder_options_follow_the_plan() -> None:
    small, big = plan_threads(2), plan_threads(32)
    assert encoder_options(".mp4", small) == {"crf": "23", "threads": "1", "preset": "ultrafast"}
    assert encoder_options(".mp4", big)["threads"] == "4" and encoder_options(".mp4", big)["preset"] == "veryfast"
    webm = encoder_options(".webm", small)
    assert webm["threads"] == "1" and "preset" not in webm and webm["deadline"] == "realtime"


@pytest.mark.parametrize("cores", [2, 4, 16])
@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "h264"), (".webm", "vp9")])
def test_every_plan_records_a_browser_playable_video(tmp_path: Path, cores: int, suffix: str, codec: str) -> None:
    path = tmp_path / f"plan{suffix}"
    recording = open_recording(path, path, (160, 120), 30.0, plan_threads(cores))
    for index in range(5):
        recording.write(lesion_image(160, 120, seed=index), index * 33)
    recording.close()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        assert (stream.codec_context.name, stream.codec_context.pix_fmt, len(frames)) == (codec, "yuv420p", 5)
        assert np.abs(frames[2].to_ndarray(format="bgr24").astype(int) - lesion_image(160, 120, seed=2)).mean() < 12


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux's")
def test_lowering_a_threads_priority_leaves_the_others_alone() -> None:
    seen = {}

    def finisher() -> None:
        thread_plan.lower_this_thread_priority(3)
        seen["finisher"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    worker = threading.Thread(target=finisher)
    worker.start()
    worker.join()
    assert seen["finisher"] == min(19, before + 3)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_a_run_uses_the_plan_it_is_given(monkeypatch, video_20: Path, tmp_path: Path) -> None:
    from edgeseg.runtime import run_loop
    from edgeseg.runtime.backends import open_segmenter
    from edgeseg.runtime.sources import open_source

    given = ThreadPlan(
        cores=2,
        inference_threads=2,
        inference_spinning=False,
        encoder_threads=1,
        x264_preset="superfast",
        finisher_nice=0,
    )
    used = []
    original = run_loop.open_recording
    monkeypatch.setattr(run_loop, "open_recording", lambda *args: used.append(args[-1]) or original(*args))
    with open_segmenter(default_model_path(), "onnxruntime-cpu") as segmenter, open_source(str(video_20)) as source:
        options = run_loop.RunOptions(save_video=tmp_path / "run.mp4", max_frames=3, thread_plan=given)
        summary = run_loop.run_pipeline(segmenter, source, options)
    assert summary.frames == 3 and used == [given]
