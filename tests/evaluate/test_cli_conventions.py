"""One command-line convention in eval and bench: MODEL positional, one set of backend names, `--json -`.

Old spellings (`eval --model PATH`, `--backend cpu|torch|cuda`) still work and say their new form on stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core.files import portable_path
from edgeseg.core.names import BACKENDS, default_model_path

MODEL_NOTE = "note: --model is now the positional MODEL argument: edgeseg eval MODEL --data ..."
FAST_BENCH = ["--runs", "2", "--warmup", "0"]


@pytest.fixture(scope="module")
def default_model() -> Path:
    return default_model_path()


def eval_json(arguments: list[str], tmp_path: Path) -> tuple[dict, str]:
    """Run `edgeseg eval ARGUMENTS --json FILE`; the JSON it wrote and what it said on stderr."""
    json_path = tmp_path / "eval.json"
    result = CliRunner().invoke(main, ["eval", *arguments, "--out", str(tmp_path / "out"), "--json", str(json_path)])
    assert result.exit_code == 0, result.output
    return json.loads(json_path.read_text()), result.stderr


def test_eval_takes_the_model_positionally_and_the_old_model_option_with_a_note(default_model, synthetic_dir, tmp_path):
    data = ["--data", str(synthetic_dir), "--split", "val"]
    positional, said = eval_json([str(default_model), *data], tmp_path / "positional")
    assert "note:" not in said
    old, said_old = eval_json(["--model", str(default_model), *data], tmp_path / "old")
    assert said_old.count(MODEL_NOTE) == 1
    assert old == positional and positional["images"] >= 1


def test_eval_refuses_the_model_twice(default_model, synthetic_dir):
    result = CliRunner().invoke(
        main, ["eval", str(default_model), "--model", str(default_model), "--data", str(synthetic_dir)]
    )
    assert result.exit_code == 2
    assert "--model is the old spelling of MODEL" in result.output


def test_eval_help_shows_model_as_the_argument_and_only_the_real_backend_names():
    result = CliRunner().invoke(main, ["eval", "--help"])
    assert result.exit_code == 0
    assert "eval [OPTIONS] [MODEL]" in result.output
    assert "--model" not in result.output  # the old spelling is accepted, not advertised
    assert "[" + "|".join(BACKENDS) + "]" in result.output


def test_eval_json_to_stdout_pipes_into_json_tool(default_model, synthetic_dir, tmp_path):
    """A real process, as a shell pipe runs it: stdout must be the JSON alone, the table goes to stderr."""
    command = [
        sys.executable,
        "-m",
        "edgeseg",
        "eval",
        str(default_model),
        "--data",
        str(synthetic_dir),
        "--out",
        str(tmp_path / "out"),
        "--json",
        "-",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    tool = subprocess.run([sys.executable, "-m", "json.tool"], input=done.stdout, capture_output=True, text=True)
    assert tool.returncode == 0, tool.stderr + done.stdout[:500]
    document = json.loads(done.stdout)
    assert document["split"] == "val" and set(document["mean"]) >= {"dice", "jaccard"}
    assert "per-image results:" in done.stderr and "dice" in done.stderr
    assert not (tmp_path / "-").exists()


def test_eval_takes_an_old_backend_spelling_with_a_note(tiny_run_dir, synthetic_dir, tmp_path):
    report, said = eval_json([str(tiny_run_dir), "--data", str(synthetic_dir), "--backend", "cpu"], tmp_path)
    assert "note: --backend cpu is now spelled --backend torch-cpu" in said
    assert report["backend"].startswith("torch-cpu")


@pytest.mark.parametrize("command", ["eval", "bench"])
def test_a_wrong_backend_is_refused_listing_the_choices(command, default_model, synthetic_dir):
    arguments = [command, str(default_model), "--backend", "gpu"] + (
        ["--data", str(synthetic_dir)] if command == "eval" else []
    )
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2
    assert "'gpu' is not one of" in result.output
    assert all(f"'{name}'" in result.output for name in BACKENDS)


def test_bench_json_to_stdout_is_the_json_alone(default_model, tmp_path):
    result = CliRunner().invoke(
        main, ["bench", str(default_model), *FAST_BENCH, "--json", "-", "--md", str(tmp_path / "bench.md")]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [row["status"] for row in report["results"]] == ["ok"]
    assert report["command"].endswith("--json - --md " + portable_path(tmp_path / "bench.md"))  # as a record names it
    assert "model.onnx" in result.stderr and f"wrote {tmp_path / 'bench.md'}" in result.stderr
    assert "wrote -" not in result.output and not (tmp_path / "-").exists()


def test_bench_takes_an_old_backend_spelling_with_a_note(default_model, tmp_path):
    json_path = tmp_path / "bench.json"
    result = CliRunner().invoke(
        main,
        ["bench", str(default_model), *FAST_BENCH, "--backend", "auto", "--backend", "cuda", "--json", str(json_path)],
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.count("note: --backend cuda is now spelled --backend torch-cuda") == 1
    assert "--backend torch-cuda" in json.loads(json_path.read_text())["command"]
