"""The figures the docs quote, and the records under benchmarks/results/ they come from.

    python docs/figures.py            # rewrite the generated tables from the records
    python docs/figures.py --check    # list every figure that disagrees with its record, or has none (exit 1)

A measured figure gets into README.md, docs/*.md or models/default/README.md in one of two ways:

- In a generated table, between ``<!-- begin generated: NAME [RECORD] -->`` and ``<!-- end generated: NAME -->``:
  this script renders it from the record (``BLOCKS`` below); ``--check`` says when one is stale.
- In prose, followed by its source in an HTML comment (a browser does not show it):
  ``1.49x<!--fig fl.inference_p50_ms.fp32 / fl.inference_p50_ms["int8, float down to 1/4 of the input (now)"]-->``
  recomputes the figure from a record the page declares once (``<!-- records: fl = int8-float-layers-cpu.json -->``)
  and compares it at the precision written (1.49 means 1.485 to 1.495). ``<!--in PATH-->`` instead asks that the
  number appears in that file: a figure kept only in a record's Markdown, or a limit set in the code.

Anything else that looks measured (a number with ms, FPS, x, %, M parameters, a decimal size or duration, a
metric like 0.911) outside code is a figure without a source, and ``--check`` names it. Code (indented blocks,
fences, `spans`) is exempt: it holds commands and options, not results.
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import re
import sys
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RECORDS = REPO_ROOT / "benchmarks" / "results"
DOC_PATTERNS = ("README.md", "docs/*.md", "models/default/README.md")

DECLARATION = re.compile(r"<!--\s*records:(?P<body>.*?)-->", re.S)
SOURCE_TAG = re.compile(r"<!--(?P<kind>fig|in)\s(?P<source>.*?)-->", re.S)
SHOWN = re.compile(r"(?P<number>[-+\u2212]?\d+(?:\.\d+)?)(?P<unit>(?:\s?[A-Za-z%\u00d7]+){0,2})\s?$")
BLOCK = re.compile(
    r"<!-- begin generated: (?P<spec>[^>]*?) -->\n(?P<body>.*?)<!-- end generated: (?P<name>\S+) -->", re.S
)
FIGURE = re.compile(
    r"""
    (?<![\w.\-])(?:
        \d+(?:\.\d+)?\s?(?:ms|FPS|fps)\b                   # a latency, a frame rate
      | \d+(?:\.\d+)?[x\u00d7](?![\w])                      # a speed-up or a ratio
      | \d+(?:\.\d+)?\s?%                                  # a share
      | \d+\.\d+\s?(?:[kKMG]i?B)\b                         # a measured size
      | \d+(?:\.\d+)?\s?M\s(?:parameters|params)\b         # a parameter count
      | \d+\.\d+\s?(?:s|seconds|min|minutes|h|hours)\b     # a measured duration
      | [-+\u2212]?0\.\d{2,}                                # a metric, a difference
    )""",
    re.X,
)


class FigureError(Exception):
    """A figure's source cannot be read or computed."""


class NotCheckedHere(FigureError):
    """A figure whose source needs what this environment lacks (PyTorch for a parameter count)."""


# ---------------------------------------------------------------- records and the models they are of


@cache
def record(name: str) -> Any:
    path = RECORDS / name
    if not path.is_file():
        raise FigureError(f"no record benchmarks/results/{name}")
    return json.loads(path.read_text(encoding="utf-8"))


# Training runs stay outside git (runs/); a record names one by its folder. What each was:
RUNS = {
    "accuracy-cpu": "lite0, 54 min on the CPU without camera framing: replaced before a default shipped",
    "default-v1": "lite0, 68 min on the CPU: the first default model",
    "ft-lovasz": "lite0, default-v1 + a 50-min Lovasz fine-tune on the CPU: the second default",
    "ft320": "lite0, default-v1 fine-tuned at 320 px: a lever, dropped",
    "gpu-lite0": "lite0, 8 min on an H100",
    "gpu-ft-lovasz": "lite0, gpu-lite0 + a 45-min Lovasz fine-tune on the CPU: the third default",
    "lite1-ft": "lite1, 7 min on an H100 beside lite2-ft",
    "lite2-ft": "lite2, 7 min on an H100: the default model now",
    "lite2-ft-cpu": "lite2, lite2-ft fine-tuned on the CPU (not kept)",
}

# What each record measures; and, where a record names only "the default model", which one that was when it
# was recorded (git history of models/default/model.onnx: default-v1 from ef792b6, ft-lovasz from 30c2a17,
# gpu-ft-lovasz from 83a1a83, lite2-ft from 1fc8d74).
SUBJECTS = {
    "accuracy-cpu.json": ("accuracy (val, camera-framed, full resolution), per-epoch curves", None),
    "accuracy-ft-lovasz-cpu.json": ("accuracy, per-epoch curves", None),
    "accuracy-ft320-cpu.json": ("accuracy, per-epoch curves", None),
    "accuracy-gpu-lite0-ft-lovasz-cpu.json": ("accuracy, per-epoch curves", None),
    "accuracy-gpu-lite1-nvidia-h100-80gb-hbm3.json": ("accuracy, per-epoch curves", None),
    "accuracy-gpu-lite2-nvidia-h100-80gb-hbm3.json": ("accuracy, per-epoch curves", None),
    "accuracy-gpu-nvidia-h100-80gb-hbm3.json": ("accuracy, per-epoch curves", None),
    "bench-cpu.json": ("latency of PyTorch and the ONNX forms, interleaved", None),
    "bench-default-lite2-vs-lite0-cpu.json": (
        "latency of the lite2 forms against the lite0 default before",
        "lite2-ft and gpu-ft-lovasz",
    ),
    "ensemble-ceiling-cpu.json": (
        "what averaging the models with flip TTA reaches on val",
        "lite2-ft, lite1-ft, gpu-ft-lovasz, lite2-ft-cpu",
    ),
    "export-parity-cpu.json": ("parity of the exported forms against PyTorch", None),
    "export-parity-ft-lovasz-cpu.json": ("parity of the exported forms against PyTorch", None),
    "export-parity-gpu-ft-lovasz-cpu.json": ("parity of the exported forms against PyTorch", None),
    "export-parity-gpu-lite2-cpu.json": ("parity of the exported forms against PyTorch", None),
    "gpu-check-nvidia-h100-80gb-hbm3.json": (
        "CUDA buffers, a killed and resumed CUDA run, eval and bench on CUDA",
        "a tiny FPN trained on synthetic data",
    ),
    "int8-float-layers-cpu.json": ("INT8 with the leading layers float or not: gate and speed", None),
    "int8-options-cpu.json": ("INT8 calibration options: gate and speed", None),
    "int8-sensitivity-cpu.json": (
        "INT8 float blocks chosen by a sensitivity pass: gate and speed",
        "the default model",
    ),
    "levers-postprocess-cpu.json": ("closer look, flip TTA, hole filling: accuracy and speed", "gpu-ft-lovasz"),
    "levers-postprocess-lite2-cpu.json": ("closer look, flip TTA, hole filling: accuracy and speed", "lite2-ft"),
    "runtime_throughput_default-lite2_onnxruntime-cpu.json": (
        "`edgeseg run` throughput with the thread plan, against the bare model",
        "lite2-ft",
    ),
    "runtime_throughput_model_onnxruntime-cpu.json": ("`edgeseg run` throughput against the bare model", None),
    "serve-load-cpu.json": ("the live view's frame rate with viewers and snapshot loops", "lite2-ft"),
    "speed-accuracy-cpu.json": (
        "lite0, lite1, lite2 at 256 and 320: latency of fp32 and INT8 (accuracy where scored)",
        "random weights (seed 0)",
    ),
    "soak-cpu.json": ("ten minutes of `edgeseg run`, and a stream that drops out", "default-v1"),
}


def run_name(data: dict) -> str | None:
    """The training run a record is of, from the folder it names."""
    for key in ("run_dir", "run", "model"):
        value = data.get(key)
        if isinstance(value, dict):
            value = value.get("weights")
        if isinstance(value, str) and value.startswith("runs/"):
            return value.split("/")[1]
    return None


def model_of(name: str) -> str:
    what, model = SUBJECTS[name]
    model = model or run_name(record(name))
    return f"{model} ({RUNS[model]})" if model in RUNS else str(model)


def host_of(data: dict) -> str:
    cpu = (data.get("host") or {}).get("cpu") or {}
    where = f"{cpu.get('model', '?')}, {cpu.get('usable_cores', '?')} cores"
    if isinstance(data.get("gpu"), dict):
        return f"{data['gpu']['name']} ({where})"
    if data.get("trained_on") and data["trained_on"] != "this host":
        return f"trained on {data['trained_on'].split(' (')[0]}, scored on {where}"
    return where


# ---------------------------------------------------------------- a figure's source, evaluated


def field(value: Any, key: Any) -> Any:
    try:
        return value[key]
    except (KeyError, IndexError, TypeError):
        raise FigureError(f"no field {key!r} in {str(value)[:80]}") from None


def pick(items: list[dict], **match: Any) -> dict:
    """The one item of a record's list whose fields equal ``match`` (a form by its name, say)."""
    found = [item for item in items if all(item.get(key) == value for key, value in match.items())]
    if len(found) != 1:
        raise FigureError(f"{len(found)} items match {match}")
    return found[0]


def top(items: list[dict], key: str) -> float:
    """The largest value of ``key`` over a record's list (the best row of a grid, say)."""
    return max(field(item, key) for item in items)


def size_mb(path: str) -> float:
    """A file of the repository, in MB (10^6 bytes): the unit every doc uses."""
    return (REPO_ROOT / path).stat().st_size / 1e6


@cache
def parameters_m(encoder: str) -> float:
    """Millions of parameters of edgeseg's FPN (decoder 128/64) with this encoder."""
    try:
        from edgeseg.core.card import ModelCard
        from edgeseg.train.network import build_model
    except ImportError as error:
        raise NotCheckedHere(f"counting parameters needs PyTorch ({error})") from None
    card = ModelCard(
        encoder=encoder, architecture_kwargs={"decoder_pyramid_channels": 128, "decoder_segmentation_channels": 64}
    )
    return sum(parameter.numel() for parameter in build_model(card).parameters()) / 1e6


FUNCTIONS: dict[str, Callable] = {
    "pick": pick,
    "top": top,
    "size_mb": size_mb,
    "parameters_m": parameters_m,
    "abs": abs,
    "min": min,
    "max": max,
    "len": len,
}
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate(node: ast.AST, names: dict[str, Any]) -> Any:
    """A figure's source: record fields (attributes or [keys]), arithmetic and FUNCTIONS; nothing else."""
    if isinstance(node, ast.Expression):
        return evaluate(node.body, names)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise FigureError(f"{node.id!r} is not declared (<!-- records: {node.id} = FILE.json -->)")
        return record(names[node.id])
    if isinstance(node, ast.Attribute):
        return field(evaluate(node.value, names), node.attr)
    if isinstance(node, ast.Subscript):
        return field(evaluate(node.value, names), evaluate(node.slice, names))
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        return OPERATORS[type(node.op)](evaluate(node.left, names), evaluate(node.right, names))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -evaluate(node.operand, names)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
        arguments = [evaluate(argument, names) for argument in node.args]
        keywords = {keyword.arg: evaluate(keyword.value, names) for keyword in node.keywords}
        return FUNCTIONS[node.func.id](*arguments, **keywords)
    raise FigureError(f"not allowed in a figure's source: {ast.unparse(node)}")


def source_value(source: str, names: dict[str, str]) -> float:
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as error:
        raise FigureError(f"cannot read the source {source.strip()!r}: {error.msg}") from None
    value = evaluate(tree, names)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FigureError(f"{source.strip()!r} is {value!r}, not a number")
    return float(value)


def agrees(shown: str, value: float) -> bool:
    """True when ``value`` written at the precision of ``shown`` is ``shown`` (a written + asks value >= 0)."""
    number = Decimal(shown.replace("\u2212", "-"))
    half_step = Decimal(5).scaleb(number.as_tuple().exponent - 1)
    if shown.startswith("+") and value < -float(half_step):
        return False
    return abs(Decimal(repr(value)) - number) <= half_step * Decimal("1.000001")


def numbers_in(path: Path) -> set[Decimal]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return {abs(Decimal(found)) for found in re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\d])", text)}


# ---------------------------------------------------------------- checking one page


def declared_records(text: str) -> dict[str, str]:
    names = {}
    for declaration in DECLARATION.finditer(text):
        for item in filter(None, (part.strip() for part in declaration.group("body").split(","))):
            alias, _, name = (part.strip() for part in item.partition("="))
            names[alias] = name
    return names


def line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def check_tag(kind: str, source: str, shown: str, names: dict[str, str]) -> str | None:
    """Why the figure ``shown`` disagrees with its source, or None."""
    if kind == "in":
        path = REPO_ROOT / source.strip()
        if not path.is_file():
            return f"no file {source.strip()}"
        if abs(Decimal(shown.replace("\u2212", "-"))) not in numbers_in(path):
            return f"{shown} does not appear in {source.strip()}"
        return None
    value = source_value(source, names)
    if not agrees(shown, value):
        return f"{shown} disagrees with its record: {source.strip()} = {value:.6g}"
    return None


def indented_code(text: str) -> list[tuple[int, int]]:
    """Indented code blocks: lines indented 4 spaces or more that start after a blank line (as in Markdown,
    where such a line cannot continue a paragraph or a comment)."""
    spans, start, in_code, after_blank = [], 0, False, True
    for line in text.splitlines(keepends=True):
        indented = line.startswith(("    ", "\t")) and line.strip()
        in_code = bool(indented and (in_code or after_blank)) or (in_code and not line.strip())
        if in_code and indented:
            spans.append((start, start + len(line.rstrip("\n"))))
        after_blank = not line.strip()
        start += len(line)
    return spans


def code_spans(text: str) -> list[tuple[int, int]]:
    """Fenced and indented code blocks and `inline code`: commands, options and sample output."""
    spans = [match.span() for match in re.finditer(r"^```.*?^```", text, re.S | re.M)]
    return spans + indented_code(text) + [match.span() for match in re.finditer(r"`[^`\n]+`", text)]


def tagged_figures(label: str, text: str) -> tuple[list[str], list[str], list[tuple[int, int]]]:
    """(problems, figures not checkable here, the spans of the figures and their tags) of one page.

    ``text`` has its code blanked: a tag shown in code is an example, not a source.
    """
    names = declared_records(text)
    problems, unchecked, spans = [], [], []
    for tag in SOURCE_TAG.finditer(text):
        line_start = text.rfind("\n", 0, tag.start()) + 1
        shown = SHOWN.search(text, line_start, tag.start())
        where = f"{label}:{line_of(text, tag.start())}"
        if not shown:
            problems.append(f"{where}: a source tag with no figure just before it")
            continue
        spans.append((shown.start(), tag.end()))
        problem = None
        try:
            problem = check_tag(tag.group("kind"), tag.group("source"), shown.group("number"), names)
        except NotCheckedHere as reason:
            unchecked.append(f"{where}: {shown.group('number')}: {reason}")
        except FigureError as error:
            problem = f"{shown.group('number')}: {error}"
        if problem:
            problems.append(f"{where}: {problem}")
    return problems, unchecked, spans


def blanked(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each span replaced by spaces (newlines kept, so line numbers stay)."""
    characters = list(text)
    for start, end in spans:
        for index in range(start, end):
            if characters[index] != "\n":
                characters[index] = " "
    return "".join(characters)


def prose_only(text: str, figure_spans: list[tuple[int, int]]) -> str:
    """The page without generated blocks, code, comments, link targets and sourced figures."""
    spans = list(figure_spans) + code_spans(text)
    spans += [match.span() for match in BLOCK.finditer(text)]
    spans += [match.span() for match in re.finditer(r"<!--.*?-->", text, re.S)]
    spans += [match.span() for match in re.finditer(r"\]\([^)\s]*\)|https?://\S+", text)]
    return blanked(text, spans)


def unsourced_figures(label: str, text: str, figure_spans: list[tuple[int, int]]) -> list[str]:
    prose = prose_only(text, figure_spans)
    return [
        f"{label}:{line_of(prose, found.start())}: {found.group(0).strip()!r} has no source "
        "(a generated table, <!--fig ...--> or <!--in FILE-->)"
        for found in FIGURE.finditer(prose)
    ]


def check_page(label: str, text: str) -> tuple[list[str], list[str]]:
    """(problems, figures not checkable here) of one page's text."""
    without_code = blanked(text, code_spans(text))
    problems, unchecked, spans = tagged_figures(label, without_code)
    problems += unsourced_figures(label, text, spans)
    problems += [f"{label}: {problem}" for problem in stale_blocks(text, without_code)]
    return problems, unchecked


# ---------------------------------------------------------------- generated tables


def metric(value: float | None, places: int = 3) -> str:
    return "-" if value is None else f"{value:.{places}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


ACCURACY_VIEWS = [
    ("val", "val (mostly 512x512 centre crops)"),
    ("val_camera_framed", "val, camera-framed (a 4:3 or 3:2 frame around each image, zoomed out)"),
    ("full_resolution_val", "full camera resolution, val"),
    ("full_resolution_train", "full camera resolution, train (seen in training)"),
    ("val_camera_framed_no_refine", "val, camera-framed, first look only (`--no-refine`)"),
]


def accuracy_views(name: str) -> str:
    """One model's accuracy per view, masks made as `edgeseg run` makes them."""
    data = record(name)
    rows = [
        [
            label,
            str(data[key]["images"]),
            metric(data[key]["dice"]),
            metric(data[key]["jaccard"]),
            metric(data[key]["threshold_jaccard"]),
            metric(data[key]["sensitivity"]),
        ]
        for key, label in ACCURACY_VIEWS
        if key in data
    ]
    return table(["view", "images", "Dice", "Jaccard", "thresholded Jaccard", "sensitivity"], rows)


ACCURACY_RECORDS = [
    "accuracy-gpu-lite2-nvidia-h100-80gb-hbm3.json",
    "accuracy-gpu-lite1-nvidia-h100-80gb-hbm3.json",
    "accuracy-gpu-lite0-ft-lovasz-cpu.json",
    "accuracy-gpu-nvidia-h100-80gb-hbm3.json",
    "accuracy-ft-lovasz-cpu.json",
    "accuracy-cpu.json",
    "accuracy-ft320-cpu.json",
]


def accuracy_models(_: str = "") -> str:
    """Every trained model's val and camera-framed figures, newest first."""
    rows = []
    for name in ACCURACY_RECORDS:
        data = record(name)
        val, framed = data["val"], data["val_camera_framed"]
        rows.append(
            [
                model_of(name),
                " / ".join(metric(val[key]) for key in ("dice", "jaccard", "threshold_jaccard")),
                " / ".join(metric(framed[key]) for key in ("dice", "jaccard", "threshold_jaccard")),
                metric(data["val_camera_framed_no_refine"]["threshold_jaccard"]),
                f"`{name}`",
            ]
        )
    return table(
        [
            "model",
            "val Dice / Jaccard / thr. Jaccard",
            "camera-framed Dice / Jaccard / thr. Jaccard",
            "camera-framed first look, thr. Jaccard",
            "record",
        ],
        rows,
    )


def postprocess_levers(name: str) -> str:
    """Each lever that needs no training: its change on val and camera-framed val, its cost, the verdict."""
    data = record(name)
    speed = data["speed"]["camera frames (768x1024 to 1280x1920)"]
    rows = []
    for lever, verdict in data["kept_or_dropped"].items():
        change = [data["accuracy"][lever][view]["change"] for view in ("val", "val_camera_framed")]
        cost = speed[lever]["median_ms"] / speed["baseline"]["median_ms"]
        rows.append(
            [
                f"`{lever}`",
                " / ".join(f"{c['jaccard']:+.4f}" for c in change),
                " / ".join(f"{c['threshold_jaccard']:+.4f}" for c in change),
                f"{speed[lever]['median_ms']:.1f} ({cost:.2f}x)",
                verdict.split(":")[0],
            ]
        )
    return table(
        [
            "lever",
            "Jaccard change, val / camera-framed",
            "thr. Jaccard change, val / camera-framed",
            "ms per camera frame (x none)",
            "verdict",
        ],
        rows,
    )


def parity_forms(name: str) -> str:
    """Each form an export built, judged against PyTorch."""
    data, rows = record(name), []
    for form in data["forms"]:
        if form["status"] != "built":
            continue
        p = form["parity"]
        rows.append(
            [
                f"`{Path(form['path']).name}`",
                form["precision"],
                "pass" if form["passed"] else "FAIL",
                f"{form['size_bytes'] / 1e6:.1f}",
                f"{p['max_abs_probability']:.2g}",
                f"{p['mean_mask_iou']:.4f} / {p['min_mask_iou']:.3f}",
                f"{p['confident_flip_share']:.5f} / {p['max_image_confident_flip_share']:.4f}",
                f"{p['delta_dice']:+.4f}",
                f"{-p['largest_dice_loss']:+.4f} ({p['largest_dice_loss_image']})",
            ]
        )
    reference = data["reference"]["accuracy"]
    rows.append(["PyTorch fp32 (the reference)", "fp32", "", "", "", "", "", f"Dice {reference['dice']:.4f}", ""])
    return table(
        [
            "form",
            "precision",
            "gate",
            "MB",
            "max abs dp",
            "mean / min mask IoU",
            "confident flips: all / worst image",
            "dDice",
            "worst image dDice",
        ],
        rows,
    )


def int8_options(name: str) -> str:
    """INT8 variants of one model: the gate's verdict and the speed against the fp32 ONNX, interleaved."""
    data = record(name)
    fp32 = data["inference_p50_ms"]["fp32"]
    rows = []
    for option, p50 in data["inference_p50_ms"].items():
        if option == "fp32":
            rows.append(["fp32 ONNX (the speed reference)", "", "", "", f"{p50:.2f}", "1.00"])
            continue
        p = data["parity"][option]
        rows.append(
            [
                option,
                "pass" if p["passed"] else "FAIL",
                f"{p['delta_dice']:+.4f}",
                f"{-p['largest_dice_loss']:+.4f} ({p['largest_dice_loss_image']})",
                f"{p50:.2f}",
                f"{fp32 / p50:.2f}",
            ]
        )
    return table(["option", "gate", "dDice", "worst image dDice", "inference p50 ms", "speed-up vs fp32"], rows)


def bench_forms(name: str) -> str:
    """`edgeseg bench` of several forms, interleaved in one process run."""
    rows = []
    for result in record(name)["results"]:
        stages = result["stages"]
        rows.append(
            [
                f"`{result['form']}`",
                result["backend"],
                result["precision"],
                f"{result['size_bytes'] / 1e6:.1f}",
                f"{stages['inference']['p50_ms']:.1f}",
                f"{stages['end_to_end']['p50_ms']:.1f}",
                f"{result['fps']:.1f}",
            ]
        )
    return table(["form", "backend", "precision", "MB", "inference p50 ms", "end to end p50 ms", "FPS"], rows)


def model_sizes(name: str) -> str:
    """benchmarks/speed_accuracy.py: each encoder and input size, fp32 and INT8, timed in one interleaved run."""
    rows = []
    for row in record(name)["rows"]:
        accuracy = row["accuracy"]
        dice = f"{accuracy['dice']:.3f}" if accuracy else "not yet"
        rows.append(
            [
                row["size"],
                f"{row['parameters'] / 1e6:.2f} M",
                f"{row['fp32_mb']:.1f}",
                f"{row['fp32_ms']:.1f}",
                f"{row['int8_ms']:.1f}",
                f"{row['fp32_ms'] / row['int8_ms']:.2f}x",
                dice,
            ]
        )
    return table(
        ["encoder@input", "parameters", "fp32 MB", "fp32 p50 ms", "INT8 p50 ms", "INT8 speed-up", "test Dice"], rows
    )


def records_table(_: str = "") -> str:
    """Every JSON record: what it measures, which model, where and when."""
    rows = []
    for path in sorted(RECORDS.glob("*.json")):
        if path.name not in SUBJECTS:
            raise FigureError(f"benchmarks/results/{path.name} is not described in docs/figures.py SUBJECTS")
        data = record(path.name)
        date = str(data.get("date") or data.get("created") or "-")[:10]
        rows.append([f"`{path.stem}`", SUBJECTS[path.name][0], model_of(path.name), host_of(data), date])
    return table(["record (.json, .md)", "what", "model", "host", "date"], rows)


BLOCKS: dict[str, Callable[[str], str]] = {
    "accuracy-views": accuracy_views,
    "accuracy-models": accuracy_models,
    "levers": postprocess_levers,
    "parity": parity_forms,
    "int8": int8_options,
    "bench": bench_forms,
    "records": records_table,
    "sizes": model_sizes,
}


def render(spec: str) -> str:
    name, _, argument = spec.strip().partition(" ")
    if name not in BLOCKS:
        raise FigureError(f"no generated table {name!r} (known: {', '.join(BLOCKS)})")
    return BLOCKS[name](argument.strip())


def stale_blocks(text: str, without_code: str) -> list[str]:
    """The generated tables of ``text`` (found where it is not code) that differ from their records."""
    problems = []
    for found in BLOCK.finditer(without_code):
        block = BLOCK.fullmatch(text, *found.span())
        spec, where = block.group("spec"), line_of(text, block.start())
        try:
            if block.group("name") != spec.split()[0]:
                problems.append(f"line {where}: the block {spec!r} ends as {block.group('name')!r}")
            elif block.group("body") != render(spec):
                problems.append(f"line {where}: the generated table {spec!r} is stale: python docs/figures.py")
        except (FigureError, KeyError) as error:
            problems.append(f"line {where}: {spec!r}: {error}")
    return problems


def regenerated(text: str) -> str:
    """``text`` with every generated table (outside code) rendered afresh from its record."""
    for found in reversed(list(BLOCK.finditer(blanked(text, code_spans(text))))):
        spec = BLOCK.fullmatch(text, *found.span()).group("spec")
        fresh = f"<!-- begin generated: {spec} -->\n{render(spec)}<!-- end generated: {spec.split()[0]} -->"
        text = text[: found.start()] + fresh + text[found.end() :]
    return text


# ---------------------------------------------------------------- every page


def pages(root: Path = REPO_ROOT) -> list[Path]:
    return sorted({path for pattern in DOC_PATTERNS for path in root.glob(pattern)})


def check_pages(root: Path = REPO_ROOT) -> tuple[list[str], list[str]]:
    problems, unchecked = [], []
    for path in pages(root):
        found, skipped = check_page(path.relative_to(root).as_posix(), path.read_text(encoding="utf-8"))
        problems += found
        unchecked += skipped
    return problems, unchecked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; list the problems, exit 1 if any")
    arguments = parser.parse_args(argv)
    if not arguments.check:
        from edgeseg.core.files import write_text_atomic

        for path in pages():
            text = path.read_text(encoding="utf-8")
            try:
                fresh = regenerated(text)
            except (FigureError, KeyError):
                continue  # the check below names the table that cannot be made
            if fresh != text:
                write_text_atomic(path, fresh)
                print(f"rewrote the generated tables of {path.relative_to(REPO_ROOT)}")
    problems, unchecked = check_pages()
    for line in unchecked:
        print(f"not checked here: {line}")
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
