#!/usr/bin/env python3
"""How fast is kaext?  One run, interleaved repeats, ratios instead of absolute figures.

Compares, per full policy (SO_KEEPALIVE + idle + interval + count + user timeout)
on one connected loopback TCP socket:

  kaext        ``Policy.apply`` with the implementation ``import kaext`` chose (normally C)
  kaext-pure   the pure-Python implementation (``kaext._pure``), for comparison
  plain        the same five ``socket.setsockopt`` calls written out in Python
  C floor      the same five setsockopt() system calls in a C loop, compiled now with
               the system C compiler (``cc -O2 -shared -fPIC``) and called once per
               repeat through ctypes, so each iteration costs exactly five syscalls

and the read-back path (``get_keepalive`` + ``get_user_timeout`` against five
``socket.getsockopt`` calls and their C floor), and the time of ``import kaext``
in a fresh interpreter.  Every figure is the minimum over interleaved repeats (the
least disturbed run); import time is the median over several fresh interpreters,
minus an interpreter that imports nothing.

Goals: kaext >= 1.3x faster than plain Python, <= 1.15x the C floor, import < 5 ms.
This is a benchmark, not a test: it reports PASS/MISS and always exits 0 unless
it cannot run at all.

    python benchmarks/bench_apply.py [--json] [--repeats N] [--number N]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kaext
from kaext import _pure

GOAL_VS_PLAIN = 1.3  # plain / kaext at least
GOAL_VS_FLOOR = 1.15  # kaext / floor at most
GOAL_IMPORT_MS = 5.0

FLOOR_C = r"""
#include <sys/types.h>
#include <sys/socket.h>

/* n rounds of k setsockopt(fd, level[i], opt[i], &val[i]) calls; returns 0 or -1 - index. */
int floor_set(int fd, long n, const int *level, const int *opt, const int *val, int k)
{
    long r;
    int i;
    for (r = 0; r < n; r++)
        for (i = 0; i < k; i++)
            if (setsockopt(fd, level[i], opt[i], &val[i], sizeof val[i]) != 0)
                return -1 - i;
    return 0;
}

/* n rounds of k getsockopt calls into out[i]. */
int floor_get(int fd, long n, const int *level, const int *opt, int *out, int k)
{
    long r;
    int i;
    socklen_t len;
    for (r = 0; r < n; r++)
        for (i = 0; i < k; i++) {
            len = sizeof out[i];
            if (getsockopt(fd, level[i], opt[i], &out[i], &len) != 0)
                return -1 - i;
        }
    return 0;
}
"""

POLICY = kaext.Policy(idle=7, interval=3, count=4, user_timeout=19)

# CPU time of this thread where the clock is fine-grained (Linux, macOS): time spent
# preempted by other processes does not count, so a busy machine disturbs less.
if getattr(time, "thread_time", None) and time.get_clock_info("thread_time").resolution <= 1e-6:
    clock, CLOCK = time.thread_time, "thread CPU time"
else:
    clock, CLOCK = time.perf_counter, "wall time"


# --------------------------------------------------------------------------------------
# The C floor
# --------------------------------------------------------------------------------------


def build_floor(workdir: Path) -> ctypes.CDLL | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None
    src = workdir / "floor.c"
    lib = workdir / "floor.so"
    src.write_text(FLOOR_C)
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    dll = ctypes.CDLL(str(lib))
    int_p = ctypes.POINTER(ctypes.c_int)
    for name in ("floor_set", "floor_get"):
        fn = getattr(dll, name)
        fn.argtypes = [ctypes.c_int, ctypes.c_long, int_p, int_p, int_p, ctypes.c_int]
        fn.restype = ctypes.c_int
    return dll


def _ints(values: list[int]) -> Any:
    return (ctypes.c_int * len(values))(*values)


# --------------------------------------------------------------------------------------
# Cases: each returns seconds for ``number`` operations
# --------------------------------------------------------------------------------------


def option_list(policy: kaext.Policy) -> list[tuple[int, int, int]]:
    """The five (level, optname, value) writes of a full policy, in kaext's order."""
    opts = policy.socket_options()
    keepalive, knobs = opts[0], opts[1:]
    return [*knobs, keepalive]  # TCP-level knobs first, SO_KEEPALIVE last, as kaext does


def make_cases(sock: socket.socket, floor: ctypes.CDLL | None, number: int) -> dict[str, Callable[[], float]]:
    fd = sock.fileno()
    writes = option_list(POLICY)
    assert len(writes) == 5, writes
    (l1, o1, v1), (l2, o2, v2), (l3, o3, v3), (l4, o4, v4), (l5, o5, v5) = writes
    reads = [(lvl, opt) for lvl, opt, _ in [writes[-1], *writes[:-1]]]
    (r1, p1), (r2, p2), (r3, p3), (r4, p4), (r5, p5) = reads
    loop = range(number)

    def kaext_apply() -> float:
        apply = POLICY.apply
        s = sock
        t = clock()
        for _ in loop:
            apply(s)
        return clock() - t

    def pure_apply() -> float:
        apply = _pure.apply_policy
        p, s = POLICY, sock
        t = clock()
        for _ in loop:
            apply(p, s)
        return clock() - t

    def plain_apply() -> float:
        setsockopt = sock.setsockopt
        t = clock()
        for _ in loop:
            setsockopt(l1, o1, v1)
            setsockopt(l2, o2, v2)
            setsockopt(l3, o3, v3)
            setsockopt(l4, o4, v4)
            setsockopt(l5, o5, v5)
        return clock() - t

    def kaext_read() -> float:
        get_keepalive, get_user_timeout = kaext.get_keepalive, kaext.get_user_timeout
        s = sock
        t = clock()
        for _ in loop:
            get_keepalive(s)
            get_user_timeout(s)
        return clock() - t

    def backend_read() -> float:
        from kaext import _backend

        read, s = _backend.read, sock
        t = clock()
        for _ in loop:
            read(s)
        return clock() - t

    def pure_read() -> float:
        # the pure backend's two reads (what get_keepalive + get_user_timeout ask for),
        # without the public layer's conversion to seconds
        read, s = _pure.read, sock
        t = clock()
        for _ in loop:
            read(s, 0b10111)
            read(s, 0b01000)
        return clock() - t

    def plain_read() -> float:
        getsockopt = sock.getsockopt
        t = clock()
        for _ in loop:
            getsockopt(r1, p1)
            getsockopt(r2, p2)
            getsockopt(r3, p3)
            getsockopt(r4, p4)
            getsockopt(r5, p5)
        return clock() - t

    cases: dict[str, Callable[[], float]] = {
        "apply/kaext": kaext_apply,
        "apply/kaext-pure": pure_apply,
        "apply/plain": plain_apply,
        "read/kaext": kaext_read,
        "read/kaext-backend": backend_read,
        "read/kaext-pure": pure_read,
        "read/plain": plain_read,
    }
    if floor is not None:
        levels, opts, vals = _ints([w[0] for w in writes]), _ints([w[1] for w in writes]), _ints([w[2] for w in writes])
        rlevels, ropts, out = _ints([r[0] for r in reads]), _ints([r[1] for r in reads]), _ints([0] * 5)

        def floor_apply() -> float:
            t = clock()
            rc = floor.floor_set(fd, number, levels, opts, vals, 5)
            elapsed = clock() - t
            if rc:
                raise OSError(ctypes.get_errno(), f"C floor setsockopt #{-1 - rc} failed")
            return elapsed

        def floor_read() -> float:
            t = clock()
            rc = floor.floor_get(fd, number, rlevels, ropts, out, 5)
            elapsed = clock() - t
            if rc:
                raise OSError(ctypes.get_errno(), f"C floor getsockopt #{-1 - rc} failed")
            return elapsed

        cases["apply/floor"] = floor_apply
        cases["read/floor"] = floor_read
    return cases


def measure(cases: dict[str, Callable[[], float]], repeats: int, number: int) -> dict[str, float]:
    """Microseconds per operation: the minimum over interleaved repeats."""
    best = {name: float("inf") for name in cases}
    for fn in cases.values():  # warm-up round, not counted
        fn()
    for _ in range(repeats):
        for name, fn in cases.items():
            best[name] = min(best[name], fn())
    return {name: seconds / number * 1e6 for name, seconds in best.items()}


# --------------------------------------------------------------------------------------
# Import time
# --------------------------------------------------------------------------------------


_IMPORT_PROBE = """\
import time
cpu = getattr(time, "thread_time", time.process_time)
w, c = time.perf_counter(), cpu()
import kaext
print((time.perf_counter() - w) * 1000, (cpu() - c) * 1000)
"""


def _import_ms(env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) milliseconds of ``import kaext`` in a fresh interpreter, timed inside it."""
    out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], env=env, capture_output=True, text=True, check=True)
    wall, cpu = out.stdout.split()
    return float(wall), float(cpu)


def import_time(runs: int, pure: bool, pycache: str) -> dict[str, Any]:
    """``import kaext`` in fresh interpreters: median and best, CPU time and wall time."""
    env = dict(os.environ)
    env.pop("KAEXT_NO_EXTENSIONS", None)
    if pure:
        env["KAEXT_NO_EXTENSIONS"] = "1"
    # An installed package has its bytecode compiled; give these runs a bytecode cache
    # of their own (warmed below) instead of compiling every module on every import.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = pycache
    # kaext found first on the path, ahead of any install hook
    path = str(Path(kaext.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
    _import_ms(env)  # warm the bytecode cache
    samples = [_import_ms(env) for _ in range(runs)]
    wall = [w for w, _ in samples]
    cpu = [c for _, c in samples]
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(5):  # the least disturbed figure of each module
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import kaext"],
            env=env, capture_output=True, text=True, check=True,
        )
        for row in _import_breakdown(proc.stderr):
            key = (row["module"], row["by"])
            if key not in best or row["cumulative_us"] < best[key]["cumulative_us"]:
                best[key] = row
    top = sorted(best.values(), key=lambda r: -r["cumulative_us"])
    return {
        "ms": round(statistics.median(cpu), 2),
        "min_ms": round(min(cpu), 2),
        "wall_ms": round(statistics.median(wall), 2),
        "breakdown_us": top,
    }


def _import_breakdown(importtime: str) -> list[dict[str, Any]]:
    """From ``-X importtime``: each kaext module's own time, and each module it pulls in.

    Returns ``{"module", "by", "self_us", "cumulative_us"}`` rows, largest first, for
    the kaext modules and the modules a kaext module imports directly (with everything
    those import in turn).
    """
    rows: list[tuple[int, int, int, str]] = []
    for line in importtime.splitlines():
        parts = line.split("|")
        head = parts[0].split(":")
        if len(parts) == 3 and head[0] == "import time" and head[1].strip().isdigit():
            name = parts[2].rstrip()
            depth = (len(name) - len(name.lstrip())) // 2
            rows.append((depth, int(head[1]), int(parts[1]), name.strip()))
    out = []
    for i, (depth, self_us, cumulative_us, name) in enumerate(rows):
        # importtime lists a module after everything it imported: the parent is the next
        # line one level up
        parent = next((r[3] for r in rows[i + 1 :] if r[0] == depth - 1), "")
        if name.startswith("kaext") or parent.startswith("kaext"):
            out.append({"module": name, "by": parent, "self_us": self_us, "cumulative_us": cumulative_us})
    out.sort(key=lambda r: -r["cumulative_us"])
    return out


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def run(repeats: int, number: int, import_runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kaext-bench-") as tmp:
        try:
            floor = build_floor(Path(tmp))
            floor_note = ""
        except (OSError, subprocess.CalledProcessError) as exc:
            floor, floor_note = None, f"C floor not built: {exc}"
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = socket.create_connection(listener.getsockname())
            server, _ = listener.accept()
            with client, server:
                us = measure(make_cases(client, floor, number), repeats, number)
        imp = import_time(import_runs, pure=False, pycache=str(Path(tmp) / "pycache"))
        imp_pure = import_time(import_runs, pure=True, pycache=str(Path(tmp) / "pycache"))

    vs_plain = us["apply/plain"] / us["apply/kaext"]
    vs_floor = us["apply/kaext"] / us["apply/floor"] if "apply/floor" in us else None
    goals = {
        "apply_vs_plain": {"ratio": round(vs_plain, 3), "goal": f">= {GOAL_VS_PLAIN}", "result": _verdict(vs_plain >= GOAL_VS_PLAIN)},
        "apply_vs_floor": {
            "ratio": None if vs_floor is None else round(vs_floor, 3),
            "goal": f"<= {GOAL_VS_FLOOR}",
            "result": "n/a" if vs_floor is None else _verdict(vs_floor <= GOAL_VS_FLOOR),
        },
        "import_ms": {"ms": imp["ms"], "goal": f"< {GOAL_IMPORT_MS}", "result": _verdict(imp["ms"] < GOAL_IMPORT_MS)},
    }
    ratios = {
        "apply plain/kaext": vs_plain,
        "apply kaext/floor": vs_floor,
        "apply plain/floor": us["apply/plain"] / us["apply/floor"] if "apply/floor" in us else None,
        "apply plain/kaext-pure": us["apply/plain"] / us["apply/kaext-pure"],
        "read plain/kaext": us["read/plain"] / us["read/kaext"],
        "read kaext/floor": us["read/kaext"] / us["read/floor"] if "read/floor" in us else None,
        "read plain/kaext-pure": us["read/plain"] / us["read/kaext-pure"],
    }
    return {
        "platform": f"{platform.system()} {platform.machine()}",
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kaext": kaext.__version__,
        "implementation": kaext.IMPLEMENTATION,
        "policy": str(POLICY),
        "socket": "connected loopback TCP (IPv4)",
        "clock": CLOCK,
        "repeats": repeats,
        "number": number,
        "us_per_op": {k: round(v, 4) for k, v in us.items()},
        "ratios": {k: None if v is None else round(v, 3) for k, v in ratios.items()},
        "import": imp,
        "import_pure": imp_pure,
        "goals": goals,
        "notes": [floor_note] if floor_note else [],
    }


def print_text(r: dict[str, Any]) -> None:
    print(f"kaext {r['kaext']} ({r['implementation']}), {r['python']}, {r['platform']} {r['kernel']}")
    print(f"policy {r['policy']!r} on a {r['socket']}; min of {r['repeats']} interleaved repeats x {r['number']} ({r['clock']})")
    for note in r["notes"]:
        print(f"note: {note}")
    print()
    print(f"{'operation':<22} {'us/op':>9}")
    for name, value in r["us_per_op"].items():
        print(f"{name:<22} {value:>9.3f}")
    print()
    print("ratios (higher first number = slower):")
    for name, value in r["ratios"].items():
        print(f"  {name:<24} {'-' if value is None else f'{value:.2f}x'}")
    print()
    for key in ("import", "import_pure"):
        imp = r[key]
        label = "import kaext" if key == "import" else "import kaext (KAEXT_NO_EXTENSIONS=1)"
        print(f"{label}: {imp['ms']:.2f} ms CPU median, {imp['min_ms']:.2f} ms best, "
              f"{imp['wall_ms']:.2f} ms wall median")
        deps = [r for r in imp["breakdown_us"] if not r["module"].startswith("kaext")][:7]
        own = sum(r["self_us"] for r in imp["breakdown_us"] if r["module"].startswith("kaext"))
        print(f"  kaext's own modules {own / 1000:.1f} ms; heaviest imports (cumulative ms, -X importtime): "
              + ", ".join(f"{r['module']} {r['cumulative_us'] / 1000:.1f} (by {r['by']})" for r in deps))
    print()
    g = r["goals"]
    print(f"goal apply >= {GOAL_VS_PLAIN}x faster than plain Python: {g['apply_vs_plain']['ratio']:.2f}x  {g['apply_vs_plain']['result']}")
    vf = g["apply_vs_floor"]
    print(f"goal apply <= {GOAL_VS_FLOOR}x the C floor:            {'-' if vf['ratio'] is None else format(vf['ratio'], '.2f') + 'x'}  {vf['result']}")
    print(f"goal import < {GOAL_IMPORT_MS:g} ms:                       {g['import_ms']['ms']:.2f} ms  {g['import_ms']['result']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--repeats", type=int, default=40, help="interleaved repeats per case (default 40)")
    p.add_argument("--number", type=int, default=2000, help="operations per repeat (default 2000; small batches dodge scheduler noise)")
    p.add_argument("--import-runs", type=int, default=15, help="fresh interpreters per import measurement")
    args = p.parse_args(argv)
    result = run(args.repeats, args.number, args.import_runs)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_text(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
