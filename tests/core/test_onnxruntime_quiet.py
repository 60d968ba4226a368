"""onnxruntime's own warnings stay off the terminal unless debugging: every session edgeseg makes logs errors only,
and what its quantizer prints or logs is held back while a form is built."""

from __future__ import annotations

import logging
import os

import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.core.install_check import ONNXRUNTIME_ERRORS_ONLY, quiet_onnxruntime_tools, session_options

ort = pytest.importorskip("onnxruntime")


def test_sessions_log_errors_only_unless_debugging(monkeypatch):
    monkeypatch.delenv("EDGESEG_DEBUG", raising=False)
    assert session_options(ort).log_severity_level == ONNXRUNTIME_ERRORS_ONLY
    monkeypatch.setenv("EDGESEG_DEBUG", "1")
    assert session_options(ort).log_severity_level == ort.SessionOptions().log_severity_level  # onnxruntime's own


def test_the_runtime_backend_makes_its_session_with_those_options(tiny_onnx, monkeypatch):
    from edgeseg.runtime.backends import OnnxRuntimeBackend

    monkeypatch.delenv("EDGESEG_DEBUG", raising=False)
    made = []
    real = ort.InferenceSession

    def record(path, options, providers):
        made.append(options.log_severity_level)
        return real(path, options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", record)
    with OnnxRuntimeBackend(tiny_onnx, device="cpu"):
        pass
    assert made == [ONNXRUNTIME_ERRORS_ONLY]


def test_the_quantizers_prints_and_root_warnings_are_held_back(capsys, caplog, monkeypatch):
    monkeypatch.delenv("EDGESEG_DEBUG", raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with caplog.at_level(logging.WARNING), quiet_onnxruntime_tools():
        print("Collecting tensor data and making histogram ...")
        logging.warning("Axis 1 is out-of-range for weight")  # as onnxruntime's quantizer warns
        logging.getLogger("onnxruntime.quantization").warning("a tool's own logger")
        logging.getLogger("edgeseg.export").warning("edgeseg's own warning")
    assert capsys.readouterr().out == ""
    assert [record.getMessage() for record in caplog.records] == ["edgeseg's own warning"]  # ours still show
    assert root.handlers == handlers and root.level == level  # nothing left behind
    print("after")
    assert capsys.readouterr().out == "after\n"


def test_without_logging_set_up_the_root_warning_leaves_no_handler_behind(tmp_path):
    """As in the command line: no handler on the root logger, so logging.warning() would install one for good."""
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from edgeseg.core.install_check import quiet_onnxruntime_tools\n"
        "with quiet_onnxruntime_tools():\n"
        "    logging.warning('Axis 1 is out-of-range')\n"
        "    logging.getLogger('edgeseg.export').warning('ours')\n"
        "logging.getLogger('edgeseg.export').warning('ours again')\n"
        "print(len(logging.getLogger().handlers))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "EDGESEG_DEBUG": "0"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0\n" and done.stderr.splitlines() == ["ours", "ours again"]


def test_debug_lets_onnxruntime_speak(capsys, monkeypatch):
    monkeypatch.setenv("EDGESEG_DEBUG", "1")
    with quiet_onnxruntime_tools():
        print("Collecting tensor data")
    assert capsys.readouterr().out == "Collecting tensor data\n"


def test_the_debug_flag_reaches_every_part_while_the_command_runs(monkeypatch, tmp_path):
    import edgeseg.core.cli

    monkeypatch.setenv("EDGESEG_DEBUG", "0")
    seen = []
    monkeypatch.setattr(
        edgeseg.core.cli, "generate_dataset", lambda *args, **kwargs: seen.append(os.environ.get("EDGESEG_DEBUG")) or []
    )
    result = CliRunner().invoke(main, ["--debug", "synth", str(tmp_path), "-n", "2"])
    assert seen == ["1"], result.output
    assert os.environ["EDGESEG_DEBUG"] == "0"  # the caller's own, back after the command
