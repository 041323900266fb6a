"""``kaext.run --policy SPEC [--accepted] [--force] -- COMMAND [ARGS...]``: keepalive for code you cannot change.

Runs COMMAND with the policy active in every Python interpreter it starts (its
children included): the environment puts a ``sitecustomize`` first on
``PYTHONPATH`` that calls :func:`kaext.inject` at start-up and then runs the
user's own ``sitecustomize``.  On Linux, where kaext was built with its preload
library, ``LD_PRELOAD`` also carries that library, which applies the policy
just before every ``connect()`` to an IPv4 / IPv6 address (and, with ``--accepted``,
after ``accept()``) made through the C library: native code such as uvloop, libpq,
grpc, and programs that are not Python at all.  The exit status is COMMAND's.

The order: the policy is applied before the SYN (so its ``connect_timeout`` bounds
the connect), in Python where the socket takes it then; a program that sets
keepalive options itself afterwards (hiredis, curl, redis-py's asyncio client)
overwrites the policy's values knob by knob.  With ``--force`` the policy wins:
``kaext.inject(policy, force=True)`` in Python, and the preload library replaces
the value of a setsockopt() of SO_KEEPALIVE or of a knob the policy sets, on a
TCP socket, by the policy's (the call still succeeds).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from . import _platform
from ._cli import Parser, prog_name, run_tool
from ._policy import as_policy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._policy import Policy

__all__ = ["PRELOAD_LIBRARY", "environment", "main"]

_HERE = Path(__file__).resolve().parent
_SITE_DIR = _HERE / "_run_site"
_LIBRARY = _HERE / "libkaext_preload.so"
#: The preload library, or None where it is not built (not Linux, pure-Python install)
#: or cannot be preloaded from where it is (the loader splits LD_PRELOAD at spaces and
#: colons, and has no escape for them).
PRELOAD_LIBRARY: Path | None = (
    _LIBRARY if _LIBRARY.is_file() and not any(c in str(_LIBRARY) for c in " \t\n:") else None
)


def _preload_plan(policy: Policy, accepted: bool, force: bool) -> str:
    """The policy for the preload library: kaext_shim.h's plan, in OS units, already range-checked."""
    p = policy._plan
    values = (
        p.set_mask,
        p.idle,
        p.interval,
        p.count,
        p.user_timeout,
        p.keepalive,
        int(accepted),
        int(force),
        p.connect_timeout,
    )
    return ",".join(str(v) for v in values)


def environment(
    policy: Policy | str, *, accepted: bool = False, force: bool = False, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment ``kaext.run`` gives COMMAND: ``base`` (default ``os.environ``) plus the policy.

    ``force``: the policy wins over COMMAND's own setsockopt of the knobs it sets
    (``kaext.inject(policy, force=True)``, and the preload library's setsockopt).
    Raises TypeError / ValueError for a bad ``policy``.
    """
    spec = policy if isinstance(policy, str) else str(policy)
    resolved = as_policy(policy)
    for name, flag in (("accepted", accepted), ("force", force)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    env = dict(os.environ if base is None else base)
    env["KAEXT_RUN_POLICY"] = spec
    env["KAEXT_RUN_ACCEPTED"] = "1" if accepted else "0"
    env["KAEXT_RUN_FORCE"] = "1" if force else "0"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_SITE_DIR), env.get("PYTHONPATH", "")) if p)
    if PRELOAD_LIBRARY is not None:
        env["KAEXT_PRELOAD_PLAN"] = _preload_plan(resolved, accepted, force)
        env["LD_PRELOAD"] = " ".join(p for p in (env.get("LD_PRELOAD", ""), str(PRELOAD_LIBRARY)) if p)
    return env


def _coverage() -> str:
    python = (
        "Python: every interpreter COMMAND starts that can import kaext gets kaext.inject() at "
        "start-up (socket.socket.connect/connect_ex, with --accepted accept: requests, httpx, "
        "the openai SDK, asyncio, trio, anyio, ...), unless started with -I, -E or -S."
    )
    if PRELOAD_LIBRARY is not None:
        native = (
            f"Native code: covered here through the preload library {PRELOAD_LIBRARY.name} (LD_PRELOAD): "
            "every connect() (and, with --accepted, accept()/accept4()) made through the C library, "
            "so uvloop, libpq, grpc and programs that are not Python. Not covered: programs that make "
            "system calls without the C library (Go, static binaries) and setuid programs."
        )
    else:
        native = (
            "Native code (uvloop, libpq, grpc, programs that are not Python): NOT covered here -- "
            "Python only. The preload library is built on Linux only, not in a pure-Python install, "
            "and cannot be preloaded from a directory whose path has a space or a colon."
        )
    return f"{python} {native}"


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=prog_name("kaext-run", "kaext.run"),
        usage="%(prog)s --policy SPEC [--accepted | --cgroup] [--force] -- COMMAND [ARGS...]",
        description="Run COMMAND with a TCP keepalive policy on every connection it makes, without "
        "changing its code. Exit status: COMMAND's (127: not found, 126: not executable, "
        "2: bad arguments). " + _coverage(),
    )
    p.add_argument(
        "--policy",
        metavar="SPEC",
        required=True,
        help="Policy.parse syntax ('7s:3s:4 user_timeout=19s', 'on', 'off') or a middlebox "
        "name from kaext.presets.MIDDLEBOXES ('aws-nlb')",
    )
    p.add_argument("--accepted", action="store_true", help="also sockets returned by accept() (servers)")
    p.add_argument(
        "--cgroup",
        action="store_true",
        help="instead: run COMMAND in a fresh child cgroup that carries the policy (kaext.enforce, Linux, root): "
        "every TCP connection, static binaries and Go programs included; removed when COMMAND exits",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="the policy wins over COMMAND's own setsockopt of SO_KEEPALIVE and of the knobs the policy sets, "
        "on TCP sockets (the call still succeeds, with the policy's value); without it a program that sets "
        "keepalive itself after connecting keeps its own values. With --cgroup: through BPF",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND", help="the program and its arguments")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run COMMAND under the policy; returns (or exits with) COMMAND's exit status.

    A warning about the policy (a user timeout that cuts probing short) is one line on
    stderr, here only: the Pythons COMMAND starts do not repeat it.
    """
    parser = _parser()
    return run_tool(lambda: parser.prog, lambda: _main(parser, sys.argv[1:] if argv is None else list(argv)))


def _main(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    args = parser.parse_args(argv)
    command: list[str] = args.command
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        parser.error(f"no COMMAND given ({parser.prog} --policy SPEC -- COMMAND [ARGS...])")
    if args.cgroup:
        return _run_in_cgroup(parser, args.policy, command, args.force)
    try:
        env = environment(args.policy, accepted=args.accepted, force=args.force)
    except (TypeError, ValueError, Warning) as exc:  # Warning: under -W error
        parser.error(f"--policy: {exc}")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if _platform.FAMILY == "windows":
            # no exec there: run it and hand back its status
            return subprocess.call(command, env=env)
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        sys.stderr.write(f"{parser.prog}: {command[0]}: command not found\n")
        return 127
    except PermissionError as exc:
        sys.stderr.write(f"{parser.prog}: {command[0]}: {exc.strerror}\n")
        return 126
    except OSError as exc:
        sys.stderr.write(f"{parser.prog}: {command[0]}: {exc.strerror or exc}\n")
        return 126
    return 0  # not reached: exec replaced this process


#: The signals ``kaext-run --cgroup`` passes on to COMMAND (how systemd, Kubernetes, a
#: terminal and a closed session stop things); COMMAND decides how to end, and kaext-run
#: then removes the cgroup and its BPF programs.
FORWARDED_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")


class _Forwarder:
    """Handlers that pass each of FORWARDED_SIGNALS on to COMMAND, and only to it.

    A signal that arrives before COMMAND is started (the cgroup and its BPF programs are
    being set up, which runs short-lived children of its own) is kept and passed on the
    moment COMMAND is made (:meth:`started`, called while these signals are blocked); one
    that arrives after COMMAND ended (the cleanup) is dropped: the cleanup finishes either way.
    """

    def __init__(self) -> None:
        import signal

        self.pending: list[int] = []
        self.command: subprocess.Popen[bytes] | None = None
        self._me = os.getpid()
        self.previous: dict[int, object] = {}
        for name in FORWARDED_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                self.previous[number] = signal.signal(number, self._forward)

    def _forward(self, signum: int, frame: object) -> None:
        if os.getpid() != self._me:  # a child between fork and exec still has this handler: the signal is its own
            os._exit(128 + signum)
        if self.command is None:
            self.pending.append(signum)
        else:
            self.command.send_signal(signum)  # nothing once it has been waited for

    def started(self, command: subprocess.Popen[bytes]) -> None:
        self.command = command
        for signum in self.pending:
            command.send_signal(signum)

    def restore(self) -> None:
        import signal

        for number, handler in self.previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]


def _run_in_cgroup(parser: argparse.ArgumentParser, policy: str, command: list[str], force: bool) -> int:
    import signal

    from .enforce import run_in_cgroup

    forwarder = _Forwarder()
    try:
        status = run_in_cgroup(command, policy, force=force, started=forwarder.started)
    except KeyboardInterrupt:
        return 130
    except (OSError, TypeError, ValueError, Warning) as exc:  # Warning: under -W error
        if forwarder.pending and isinstance(exc, OSError):
            # stopped while the cgroup was being set up (a BPF program load the signal
            # interrupted fails with EAGAIN): COMMAND never ran, nothing is left
            name = signal.Signals(forwarder.pending[0]).name
            sys.stderr.write(f"{parser.prog}: {name} before {command[0]} started: not started\n")
            return 128 + forwarder.pending[0]
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        parser.exit(2, f"{parser.prog}: error: --cgroup: {text}\n")
    finally:
        forwarder.restore()
    if status == 127:
        sys.stderr.write(f"{parser.prog}: {command[0]}: command not found\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
