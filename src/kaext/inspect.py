"""``python -m kaext.inspect``: see, judge and fix the keepalive settings of a running process.

    python -m kaext.inspect PID [PID ...] [--idle-timeout N | --middlebox NAME] [--apply SPEC] [--json]
    python -m kaext.inspect --all [...]
    python -m kaext.inspect PID ... | --all [--idle-timeout N | --middlebox NAME] --prometheus | --listen HOST:PORT

One row per TCP socket the process holds (``kaext.connections(pid)``): addresses,
state, SO_KEEPALIVE, TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT, TCP_USER_TIMEOUT,
the kernel's pending timer, and a verdict.

Verdicts judge ESTABLISHED connections only: ``ok``, or in upper case

* ``KEEPALIVE OFF``        -- SO_KEEPALIVE is off: nothing is sent while the connection is idle;
* ``FIRST PROBE TOO LATE`` -- the first probe goes out at or after the idle timeout of
  ``--idle-timeout N`` (or the middlebox of ``--middlebox NAME``), which forgets the flow first;
* ``USER TIMEOUT FIRST``   -- keepalive is on and TCP_USER_TIMEOUT is set shorter than
  idle + interval * count: the kernel drops the connection once the user timeout has
  passed since data was last received, before keepalive has sent its last probe (a mix
  neither side asked for, e.g. a program's own settings over part of a policy's);
* ``UNREADABLE``           -- the options could not be read; why (the row's ``reason``: no right
  to ptrace the process, a main thread that has exited on a kernel before 6.9, ...) is
  said on stderr, one line per process (``pid N: options not read: ...``), and in JSON.

Listeners and connections in other states (SYN_SENT, CLOSE_WAIT, ...) are listed but
not judged: their verdict is ``-`` in the table and ``null`` in JSON.

``--apply SPEC`` first applies a policy -- ``Policy.parse`` syntax (``"5m:30s:4
user_timeout=7m"``, ``on``, ``off``) or a middlebox name (``aws-nlb``:
``Policy.for_middlebox``) -- to the process's ESTABLISHED connections and
listeners (new connections accepted later inherit a listener's settings), each
socket all or nothing (``Connection.apply``: only the socket listed, the same
inode; one whose descriptor holds another socket by then is counted as replaced,
not applied), then reads every socket back and reports what the kernel now
holds.  On Linux another process's sockets are reached with ``pidfd_getfd``,
which needs the right to ptrace it.

``--all`` inspects every process the caller may list; the others are skipped.

``--prometheus`` prints the same as Prometheus metrics (the text exposition format:
``kaext_tcp_connections`` by pid, process, state and verdict, and the kernel's
keepalive counters; see ``docs/metrics.md``) and exits 0 once written;
``--listen HOST:PORT`` serves them at ``http://HOST:PORT/metrics``, inspecting again
on every scrape.  Both need ``prometheus_client`` (``pip install 'kaext[metrics]'``).

Exit status: 0 when every judged connection passes, 1 when one fails, 2 for bad
arguments, a PID that does not exist, or no permission (one line on stderr).
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import Policy, capabilities, presets
from ._cli import Parser, UsageError, printable, prog_name, run_tool, table

# Internal names, in one place.
from ._connections import Connection, _apply, _collect
from ._connections_linux import _all_pids
from ._middleboxes import lookup, names
from ._policy import as_policy, format_duration

__all__ = ["main", "verdict"]


def _prog() -> str:
    """The name errors are shown under: the console script's, or ``python -m kaext.inspect``."""
    return prog_name("kaext-inspect", "kaext.inspect")


#: Verdicts that pass; every other verdict is upper case and fails.
PASS = "ok"


def verdict(conn: Connection, idle_timeout: float | None = None) -> str | None:
    """The verdict for one connection, or None when it is not judged (not ESTABLISHED).

    ``idle_timeout``: seconds after which a middlebox forgets an idle flow; the first
    keepalive probe must go out before it (``idle < idle_timeout``).  With keepalive on,
    a TCP_USER_TIMEOUT shorter than idle + interval * count is ``"USER TIMEOUT FIRST"``.
    """
    if conn.state != "ESTABLISHED":
        return None
    ka = conn.keepalive
    if ka is None:
        return "UNREADABLE"
    if not ka.enabled:
        return "KEEPALIVE OFF"
    if idle_timeout is not None and ka.idle is not None and ka.idle >= idle_timeout:
        return "FIRST PROBE TOO LATE"
    if _user_timeout_first(conn.user_timeout, ka.idle, ka.interval, ka.count):
        return "USER TIMEOUT FIRST"
    return PASS


def _user_timeout_first(
    user_timeout: float | None, idle: float | None, interval: float | None, count: int | None
) -> bool:
    """TCP_USER_TIMEOUT (set: > 0) ends keepalive probing before its last probe (Linux,
    net/ipv4/tcp_timer.c tcp_keepalive_timer); Policy warns about the same mix."""
    if not user_timeout or idle is None or interval is None or count is None:
        return False
    knob = capabilities().get("user_timeout")
    return knob is not None and knob.option == "TCP_USER_TIMEOUT" and user_timeout < idle + interval * count


# --------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------


class _Parser(Parser):
    """The tools' parser, but an error is raised (and reported by ``main``, exit status 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _pid(text: str) -> int:
    digits = text[1:] if text[:1] == "-" else text  # "-5": said below to be not positive
    if not (digits.isascii() and digits.isdigit()):  # int() would take " 5", "1_000", "٣"
        raise argparse.ArgumentTypeError(f"not a process id (a positive whole number): {text!r}")
    pid = int(text, 10)
    if pid <= 0:
        raise argparse.ArgumentTypeError(f"not a process id (must be positive): {text!r}")
    return pid


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _middlebox(text: str) -> str:
    box = lookup(text)
    if box is None:
        raise argparse.ArgumentTypeError(f"unknown middlebox {text!r}; known: {names()}")
    return box.name


def _policy(spec: str) -> Policy:
    """``Policy.parse`` syntax, or a middlebox name."""
    try:
        return as_policy(spec)
    except (TypeError, ValueError, Warning) as exc:  # Warning: under -W error
        raise UsageError(f"--apply: {exc}") from None


def _parser() -> _Parser:
    p = _Parser(
        prog=_prog(),
        description="Show the TCP connections of running processes with their keepalive settings "
        "(SO_KEEPALIVE, idle, interval, count, user timeout) and the kernel's timers, judge them, "
        "and optionally apply a policy to them. Exit 0 when every judged connection passes, 1 when "
        "one fails, 2 for bad arguments, a missing process or no permission.",
    )
    p.add_argument("pids", metavar="PID", nargs="*", type=_pid, help="process ids to inspect")
    p.add_argument("--all", action="store_true", help="every process the caller may inspect")
    limit = p.add_mutually_exclusive_group()
    limit.add_argument(
        "--idle-timeout",
        type=_seconds,
        metavar="N",
        help="judge against a middlebox that forgets idle flows after N seconds: the first "
        "keepalive probe must go out before it",
    )
    limit.add_argument(
        "--middlebox",
        type=_middlebox,
        metavar="NAME",
        help=f"the same, with a known middlebox's default idle timeout ({', '.join(presets.MIDDLEBOXES)})",
    )
    p.add_argument(
        "--apply",
        metavar="SPEC",
        help="apply a policy first (Policy.parse syntax such as '5m:30s:4 user_timeout=7m', or a "
        "middlebox name) to the ESTABLISHED connections and listeners, then report what was read back",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    metrics = p.add_mutually_exclusive_group()
    metrics.add_argument(
        "--prometheus",
        action="store_true",
        help="print the Prometheus text exposition format (kaext_tcp_connections by pid, process, state and "
        "verdict; the kernel's keepalive counters) instead of a table; exit 0 once written "
        "(needs prometheus_client: pip install 'kaext[metrics]')",
    )
    metrics.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="serve the same at http://HOST:PORT/metrics, inspecting again on every scrape, until interrupted "
        "(:PORT: every IPv4 and IPv6 address; 0.0.0.0:PORT every IPv4 address; [::1]:PORT one IPv6 address)",
    )
    p.add_argument(
        "--counters-of",
        type=_pid,
        metavar="PID",
        help="--prometheus/--listen: the kernel's keepalive counters of PID's network namespace "
        "(/proc/PID/net/netstat) instead of this process's own; 1 in a pod with hostPID: the node's",
    )
    p.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="--listen: serve https with this certificate chain (PEM; with --tls-key)",
    )
    p.add_argument("--tls-key", metavar="FILE", help="--listen: the private key of --tls-cert (PEM)")
    p.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help="--listen with --tls-cert: require a client certificate signed by a CA in this file (PEM)",
    )
    return p


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


def _to_json(conn: Connection, judged: str | None) -> dict[str, Any]:
    ka = conn.keepalive
    return {
        "pid": conn.pid,
        "fd": conn.fd,
        "family": conn.family,
        "local": [conn.local[0], conn.local[1]],
        "remote": [conn.remote[0], conn.remote[1]],
        "state": conn.state,
        "keepalive": None
        if ka is None
        else {"enabled": ka.enabled, "idle": ka.idle, "interval": ka.interval, "count": ka.count},
        "user_timeout": conn.user_timeout,
        "timer": conn.timer,
        "timer_left": conn.timer_left,
        "probes": conn.probes,
        "verdict": judged,
        "reason": conn.reason,  # why the options are None (UNREADABLE), else None
    }


def _duration(seconds: float | None) -> str:
    """``7200.0`` -> ``2h``, ``75.0`` -> ``75s``, ``0.5`` -> ``500ms``."""
    return "?" if seconds is None else format_duration(seconds)


def _address(family: str, address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if family == "IPv6" else f"{host}:{port}"


def _cells(conn: Connection, judged: str | None) -> list[str]:
    ka = conn.keepalive
    if ka is None:
        keepalive = idle = interval = count = user_timeout = "?"
    else:
        keepalive = "on" if ka.enabled else "off"
        idle, interval = _duration(ka.idle), _duration(ka.interval)
        count = "?" if ka.count is None else str(ka.count)
        user_timeout = (
            "?"
            if conn.user_timeout is None
            else ("default" if conn.user_timeout == 0 else _duration(conn.user_timeout))
        )
    timer = conn.timer or "?"
    if conn.timer_left is not None:
        timer += f" {conn.timer_left:.1f}s"
    if conn.probes:
        timer += f" ({conn.probes} probe{'' if conn.probes == 1 else 's'})"
    return [
        str(conn.pid),
        str(conn.fd),
        _address(conn.family, conn.local),
        _address(conn.family, conn.remote),
        conn.state,
        keepalive,
        idle,
        interval,
        count,
        user_timeout,
        timer,
        "-" if judged is None else judged,
    ]


_HEAD = [
    "PID",
    "FD",
    "LOCAL",
    "REMOTE",
    "STATE",
    "KEEPALIVE",
    "IDLE",
    "INTVL",
    "CNT",
    "USER_TIMEOUT",
    "TIMER",
    "VERDICT",
]


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def _run(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if not args.pids and not args.all:
        raise UsageError("give one or more PIDs, or --all")
    if args.pids and args.all:
        raise UsageError("give PIDs or --all, not both")
    idle_timeout: float | None = args.idle_timeout
    if args.middlebox is not None:
        idle_timeout = float(presets.MIDDLEBOXES[args.middlebox].idle_timeout)
    policy = _policy(args.apply) if args.apply is not None else None
    replaced = 0  # --apply: listed sockets whose descriptor held another socket by then

    if args.counters_of is not None and not (args.prometheus or args.listen is not None):
        raise UsageError("--counters-of goes with --prometheus or --listen")
    if args.listen is None and (args.tls_cert or args.tls_key or args.tls_client_ca):
        raise UsageError("--tls-cert, --tls-key and --tls-client-ca go with --listen")
    if args.prometheus or args.listen is not None:
        return _metrics(args, idle_timeout, policy)

    pids: list[int] = _all_pids() if args.all else list(dict.fromkeys(args.pids))
    rows, errors = _collect(pids)
    skipped = 0
    notes: list[str] = []
    unlisted: list[str] = []  # named on stderr, counted in the summary; the exit status stays the verdicts'
    if args.all:  # processes that vanished or may not be inspected are skipped
        skipped = len(errors)
        unlisted.extend(_unlisted(errors, counted=args.all))
    elif errors:
        raise UsageError(str(errors[0][1].strerror or errors[0][1]))

    if policy is not None:
        # with --all, only the processes whose sockets could be read (the others would refuse)
        targets = [
            r for r in rows if r.state in ("ESTABLISHED", "LISTEN") and (r.keepalive is not None or not args.all)
        ]
        failed = [(row, err) for row, err in _apply(targets, policy) if err is not None]
        for row, err in failed:
            if err.errno in (errno.EPERM, errno.EACCES) and not args.all:
                raise UsageError(f"--apply: {err.strerror}")
            if err.errno == errno.ESTALE:  # Connection.apply: the number now holds another socket
                replaced += 1
                notes.append(f"--apply {policy}: pid {row.pid} fd {row.fd}: replaced since it was listed, not applied")
                continue
            notes.append(f"--apply {policy}: pid {row.pid} fd {row.fd}: not applied: {err.strerror or err}")
        rows, errors = _collect(sorted({r.pid for r in rows}))  # read back what the kernel holds now
        if errors and not args.all:
            raise UsageError(str(errors[0][1].strerror or errors[0][1]))
        unlisted.extend(_unlisted(errors, counted=args.all))
        now = {(r.pid, r.fd) for r in rows}
        bad = {(row.pid, row.fd) for row, _ in failed}
        for row in targets:  # applied, yet not there when read back: never a silent success
            if (row.pid, row.fd) not in bad and (row.pid, row.fd) not in now:
                notes.append(f"--apply {policy}: pid {row.pid} fd {row.fd}: not found when read back")

    judged = [verdict(r, idle_timeout) for r in rows]
    failing = sum(1 for v in judged if v is not None and v != PASS)
    if args.json:
        print(json.dumps({"connections": [_to_json(r, v) for r, v in zip(rows, judged, strict=True)]}, indent=2))
    else:
        for line in table(_HEAD, [_cells(r, v) for r, v in zip(rows, judged, strict=True)]):
            print(line)
        count = sum(1 for v in judged if v is not None)
        summary = f"{len(rows)} socket{'' if len(rows) == 1 else 's'}, {count} judged, {failing} failing"
        if idle_timeout is not None:
            source = f"middlebox {args.middlebox}" if args.middlebox else "--idle-timeout"
            summary += f" (idle timeout {idle_timeout:g} s, {source})"
        if policy is not None:
            summary += f"; applied {str(policy)!r}"
            if replaced:
                summary += f" ({replaced} socket{'' if replaced == 1 else 's'} replaced since listed, not applied)"
        if skipped:
            summary += f"; {skipped} process{'' if skipped == 1 else 'es'} skipped (gone, or no permission)"
        print(summary)
    for note in [*unlisted, *_unread(rows, counted=args.all), *notes]:
        print(f"{_prog()}: {note}", file=sys.stderr)
    return 1 if failing or notes else 0


def _metrics(args: argparse.Namespace, idle_timeout: float | None, policy: Policy | None) -> int:
    """``--prometheus`` and ``--listen``: the connections as Prometheus metrics (``kaext._metrics``)."""
    flag = "--prometheus" if args.prometheus else "--listen"
    if policy is not None or args.json:
        raise UsageError(f"{flag} reads only: it cannot be combined with {'--apply' if policy else '--json'}")
    try:
        from . import _metrics
    except ImportError as exc:
        if (exc.name or "").split(".")[0] != "prometheus_client":
            raise
        raise UsageError(f"{flag} needs the prometheus_client library: pip install 'kaext[metrics]'") from None
    if args.counters_of is not None:
        try:
            with open(f"/proc/{args.counters_of}/net/netstat", "rb"):
                pass
        except OSError as exc:
            raise UsageError(
                f"--counters-of {args.counters_of}: /proc/{args.counters_of}/net/netstat: {exc.strerror}"
            ) from None
    pids = _all_pids if args.all else (lambda: list(dict.fromkeys(args.pids)))
    collector = _metrics.InspectCollector(
        pids,
        lambda conn: verdict(conn, idle_timeout),
        strict=not args.all and args.prometheus,  # as for the table: a PID that cannot be read is an error
        count_exited=not args.all,
        netstat="/proc/net/netstat" if args.counters_of is None else f"/proc/{args.counters_of}/net/netstat",
    )
    if args.prometheus:
        text = _metrics.exposition(collector)
        for note in _unlisted(collector.errors, counted=args.all):
            print(f"{_prog()}: {note}", file=sys.stderr)
        print(text.decode("utf-8"), end="")
        return 0
    try:
        host, port = _metrics.listen_address(args.listen)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    tls = None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise UsageError("--tls-client-ca needs --tls-cert and --tls-key (client certificates are checked over TLS)")
    if args.tls_cert is not None:
        try:
            tls = _metrics.tls_context(
                args.tls_cert, args.tls_key, args.tls_client_ca, client_auth_required=args.tls_client_ca is not None
            )
        except OSError as exc:
            raise UsageError(f"--tls-cert/--tls-key/--tls-client-ca: {exc}") from None

    def say(line: str) -> None:
        print(f"{_prog()}: {printable(line)}", file=sys.stderr, flush=True)

    try:
        _metrics.serve(collector, host, port, ready=lambda url: say(f"serving {url}"), failed=say, tls=tls)
    except OSError as exc:
        raise UsageError(f"--listen {args.listen}: {exc.strerror or exc}") from None
    return 0


def _unlisted(errors: list[tuple[int, OSError]], counted: bool = False) -> list[str]:
    """One line per process whose sockets could not be listed (one that has exited meanwhile
    holds none, and is only counted).  ``counted`` (``--all``): the processes refused for
    want of permission -- every other user's, when not root -- are one line with their
    number instead."""
    lines: list[str] = []
    refused: list[int] = []
    for pid, exc in errors:
        if isinstance(exc, ProcessLookupError):
            continue
        if counted and isinstance(exc, PermissionError):
            refused.append(pid)
            continue
        lines.append(f"pid {pid}: sockets not listed: {exc.strerror or exc}")
    if refused:
        n = len(refused)
        lines.insert(
            0,
            f"{n} process{'' if n == 1 else 'es'}: sockets not listed: no permission (other users' processes; "
            "run as root, or with CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE)",
        )
    return lines


def _unread(rows: Sequence[Connection], counted: bool) -> list[str]:
    """Why sockets were listed without their options (UNREADABLE): one line per reason --
    per process, or with ``counted`` (``--all``) per kind of reason, with the numbers."""
    groups: dict[str, tuple[set[int], int]] = {}
    for row in rows:
        if row.reason is None:
            continue
        key = re.sub(r"process \d+", "the process", row.reason) if counted else f"pid {row.pid}: {row.reason}"
        pids, n = groups.get(key, (set(), 0))
        pids.add(row.pid)
        groups[key] = (pids, n + 1)
    lines = []
    for key, (pids, n) in groups.items():
        sockets = f"{n} socket{'' if n == 1 else 's'}"
        if counted:
            lines.append(f"{sockets} of {len(pids)} process{'' if len(pids) == 1 else 'es'}: options not read: {key}")
        else:
            pid, _, reason = key.partition(": ")
            lines.append(f"{pid}: options of {sockets} not read: {reason}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the inspector; returns the exit status (0 all judged pass, 1 one fails, 2 error,
    130 Ctrl-C)."""
    return run_tool(_prog, lambda: _run(argv))


if __name__ == "__main__":
    sys.exit(main())
