#!/usr/bin/env python3
"""How long does one ``kaext-inspect --prometheus`` scrape of ten busy processes take?

Ten processes each hold N loopback TCP connections (default 10,000, keepalive set on
every other one); their accepting ends are held by ten other processes.  The benchmark
runs ``python -m kaext.inspect PID1 ... PID10 --middlebox aws-nlb --prometheus`` as a
fresh process -- the whole command, interpreter start included -- several times, then
the same as an exporter (``--listen``: a GET of /metrics), checks that every output
counts every connection (10 x N ESTABLISHED, half of them ``keepalive_off``), and
reports the median wall times.  The socket table is read once per network namespace
per scrape (one sock_diag dump shared by all ten processes), so the cost is linear in
the connections.

Goals: 10 x 10,000 connections in one ``--prometheus`` run <= 1.0 s wall, and in one
scrape of the exporter <= 1.0 s.  This is a benchmark, not a test: it reports PASS/MISS
and exits 0 unless it cannot run at all.

    python benchmarks/bench_metrics.py [--json] [--repeats N] [--per-process N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

from _limits import raise_nofile  # this folder: the script runs as benchmarks/bench_metrics.py

import kaext
from kaext import _platform

GOAL_SECONDS = 1.0
PROCESSES = 10
PER_PROCESS = 10_000

# The accepting side: accepts N connections and holds them until its stdin closes.
SERVER = r"""
import socket, sys
want = int(sys.argv[1])
listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
print(listener.getsockname()[1], flush=True)
held = [listener.accept()[0] for _ in range(want)]
print(len(held), flush=True)
sys.stdin.read()
"""

# The inspected side: N connections, keepalive on (idle 60 s) for every other one.
HOLDER = r"""
import socket, sys
port, want = int(sys.argv[1]), int(sys.argv[2])
held = []
for i in range(want):
    s = socket.create_connection(("127.0.0.1", port))
    if i % 2:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
    held.append(s)
print(len(held), flush=True)
sys.stdin.read()
"""


def _count(text: str, pids: list[int]) -> dict[str, int]:
    """Connections of ``pids`` in the exposition, by verdict (a plain reading of the text format)."""
    wanted = {f'pid="{pid}"' for pid in pids}
    by_verdict: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith("kaext_tcp_connections{"):
            continue
        labels, value = line[len("kaext_tcp_connections{") :].rsplit("} ", 1)
        parts = labels.split(",")
        if parts[0] in wanted:
            verdict = parts[-1].removeprefix('verdict="').removesuffix('"')
            by_verdict[verdict] = by_verdict.get(verdict, 0) + int(float(value))
    return by_verdict


def _check(text: str, pids: list[int], per_process: int) -> None:
    counted = _count(text, pids)
    total = PROCESSES * per_process
    if counted != {"keepalive_off": total - total // 2, "ok": total // 2}:
        sys.exit(f"bench_metrics: expected {total} connections, half keepalive_off; counted {counted}")


def _cpu_of(pid: int) -> float:
    """User + system seconds process ``pid`` has used so far (/proc/<pid>/stat utime, stime)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _concurrent(url: str, port: int, pids: list[int], per_process: int, n: int) -> dict[str, Any]:
    """``n`` scrapes at once, beside 10 clients that connect and send nothing: how many
    answered (every connection counted) and the slowest, in seconds."""
    import threading

    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
    answered: list[float] = []
    failed: list[str] = []
    go = threading.Event()

    def one() -> None:
        go.wait(60)
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=120) as r:
                text = r.read().decode()
            _check(text, pids, per_process)
        except BaseException as exc:  # counted and named in the report
            failed.append(repr(exc))
        else:
            answered.append(time.perf_counter() - start)

    try:
        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        start = time.perf_counter()
        go.set()
        for t in threads:
            t.join(300)
        took = time.perf_counter() - start
    finally:
        for c in idle:
            c.close()
    return {
        "scrapes": n,
        "answered": len(answered),
        "slowest_seconds": max(answered, default=None),
        "all_seconds": took,
        "failed": failed[:3],
    }


def _time_listen(
    command: list[str], pids: list[int], per_process: int, repeats: int, concurrent: int = 0
) -> tuple[list[float], list[float], dict[str, Any] | None]:
    """The same as an exporter: GET /metrics of a running ``--listen``, ``repeats`` times; wall
    and CPU seconds of each scrape; then ``concurrent`` scrapes at once (``_concurrent``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [*command[: command.index("--prometheus")], "--listen", f"127.0.0.1:{port}"]
    exporter = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        assert exporter.stderr is not None
        if "serving" not in exporter.stderr.readline():
            sys.exit("bench_metrics: the exporter did not start")
        seconds: list[float] = []
        cpu: list[float] = []
        for _ in range(repeats):
            used = _cpu_of(exporter.pid)
            start = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
                text = r.read().decode()
            seconds.append(time.perf_counter() - start)
            cpu.append(_cpu_of(exporter.pid) - used)
            _check(text, pids, per_process)
        at_once = (
            _concurrent(f"http://127.0.0.1:{port}/metrics", port, pids, per_process, concurrent) if concurrent else None
        )
        return seconds, cpu, at_once
    finally:
        exporter.terminate()
        exporter.wait(30)


def run(repeats: int, per_process: int, concurrent: int = 0) -> dict[str, Any]:
    raise_nofile(per_process + 1000, "bench_metrics")  # inherited by every child
    servers: list[subprocess.Popen[str]] = []
    holders: list[subprocess.Popen[str]] = []
    try:
        start = time.perf_counter()
        for _ in range(PROCESSES):
            server = subprocess.Popen(
                [sys.executable, "-c", SERVER, str(per_process)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            servers.append(server)
            assert server.stdout is not None
            port = int(server.stdout.readline())
            holders.append(
                subprocess.Popen(
                    [sys.executable, "-c", HOLDER, str(port), str(per_process)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in [*holders, *servers]:
            assert proc.stdout is not None
            if int(proc.stdout.readline()) != per_process:
                sys.exit("bench_metrics: a process could not open or accept its connections")
        setup = time.perf_counter() - start
        pids = [h.pid for h in holders]
        command = [sys.executable, "-m", "kaext.inspect", *map(str, pids), "--middlebox", "aws-nlb", "--prometheus"]
        seconds: list[float] = []
        cpu: list[float] = []  # user + system time of the command: what the machine's other work does not change
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            seconds.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            if done.returncode != 0:
                sys.exit(f"bench_metrics: kaext-inspect exited with {done.returncode}: {done.stderr.strip()}")
            _check(done.stdout, pids, per_process)
        listen_seconds, listen_cpu, at_once = _time_listen(command, pids, per_process, repeats, concurrent)
    finally:
        for proc in [*holders, *servers]:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in [*holders, *servers]:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    median = statistics.median(seconds)
    listen_median = statistics.median(listen_seconds)
    return {
        "implementation": kaext.IMPLEMENTATION,  # the command's too: it inherits this environment
        "processes": PROCESSES,
        "per_process": per_process,
        "connections": PROCESSES * per_process,
        "setup_seconds": setup,
        "seconds": seconds,
        "median_seconds": median,
        "cpu_seconds": cpu,
        "listen_seconds": listen_seconds,
        "listen_cpu_seconds": listen_cpu,
        "listen_median_seconds": listen_median,
        "listen_concurrent": at_once,
        "goals": [
            {
                "name": "metrics_scrape_10x10k_seconds",
                "measured": median,
                "op": "<=",
                "target": GOAL_SECONDS,
                "pass": median <= GOAL_SECONDS,
            },
            {
                "name": "metrics_listen_scrape_10x10k_seconds",
                "measured": listen_median,
                "op": "<=",
                "target": GOAL_SECONDS,
                "pass": listen_median <= GOAL_SECONDS,
            },
        ]
        if per_process == PER_PROCESS
        else [],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--repeats", type=int, default=3, help="scrapes to time (the median counts)")
    parser.add_argument(
        "--per-process", type=int, default=PER_PROCESS, help="connections per process (a smoke run: 50)"
    )
    parser.add_argument(
        "--concurrent",
        type=int,
        default=0,
        help="then this many scrapes of the exporter at once, beside 10 idle clients (e.g. 200)",
    )
    args = parser.parse_args()
    if _platform.CONNECTIONS != "proc":
        print(f"bench_metrics: needs Linux (/proc and pidfd_getfd); this is {_platform.FAMILY}")
        return 1
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        print("bench_metrics: needs prometheus_client (pip install 'kaext[metrics]')")
        return 1
    if args.per_process < 2 or args.repeats < 1:
        parser.error("--per-process must be at least 2, --repeats at least 1")
    report = run(args.repeats, args.per_process, args.concurrent)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        runs = ", ".join(f"{t:.3f}" for t in report["seconds"])
        print(
            f"kaext-inspect --prometheus of {report['processes']} processes x {report['per_process']:,} connections "
            f"({report['connections']:,}): median {report['median_seconds']:.3f} s wall (runs: {runs} s; "
            f"setting up the connections took {report['setup_seconds']:.1f} s)"
        )
        runs = ", ".join(f"{t:.3f}" for t in report["cpu_seconds"])
        print(
            f"its CPU time (user + system, all threads): median {statistics.median(report['cpu_seconds']):.3f} s (runs: {runs} s)"
        )
        runs = ", ".join(f"{t:.3f}" for t in report["listen_seconds"])
        print(
            f"GET /metrics of a running --listen exporter: median {report['listen_median_seconds']:.3f} s (runs: {runs} s)"
        )
        runs = ", ".join(f"{t:.2f}" for t in report["listen_cpu_seconds"])
        print(
            f"the exporter's CPU time per scrape: median {statistics.median(report['listen_cpu_seconds']):.2f} s (runs: {runs} s)"
        )
        at_once = report["listen_concurrent"]
        if at_once is not None:
            print(
                f"{at_once['scrapes']} scrapes at once beside 10 idle clients: {at_once['answered']} answered, "
                f"the slowest in {at_once['slowest_seconds'] or 0:.2f} s, all in {at_once['all_seconds']:.2f} s"
                + (f"; failed: {at_once['failed']}" if at_once["failed"] else "")
            )
    for goal in report["goals"]:
        print(
            f"GOAL {goal['name']}: {goal['measured']:.3f} s (goal {goal['op']} {goal['target']} s) "
            f"{'PASS' if goal['pass'] else 'MISS'}",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
