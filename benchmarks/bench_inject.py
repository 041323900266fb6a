#!/usr/bin/env python3
"""What does ``kaext.inject`` cost a connect?  One run, interleaved repeats, ratios.

Times opening a loopback TCP connection the way libraries do,
``socket.create_connection(addr)`` (socket + connect), in batches (accepted and
closed after the clock stops), three ways:

  bare       no injection
  injected   with ``kaext.inject(policy)`` active: the wrapper and ``policy.apply``
             (SO_KEEPALIVE + idle + interval + count + user timeout: five setsockopt)
  by hand    the same, then ``policy.apply(sock)`` written out: the floor for
             applying the same policy

and the same for the ``connect()`` call alone (sockets made before the clock
starts), where the five setsockopt calls weigh more.  Every figure is the minimum
over interleaved repeats of the thread's CPU time per connection (the least
disturbed batch).  Goal: injected create_connection <= 1.10x bare.  A benchmark,
not a test: it prints ``GOAL`` lines and exits 0 unless it cannot run at all.

    python benchmarks/bench_inject.py [--json] [--repeats N] [--batch N]
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import sys
import time
from collections.abc import Callable

import kaext

GOAL_RATIO = 1.10
POLICY = "7s:3s:4 user_timeout=19s"


def _connect_batch(listener: socket.socket, n: int, connect: Callable[[socket.socket, object], None]) -> float:
    """CPU seconds per connect() over n sockets made beforehand."""
    addr = listener.getsockname()
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        start = time.thread_time()
        for s in socks:
            connect(s, addr)
        elapsed = time.thread_time() - start
        for _ in socks:
            listener.accept()[0].close()
    finally:
        for s in socks:
            s.close()
    return elapsed / n


def _open_batch(listener: socket.socket, n: int, open_: Callable[[object], socket.socket]) -> float:
    """CPU seconds per create_connection() over n connections."""
    addr = listener.getsockname()
    socks = []
    try:
        start = time.thread_time()
        for _ in range(n):
            socks.append(open_(addr))
        elapsed = time.thread_time() - start
        for _ in socks:
            listener.accept()[0].close()
    finally:
        for s in socks:
            s.close()
    return elapsed / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--repeats", type=int, default=40, help="interleaved repeats (default 40)")
    ap.add_argument("--batch", type=int, default=200, help="connects per timed batch (default 200)")
    args = ap.parse_args(argv)

    policy = kaext.Policy.parse(POLICY)
    names = ("bare", "injected", "by hand")
    best = {kind: dict.fromkeys(names, float("inf")) for kind in ("create_connection", "connect")}

    def connect(s: socket.socket, addr: object) -> None:
        s.connect(addr)  # type: ignore[arg-type]

    def connect_by_hand(s: socket.socket, addr: object) -> None:
        s.connect(addr)  # type: ignore[arg-type]
        policy.apply(s)

    def open_(addr: object) -> socket.socket:
        return socket.create_connection(addr)  # type: ignore[arg-type]

    def open_by_hand(addr: object) -> socket.socket:
        s = socket.create_connection(addr)  # type: ignore[arg-type]
        policy.apply(s)
        return s

    def measure(name: str, n: int, c: Callable[..., None], o: Callable[[object], socket.socket]) -> None:
        b = best["connect"]
        b[name] = min(b[name], _connect_batch(listener, n, c))
        b = best["create_connection"]
        b[name] = min(b[name], _open_batch(listener, n, o))

    try:
        listener = socket.create_server(("127.0.0.1", 0), backlog=args.batch + 16)
    except OSError as exc:
        print(f"cannot run: no loopback listener ({exc})", file=sys.stderr)
        return 1
    with listener:
        for _ in range(3):  # warm up
            _connect_batch(listener, 20, connect)
        for _ in range(args.repeats):
            kaext.uninject()
            measure("bare", args.batch, connect, open_)
            measure("by hand", args.batch, connect_by_hand, open_by_hand)
            kaext.inject(policy)
            measure("injected", args.batch, connect, open_)
        kaext.uninject()

    ratio = best["create_connection"]["injected"] / best["create_connection"]["bare"]
    result = {
        "python": platform.python_version(),
        "implementation": kaext.IMPLEMENTATION,
        "machine": f"{platform.system()} {platform.machine()}",
        "policy": POLICY,
        "us_per_connection": {kind: {k: round(v * 1e6, 3) for k, v in b.items()} for kind, b in best.items()},
        "ratios": {
            kind: {
                "injected_vs_bare": round(b["injected"] / b["bare"], 3),
                "by_hand_vs_bare": round(b["by hand"] / b["bare"], 3),
                "injected_vs_by_hand": round(b["injected"] / b["by hand"], 3),
            }
            for kind, b in best.items()
        },
        "goal": {"create_connection_injected_vs_bare_at_most": GOAL_RATIO, "met": ratio <= GOAL_RATIO},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"kaext {kaext.__version__} ({kaext.IMPLEMENTATION}), Python {result['python']}, {result['machine']}")
        print(f"policy {POLICY!r}; thread CPU time per connection, min of {args.repeats} x {args.batch}")
        for kind, b in result["us_per_connection"].items():
            r = result["ratios"][kind]
            print(f"  {kind}:")
            for name, us in b.items():
                print(f"    {name:9} {us:8.2f} us")
            print(
                f"    injected / bare {r['injected_vs_bare']:.3f}x, by hand / bare {r['by_hand_vs_bare']:.3f}x "
                f"(the policy's five system calls), injected / by hand {r['injected_vs_by_hand']:.3f}x (the wrapper)"
            )
    verdict = "PASS" if ratio <= GOAL_RATIO else "MISS"
    print(f"GOAL inject-create-connection-vs-bare: {ratio:.3f}x (goal <= {GOAL_RATIO:.2f}x) {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
