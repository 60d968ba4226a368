"""The `edgeseg` command line, and the one place where errors meet the user.

Each command lives beside the part it drives and is imported only when it runs (or when its help is
shown), so `edgeseg run` on a device never imports torch, and a missing optional dependency is
reported by the command that needs it, naming the extra to install.

Errors are handled here, once, for every command (edgeseg.core.errors): an ``EdgesegError`` becomes
``Error: <message>`` and exit code 1; any other exception is a bug, shown with its traceback and a
request to report it (exit code 70). ``edgeseg --debug COMMAND`` shows the traceback of every error.
"""

from __future__ import annotations

import importlib
import os
import traceback

import click

from edgeseg.core.errors import EXIT_BUG, EdgesegError
from edgeseg.core.progress import set_quiet
from edgeseg.core.version import __version__

BUG_REPORT = (
    "This is a bug in edgeseg, not a problem with your input: please report it with the command you ran and the "
    "traceback above (run with --debug to see the traceback of any error)."
)

# name -> "module:attribute" of a click command. A part that is not built has no entry here.
COMMANDS: dict[str, str] = {
    "demo": "edgeseg.demo:demo_command",
    "synth": "edgeseg.core.cli:synth_command",
    "data": "edgeseg.core.cli:data_command",
    "train": "edgeseg.train.cli:train_command",
    "eval": "edgeseg.evaluate.cli:eval_command",
    "export": "edgeseg.export.cli:export_command",
    "run": "edgeseg.runtime.cli:run_command",
    "bench": "edgeseg.evaluate.cli:bench_command",
    "doctor": "edgeseg.doctor:doctor_command",
    "info": "edgeseg.info:info_command",
}

EPILOG = """\b
The whole flow (`edgeseg demo` runs it on synthetic data):
  edgeseg synth data/synth --images 200                     dermoscopy-like demo data
  edgeseg data check data/isic2018                          check a data set
  edgeseg train -d data/isic2018 -o runs/lite0 --time-budget 60   train within 60 minutes
  edgeseg eval runs/lite0 -d data/isic2018                  ISIC metrics with intervals
  edgeseg export runs/lite0 --fp16                          ONNX forms, parity-gated
  edgeseg run runs/lite0/model.onnx --camera 0              live overlay, no torch
  edgeseg run photos/                                       overlays, masks and figures per photo
  edgeseg bench runs/lite0                                  latency of every form
  edgeseg info runs/lite0/model.onnx                        the card, the forms, what runs it here
"""


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)  # in the order of the flow

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def invoke(self, ctx: click.Context):
        """Run the command; turn the errors a user can fix into `Error: ...`, and show real bugs as bugs."""
        debug = ctx.params.get("debug") or os.environ.get("EDGESEG_DEBUG") == "1"
        set_quiet(False)  # each command starts with its notes on; its -q/--quiet turns them off
        before = os.environ.get("EDGESEG_DEBUG")
        if debug:
            os.environ["EDGESEG_DEBUG"] = "1"  # read by every part (onnxruntime's log too) and the demo's steps
        try:
            return super().invoke(ctx)
        except EdgesegError as error:
            if debug:
                raise
            raise click.ClickException(str(error)) from None
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception:
            if debug:
                raise
            click.echo(traceback.format_exc().rstrip(), err=True)
            click.echo(BUG_REPORT, err=True)
            ctx.exit(EXIT_BUG)
        finally:  # a caller in this process (a test, a notebook) gets back its notes and its own EDGESEG_DEBUG
            set_quiet(False)
            restore_environment("EDGESEG_DEBUG", before)


def restore_environment(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeseg")
@click.option(
    "--debug",
    is_flag=True,
    help="Show the traceback of every error, and onnxruntime's own warnings (also: EDGESEG_DEBUG=1).",
)
def main(debug: bool) -> None:
    """edgeseg: skin-lesion segmentation from labelled images to a verified engine on the device.

    Run `edgeseg COMMAND -h` for each command's options and an example. Every command takes
    -q/--quiet: no progress and no notes, only results, warnings and errors. Exit status: 0 done;
    1 an error (the message says what and how to fix it) or a failed check; 2 a wrong command line;
    70 a bug in edgeseg (with its traceback).

    \b
    Short flags, one meaning in every command that has the option:
      -o --out (run: --save)   -d --data   -b --backend   -n --images   -j --json   -q --quiet   -h --help

    \b
    Shell completion: add the line for your shell to its start-up file (~/.bashrc, ~/.zshrc, ...):
      eval "$(_EDGESEG_COMPLETE=bash_source edgeseg)"     bash
      eval "$(_EDGESEG_COMPLETE=zsh_source edgeseg)"      zsh
      _EDGESEG_COMPLETE=fish_source edgeseg | source      fish (~/.config/fish/completions/edgeseg.fish)
    """


if __name__ == "__main__":
    main()
