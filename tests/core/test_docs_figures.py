"""Every figure the docs quote agrees with the record it comes from (docs/figures.py), and the check catches one
that does not: a wrong figure, a figure without a source, a stale generated table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_figures():
    spec = importlib.util.spec_from_file_location("edgeseg_docs_figures", REPO_ROOT / "docs" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


figures = load_figures()

LITE2 = "accuracy-gpu-lite2-nvidia-h100-80gb-hbm3.json"
DECLARED = f"<!-- records: acc = {LITE2} -->\n"


def problems_of(text: str) -> list[str]:
    return figures.check_page("page.md", text)[0]


def test_every_figure_in_the_docs_agrees_with_its_record():
    problems, unchecked = figures.check_pages()
    assert not problems, "figures in the docs that disagree with their records, or have none:\n" + "\n".join(problems)
    assert all("PyTorch" in line for line in unchecked), unchecked  # only parameter counts, and only without torch


def test_the_check_reads_the_pages_it_should():
    checked = {path.relative_to(REPO_ROOT).as_posix() for path in figures.pages()}
    assert {"README.md", "models/default/README.md", "docs/training.md", "docs/benchmarks-and-results.md"} <= checked


def test_a_figure_that_agrees_with_its_record_passes():
    dice = json.loads((REPO_ROOT / "benchmarks" / "results" / LITE2).read_text())["val"]["dice"]
    text = f"{DECLARED}val Dice {dice:.3f}<!--fig acc.val.dice--> and {dice:.2f}<!--fig acc.val.dice-->\n"
    assert problems_of(text) == []


def test_a_wrong_figure_is_caught():
    found = problems_of(f"{DECLARED}val Dice 0.915<!--fig acc.val.dice-->, a sign +0.4<!--fig -acc.val.dice-->\n")
    assert len(found) == 2
    assert "page.md:2: 0.915 disagrees with its record: acc.val.dice = 0.9107" in found[0]
    assert "+0.4 disagrees" in found[1]


def test_a_figure_without_a_source_is_caught_in_prose_but_not_in_code():
    text = (
        "inference p50 17.4 ms, 1.49x faster, 77% of the bare model, 9.8 MB, 3.4 M parameters, Dice 0.911,\n"
        "a change of -0.021 in 2.9 minutes\n\n"
        "`17.4 ms` in a span, and a command:\n\n    edgeseg bench  # 17.4 ms\n\n"
        "```\nDice 0.911\n```\n"
        "Settings are no figures: 256x256, Python 3.10, TensorRT 10.3, driver 525.60.13, r535, 5 s, 16 MB.\n"
    )
    found = problems_of(text)
    shown = [line.split(": ")[1] for line in found]
    assert shown == [
        "'17.4 ms' has no source (a generated table, <!--fig ...--> or <!--in FILE-->)",
        "'1.49x' has no source (a generated table, <!--fig ...--> or <!--in FILE-->)",
        "'77%' has no source (a generated table, <!--fig ...--> or <!--in FILE-->)",
        "'9.8 MB' has no source (a generated table, <!--fig ...--> or <!--in FILE-->)",
        "'3.4 M parameters' has no source (a generated table, <!--fig ...--> or <!--in FILE-->)",
        "'0.911' has no source (a generated table, <!--fig ...--> or <!--in FILE-->)",
        "'-0.021' has no source (a generated table, <!--fig ...--> or <!--in FILE-->)",
        "'2.9 minutes' has no source (a generated table, <!--fig ...--> or <!--in FILE-->)",
    ]
    assert all(line.startswith("page.md:1:") for line in found[:6]) and found[6].startswith("page.md:2:")


def test_a_stale_generated_table_is_caught():
    spec = f"accuracy-views {LITE2}"
    fresh = f"<!-- begin generated: {spec} -->\n{figures.render(spec)}<!-- end generated: accuracy-views -->\n"
    assert problems_of(fresh) == []
    stale = fresh.replace("0.911", "0.915", 1)
    assert stale != fresh
    assert problems_of(stale) == [f"page.md: line 1: the generated table {spec!r} is stale: python docs/figures.py"]
    assert figures.regenerated(stale) == fresh


def test_a_figure_checked_by_where_it_appears():
    assert problems_of("the test asks at least 0.90<!--in tests/runtime/test_serve_hostile.py--> of it\n") == []
    found = problems_of("the test asks at least 0.93<!--in tests/runtime/test_serve_hostile.py--> of it\n")
    assert found == ["page.md:1: 0.93 does not appear in tests/runtime/test_serve_hostile.py"]


@pytest.mark.parametrize(
    "source, why",
    [
        ('__import__("os").system("true")', "not allowed in a figure's source"),
        ("acc.val.nothing", "no field 'nothing'"),
        ("other.val.dice", "'other' is not declared"),
        ("acc.val", "not a number"),
    ],
)
def test_a_source_is_read_as_data_never_run(source: str, why: str):
    (found,) = problems_of(f"{DECLARED}Dice 0.911<!--fig {source}-->\n")
    assert why in found


@pytest.mark.parametrize(
    "shown, value, agrees",
    [
        ("1.49", 1.4936, True),
        ("1.5", 1.4936, True),
        ("1.48", 1.4936, False),
        ("17", 17.39, True),
        ("+0.013", 0.0127, True),
        ("+0.013", -0.0127, False),
        ("-0.21", -0.2125, True),
        ("0.002", 0.0018, True),
    ],
)
def test_a_figure_agrees_at_the_precision_it_is_written(shown: str, value: float, agrees: bool):
    assert figures.agrees(shown, value) is agrees


def test_every_record_says_what_it_measures_and_of_which_model():
    records = sorted(path.name for path in (REPO_ROOT / "benchmarks" / "results").glob("*.json"))
    assert records and set(records) <= set(figures.SUBJECTS), set(records) - set(figures.SUBJECTS)
    assert "default-v1" in figures.model_of("soak-cpu.json")  # the record names only "edgeseg default model"
    assert "lite0" in figures.model_of("runtime_throughput_model_onnxruntime-cpu.json")
