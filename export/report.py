"""export-report.json (for tools) and export-report.md (for people), written atomically.

JSON: {"forms": [{"name", "path", "status", "passed", "reason", "size_bytes", "parity", "accuracy",
"latency_ms", ...}], "card", "host", "tolerances", "parity_images", ...}. ``status`` is built, skipped or
failed; ``passed`` is the gate's verdict (null for a skipped form).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from edgeseg.core.files import portable_path, write_text_atomic
from edgeseg.core.host import describe_host
from edgeseg.core.tables import markdown_table, text_table
from edgeseg.export.export_run import ExportReport, FormResult
from edgeseg.export.parity import Tolerances, rule_checks

JSON_NAME = "export-report.json"
MARKDOWN_NAME = "export-report.md"


def form_dict(form: FormResult) -> dict:
    parity = form.parity
    return {
        "name": form.name,
        "precision": form.precision,
        "path": str(form.path) if form.path else None,
        "status": form.status,
        "passed": form.passed,
        "reason": form.reason,
        "size_bytes": form.path.stat().st_size if form.path and form.path.is_file() else None,
        "parity": parity.to_dict() if parity else None,
        "accuracy": {"dice": parity.dice, "threshold_jaccard": parity.threshold_jaccard} if parity else None,
        "latency_ms": form.latency_ms,
        "notes": form.notes,
        "simulation": form.simulation,
    }


def report_dict(report: ExportReport, tolerance_sources: dict[str, str] | None = None) -> dict:
    """The report as JSON data; ``tolerance_sources`` maps each rule set for this export to where it was set
    (the --config file, --tolerance or an old flag)."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": portable_path(report.run_dir),
        "out_dir": portable_path(report.out_dir),
        "passed": report.passed,
        "failures": report.failures(),
        "not_judged": report.unjudged(),
        "forms": [form_dict(form) for form in report.forms],
        "reference": report.reference,
        "card": report.card.to_dict(),
        "host": report.host,
        "tolerances": report.tolerances.to_dict(),
        "tolerance_sources": dict(tolerance_sources or {}),
        "parity_images": report.parity_images,
        "calibration": report.calibration,
        "metrics": "Dice and thresholded Jaccard (ISIC 2018) against ground truth, per image at its original "
        "resolution, mean over the parity images; mask IoU is against PyTorch fp32's mask",
    }


def json_safe(value):
    """JSON has no NaN or Infinity: they become null (the parity rows still say nonfinite_images)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_report(
    report: ExportReport, out_dir: str | Path | None = None, tolerance_sources: dict[str, str] | None = None
) -> tuple[Path, Path]:
    out_dir = Path(out_dir or report.out_dir)
    data = json_safe(report_dict(report, tolerance_sources))
    json_path = write_text_atomic(out_dir / JSON_NAME, json.dumps(data, indent=2, allow_nan=False) + "\n")
    markdown_path = write_text_atomic(out_dir / MARKDOWN_NAME, markdown(report, data))
    return json_path, markdown_path


def _number(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


def _size(size_bytes) -> str:
    return "-" if size_bytes is None else f"{size_bytes / 2**20:.1f} MiB"


def _verdict(row: dict) -> str:
    if row["status"] != "built":
        return row["status"]
    if row["simulation"]:
        return "advisory: pass" if row["passed"] else "advisory: FAIL"
    return "pass" if row["passed"] else "FAIL"


TABLE_HEADER = (
    "form",
    "status",
    "gate",
    "size",
    "max|dp|",
    "mean IoU",
    "min IoU",
    "flipped",
    "conf.flips",
    "worst img flips",
    "Dice",
    "dDice",
    "thrJ",
    "dThrJ",
    "worst img dDice",
    "ms/img",
)


def table_rows(data: dict) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    reference = data["reference"]
    if reference:
        accuracy = reference.get("accuracy") or {}
        rows.append(
            (
                f"{reference.get('name', 'pytorch-fp32')} (reference)",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                _number(accuracy.get("dice")),
                "-",
                _number(accuracy.get("threshold_jaccard")),
                "-",
                "-",
                _number(reference.get("latency_ms"), 1),
            )
        )
    for row in data["forms"]:
        parity = row["parity"] or {}
        rows.append(
            (
                row["name"],
                row["status"],
                _verdict(row),
                _size(row["size_bytes"]),
                _number(parity.get("max_abs_probability"), 6),
                _number(parity.get("mean_mask_iou")),
                _number(parity.get("min_mask_iou")),
                _number(parity.get("flipped_fraction"), 5),
                _number(parity.get("confident_flip_share"), 5),
                _number(parity.get("max_image_confident_flip_share"), 4),
                _number(parity.get("dice")),
                _number(parity.get("delta_dice"), 4),
                _number(parity.get("threshold_jaccard")),
                _number(parity.get("delta_threshold_jaccard"), 4),
                _number(-parity["largest_dice_loss"] if parity else None, 4),
                _number(row["latency_ms"], 1),
            )
        )
    return rows


def terminal_table(data: dict) -> str:
    return text_table([TABLE_HEADER, *table_rows(data)])


def verdict_lines(report: ExportReport) -> list[str]:
    """The gate's verdict, a line per form: PASS with the rule that came nearest its limit, FAIL with the rule
    that decided (the first broken), SKIP with why."""
    return [verdict_line(form, report.tolerances) for form in report.forms]


def verdict_line(form: FormResult, tolerances: Tolerances) -> str:
    advisory = " (advisory: a simulation, not part of the gate)" if form.simulation else ""
    if form.status == "skipped":
        return f"SKIP {form.name}: {first_line(form.reason)}"
    if form.status == "failed":
        return f"FAIL {form.name}: build failed: {first_line(form.reason)}"
    if form.parity is None:
        return f"FAIL {form.name}: built but not checked"
    breaches = form.parity.breaches
    if breaches:
        more = f" (and {len(breaches) - 1} more in {MARKDOWN_NAME})" if len(breaches) > 1 else ""
        return f"FAIL {breaches[0]}{more}{advisory}"
    nearest = max(rule_checks(form.parity, tolerances), key=lambda check: check.share_of_limit)
    return f"PASS {form.name}: {nearest.label} {nearest.shown} (rule: {nearest.rule} <= {nearest.limit:g}){advisory}"


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "-"


def tolerance_lines(tolerances: dict) -> list[str]:
    lines = [
        f"- fp32 forms: max |dp| <= {tolerances['fp32_max_abs_probability']:g}",
        f"- confident pixels: |p - threshold| >= {tolerances['confident_margin']:g}",
    ]
    for precision in ("fp16", "int8"):
        rule = {name[len(precision) + 1 :]: value for name, value in tolerances.items() if name.startswith(precision)}
        lines.append(
            f"- {precision.upper()} forms: confident pixels flipped <= {rule['confident_flips']:g} of all and "
            f"<= {rule['image_confident_flips']:g} in any image; |delta Dice| <= {rule['abs_delta_dice']:g}; "
            f"|delta thresholded Jaccard| <= {rule['abs_delta_threshold_jaccard']:g}; Dice lost on any image "
            f"<= {rule['image_dice_loss']:g}"
        )
    return [*lines, "- every form: no NaN or Inf"]


def tolerance_section(data: dict) -> list[str]:
    return [
        "## Tolerances (`--tolerance RULE=VALUE` or a `--config` file; `edgeseg export --help` lists the defaults)",
        "",
        *tolerance_lines(data["tolerances"]),
        *tolerance_source_lines(data["tolerances"], data["tolerance_sources"]),
        "",
    ]


def tolerance_source_lines(tolerances: dict, sources: dict[str, str]) -> list[str]:
    """Which rules this export set (the others are the defaults), each with where it was set."""
    if not sources:
        return ["- every rule at its default"]
    return [f"- set here: `{rule} = {tolerances[rule]:g}` ({source})" for rule, source in sorted(sources.items())]


def markdown(report: ExportReport, data: dict | None = None) -> str:
    data = data or json_safe(report_dict(report))
    host = data["host"]
    images = data["parity_images"]
    lines = [
        f"# Export report: {data['run_dir']}",
        "",
        f"Verdict: **{'PASSED' if data['passed'] else 'FAILED'}** ({data['created']})",
        "",
        f"Parity images: {images['count']} from `{images['data']}` (split: {images['split']}), each through the same "
        "runtime preprocessing, upsampling and threshold (the card's) as PyTorch fp32."
        + (
            " That is the small set that ships with edgeseg: `--data DIR` runs the full check on your data."
            if images.get("reference_set")
            else ""
        ),
        "",
        markdown_table([TABLE_HEADER, *table_rows(data)]),
        "",
        "max|dp|: largest |probability difference| to PyTorch over all pixels and images. mean/min IoU: mask IoU "
        "with PyTorch's mask per image (both empty = 1.0). flipped: mean share of pixels whose mask value differs. "
        "conf.flips: share of the confident pixels (those PyTorch is sure of: |p - threshold| >= the margin) that "
        "flipped, over all images; worst img flips: the largest such share in one image. "
        "Dice, thrJ: mean ISIC Dice and thresholded Jaccard against ground truth at original resolution; dDice, "
        "dThrJ: change from PyTorch's; worst img dDice: the most Dice one image lost. ms/img: median of a few "
        "inference calls (batch 1, preprocessing excluded): a quick figure, see benchmarks/ for measured latency.",
        "",
    ]
    if data["failures"]:
        lines += ["## Why it failed", "", *(f"- {message}" for message in data["failures"]), ""]
    if data["not_judged"]:
        lines += ["## Not judged", "", *(f"- {message}" for message in data["not_judged"]), ""]
    notes = [(row["name"], note) for row in data["forms"] for note in row["notes"]]
    reasons = [(row["name"], f"{row['status']}: {row['reason']}") for row in data["forms"] if row["reason"]]
    if notes or reasons:
        lines += ["## Notes", "", *(f"- {name}: {text}" for name, text in reasons + notes), ""]
    lines += tolerance_section(data)
    lines += [
        "## Verified on which hardware",
        "",
        *(f"- {line}" for line in describe_host(host)),
        f"- TensorRT engines: {host.get('engines', 'unknown')}",
        "",
    ]
    for row in data["forms"]:
        if row["status"] == "built":
            where = (
                "onnxruntime CPU on this host"
                if row["name"] not in ("engine", "engine-int8")
                else "TensorRT on this host's GPU"
            )
            if row["simulation"]:
                where = "PyTorch float16 on this host's CPU (a simulation of the FP16 forms, not an engine)"
            lines.append(f"- {row['name']}: built and checked with {where}: `{row['path'] or '-'}`")
        else:
            lines.append(f"- {row['name']}: not verified here ({row['status']})")
    return "\n".join(lines) + "\n"
