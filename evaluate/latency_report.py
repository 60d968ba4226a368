"""The text of a bench report: a terminal summary, a markdown file, the JSON as measured.

The report itself is the dict ``edgeseg.evaluate.latency.run_bench`` returns (``--json``'s content).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeseg.core.files import write_text_atomic
from edgeseg.core.tables import markdown_table, text_table
from edgeseg.evaluate.latency import STAGES, STAT_KEYS


def _ms(stats: dict[str, float] | None, key: str) -> str:
    return f"{stats[key]:.2f}" if stats else "-"


def _accuracy(record: dict[str, Any]) -> str:
    accuracy = record["accuracy"]
    if not accuracy:
        return "-"
    return f"Dice {accuracy['dice']:.4f} / TJ {accuracy['threshold_jaccard']:.4f}"


def _size(record: dict[str, Any]) -> str:
    return f"{record['size_bytes'] / 1e6:.1f} MB"


def _input(record: dict[str, Any]) -> str:
    return "x".join(map(str, record["input_size"])) if record["input_size"] else "-"


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = [["form", "backend", "precision", "status", "input", "size", "accuracy", "p50 ms", "p99 ms", "FPS"]]
    for record in report["results"]:
        end_to_end = record["stages"]["end_to_end"]
        rows.append(
            [
                record["form"],
                record["backend"],
                record["precision"] or "-",
                record["status"],
                _input(record),
                _size(record),
                _accuracy(record),
                _ms(end_to_end, "p50_ms"),
                _ms(end_to_end, "p99_ms"),
                f"{record['fps']:.1f}" if record["fps"] else "-",
            ]
        )
    return rows


def stage_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = [["form", "backend", "stage", "mean", "p50", "p90", "p99", "min", "max"]]
    for record in report["results"]:
        if record["status"] != "ok":
            continue
        for stage in STAGES:
            stats = record["stages"][stage]
            rows.append([record["form"], record["backend"], stage, *(_ms(stats, key) for key in STAT_KEYS)])
    return rows


def reasons(report: dict[str, Any]) -> list[str]:
    return [
        f"{record['form']} ({record['backend']}): {record['status']}: {record['reason']}"
        for record in report["results"]
        if record["status"] != "ok"
    ]


def terminal_text(report: dict[str, Any]) -> str:
    from edgeseg.core.host import describe_host

    parts = [
        text_table(summary_rows(report)),
        "",
        f"latency per stage (ms, over {report['runs']} runs after {report['warmup']} warm-up):",
        text_table(stage_rows(report)),
        "",
    ]
    parts += [f"note: {note}" for note in report["notes"]]
    parts += [f"frame: {report['frame']['source']} ({report['frame']['width']}x{report['frame']['height']})"]
    parts += [f"not measured: {line}" for line in reasons(report)]
    parts += [f"WARNING: {warning}" for warning in report["warnings"]]
    parts += ["host: " + line for line in describe_host(report["host"])]
    return "\n".join(parts)


def markdown_text(report: dict[str, Any], title: str = "edgeseg bench") -> str:
    from edgeseg.core.host import describe_host

    lines = [
        f"# {title}",
        "",
        "Command:",
        "",
        "```",
        report["command"],
        "```",
        "",
        f"Measured {report['date']} on:",
        "",
    ]
    lines += [f"- {line}" for line in describe_host(report["host"])]
    lines += [
        "",
        f"{report['runs']} timed runs per form after {report['warmup']} warm-up runs; frame: "
        f"{report['frame']['source']} ({report['frame']['width']}x{report['frame']['height']}).",
        "",
    ]
    lines += [f"- {note}" for note in report["notes"]]
    lines += [
        "",
        "## Summary",
        "",
        markdown_table(summary_rows(report)),
        "",
        "Accuracy: Dice / thresholded Jaccard (TJ); p50/p99/FPS: end to end.",
        "",
        "## Latency per stage (ms)",
        "",
        markdown_table(stage_rows(report)),
    ]
    if reasons(report):
        lines += ["", "## Not measured", ""] + [f"- {line}" for line in reasons(report)]
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {warning}" for warning in report["warnings"]]
    accuracy = [record["accuracy"] for record in report["results"] if record["accuracy"]]
    if accuracy:
        first = accuracy[0]
        lines += [
            "",
            f"Accuracy on {first['data']}, split {first['split']} ({first['images']} images): "
            f"{first['resolution']}; {first['aggregation']}.",
        ]
    return "\n".join(lines) + "\n"


def write_report(
    report: dict[str, Any], json_path: Path | None = None, md_path: Path | None = None, title: str = "edgeseg bench"
) -> None:
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(report, indent=2) + "\n")
    if md_path is not None:
        write_text_atomic(md_path, markdown_text(report, title))
