"""INT8 calibration that would not fit in memory is refused up front with the --calib-n that fits, not killed
half-way."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.export import int8_export
from edgeseg.export.int8_export import CalibrationMemoryError, activation_bytes, require_calibration_memory


@pytest.fixture
def inferred_onnx(tiny_onnx: Path, tmp_path: Path) -> Path:
    path = tmp_path / "inferred.onnx"
    onnx.save(onnx.shape_inference.infer_shapes(onnx.load(str(tiny_onnx))), str(path))
    return path


def test_activation_bytes_count_the_float_activations_of_one_image(inferred_onnx: Path) -> None:
    per_image = activation_bytes(inferred_onnx)
    # At least the (1, 1, 64, 64) float output, and far below a gigabyte for the tiny network.
    assert 64 * 64 * 4 < per_image < 2**30


def test_too_many_images_are_refused_with_the_count_that_fits(inferred_onnx: Path, monkeypatch) -> None:
    per_image = activation_bytes(inferred_onnx) * int8_export.CALIBRATION_MEMORY_FACTOR
    monkeypatch.setattr(int8_export, "available_memory_bytes", lambda: int(per_image * 10.5))
    require_calibration_memory(inferred_onnx, 10)  # fits
    with pytest.raises(CalibrationMemoryError, match=r"--calib-n 10 or fewer") as error:
        require_calibration_memory(inferred_onnx, 64)
    assert "64 images" in str(error.value)


def test_export_reports_the_refusal_on_the_int8_form(
    trained_run_dir: Path, synthetic_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(int8_export, "available_memory_bytes", lambda: 1)
    result = CliRunner().invoke(
        main,
        [
            "export",
            str(trained_run_dir),
            "--format",
            "onnx,int8",
            "--out",
            str(tmp_path),
            "--parity-data",
            str(synthetic_dir),
            "--parity-n",
            "2",
        ],
    )
    assert result.exit_code == 1
    assert "CalibrationMemoryError" in result.output and "--calib-n 1 or fewer" in result.output
    assert not (tmp_path / "model.int8.onnx").exists()
