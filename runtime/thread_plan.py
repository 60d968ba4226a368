"""How `edgeseg run` shares the CPU's cores between inference and the work around it.

The main thread runs the model; the source's reader decodes frames and the finisher draws the
overlay and feeds the video encoder beside it. On a small CPU they all want the same cores: with
FFmpeg's defaults libx264 starts threads by the core count (six on 2 cores) and its veryfast
preset costs about 8 ms of CPU a 640x480 frame, so recording slowed inference inside `run` (22.3 ms
a frame against 17.2 ms bare on a 2-core Xeon). The plan, a rule of the cores this process may use
(benchmarks/runtime_throughput.py measures it against the settings before it):

- inference gets a thread per core (onnxruntime's own default, but counted from the cores this
  process may use, so a container limited to 2 of 64 cores runs 2 threads, not 64);
- its idle threads sleep instead of spinning unless the pipeline's other threads have cores of
  their own (measured on 2 cores: spinning did not speed the run up);
- the encoder gets few threads and a cheap preset on a small CPU, more threads and a better preset
  where the cores are there to pay for them;
- the finisher (overlay, encoder, files) runs at a lower priority, so that where it and the model
  want the same core the model wins; nothing is dropped for it (a short queue holds the main
  thread back when the finisher falls behind). On 2 cores this was within the noise.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass

from edgeseg.core import host

log = logging.getLogger("edgeseg.runtime")

# How much lower the finisher's priority is (Linux nice levels: each level is ~1.25x less CPU share
# under contention); 10 leaves it about a tenth of a contended core, all of an idle one.
FINISHER_NICE = 10


@dataclass(frozen=True)
class ThreadPlan:
    cores: int  # cores this process may run on
    inference_threads: int  # onnxruntime intra-op threads
    inference_spinning: bool  # whether onnxruntime's idle threads spin-wait for work
    encoder_threads: int  # libx264 / libvpx threads
    x264_preset: str
    finisher_nice: int  # added to the finisher thread's (and its encoder threads') nice level


def plan_threads(cores: int, physical: int | None = None) -> ThreadPlan:
    """The plan for a CPU with ``cores`` usable logical cores (``physical`` of them real cores, if known)."""
    cores = max(1, cores)
    inference = max(1, min(cores, physical or cores))  # SMT siblings do not speed a convolution up
    # x264's ultrafast costs a third of veryfast's CPU (2.9 against 8.3 ms a 640x480 frame on the EPYC) at the
    # same crf and no lower PSNR, in files up to 2.5 times the size; superfast costs nearly what veryfast does.
    if cores <= 3:  # every core runs the model: the encoder must be cheap and single
        encoder_threads, preset = 1, "ultrafast"
    elif cores <= 6:
        encoder_threads, preset = 2, "ultrafast"
    else:  # the cores are there to pay for files less than half the size on smooth dermoscopy video
        encoder_threads, preset = min(4, max(2, cores // 4)), "veryfast"
    # A spinning thread holds its core between the model's operators and runs: only where the reader,
    # the finisher and the encoder have cores of their own is that not taken from them.
    spinning = cores - inference >= 2 + encoder_threads
    return ThreadPlan(cores, inference, spinning, encoder_threads, preset, FINISHER_NICE)


def usable_cores() -> tuple[int, int | None]:
    """(logical cores this process may use, physical cores of the machine or None)."""
    cores, _ = host.usable_cores()
    physical, _ = host.physical_cores()
    cores = cores or os.cpu_count() or 1
    return cores, physical


def this_host_plan() -> ThreadPlan:
    return plan_threads(*usable_cores())


def lower_this_thread_priority(nice: int) -> None:
    """Lower the calling thread's priority (Linux: nice is per thread, and threads it starts inherit it)."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + nice)
    except OSError as error:  # a sandbox that forbids it: the run works, only less well shared
        log.debug("could not lower the finisher's priority: %s", error)
