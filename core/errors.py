"""The one base of every error a user can act on, and the exit codes the command line gives.

Every edgeseg error that is about the user's input, files, data or host (a bad model file, a
missing mask, a camera that will not open, a backend not installed) derives from ``EdgesegError``,
and its message names the file and the fix. The command line handles them once, at its edge
(``edgeseg.cli``): the user sees ``Error: <message>`` and the exit code below, never a traceback.
Anything else that escapes is a bug: its traceback is shown with a request to report it.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # an EdgesegError (or a failed check: a parity gate, a failed form): the message says why
EXIT_USAGE = 2  # the command line itself was wrong (click's own code)
EXIT_BUG = 70  # an unexpected exception: a bug in edgeseg (EX_SOFTWARE of sysexits.h)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


class EdgesegError(Exception):
    """An error the user can fix; its message names what is wrong and how to fix it."""
