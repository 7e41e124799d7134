"""What a user error is, and how argml's commands and stage scripts end on one: one line on stderr, exit 2.

A missing dataset, a bad params value, an unreadable model or a port in use is not a bug: the user needs the
one line that says what to fix, not a traceback around it. A user error is
- a `UserError`: argml raises one (BadInput, NotFound, Unavailable, or a subclass such as ImageError,
  ParamsError, CardError, ChecksumError, StackError) where it finds input it will not take;
- an OSError: the world outside the program (a path, a permission, a full disk, a socket) said no.
Anything else (a ValueError from NumPy, a KeyError, a TypeError...) is a bug and keeps its traceback.
ARGML_DEBUG=1 shows the traceback for user errors too.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback

ENV_DEBUG = "ARGML_DEBUG"
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A mistake the user can fix: the message says what, in one line."""


class BadInput(UserError, ValueError):
    """A value, an argument or a file's content that argml refuses (params.yaml, an image, a model card, an
    archive, a request)."""


class ChecksumError(BadInput):
    """A file that is not the one its recorded sha256 names (a download, an export, a file inside a model)."""


class NotFound(UserError, FileNotFoundError):
    """Something the user named, or argml needs from an earlier step, is not there."""


class Unavailable(UserError, RuntimeError):
    """Something outside argml is not available: a port in use, a server or stack that is down, a camera, a
    download."""


USER_ERRORS = (UserError, OSError)


def debugging() -> bool:
    return os.environ.get(ENV_DEBUG, "") not in ("", "0")


def one_line(error: BaseException) -> str:
    """The error's message on one line (a multi-line message keeps its first line and says how many follow)."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()] or [type(error).__name__]
    more = f" (+{len(lines) - 1} more lines; {ENV_DEBUG}=1 shows them)" if len(lines) > 1 else ""
    return lines[0] + more


def report(name: str, error: BaseException) -> int:
    """Print the one-line form of a user error for command `name`; -> the exit status."""
    if debugging():
        traceback.print_exception(error)
    line = one_line(error)
    print(line if line.startswith(f"{name}: ") else f"{name}: {line}", file=sys.stderr)
    return EXIT_USER_ERROR


def command(name: str):
    """Decorate a command's `main(argv) -> int`: user errors end it with one line and exit status 2, Ctrl-C
    with 130; bugs keep their traceback."""
    def wrap(main):
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except KeyboardInterrupt:
                print(f"{name}: interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED
            except USER_ERRORS as error:
                return report(name, error)
        return run
    return wrap


def stage(name: str):
    """Decorate a DVC stage script's `main() -> int`: it runs as a stage process (argml.core.files.run_as_stage:
    it stops with dvc, and SIGTERM unwinds it) and ends on a user error with one line, as `command` does."""
    from argml.core.files import run_as_stage

    def wrap(main):
        @command(name)
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            run_as_stage()
            return main(*args, **kwargs)
        return run
    return wrap
