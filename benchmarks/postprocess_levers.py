"""The accuracy levers that need no training, measured on the shipped default model: hole filling, flip TTA,
the closer look.

    python benchmarks/postprocess_levers.py [--model models/default/model.onnx] [--data ../shared/data/isic2018]
        [--timing-images 12] [--timing-rounds 5] [--threads N]

Every lever runs through the real ``edgeseg.core.segmenter.Segmenter`` (what `edgeseg eval` and `edgeseg run`
use) over the model on onnxruntime CPU, and is scored on the rows of the accuracy benchmark
(benchmarks/train_accuracy.py), built by the same functions: val (``edgeseg.evaluate.accuracy.evaluate``),
val camera-framed and the full-resolution images of val and train (``edgeseg.evaluate.device_views``),
each image at its own resolution with the ISIC-exact metrics, mean over images.

Levers: ``fill_holes`` (holes inside the kept lesion region filled), ``tta`` (``hflip``: the image and
its horizontal flip; ``hvflip``: also the vertical and the double flip; probabilities flipped back and
averaged after the sigmoid) and ``refine`` (the closer look: where the lesion is small in the frame, a
square around it segmented again at the network's full input, ``edgeseg.core.postprocess.closer_look_box``).
Cost: end-to-end ms per frame (prepare + infer + finish, image decoding excluded) of each setting,
interleaved on the same images, on val crops and on camera frames.

A lever helps when Jaccard rises and neither Jaccard nor thresholded Jaccard falls, on val and on val
camera-framed both; only a lever that helps may become a default. Flip TTA also multiplies the inference
work by its views (2 or 4) on every frame, so it stays an option (`--tta` of eval and run) whatever it
gains: the runtime's live frame rate comes first. The closer look costs a second network run only on
frames whose lesion is small; it may become the default when it helps on camera-framed val (what the
device sees) by more than it costs on val, whose crops already show the lesion close. Writes
benchmarks/results/levers-postprocess-cpu.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_accuracy import DEFAULT_DATA  # the accuracy benchmark's data set

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {  # label -> (tta, fill_holes, refine)
    "baseline": ("none", False, False),
    "fill_holes": ("none", True, False),
    "tta_hflip": ("hflip", False, False),
    "tta_hvflip": ("hvflip", False, False),
    "refine": ("none", False, True),
    "refine+tta_hflip": ("hflip", False, True),
}
ROWS = ("val", "val_camera_framed", "full_resolution_val", "full_resolution_train")
DECIDING_ROWS = ("val", "val_camera_framed")
FRAMES = "camera frames (768x1024 to 1280x1920)"
REPORTED = ("dice", "jaccard", "threshold_jaccard", "sensitivity", "specificity")


def score_rows(segmenter, data: Path, split_dir: Path | None) -> dict[str, object]:
    """The accuracy benchmark's rows for this Segmenter as it is set (each an Evaluation)."""
    from edgeseg.core.data import discover_samples
    from edgeseg.evaluate.accuracy import evaluate, evaluate_images
    from edgeseg.evaluate.device_views import camera_framed, full_resolution

    val = discover_samples(data, split="val", split_dir=split_dir)
    train = discover_samples(data, split="train", split_dir=split_dir)
    name = "default model"
    return {
        "val": evaluate(segmenter, val, name, "val", progress=False),
        "val_camera_framed": evaluate_images(segmenter, camera_framed(val), name, "val camera-framed", progress=False),
        "full_resolution_val": evaluate_images(segmenter, full_resolution(val), name, "val full-res", progress=False),
        "full_resolution_train": evaluate_images(
            segmenter, full_resolution(train), name, "train full-res", progress=False
        ),
    }


def paired(evaluation, baseline) -> dict[str, int]:
    """Images whose Jaccard rose, fell or stayed (to 1e-6) against the baseline."""
    before = {row["id"]: row["jaccard"] for row in baseline.per_image}
    change = np.array([row["jaccard"] - before[row["id"]] for row in evaluation.per_image])
    return {
        "better": int((change > 1e-6).sum()),
        "worse": int((change < -1e-6).sum()),
        "same": int((np.abs(change) <= 1e-6).sum()),
    }


def measure_accuracy(segmenter, data: Path, split_dir: Path | None) -> dict[str, dict]:
    """Every setting on every row: means, the change against the baseline, images better / worse."""
    evaluations = {}
    for label, (tta, fill_holes, refine) in SETTINGS.items():
        segmenter.tta, segmenter.fill_holes, segmenter.refine = tta, fill_holes, refine
        started = time.monotonic()
        evaluations[label] = score_rows(segmenter, data, split_dir)
        print(f"{label}: scored in {time.monotonic() - started:.0f} s", file=sys.stderr)
    results = {}
    for label, rows in evaluations.items():
        results[label] = dict(zip(("tta", "fill_holes", "refine"), SETTINGS[label], strict=True))
        for row, evaluation in rows.items():
            mean, base = evaluation.mean, evaluations["baseline"][row].mean
            results[label][row] = {
                "images": len(evaluation.per_image),
                **{name: round(mean[name], 6) for name in REPORTED},
                "change": {name: round(mean[name] - base[name], 6) for name in REPORTED},
                "jaccard_per_image": paired(evaluation, evaluations["baseline"][row]),
            }
    return results


def timing_images(data: Path, split_dir: Path | None, count: int) -> dict[str, list[np.ndarray]]:
    """The first ``count`` val crops, and as many camera frames (the camera-framed view), decoded once."""
    from itertools import islice

    from edgeseg.core.data import discover_samples
    from edgeseg.evaluate.accuracy import read_samples
    from edgeseg.evaluate.device_views import camera_framed

    val = discover_samples(data, split="val", split_dir=split_dir)
    return {
        "val crops (512x512)": [item.image for item in islice(read_samples(val), count)],
        FRAMES: [item.image for item in islice(camera_framed(val), count)],
    }


def measure_speed(segmenter, images: dict[str, list[np.ndarray]], rounds: int) -> dict[str, dict]:
    """End-to-end ms per frame of each setting, interleaved: every image goes through every setting in turn."""
    settings = list(SETTINGS)
    times = {kind: {label: [] for label in settings} for kind in images}
    for kind, frames in images.items():
        for label in settings[:2]:  # warm-up: sessions, buffers and the batch probe
            segmenter.tta, segmenter.fill_holes, segmenter.refine = SETTINGS[label]
            segmenter.segment(frames[0])
        for round_index in range(rounds):
            for frame_index, frame in enumerate(frames):
                shift = (round_index + frame_index) % len(settings)  # rotate the order: no setting always first
                for label in settings[shift:] + settings[:shift]:
                    segmenter.tta, segmenter.fill_holes, segmenter.refine = SETTINGS[label]
                    started = time.perf_counter()
                    segmenter.segment(frame)
                    times[kind][label].append((time.perf_counter() - started) * 1000.0)
    return {
        kind: {
            label: {
                "median_ms": round(statistics.median(values), 2),
                "mean_ms": round(statistics.fmean(values), 2),
                "fps_at_median": round(1000.0 / statistics.median(values), 1),
                "frames": len(values),
            }
            for label, values in per_setting.items()
        }
        for kind, per_setting in times.items()
    }


def helps(result: dict) -> bool:
    """Jaccard and thresholded Jaccard up, and neither down, on val and on val camera-framed."""
    changes = [result[row]["change"] for row in DECIDING_ROWS]
    return all(change["jaccard"] >= 0 and change["threshold_jaccard"] >= 0 for change in changes) and all(
        change["jaccard"] > 0 for change in changes
    )


# The closer look may cost the val crops at most this much Jaccard or thresholded Jaccard (module docstring).
REFINE_VAL_TOLERANCE = 0.005


def refine_pays(result: dict) -> bool:
    """Up on camera-framed val (Jaccard and thresholded Jaccard), and at most REFINE_VAL_TOLERANCE down on val."""
    framed, val = result["val_camera_framed"]["change"], result["val"]["change"]
    return (
        framed["jaccard"] > 0
        and framed["threshold_jaccard"] > 0
        and min(val["jaccard"], val["threshold_jaccard"]) >= -REFINE_VAL_TOLERANCE
    )


def verdict(result: dict, helps_both: bool) -> str:
    if result["refine"] and result["tta"] == "none":
        return (
            "made the default (`--no-refine` turns it off): it pays on camera frames"
            if refine_pays(result)
            else "dropped: not the default (still an option, --refine)"
        )
    if result["tta"] == "none":
        return "made the default" if helps_both else "dropped: not the default (off; still an option, --fill-holes)"
    return (
        "helps on both rows, kept as an option (--tta), not the default: it multiplies the inference work by the "
        "views on every frame, and the live frame rate is the runtime's first promise"
        if helps_both
        else "dropped: it does not help on both rows"
    )


def decisions(report: dict) -> dict[str, str]:
    """Kept or dropped, and why, for each setting, from its figures (the policy is in the module docstring)."""
    accuracy, frames = report["accuracy"], report["speed"][FRAMES]
    base_ms = frames["baseline"]["median_ms"]
    out = {}
    for label, yes in report["helps_on_val_and_camera_framed"].items():
        val, framed = (accuracy[label][row] for row in DECIDING_ROWS)
        figures = (
            f"Jaccard {val['change']['jaccard']:+.4f} / thr. Jaccard {val['change']['threshold_jaccard']:+.4f} on "
            f"val ({_changed(val)} images changed), {framed['change']['jaccard']:+.4f} / "
            f"{framed['change']['threshold_jaccard']:+.4f} on camera-framed ({_changed(framed)} changed)"
        )
        cost = f"{frames[label]['median_ms'] / base_ms:.2f}x the baseline's ms per camera frame"
        out[label] = f"{verdict(accuracy[label], yes)}. {figures}; {cost}."
    return out


def _changed(view: dict) -> int:
    return view["jaccard_per_image"]["better"] + view["jaccard_per_image"]["worse"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an edgeseg ONNX [edgeseg's default model]")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split-dir", type=Path)
    parser.add_argument("--threads", type=int, help="onnxruntime threads [onnxruntime's choice]")
    parser.add_argument("--timing-images", type=int, default=12, help="images of each kind timed [12]")
    parser.add_argument("--timing-rounds", type=int, default=5, help="passes over them [5]")
    parser.add_argument(
        "--out", type=Path, default=RESULTS / "levers-postprocess-cpu.json", help="the .md goes beside it"
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    from edgeseg.core.files import portable_command, portable_path, write_text_atomic
    from edgeseg.core.host import host_info
    from edgeseg.core.names import default_model_path
    from edgeseg.loading.open import open_model

    model = args.model or default_model_path()
    started = time.monotonic()
    with open_model(model, "onnxruntime-cpu", threads=args.threads) as segmenter:
        accuracy = measure_accuracy(segmenter, args.data, args.split_dir)
        speed = measure_speed(
            segmenter, timing_images(args.data, args.split_dir, args.timing_images), args.timing_rounds
        )
        batched = segmenter._batched
    report = {
        "benchmark": "postprocess_levers",
        "model": portable_path(model),
        "backend": "onnxruntime-cpu (fp32)",
        "tta_batch": "one batch through the backend"
        if batched
        else "one backend call per view (the model's batch is 1)",
        "labels": "each row scored as benchmarks/train_accuracy.py scores it: every image at its own resolution (ISIC "
        "scorer's rules), mean over images; threshold and largest-region rule from the model card. 'change' is "
        "against the baseline (no lever). TTA averages probabilities (after the sigmoid), each flipped back. "
        "Timing: end-to-end Segmenter.segment (preprocess + inference + postprocess, no image decoding), "
        "settings interleaved image by image.",
        "accuracy": accuracy,
        "speed": speed,
        "helps_on_val_and_camera_framed": {
            label: helps(result) for label, result in accuracy.items() if label != "baseline"
        },
        "kept_or_dropped": {},
        "command": portable_command(sys.argv),
        "host": host_info(),
        "wall_minutes": round((time.monotonic() - started) / 60, 2),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    report["kept_or_dropped"] = decisions(report)
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    write_text_atomic(args.out.with_suffix(".md"), markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    """The figures as tables: accuracy per setting and row, then the cost per frame."""
    lines = [
        f"# Post-processing levers on the default model ({report['backend']})",
        "",
        f"Model `{report['model']}`; {report['host']['cpu'].get('model')}; TTA: {report['tta_batch']}.",
        report["labels"],
        "",
        "| setting | row | images | Dice | Jaccard | thr. Jaccard | sensitivity | Δ Dice | Δ Jaccard | Δ thr. Jaccard "
        "| Jaccard better / worse |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, result in report["accuracy"].items():
        for row in ROWS:
            view, change = result[row], result[row]["change"]
            per_image = view["jaccard_per_image"]
            lines.append(
                f"| {label} | {row} | {view['images']} | {view['dice']:.4f} | {view['jaccard']:.4f} | "
                f"{view['threshold_jaccard']:.4f} | {view['sensitivity']:.4f} | {change['dice']:+.4f} | "
                f"{change['jaccard']:+.4f} | {change['threshold_jaccard']:+.4f} | "
                f"{per_image['better']} / {per_image['worse']} |"
            )
    lines += [
        "",
        "| setting | " + " | ".join(f"{kind}: median ms (FPS)" for kind in report["speed"]) + " |",
        "| --- |" + " ---: |" * len(report["speed"]),
    ]
    for label in report["accuracy"]:
        cells = [
            f"{kind[label]['median_ms']:.1f} ({kind[label]['fps_at_median']:.1f})" for kind in report["speed"].values()
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Kept or dropped (a lever helps when Jaccard rises, and neither Jaccard nor thresholded Jaccard falls, "
        "on val and on val camera-framed both; the closer look, refine, when it rises on camera-framed val and "
        f"costs val at most {REFINE_VAL_TOLERANCE}):",
        "",
    ]
    lines += [f"- **{label}**: {text}" for label, text in report["kept_or_dropped"].items()]
    lines += [
        "",
        f"`{report['command']}`, {report['date']}, {report['wall_minutes']} min; load average "
        f"{report['host'].get('load_average')}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
