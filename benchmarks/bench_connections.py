#!/usr/bin/env python3
"""How long does ``kaext.connections(pid)`` take for a process holding many connections?

A child process (the one inspected) holds N loopback TCP connections, each with
keepalive set by plain setsockopt; a second process holds the accepted ends (so
the child needs only N descriptors).  The benchmark inspects the child from this
process -- another process, so every socket is read through ``pidfd_getfd`` --
at N = 1,000 and N = 10,000, with the implementation ``import kaext`` chose
(normally the C batch read) and with the pure-Python backend ``kaext._pure``
(passed to kaext's internal listing function explicitly), and reports the
minimum over several repeats.  Linear growth shows as the cost per connection
staying the same from 1k to 10k.

Goals: 10,000 connections in <= 0.10 s; per-connection cost at 10k <= 1.5x the
cost at 1k.  This is a benchmark, not a test: it reports PASS/MISS and exits 0
unless it cannot run at all (not Linux, or too few descriptors allowed).

    python benchmarks/bench_connections.py [--json] [--repeats N]

With ``--json`` the report is one JSON document on stdout and the GOAL lines go
to stderr.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from types import ModuleType
from typing import Any

from _limits import raise_nofile  # this folder: the script runs as benchmarks/bench_connections.py

import kaext
from kaext import _connections, _platform, _pure

GOAL_10K_SECONDS = 0.10
GOAL_LINEAR = 1.5  # per-connection cost at 10k / at 1k, at most
SIZES = (1_000, 10_000)

# The accepting side: accepts and holds every connection until its stdin closes.
SERVER = r"""
import socket, sys, threading
listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
held = []
def accept():
    while True:
        try:
            held.append(listener.accept()[0])
        except OSError:
            return
threading.Thread(target=accept, daemon=True).start()
print(listener.getsockname()[1], flush=True)
sys.stdin.read()
"""

# The inspected process: "grow N" opens connections until it holds N, each with keepalive set.
HOLDER = r"""
import socket, sys
port = int(sys.argv[1])
tcp = socket.IPPROTO_TCP
held = []
for line in sys.stdin:
    want = int(line.split()[1])
    while len(held) < want:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        s.setsockopt(tcp, socket.TCP_KEEPIDLE, 60)
        s.setsockopt(tcp, socket.TCP_KEEPINTVL, 10)
        s.setsockopt(tcp, socket.TCP_KEEPCNT, 5)
        held.append(s)
    print(len(held), flush=True)
"""


def _backends() -> dict[str, ModuleType]:
    """The backend ``import kaext`` chose, then the pure-Python one when that was the extension."""
    if kaext.IMPLEMENTATION == "c":
        from kaext import _kaext

        return {"c": _kaext, "python": _pure}
    return {"python": _pure}


def _time(pid: int, backend: ModuleType, repeats: int, expect: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        rows = _connections._list_connections(pid, backend)
        elapsed = time.perf_counter() - start
        best = min(best, elapsed)
        if len(rows) != expect or any(r.keepalive is None or r.keepalive.idle != 60 for r in rows):
            sys.exit(f"bench_connections: expected {expect} readable connections, got {len(rows)}")
    return best


def run(repeats: int, sizes: tuple[int, int] = SIZES) -> dict[str, Any]:
    need = max(sizes) + 1000
    raise_nofile(need, "bench_connections")  # inherited by both children
    backends = _backends()
    implementations = list(backends)
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdin is not None
    port = int(server.stdout.readline())
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdin is not None
    seconds: dict[str, dict[int, float]] = {name: {} for name in implementations}
    try:
        for size in sizes:
            holder.stdin.write(f"grow {size}\n")
            holder.stdin.flush()
            if int(holder.stdout.readline()) != size:
                sys.exit("bench_connections: the holder could not open its connections")
            for _ in range(2):  # interleaved: each implementation twice
                for name in implementations:
                    t = _time(holder.pid, backends[name], repeats, size)
                    seconds[name][size] = min(seconds[name].get(size, t), t)
    finally:
        holder.stdin.close()
        server.stdin.close()
        holder.wait()
        server.wait()
    main = implementations[0]
    small, large = sizes
    per_small = seconds[main][small] / small
    per_large = seconds[main][large] / large
    return {
        "implementation": main,
        "seconds": {name: {str(n): t for n, t in by_size.items()} for name, by_size in seconds.items()},
        "per_connection_us": {str(small): per_small * 1e6, str(large): per_large * 1e6},
        "growth": per_large / per_small,
        "sizes": list(sizes),
        # the goals are about 1k and 10k connections: a run with other sizes has none
        "goals": _goals(seconds[main][large], per_large / per_small) if sizes == SIZES else [],
    }


def _goals(seconds_10k: float, growth: float) -> list[dict[str, Any]]:
    return [
        {
            "name": "connections_10k_seconds",
            "measured": seconds_10k,
            "op": "<=",
            "target": GOAL_10K_SECONDS,
            "pass": seconds_10k <= GOAL_10K_SECONDS,
        },
        {
            "name": "connections_per_connection_10k_vs_1k",
            "measured": growth,
            "op": "<=",
            "target": GOAL_LINEAR,
            "pass": growth <= GOAL_LINEAR,
        },
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per measurement (the minimum counts)")
    parser.add_argument(
        "--sizes", default="1000,10000", help="the two connection counts, small and large (a smoke run: 50,200)"
    )
    args = parser.parse_args()
    try:
        small, large = (int(n) for n in args.sizes.split(","))
    except ValueError:
        parser.error("--sizes takes two whole numbers, e.g. 1000,10000")
    if not 0 < small < large:
        parser.error("--sizes: the second count must be larger than the first, both positive")
    if _platform.CONNECTIONS != "proc":
        print(f"bench_connections: needs Linux (/proc and pidfd_getfd); this is {_platform.FAMILY}")
        return 1
    report = run(max(1, args.repeats), (small, large))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, by_size in report["seconds"].items():
            cells = ", ".join(
                f"{int(n):>6,} connections {t * 1000:7.2f} ms ({t / int(n) * 1e6:.2f} us each)"
                for n, t in by_size.items()
            )
            print(f"kaext.connections(pid), {name:6}: {cells}")
        small, large = report["sizes"]
        print(f"per-connection cost, {large:,} vs {small:,} ({report['implementation']}): {report['growth']:.2f}x")
    for goal in report["goals"]:  # with --json on stderr, so that stdout stays one JSON document
        print(
            f"GOAL {goal['name']}: {goal['measured']:.4g} (goal {goal['op']} {goal['target']}) "
            f"{'PASS' if goal['pass'] else 'MISS'}",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
