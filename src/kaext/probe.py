"""``python -m kaext.probe HOST PORT``: measure how long the path to a server keeps an idle TCP connection.

    python -m kaext.probe HOST PORT [--max SECONDS] [--resolution FRACTION] [--json]

A NAT, firewall, load balancer or carrier on the path forgets an idle flow after some
time; TCP keepalive measures it.  One connection per idle time ``t`` (every whole
second while 1 s is the finer step, then growing by ``resolution``: 1, 2, ... 40, 42,
44, ... up to ``--max``) is opened to the server, each with its keepalive idle time
set to ``t``.  A flow the path still holds when its first probe goes out is answered
(it *survived* ``t``); one the path has forgotten loses its probe (no answer, or an
RST) and the kernel drops the connection (*lost*).  The shortest lost idle time is the
path's idle timeout; the longest survived one below it brackets it from beneath.  A
server that closes idle connections itself sends a FIN: that is reported as
``server_closed_after``, never as a timeout of the path.

Timing comes from the kernel's own view of each socket where the OS shows it (Linux
``TCP_INFO``: ``tcpi_probes`` -- probes out unanswered, ``tcpi_last_ack_recv`` /
``tcpi_last_data_recv`` -- when the flow was last heard from); elsewhere the asked
idle time is used.  Linux's timer wheel fires a long timer late by up to an eighth of
its length, so each connection's keepalive timer is set again (``TCP_KEEPIDLE``) a
moment before it is due: a short timer fires on time.

Costs for the defaults (``--max 1200 --resolution 0.05``): at most 114 connections,
opened at most 20 per second, all of them open only during the first seconds; each
survivor is closed as soon as its first probe is answered.

Exit status: 0 when the run measured (a timeout found, or none up to ``--max``), 1 when
the server, not the path, kept it from measuring (it resets connections, sends data
unasked, or takes no more connections: ``outcome`` says which), 2 for bad arguments, a
name that does not resolve or a server that cannot be reached (one line on stderr), 130
on Ctrl-C after every socket is closed.  A run ends within ``time_bound(max, resolution)``.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from . import _tcp_info
from ._cli import Parser, UsageError, prog_name, run_tool
from ._functions import set_keepalive
from ._policy import Policy

try:
    import socket
except ImportError:  # WASI / Emscripten builds: measure() raises OSError(ENOSYS)
    from . import _nosocket as socket  # type: ignore[no-redef]
try:
    import select
except ImportError:  # a build without select(): no socket could be watched either
    from . import _nosocket as select  # type: ignore[no-redef]

__all__ = ["ProbeResult", "Progress", "idle_times", "kernel_timing", "main", "measure", "time_bound"]


#: Seconds between unanswered keepalive probes, and how many before the kernel drops a connection.
INTERVAL = 1
COUNT = 3
#: Connections opened per second, at most.
OPEN_RATE = 20
#: Connections one run may open, at most (``idle_times`` raises beyond it).
MAX_CONNECTIONS = 500
#: Seconds before its idle time a connection's keepalive timer is set again (a short timer fires on time).
REARM = 1.5
#: Seconds between two looks at every socket.
POLL = 0.05
#: Seconds the first connect may take (the server's reachability).
CONNECT_TIMEOUT = 10.0
#: Seconds each later connect may take: one that fails means the server takes no more
#: connections (``connection_limit``), and no more are opened.
NEXT_CONNECT_TIMEOUT = 3.0
#: Seconds after connecting in which data from the server (a banner: SSH, SMTP, MySQL)
#: only restarts the idle time; data later ends that connection as ``server_sent_after``.
BANNER = 2.0
#: ``--max``: 1 s .. 32767 s (about 9 h): an idle time every OS with a keepalive idle knob can
#: set (Linux's TCP_KEEPIDLE maximum, the smallest of them).
MAX_IDLE_RANGE = (1, 32767)
#: ``--resolution``: the bracket's width as a fraction of the timeout.
RESOLUTION_RANGE = (0.01, 1.0)


def kernel_timing() -> bool:
    """Whether this OS shows when a socket's probes went out (``TCP_INFO``); else asked times are used."""
    return _tcp_info.AVAILABLE


def _heard(sock: socket.socket) -> tuple[int, float] | None:
    """(unanswered probes out, seconds since the peer was last heard from), or None when unreadable."""
    info = _tcp_info.tcp_info(sock)
    if info is None:
        return None
    return info.probes, min(info.last_data_recv_ms, info.last_ack_recv_ms) / 1000


def idle_times(max_idle: float = 1200, resolution: float = 0.05) -> list[int]:
    """The idle times one run tries, in whole seconds: each at most ``max(1, resolution * t)`` above the last.

    Raises TypeError / ValueError for a value of the wrong type or outside
    ``MAX_IDLE_RANGE`` / ``RESOLUTION_RANGE``.
    """
    for name, value, (low, high) in (
        ("max_idle", max_idle, MAX_IDLE_RANGE),
        ("resolution", resolution, RESOLUTION_RANGE),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(
                f"{name} must be a number of seconds, got {type(value).__name__}"
                if name == "max_idle"
                else f"{name} must be a number, got {type(value).__name__}"
            )
        if not (low <= value <= high) or math.isnan(value):
            raise ValueError(f"{name}={value!r} is out of range ({low} .. {high})")
    out: list[int] = []
    t = 1
    while t <= max_idle:
        out.append(t)
        t = max(t + 1, math.floor(t * (1 + resolution)))
    if len(out) > MAX_CONNECTIONS:
        raise ValueError(
            f"max_idle={max_idle!r} with resolution={resolution!r} needs {len(out)} connections, "
            f"more than {MAX_CONNECTIONS}; use a coarser resolution or a smaller max_idle"
        )
    return out


@dataclass(frozen=True)
class ProbeResult:
    """One run's result; ``as_dict()`` is the JSON of ``--json``.

    ``idle_timeout``: the shortest idle time (s) after which a flow was lost, None when
    every flow survived; ``survived``: the longest idle time (s) a flow survived below it;
    ``server_closed_after``: seconds after which the server itself closed idle
    connections (FIN), or None; ``policy``: ``str(Policy.for_idle_timeout(survived))``
    when a timeout was found, else None; ``elapsed``: wall seconds; ``connections``:
    how many were opened.  What the server did, not the path: ``server_reset_after``:
    seconds after which it reset a connection before any keepalive probe went out;
    ``server_sent_after``: seconds of quiet after which it sent data unasked (its
    connections are never idle longer); ``connection_limit``: how many connections it
    took before it refused or ignored the next.  ``outcome``: ``"measured"`` (a timeout
    found, or none up to ``max_idle``, or the server's own close or reset after some
    survived), else why no timeout could be measured: ``"server_resets"`` and
    ``"server_sends"`` (before any connection survived), ``"connection_limit"``,
    ``"unfinished"`` (the run's time bound, ``time_bound``, passed).
    """

    host: str
    port: int
    idle_timeout: float | None
    survived: float | None
    server_closed_after: float | None
    policy: str | None
    elapsed: float
    connections: int
    server_reset_after: float | None = None
    server_sent_after: float | None = None
    connection_limit: int | None = None
    outcome: str = "measured"

    def as_dict(self) -> dict[str, Any]:
        """The result as the ``--json`` object: the eight fields by name, seconds as floats,
        ``None`` where a field has no value."""
        return asdict(self)


@dataclass(frozen=True)
class Progress:
    """What a run knows so far, handed to ``measure``'s ``progress`` callback."""

    elapsed: float
    open: int
    survived: int
    lost: int
    low: float | None  # longest idle survived so far
    high: float | None  # shortest idle lost so far


class _Flow:
    __slots__ = ("target", "sock", "opened", "ref", "last_poll", "probe_at", "rearmed", "outcome", "idle")

    def __init__(self, target: int, sock: socket.socket | None, now: float) -> None:
        self.target = target
        self.opened = now
        self.sock: socket.socket | None = sock
        self.ref = now  # when the peer was last heard from (monotonic s)
        self.last_poll = now
        self.probe_at: float | None = None
        self.rearmed = False
        # "survived", "lost"; the server's: "closed" (FIN), "reset" (RST before any probe), "busy"
        # (data after the banner); "skipped" (not needed any more), "unfinished" (out of time)
        self.outcome: str | None = None
        self.idle: float | None = None

    def finish(self, outcome: str, idle: float) -> None:
        self.outcome, self.idle = outcome, idle
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _connect(address: tuple[int, Any], host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    family, sockaddr = address
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(sockaddr)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        code = exc.errno if exc.errno is not None else errno.ETIMEDOUT
        raise OSError(code, f"cannot connect to {host} port {port}: {exc.strerror or exc}") from exc
    except BaseException:
        sock.close()
        raise
    return sock


def _resolve(host: str, port: int) -> tuple[int, Any]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:  # the resolver's own error (EAI_NONAME, EAI_AGAIN, ...), as such
        raise socket.gaierror(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from exc
    return infos[0][0], infos[0][4]


def time_bound(max_idle: float = 1200, resolution: float = 0.05) -> float:
    """The longest a run of ``measure`` takes, in seconds: ``max_idle``, the time to open
    its connections at ``OPEN_RATE``, the probes of the longest, a banner's ``BANNER``,
    the first connect's ``CONNECT_TIMEOUT`` and 2 s.  Raises as ``idle_times``."""
    n = len(idle_times(max_idle, resolution))
    return float(max_idle) + n / OPEN_RATE + INTERVAL * (COUNT + 1) + BANNER + CONNECT_TIMEOUT + 2


def measure(
    host: str,
    port: int,
    *,
    max_idle: float = 1200,
    resolution: float = 0.05,
    progress: Callable[[Progress], None] | None = None,
) -> ProbeResult:
    """Measure how long the path to ``host``:``port`` keeps an idle TCP connection.

    Opens one connection per idle time of ``idle_times(max_idle, resolution)`` (at most
    ``OPEN_RATE`` a second), each with SO_KEEPALIVE on and its keepalive idle time
    (Linux ``TCP_KEEPIDLE``, s; macOS ``TCP_KEEPALIVE``) set to that time, interval
    ``INTERVAL`` s, ``COUNT`` probes, and watches which ones the path drops.  Returns
    once the timeout is bracketed to within ``max(1 s, resolution * timeout)``, or every
    flow survived up to ``max_idle``, or the server (not the path) ended the measurement
    (it resets connections, sends data unasked, or takes no more connections: see
    :class:`ProbeResult`), at the latest after ``time_bound(max_idle, resolution)`` s;
    every socket is closed on return and on any
    exception (KeyboardInterrupt included, which reaches the caller).  On Linux the
    idle times are the kernel's (``TCP_INFO``); elsewhere the asked ones.

    ``progress``, when given, is called about twice a second with a :class:`Progress`.
    Raises TypeError / ValueError for bad arguments, OSError (with errno) when the
    server cannot be reached.
    """
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, got {type(host).__name__}")
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, got {type(port).__name__}")
    if not 1 <= port <= 65535:
        raise ValueError(f"port={port!r} is out of range (1 .. 65535)")
    pending = idle_times(max_idle, resolution)
    kernel = kernel_timing()
    start = time.monotonic()
    deadline = start + time_bound(max_idle, resolution)
    address = _resolve(host, port)
    flows: list[_Flow] = []
    opened = 0
    limit: int | None = None
    last_progress = start
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                for f in flows:
                    if f.sock is not None:
                        f.finish("unfinished", math.nan)
                break
            ended = [f for f in flows if f.outcome in ("lost", "closed", "reset", "busy")]
            cutoff = min((f.target for f in ended), default=math.inf)
            # open the next connection (the first one must succeed: the server is reachable)
            if pending and pending[0] < cutoff and opened < (now - start) * OPEN_RATE + 1:
                target = pending.pop(0)
                try:
                    sock = _connect(address, host, port, CONNECT_TIMEOUT if not flows else NEXT_CONNECT_TIMEOUT)
                except OSError as exc:
                    if exc.errno == errno.ECONNRESET:  # taken, then reset before connect returned
                        flow = _Flow(target, None, now)
                        flow.outcome, flow.idle = "reset", 0.0
                        flows.append(flow)
                        opened += 1
                        continue
                    if not flows:
                        raise
                    # the server takes no more: measure with the connections it took
                    limit = len(flows)
                    pending.clear()
                else:
                    try:
                        set_keepalive(sock, idle=target, interval=INTERVAL, count=COUNT)
                    except BaseException:
                        sock.close()
                        raise
                    flows.append(_Flow(target, sock, time.monotonic()))
                opened += 1
            live = [f for f in flows if f.sock is not None]
            for f in live:
                if f.target >= cutoff:
                    f.finish("skipped", math.nan)
            live = [f for f in live if f.sock is not None]
            if (not pending or pending[0] >= cutoff) and not live:
                break
            _poll(live, kernel)
            now = time.monotonic()
            if progress is not None and now - last_progress >= 0.5:
                last_progress = now
                progress(_progress(flows, now - start))
        elapsed = time.monotonic() - start
    finally:
        for f in flows:
            if f.sock is not None:
                f.sock.close()
                f.sock = None
    if progress is not None:
        progress(_progress(flows, elapsed))
    return _result(host, port, flows, elapsed, opened, limit)


def _poll(live: list[_Flow], kernel: bool) -> None:
    """One look at every live connection: readable data / FIN / error, then the kernel's probe state."""
    socks = [f.sock for f in live if f.sock is not None]
    readable, _, _ = select.select(socks, [], [], POLL) if socks else ([], [], [])
    ready = {s.fileno() for s in readable}
    now = time.monotonic()
    for f in live:
        sock = f.sock
        assert sock is not None
        between = (f.last_poll + now) / 2  # something that happened since the last look: about here
        # when the flow was last heard from before this look: a FIN or RST that arrived since
        # counts as heard from now, and is not the start of the idle time it ends
        ref = f.ref
        if kernel:
            info = _heard(sock)
            if info is not None:
                probes, quiet = info
                heard = now - quiet
                if f.probe_at is None and probes >= 1:
                    f.probe_at = between
                # Heard from since the last look, with something still unread (a FIN, data; it
                # may have arrived after the select): the read below or the next look handles it,
                # and the idle time it ends starts where the flow was last heard before it.
                unread = heard > f.ref and (sock.fileno() in ready or _readable(sock))
                if unread:
                    pass
                elif not f.rearmed:
                    f.ref = heard  # the kernel's view; data from the server before the probe restarts idle
                elif heard > f.ref + 0.2:
                    # the probe was answered: the path still held the flow
                    f.finish("survived", (f.probe_at if f.probe_at is not None else heard) - f.ref)
                    continue
            if not f.rearmed and now >= f.ref + f.target - REARM:
                f.rearmed = True
                try:
                    # The kernel re-arms the timer for what is left of the idle time when
                    # TCP_KEEPIDLE changes; a write of the value it already holds leaves the
                    # long timer as it is (seen on Linux 6.18), so another value goes first.
                    set_keepalive(sock, idle=f.target - 1 if f.target > 1 else 2)
                    set_keepalive(sock, idle=f.target)
                except OSError as exc:
                    if exc.errno is None:  # not the kernel's: a signal handler's, for the caller
                        raise
        elif now >= f.ref + f.target + INTERVAL * (COUNT + 1):
            f.finish("survived", float(f.target))
            continue
        if sock.fileno() in ready:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                if f.probe_at is None and between - ref < min(f.target - 0.5, 0.9 * f.target):
                    # reset well before its first probe was due: the server's doing, not the path's
                    f.finish("reset", max(0.0, between - ref))
                    continue
                probe = f.probe_at if f.probe_at is not None else between
                f.finish("lost", (probe - ref) if kernel else float(f.target))
                continue
            if data == b"":
                f.finish("closed", between - ref)
                continue
            if data:
                if now - f.opened > BANNER:  # the server talks unasked: this flow is not idle
                    f.finish("busy", max(0.0, between - ref))
                    continue
                f.ref = now  # a banner: the idle time starts after it
        f.last_poll = now


def _readable(sock: socket.socket) -> bool:
    """Whether ``sock`` has something to read (data, a FIN, an error) right now."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def _bracket(flows: list[_Flow]) -> tuple[float | None, float | None]:
    lost = [f.idle for f in flows if f.outcome == "lost" and f.idle is not None]
    high = min(lost) if lost else None
    below = [
        f.idle for f in flows if f.outcome == "survived" and f.idle is not None and (high is None or f.idle < high)
    ]
    return (max(below) if below else None), high


def _progress(flows: list[_Flow], elapsed: float) -> Progress:
    low, high = _bracket(flows)
    return Progress(
        elapsed=elapsed,
        open=sum(f.sock is not None for f in flows),
        survived=sum(f.outcome == "survived" for f in flows),
        lost=sum(f.outcome == "lost" for f in flows),
        low=low,
        high=high,
    )


def _result(
    host: str, port: int, flows: list[_Flow], elapsed: float, opened: int, limit: int | None = None
) -> ProbeResult:
    low, high = _bracket(flows)
    closed = [f.idle for f in flows if f.outcome == "closed" and f.idle is not None]
    reset = [f.idle for f in flows if f.outcome == "reset" and f.idle is not None]
    busy = [f.idle for f in flows if f.outcome == "busy" and f.idle is not None]
    survived = any(f.outcome == "survived" for f in flows)
    if high is not None or closed:
        outcome = "measured"
    elif reset and not survived:
        outcome = "server_resets"
    elif busy and not survived:
        outcome = "server_sends"
    elif limit is not None:
        outcome = "connection_limit"
    elif any(f.outcome == "unfinished" for f in flows):
        outcome = "unfinished"
    else:
        outcome = "measured"
    policy = None
    if high is not None and low is not None:
        try:
            policy = str(Policy.for_idle_timeout(low))
        except (ValueError, OSError):
            policy = None
    return ProbeResult(
        host=host,
        port=port,
        idle_timeout=None if high is None else round(high, 3),
        survived=None if low is None else round(low, 3),
        server_closed_after=round(min(closed), 3) if closed else None,
        policy=policy,
        elapsed=round(elapsed, 3),
        connections=opened,
        server_reset_after=round(min(reset), 3) if reset else None,
        server_sent_after=round(min(busy), 3) if busy else None,
        connection_limit=limit,
        outcome=outcome,
    )


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------


def _prog() -> str:
    return prog_name("kaext-probe", "kaext.probe")


def _number(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None

    return parse


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def verdict(result: ProbeResult) -> str:
    """The final one-line verdict ``main`` prints."""
    where = f"{result.host} port {result.port}"
    if result.outcome == "server_resets":
        line = (
            f"{where}: no idle timeout measured: the server resets connections (after "
            f"{_seconds(result.server_reset_after)}, before any keepalive probe)"
        )
    elif result.outcome == "server_sends":
        line = (
            f"{where}: no idle timeout measured: the server sends data unasked after "
            f"{_seconds(result.server_sent_after)} of quiet, so its connections are never idle longer"
        )
    elif result.outcome == "unfinished":
        line = f"{where}: no idle timeout measured: the run's time bound passed"
    elif result.idle_timeout is not None:
        line = (
            f"{where}: the path forgets an idle connection after {_seconds(result.survived)} .. "
            f"{_seconds(result.idle_timeout)}"
        )
        line += (
            f"; recommended policy {result.policy!r} (Policy.parse)"
            if result.policy
            else "; too short for a keepalive policy"
        )
    elif result.server_closed_after is not None:
        line = (
            f"{where}: no idle timeout on the path up to {_seconds(result.survived)}; "
            f"the server itself closes idle connections after {_seconds(result.server_closed_after)}"
        )
    else:
        line = f"{where}: no idle timeout up to {_seconds(result.survived)}"
    if result.idle_timeout is not None and result.server_closed_after is not None:
        line += f"; the server closes idle connections after {_seconds(result.server_closed_after)}"
    if result.outcome not in ("server_resets", "server_sends"):
        if result.server_reset_after is not None:
            line += f"; the server resets connections idle for {_seconds(result.server_reset_after)}"
        if result.server_sent_after is not None:
            line += f"; the server sends data unasked after {_seconds(result.server_sent_after)} of quiet"
    if result.connection_limit is not None:
        n = result.connection_limit
        line += (
            f"; the server took {n} connection{'' if n == 1 else 's'} and refused or ignored the next, "
            "so idle times were tried only up to there"
        )
    connections = f"{result.connections} connection{'' if result.connections == 1 else 's'}"
    return line + f" ({connections}, {result.elapsed:.0f} s)"


def _show(p: Progress) -> None:
    sys.stderr.write(
        f"\r{_prog()}: {p.elapsed:5.0f} s, {p.open} open, {p.survived} survived, {p.lost} lost, "
        f"bracket {_seconds(p.low)} .. {_seconds(p.high)}\x1b[K"
    )
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    """``python -m kaext.probe`` / ``kaext-probe``; returns the exit status."""
    return run_tool(_prog, lambda: _main(argv), interrupted="interrupted; every connection is closed")


def _main(argv: list[str] | None) -> int:
    parser = Parser(
        prog=_prog(),
        description="Measure how long the network path to a TCP server keeps an idle connection, with TCP keepalive.",
    )
    parser.add_argument("host")
    parser.add_argument("port", type=_number(int))
    parser.add_argument(
        "--max", type=_number(float), default=1200, metavar="SECONDS", help="longest idle time tried (default 1200)"
    )
    parser.add_argument(
        "--resolution",
        type=_number(float),
        default=0.05,
        metavar="FRACTION",
        help="bracket width as a fraction of the timeout (default 0.05; never under 1 s)",
    )
    parser.add_argument("--json", action="store_true", help="print only the result as JSON")
    args = parser.parse_args(argv)
    tty = sys.stderr.isatty()
    try:
        result = measure(
            args.host, args.port, max_idle=args.max, resolution=args.resolution, progress=_show if tty else None
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    finally:
        if tty:  # the progress line ends before anything else is said
            sys.stderr.write("\n")
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(verdict(result))
        if not kernel_timing():
            print("(idle times are the asked ones: this OS does not show when its probes went out)")
    # 1: the server, not the path, kept the run from measuring up to --max
    return 0 if result.outcome == "measured" else 1


if __name__ == "__main__":
    sys.exit(main())
