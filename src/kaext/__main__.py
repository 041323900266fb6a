"""``kaext TOOL [ARGS...]`` and ``python -m kaext TOOL [ARGS...]``: one command for every tool.

``TOOL`` is ``verify``, ``inspect``, ``run``, ``enforce``, ``probe``, ``watch`` or ``testing``; the rest of the
arguments go to that tool's ``main`` as they are, and the tool speaks under the name it
was started as (``kaext inspect: error: ...``).  The exit status is the tool's.  The
tools' own commands (``kaext-inspect``, ``python -m kaext.inspect``, ...) stay.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ._cli import Parser, prog_name, started_as

__all__ = ["TOOLS", "main"]

#: The tools, by subcommand name, with what each does.
TOOLS = {
    "verify": "prove on this machine that what kaext sets is what the kernel stores",
    "inspect": "see, judge and fix the keepalive settings of running processes",
    "run": "run a command with a keepalive policy on every connection it makes",
    "enforce": "enforce a policy on every TCP connection of a cgroup (Linux, root, BPF)",
    "probe": "measure how long the network path to a server keeps an idle connection",
    "watch": "report why each TCP connection died, as it dies (Linux, root, BPF)",
    "testing": "run a command in a new user and network namespace, where kaext.testing works without root",
}


class _Parser(Parser):
    error_tail = f" (tools: {', '.join(TOOLS)}; see --help)"


def _parser() -> Parser:
    return _Parser(
        prog=prog_name("kaext", "kaext"),
        usage="%(prog)s TOOL [ARGS...]",
        description="TCP keepalive and TCP user timeout, the same way on every platform. "
        "'%(prog)s TOOL --help' shows a tool's arguments; the exit status is the tool's.",
        epilog="tools:\n" + "\n".join(f"  {name:<8} {what}" for name, what in TOOLS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``TOOL`` with the rest of ``argv`` (default ``sys.argv[1:]``); returns its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not args or args[0].startswith("-"):
        parser.parse_args(args)  # --help, --version (which exit), or an unknown option
        parser.error("no TOOL given")
    tool, rest = args[0], args[1:]
    if tool not in TOOLS:
        parser.error(f"unknown TOOL {tool!r}")
    module = importlib.import_module(f"{__package__}.{tool}")
    with started_as(f"{parser.prog} {tool}"):
        status: int = module.main(rest)
    return status


if __name__ == "__main__":
    sys.exit(main())
