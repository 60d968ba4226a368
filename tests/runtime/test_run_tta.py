"""`edgeseg run --tta`: accepted, validated, and set on the Segmenter the run loop drives."""

from pathlib import Path

from click.testing import CliRunner

import edgeseg.runtime.backends as backends
from edgeseg.cli import main


def test_run_with_tta_sets_it_on_the_segmenter_and_processes_every_frame(
    tiny_onnx: Path, video_20: Path, monkeypatch
) -> None:
    opened = []
    original = backends.open_segmenter

    def recording_open_segmenter(*args, **kwargs):
        opened.append(original(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(backends, "open_segmenter", recording_open_segmenter)
    result = CliRunner().invoke(
        main,
        ["run", str(tiny_onnx), "--source", str(video_20), "--no-show", "--max-frames", "4", "--tta", "hflip"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "4 frames" in result.output
    assert [segmenter.tta for segmenter in opened] == ["hflip"]


def test_run_refuses_an_unknown_tta_naming_the_choices(tiny_onnx: Path, video_20: Path) -> None:
    result = CliRunner().invoke(
        main, ["run", str(tiny_onnx), "--source", str(video_20), "--no-show", "--tta", "rotate"]
    )
    assert result.exit_code == 2
    assert "--tta" in result.output and "none" in result.output and "hvflip" in result.output
