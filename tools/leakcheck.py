#!/usr/bin/env python3
"""Leak check: apply and read back policies a million times and show that memory stays flat.

    python tools/leakcheck.py                       # 1,000,000 rounds, C extension and pure Python
    python tools/leakcheck.py -n 200000 --implementation c
    python tools/leakcheck.py --valgrind 20000      # also run valgrind memcheck over 20,000 rounds

Per implementation, after a warm-up, it runs the hot path (``Policy.apply`` and
``get_keepalive`` and ``Policy.from_socket`` every round; ``set_keepalive``, ``disable_keepalive``,
``set_user_timeout``/``get_user_timeout`` every 16th) for ``-n`` rounds, and then, for a
tenth as many rounds, the error paths (a closed fd, an fd number nobody has open, a UDP socket, an
AF_UNIX socket, a regular file: each raises OSError), sampling the resident set size
(``VmRSS`` from /proc/self/status, else ``ru_maxrss``) and tracemalloc's traced
memory at intervals.  It prints one table per phase and a verdict: the growth per
call between the first sample after the warm-up and the last must stay below
``--max-bytes-per-call`` (RSS) and ``--max-traced-per-call`` (tracemalloc).  A leak of
a single small object per call is 16 bytes or more per call; allocator noise over a
million calls is well below the thresholds.

``--valgrind N`` re-runs the C phases for N rounds under ``valgrind --tool=memcheck
--leak-check=full --errors-for-leak-kinds=definite`` with ``PYTHONMALLOC=malloc`` (so
that every Python object is a malloc block valgrind tracks), reads valgrind's XML
report and fails if any definite leak or memory error has a frame in the extension
module (``_kaext*.so``).  CPython's own leftovers at exit are counted and shown but
do not fail the check.

Exit status: 0 when every verdict is "flat" and valgrind found nothing in the
extension, 1 otherwise, 2 when a tool is missing.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
import xml.etree.ElementTree as ET
from array import array
from collections.abc import Callable
from typing import Any

import kaext

try:
    from kaext import _kaext
except ImportError:
    _kaext = None  # type: ignore[assignment]

SAMPLES = 10
RSS_ALLOWANCE = 256 * 1024  # bytes of one-time growth tolerated between the first and the last sample
TRACED_ALLOWANCE = 4096


def _open_status() -> int | None:
    try:
        return os.open("/proc/self/status", os.O_RDONLY)
    except OSError:
        return None


_STATUS_FD = _open_status()


def rss_bytes() -> int:
    """Resident set size now (Linux: VmRSS), else the peak (``ru_maxrss``).

    Reads /proc/self/status through one descriptor kept open: open() and a text
    file per sample would themselves show up as slow growth under tracemalloc.
    """
    if _STATUS_FD is not None:
        data = os.pread(_STATUS_FD, 8192, 0)
        at = data.find(b"VmRSS:")
        if at >= 0:
            return int(data[at + 6 : data.index(b"kB", at)]) * 1024
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def _policies() -> list[kaext.Policy]:
    caps = kaext.capabilities()
    ut = "user_timeout" in caps
    return [
        kaext.Policy(idle=60, interval=10, count=5, user_timeout=110 if ut else None),
        kaext.Policy(idle=30.5, interval=2, count=3),
        kaext.Policy.from_timeout(45),
        kaext.Policy.parse("10m:30s:4"),
        kaext.Policy(keepalive=False),
        kaext.Policy(),
    ]


class Targets:
    """The sockets and descriptors the loops use."""

    def __init__(self) -> None:
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) if hasattr(socket, "AF_UNIX") else self.udp
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        closed = socket.socket()
        closed.close()
        self.closed = closed
        self.free_fd = 1_000_000  # above any RLIMIT_NOFILE in use: never open

    def close(self) -> None:
        for s in (self.tcp, self.udp, self.unix, self.file):
            s.close()


def hot_round(t: Targets, policies: list[kaext.Policy], i: int) -> None:
    """One apply and two read-backs; every 16th round also the keyword API."""
    policies[i % len(policies)].apply(t.tcp)
    kaext.get_keepalive(t.tcp)
    kaext.Policy.from_socket(t.tcp)
    if i % 16 == 0:
        kaext.set_keepalive(t.tcp, idle=1 + i % 600, interval=1 + i % 60, count=1 + i % 9)
        kaext.disable_keepalive(t.tcp.fileno())
        if "user_timeout" in kaext.capabilities():
            kaext.set_user_timeout(t.tcp, (i % 1000) / 10)
            kaext.get_user_timeout(t.tcp)


def error_round(t: Targets, policies: list[kaext.Policy], i: int) -> None:
    policy = policies[i % len(policies)]
    for target in (t.closed, t.free_fd, t.udp, t.unix, t.file):
        try:
            policy.apply(target)
        except OSError:
            pass
        else:
            raise AssertionError(f"{target!r} accepted a policy")
        try:
            kaext.get_keepalive(target)
        except OSError:
            pass
        try:
            kaext.Policy.from_socket(target)
        except OSError:
            pass
    for bad in (-1, True, "x", None):
        try:
            kaext.set_keepalive(t.tcp, idle=bad)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass
    try:
        kaext.set_keepalive(t.tcp, idle=10**6)
    except ValueError:
        pass


def run_phase(
    name: str, body: Callable[[Targets, list[kaext.Policy], int], None], rounds: int, use_tracemalloc: bool
) -> dict[str, Any]:
    t = Targets()
    policies = _policies()
    warmup = min(20_000, max(rounds // 20, 100))
    for i in range(warmup):
        body(t, policies, i)
    gc.collect()
    if use_tracemalloc:
        tracemalloc.start()
    step = max(rounds // SAMPLES, 1)
    nsamples = -(-rounds // step) + 1
    # Preallocated: appending rows to a list would itself show up in tracemalloc.
    done_at, rss_at, traced_at, ns_at = (array("q", bytes(8 * nsamples)) for _ in range(4))
    t0 = time.perf_counter_ns()
    row = 0

    def sample(done: int) -> None:
        nonlocal row
        gc.collect()  # count live memory, not cyclic garbage waiting for the collector
        done_at[row] = done
        rss_at[row] = rss_bytes()
        traced_at[row] = tracemalloc.get_traced_memory()[0] if use_tracemalloc else 0
        ns_at[row] = time.perf_counter_ns() - t0
        row += 1

    sample(0)
    for start in range(0, rounds, step):
        for i in range(start, min(start + step, rounds)):
            body(t, policies, i)
        sample(min(start + step, rounds))
    if use_tracemalloc:
        tracemalloc.stop()
    t.close()
    rows = [(done_at[k], rss_at[k], traced_at[k], ns_at[k] / 1e9) for k in range(row)]
    return {"name": name, "rows": rows, "calls_per_round": CALLS_PER_ROUND[body.__name__]}


# API calls per round, to express growth per call (hot_round: counting only the
# apply and the read-backs, not the keyword calls of every 16th round).
CALLS_PER_ROUND = {"hot_round": 3, "error_round": 20}


def report(result: dict[str, Any], max_rss: float, max_traced: float) -> bool:
    rows = result["rows"]
    per_round = result["calls_per_round"]
    print(f"\n{result['name']}")
    print(f"{'rounds':>10} {'calls':>11} {'RSS KiB':>10} {'dRSS KiB':>9} {'traced B':>10} {'seconds':>8}")
    base_rss = rows[0][1]
    for done, rss, traced, secs in rows:
        print(
            f"{done:>10} {done * per_round:>11} {rss // 1024:>10} {(rss - base_rss) // 1024:>9} {traced:>10} {secs:>8.1f}"
        )
    # growth between the first sample after the first interval (allocator settled) and the last
    first, last = rows[1], rows[-1]
    calls = (last[0] - first[0]) * per_round or 1
    # less a one-time allowance (allocator arenas, caches warming up): a leak of even one
    # byte per call exceeds it many times over in a long run
    rss_growth = max(last[1] - first[1] - RSS_ALLOWANCE, 0) / calls
    traced_growth = max(last[2] - first[2] - TRACED_ALLOWANCE, 0) / calls
    ok = rss_growth < max_rss and traced_growth < max_traced
    print(
        f"from {first[0]:,} to {last[0]:,} rounds: RSS {last[1] - first[1]:+,} B, tracemalloc {last[2] - first[2]:+,} B"
    )
    print(
        f"growth per call beyond a one-time {RSS_ALLOWANCE // 1024} KiB / {TRACED_ALLOWANCE // 1024} KiB: "
        f"RSS {rss_growth:.4f} B (limit {max_rss}), tracemalloc {traced_growth:.5f} B "
        f"(limit {max_traced}) over {calls:,} calls, {last[3] / max(last[0], 1) * 1e6:.2f} us/round "
        f"-> {'flat' if ok else 'GROWING'}"
    )
    return ok


# --------------------------------------------------------------------------------------
# valgrind
# --------------------------------------------------------------------------------------


def run_valgrind(rounds: int) -> bool:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind not found", file=sys.stderr)
        sys.exit(2)
    if _kaext is None:
        print("valgrind: the C extension is not built", file=sys.stderr)
        return False
    so_name = os.path.basename(_kaext.__file__ or "_kaext")
    with tempfile.TemporaryDirectory() as tmp:
        xml_path = os.path.join(tmp, "memcheck.xml")
        cmd = [
            valgrind, "--tool=memcheck", "--leak-check=full", "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite", "--num-callers=30", "--error-exitcode=99",
            "--xml=yes", f"--xml-file={xml_path}",
            sys.executable, os.path.abspath(__file__), "--inner", "-n", str(rounds),
        ]  # fmt: skip
        env = dict(os.environ, PYTHONMALLOC="malloc")
        env.pop("KAEXT_NO_EXTENSIONS", None)  # the C extension is what memcheck looks at
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        secs = time.perf_counter() - t0
        if proc.returncode not in (0, 99):
            print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
            print(f"valgrind run failed with exit status {proc.returncode}")
            return False
        errors = ET.parse(xml_path).getroot().findall("error")
    total_bytes = total_blocks = 0
    ours: list[str] = []
    other_kinds: dict[str, int] = {}
    for err in errors:
        kind = err.findtext("kind") or "?"
        objs = [f.findtext("obj") or "" for f in err.iter("frame")]
        fns = [f.findtext("fn") or "?" for f in err.iter("frame")]
        in_ext = any("_kaext" in os.path.basename(o) for o in objs)
        if kind.startswith("Leak_"):
            leaked = err.find("xwhat")
            nbytes = int(leaked.findtext("leakedbytes") or 0) if leaked is not None else 0
            nblocks = int(leaked.findtext("leakedblocks") or 0) if leaked is not None else 0
            total_bytes += nbytes
            total_blocks += nblocks
            if in_ext:
                ours.append(f"{kind}: {nbytes} bytes in {nblocks} blocks at " + " < ".join(fns[:8]))
        else:
            where = " < ".join(fns[:4])
            other_kinds[f"{kind} at {where}"] = other_kinds.get(f"{kind} at {where}", 0) + 1
            if in_ext:
                ours.append(f"{kind} at " + " < ".join(fns[:8]))
    print(f"\nvalgrind memcheck, {rounds:,} hot + {rounds:,} error rounds, C extension ({so_name}), {secs:.0f} s")
    print(f"definite leaks anywhere (interpreter included): {total_bytes} bytes in {total_blocks} blocks")
    for what, count in sorted(other_kinds.items()):
        print(f"other memcheck error (not in the extension), {count}x: {what}")
    if ours:
        print(f"{len(ours)} report(s) with a frame in {so_name}:")
        for line in ours:
            print("  " + line)
        return False
    print(f"no definite leak and no memory error with a frame in {so_name}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--rounds", type=int, default=1_000_000, help="rounds per phase (default 1,000,000)")
    parser.add_argument("--implementation", choices=("c", "python", "both"), default="both")
    parser.add_argument(
        "--error-rounds", type=int, default=None, help="rounds of the error phase (default: rounds / 10)"
    )
    parser.add_argument(
        "--python-rounds", type=int, default=None, help="rounds for the pure-Python phases (default: --rounds)"
    )
    parser.add_argument("--max-bytes-per-call", type=float, default=0.1, help="RSS growth limit (default 0.1)")
    parser.add_argument(
        "--max-traced-per-call", type=float, default=0.01, help="tracemalloc growth limit (default 0.01)"
    )
    parser.add_argument("--valgrind", type=int, default=0, metavar="N", help="also run memcheck over N rounds")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.inner:  # under valgrind: just the C loops, no sampling
        if kaext.IMPLEMENTATION != "c":
            print("the C extension is not in use", file=sys.stderr)
            return 1
        t, policies = Targets(), _policies()
        for i in range(args.rounds):
            hot_round(t, policies, i)
            error_round(t, policies, i)
        t.close()
        return 0

    chosen = ["c", "python"] if args.implementation == "both" else [args.implementation]
    print(f"kaext {kaext.__version__}, Python {sys.version.split()[0]}, {sys.platform}")
    ok = True
    for name in chosen:
        if name != kaext.IMPLEMENTATION:
            # each implementation in the process that chose it: the pure one in a child
            # with KAEXT_NO_EXTENSIONS=1 (the package has no switch at run time)
            if name == "c":
                print(f"\n{name}: not built, skipped")
                ok = False
                continue
            child = [sys.executable, os.path.abspath(__file__), *(argv if argv is not None else sys.argv[1:])]
            env = dict(os.environ, KAEXT_NO_EXTENSIONS="1")
            proc = subprocess.run([*child, "--implementation", "python", "--valgrind", "0"], env=env, check=False)
            ok = proc.returncode == 0 and ok
            continue
        rounds = args.rounds if name == "c" or args.python_rounds is None else args.python_rounds
        error_rounds = args.error_rounds if args.error_rounds is not None else max(rounds // 10, 100)
        for body, n in ((hot_round, rounds), (error_round, error_rounds)):
            result = run_phase(f"[{name}] {body.__name__} x {n:,}", body, n, use_tracemalloc=True)
            ok = report(result, args.max_bytes_per_call, args.max_traced_per_call) and ok
    if args.valgrind:
        ok = run_valgrind(args.valgrind) and ok
    print(f"\nverdict: {'no leak' if ok else 'LEAK or error (see above)'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
