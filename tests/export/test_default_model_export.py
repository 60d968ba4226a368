"""The mission's command on a fresh install: `edgeseg export --fp16` (and with `--int8`), no other argument.

No model named: the default model that ships with edgeseg. No data named: the reference set that ships with
it (40 ISIC val images for parity, 64 train images for INT8 calibration). Run as a user would, in a child
process from an empty folder; every form this host can build must be built and gated, and pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnx")

OUT = "default-model-export"  # where the default model's forms go when no --out is given


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, forms", [(["--fp16"], {"fp16"}), (["--fp16", "--int8"], {"fp16", "int8"})], ids=["fp16", "fp16-int8"]
)
def test_export_fp16_with_no_other_argument_builds_and_passes_every_form_it_can(flags, forms, tmp_path: Path):
    from edgeseg.export.tensorrt_export import engine_unavailable_reason

    result = subprocess.run(
        [sys.executable, "-m", "edgeseg", "export", *flags], cwd=tmp_path, capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "edgeseg's reference set" in result.stderr
    report = json.loads((tmp_path / OUT / "export-report.json").read_text())
    rows = {row["name"]: row for row in report["forms"]}
    assert report["passed"] is True and report["parity_images"]["reference_set"] is True
    assert report["parity_images"]["count"] == 40 and report["not_judged"] == []  # enough images for the means
    if "int8" in forms:
        assert report["calibration"]["reference_set"] is True and report["calibration"]["count"] == 64
    for name in forms:
        assert rows[name]["status"] == "built" and rows[name]["passed"] is True, rows[name]
        assert (tmp_path / OUT / Path(rows[name]["path"]).name).is_file()
    engines = {name for name in ("engine", "engine-int8") if name in rows}
    if engine_unavailable_reason() is not None:  # this host cannot build engines: skipped, with the reason
        assert all(rows[name]["status"] == "skipped" and rows[name]["reason"] for name in engines)
    else:
        assert all(rows[name]["status"] == "built" and rows[name]["passed"] for name in engines)
    assert "That is the small set that ships with edgeseg" in (tmp_path / OUT / "export-report.md").read_text()
