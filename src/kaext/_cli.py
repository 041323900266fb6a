"""What the command-line tools (verify, inspect, run, enforce, probe, watch) share.

``run_tool`` is how a tool runs: its parsing and its work inside one-line warnings, and
every way out as the same exit status and one line on stderr (verify, inspect, run,
enforce, probe and watch use it; ``tests/integration/test_cli.py`` tests it once for each
of them).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from ._version import __version__

#: The name a tool was started under by the umbrella command (``kaext inspect``,
#: ``python -m kaext inspect``); empty otherwise.
_started_as: list[str] = []


def prog_name(script: str, module: str) -> str:
    """The name a tool speaks under: ``kaext TOOL`` / ``python -m kaext TOOL`` when the
    umbrella command started it, ``script`` when it was run as that console script, else
    ``python -m MODULE``."""
    if _started_as:
        return _started_as[-1]
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return script if argv0.startswith(script) else f"python -m {module}"


@contextmanager
def started_as(name: str) -> Iterator[None]:
    """Within: every tool speaks under ``name`` (the umbrella's ``kaext inspect``)."""
    _started_as.append(name)
    try:
        yield
    finally:
        _started_as.pop()


def printable(text: str) -> str:
    """``text`` with each control character escaped (``\\x1b``): an argument echoed in an
    error message cannot move the cursor, clear the screen or add a line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr, ``PROG: error: MESSAGE``, and
    exit status 2 (no usage block, no traceback); a control character in an argument is
    shown escaped."""

    #: Said after the message (kaext-verify: " (see --help)").
    error_tail = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--version", action="version", version=f"kaext {__version__}", help="print kaext's version and exit"
        )

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {printable(message)}{self.error_tail}\n")


@contextmanager
def one_line_warnings(prog: Callable[[], str]) -> Iterator[None]:
    """Within: each distinct warning is printed once, as ``PROG: warning: MESSAGE`` on stderr.

    A policy whose user timeout cuts probing short warns; a command-line tool says so in
    one line, not with Python's two-line warning format.  ``-W`` options still rule
    (``-W error`` makes the warning an exception, which the tool reports as a usage error).
    """
    with warnings.catch_warnings():
        if not sys.warnoptions:
            warnings.simplefilter("always")  # counted here: a "once" filter's memory is reset by nested catch_warnings
        shown: set[str] = set()

        def one_line(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
            line = f"{prog()}: warning: {message}"
            if line not in shown:
                shown.add(line)
                print(line, file=sys.stderr)

        warnings.showwarning = one_line
        yield


def table(head: Sequence[str], rows: Sequence[Sequence[str]], *, rule: bool = False, group: bool = False) -> list[str]:
    """The lines of a text table: each column as wide as its widest cell, two spaces apart,
    no trailing spaces.  ``rule``: a line of dashes under ``head``; ``group``: a blank line
    wherever the first column changes."""
    widths = [max(len(cell) for cell in column) for column in zip(head, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    lines = [line(head)]
    if rule:
        lines.append("  ".join("-" * width for width in widths))
    for i, row in enumerate(rows):
        if group and i and row[0] != rows[i - 1][0]:
            lines.append("")
        lines.append(line(row))
    return lines


class UsageError(Exception):
    """Bad arguments found after parsing, no such process, no permission: a tool's exit
    status 2, with the message as one line (``PROG: error: MESSAGE``)."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread of a tool that cleans up after itself (``run_tool``'s
    ``sigterm``): its ``finally`` clauses run, as for Ctrl-C; the exit status is 143."""


_terminated: list[int] = []


def _raise_terminated(signum: int, frame: object) -> None:
    _terminated.append(signum)
    raise Terminated


def check_terminated() -> None:
    """Raise Terminated when SIGTERM came and its exception was lost: Python ignores what a
    signal handler raises while it runs certain callbacks (``os.register_at_fork`` hooks:
    the signal came during a fork).  For the points where a tool would go on to do more."""
    if _terminated:
        raise Terminated


def run_tool(prog: Callable[[], str], body: Callable[[], int], *, interrupted: str = "", sigterm: bool = False) -> int:
    """Run a tool's ``body`` (its parsing and its work) and return its exit status.

    Within, each warning is one line (``one_line_warnings``).  ``body``'s own status is
    returned; argparse's usage errors exit 2 in one line (``Parser``); a ``UsageError``, or
    an OSError the system raised, is one line ``PROG: error: MESSAGE`` and status 2; Ctrl-C
    is status 130, as a shell reports a command ended by SIGINT, with no traceback (and the
    one line ``PROG: INTERRUPTED`` when ``interrupted`` is given); a reader that went away
    (``| head``: broken pipe) ends it quietly with status 2.  With ``sigterm``, SIGTERM ends
    it as Ctrl-C does (its clean-up runs: a scratch cgroup, half-made BPF pins), status 143.
    """
    import signal
    import threading

    previous = None
    unraisable = sys.unraisablehook
    if sigterm and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)

        def quiet_when_terminated(info: Any) -> None:  # the lost one (check_terminated): no traceback
            if not isinstance(info.exc_value, Terminated):
                unraisable(info)

        sys.unraisablehook = quiet_when_terminated
    with one_line_warnings(prog):
        try:
            status = body()
            check_terminated()  # came, lost (see there), and the body finished anyway
            return status
        except Terminated:
            print(f"{prog()}: terminated (SIGTERM)", file=sys.stderr)
            return 128 + signal.SIGTERM
        except BrokenPipeError:  # the reader went away: nothing more to say
            return reader_gone()
        except UsageError as exc:
            print(f"{prog()}: error: {printable(str(exc))}", file=sys.stderr)
            return 2
        except OSError as exc:  # what the system refused, as one line
            print(f"{prog()}: error: {exc.strerror or exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            if interrupted:
                print(f"{prog()}: {interrupted}", file=sys.stderr)
            return 130
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
                sys.unraisablehook = unraisable


def reader_gone() -> int:
    """For ``except BrokenPipeError`` around a tool's output (``| head`` went away): stdout to
    the null device, so that the flush at exit raises nothing more; returns exit status 2."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, sys.stdout.fileno())
    os.close(null)
    return 2
