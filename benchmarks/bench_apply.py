#!/usr/bin/env python3
"""How fast is kaext?  One run, interleaved repeats, ratios instead of absolute figures.

Compares, per full policy (SO_KEEPALIVE + idle + interval + count + user timeout)
on one connected loopback TCP socket:

  kaext        ``Policy.apply`` with the implementation ``import kaext`` chose (normally C)
  plain        the same five ``socket.setsockopt`` calls written out in Python
  C floor      the same five setsockopt() system calls in a C loop, compiled now with
               the system C compiler (``cc -O2 -shared -fPIC``) and called once per
               repeat through ctypes, so each iteration costs exactly five syscalls

and the read-back path: ``Policy.from_socket`` (the whole state: five getsockopt)
and ``get_keepalive`` (four: SO_KEEPALIVE, idle, interval, count) against the same
plain ``socket.getsockopt`` calls and their C floor.  The pure-Python implementation
is measured in a second interpreter (``KAEXT_NO_EXTENSIONS=1``), against plain
calls interleaved in that same interpreter.  ``import kaext`` is timed in fresh
interpreters.  Every figure is the minimum over interleaved repeats (the least
disturbed run); import time is the median CPU time of several fresh interpreters.

Goals (issue "speed and size at the floor"), printed as ``GOAL <name>: <measured>
(goal <op> <target>) PASS|MISS``:

  apply_vs_floor            Policy.apply <= 1.10x the C floor of five setsockopt
  from_socket_vs_floor      Policy.from_socket <= 1.25x the C floor of five getsockopt
  get_keepalive_vs_floor    get_keepalive <= 1.25x the C floor of its four getsockopt
  pure_apply_vs_plain       pure-Python Policy.apply <= 1.25x five plain setsockopt
  pure_read_vs_plain        pure-Python Policy.from_socket <= 1.5x five plain getsockopt
  import_ms                 import kaext (with the extension) <= 3 ms CPU

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

GOALS = {  # name: (what, op, target)
    "apply_vs_floor": ("Policy.apply / C floor (5 setsockopt)", "<=", 1.10),
    "from_socket_vs_floor": ("Policy.from_socket / C floor (5 getsockopt)", "<=", 1.25),
    "get_keepalive_vs_floor": ("get_keepalive / C floor (4 getsockopt)", "<=", 1.25),
    "pure_apply_vs_plain": ("pure-Python Policy.apply / 5 plain setsockopt", "<=", 1.25),
    "pure_read_vs_plain": ("pure-Python Policy.from_socket / 5 plain getsockopt", "<=", 1.5),
    "import_ms": ("import kaext, ms CPU (median)", "<=", 3.0),
}

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


def read_list(policy: kaext.Policy) -> list[tuple[int, int]]:
    """The five (level, optname) reads of the whole state: SO_KEEPALIVE first, as kaext does.

    The first four are what ``get_keepalive`` reads."""
    writes = option_list(policy)
    return [(lvl, opt) for lvl, opt, _ in [writes[-1], *writes[:-1]]]


def read_all_function() -> tuple[str, Callable[[socket.socket], object]]:
    """``Policy.from_socket``, or where this version lacks it the two calls it replaces."""
    from_socket = getattr(kaext.Policy, "from_socket", None)
    if from_socket is not None:
        return "Policy.from_socket", from_socket
    get_keepalive, get_user_timeout = kaext.get_keepalive, kaext.get_user_timeout

    def both(s: socket.socket) -> object:
        return get_keepalive(s), get_user_timeout(s)

    return "get_keepalive + get_user_timeout", both


def make_cases(
    sock: socket.socket, floor: ctypes.CDLL | None, number: int, pure: bool
) -> dict[str, Callable[[], float]]:
    """The cases; ``pure``: only kaext's and the plain calls (this interpreter runs the pure implementation)."""
    fd = sock.fileno()
    writes = option_list(POLICY)
    assert len(writes) == 5, writes
    (l1, o1, v1), (l2, o2, v2), (l3, o3, v3), (l4, o4, v4), (l5, o5, v5) = writes
    reads = read_list(POLICY)
    (r1, p1), (r2, p2), (r3, p3), (r4, p4), (r5, p5) = reads
    loop = range(number)
    _, read_all = read_all_function()

    def kaext_apply() -> float:
        apply = POLICY.apply
        s = sock
        t = clock()
        for _ in loop:
            apply(s)
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

    def kaext_read_all() -> float:
        read, s = read_all, sock
        t = clock()
        for _ in loop:
            read(s)
        return clock() - t

    def kaext_get_keepalive() -> float:
        get_keepalive, s = kaext.get_keepalive, sock
        t = clock()
        for _ in loop:
            get_keepalive(s)
        return clock() - t

    def plain_read5() -> float:
        getsockopt = sock.getsockopt
        t = clock()
        for _ in loop:
            getsockopt(r1, p1)
            getsockopt(r2, p2)
            getsockopt(r3, p3)
            getsockopt(r4, p4)
            getsockopt(r5, p5)
        return clock() - t

    def plain_read4() -> float:
        getsockopt = sock.getsockopt
        t = clock()
        for _ in loop:
            getsockopt(r1, p1)
            getsockopt(r2, p2)
            getsockopt(r3, p3)
            getsockopt(r4, p4)
        return clock() - t

    cases: dict[str, Callable[[], float]] = {
        "apply/kaext": kaext_apply,
        "apply/plain": plain_apply,
        "read5/kaext": kaext_read_all,
        "read5/plain": plain_read5,
        "read4/kaext": kaext_get_keepalive,
        "read4/plain": plain_read4,
    }
    if floor is not None and not pure:
        levels, opts, vals = _ints([w[0] for w in writes]), _ints([w[1] for w in writes]), _ints([w[2] for w in writes])
        rlevels, ropts, out = _ints([r[0] for r in reads]), _ints([r[1] for r in reads]), _ints([0] * 5)

        def floor_apply() -> float:
            t = clock()
            rc = floor.floor_set(fd, number, levels, opts, vals, 5)
            elapsed = clock() - t
            if rc:
                raise OSError(ctypes.get_errno(), f"C floor setsockopt #{-1 - rc} failed")
            return elapsed

        def floor_reader(k: int) -> Callable[[], float]:
            def floor_read() -> float:
                t = clock()
                rc = floor.floor_get(fd, number, rlevels, ropts, out, k)
                elapsed = clock() - t
                if rc:
                    raise OSError(ctypes.get_errno(), f"C floor getsockopt #{-1 - rc} failed")
                return elapsed

            return floor_read

        cases["apply/floor"] = floor_apply
        cases["read5/floor"] = floor_reader(5)
        cases["read4/floor"] = floor_reader(4)
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


def measure_on_loopback(floor: ctypes.CDLL | None, repeats: int, number: int, pure: bool) -> dict[str, float]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        with client, server:
            return measure(make_cases(client, floor, number, pure), repeats, number)


def measure_pure(repeats: int, number: int) -> dict[str, float]:
    """The cases in a second interpreter that runs the pure-Python implementation."""
    env = dict(os.environ, KAEXT_NO_EXTENSIONS="1")
    path = str(Path(kaext.__file__).resolve().parent.parent)  # the same kaext as this one
    env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, __file__, "--pure-worker", "--repeats", str(repeats), "--number", str(number)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    if result["implementation"] != "python":
        raise RuntimeError(f"KAEXT_NO_EXTENSIONS=1 gave implementation {result['implementation']!r}")
    return dict(result["us_per_op"])


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
            env=env,
            capture_output=True,
            text=True,
            check=True,
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


def _goal(name: str, measured: float | None, unit: str, note: str = "") -> dict[str, Any]:
    what, op, target = GOALS[name]
    ok = measured is not None and (measured <= target if op == "<=" else measured >= target)
    return {
        "name": name,
        "what": what,
        "measured": None if measured is None else round(measured, 3),
        "unit": unit,
        "op": op,
        "target": target,
        "result": "PASS" if ok else "MISS",
        "note": note,
    }


def goal_line(g: dict[str, Any]) -> str:
    """``GOAL <name>: <measured> (goal <op> <target>) PASS|MISS``"""
    unit = g["unit"]
    measured = "n/a" if g["measured"] is None else f"{g['measured']:.2f}{unit}"
    note = f"  [{g['note']}]" if g["note"] else ""
    return f"GOAL {g['name']}: {measured} (goal {g['op']} {g['target']:g}{unit}) {g['result']}{note}"


def _ratio(us: dict[str, float], a: str, b: str) -> float | None:
    """``us[a] / us[b]``; None (no ratio, the goal "n/a") when either was not measured or the
    baseline ``b`` measured 0 (below the clock's resolution: nothing to divide by)."""
    return us[a] / us[b] if a in us and b in us and us[b] > 0 else None


def run(repeats: int, number: int, import_runs: int) -> dict[str, Any]:
    notes = []
    read_all_name, _ = read_all_function()
    with tempfile.TemporaryDirectory(prefix="kaext-bench-") as tmp:
        try:
            floor = build_floor(Path(tmp))
        except (OSError, subprocess.CalledProcessError) as exc:
            floor = None
            notes.append(f"C floor not built: {exc}")
        if floor is None and not notes:
            notes.append("C floor not built: no C compiler")
        us = measure_on_loopback(floor, repeats, number, pure=False)
        us_pure = measure_pure(repeats, number)
        imp = import_time(import_runs, pure=False, pycache=str(Path(tmp) / "pycache"))
        imp_pure = import_time(import_runs, pure=True, pycache=str(Path(tmp) / "pycache"))

    no_from_socket = "" if read_all_name == "Policy.from_socket" else "no Policy.from_socket in this version"
    ext = kaext.IMPLEMENTATION == "c"
    goals = [
        _goal("apply_vs_floor", _ratio(us, "apply/kaext", "apply/floor"), "x"),
        _goal(
            "from_socket_vs_floor",
            None if no_from_socket else _ratio(us, "read5/kaext", "read5/floor"),
            "x",
            no_from_socket,
        ),
        _goal("get_keepalive_vs_floor", _ratio(us, "read4/kaext", "read4/floor"), "x"),
        _goal("pure_apply_vs_plain", _ratio(us_pure, "apply/kaext", "apply/plain"), "x"),
        _goal(
            "pure_read_vs_plain",
            _ratio(us_pure, "read5/kaext", "read5/plain"),
            "x",
            f"measured: {read_all_name}" if no_from_socket else "",
        ),
        _goal("import_ms", imp["ms"] if ext else None, " ms", "" if ext else "the C extension is not built"),
    ]
    ratios = {
        "apply kaext/floor": _ratio(us, "apply/kaext", "apply/floor"),
        "apply kaext/plain": _ratio(us, "apply/kaext", "apply/plain"),
        "apply plain/floor": _ratio(us, "apply/plain", "apply/floor"),
        "read5 kaext/floor": _ratio(us, "read5/kaext", "read5/floor"),
        "read5 kaext/plain": _ratio(us, "read5/kaext", "read5/plain"),
        "read4 kaext/floor": _ratio(us, "read4/kaext", "read4/floor"),
        "read4 kaext/plain": _ratio(us, "read4/kaext", "read4/plain"),
        "pure apply/plain": _ratio(us_pure, "apply/kaext", "apply/plain"),
        "pure read5/plain": _ratio(us_pure, "read5/kaext", "read5/plain"),
        "pure read4/plain": _ratio(us_pure, "read4/kaext", "read4/plain"),
    }
    return {
        "platform": f"{platform.system()} {platform.machine()}",
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kaext": kaext.__version__,
        "implementation": kaext.IMPLEMENTATION,
        "policy": str(POLICY),
        "read5": read_all_name,
        "socket": "connected loopback TCP (IPv4)",
        "clock": CLOCK,
        "repeats": repeats,
        "number": number,
        "us_per_op": {k: round(v, 4) for k, v in us.items()},
        "us_per_op_pure": {k: round(v, 4) for k, v in us_pure.items()},
        "ratios": {k: None if v is None else round(v, 3) for k, v in ratios.items()},
        "import": imp,
        "import_pure": imp_pure,
        "goals": goals,
        "notes": notes,
    }


def print_text(r: dict[str, Any]) -> None:
    print(f"kaext {r['kaext']} ({r['implementation']}), {r['python']}, {r['platform']} {r['kernel']}")
    print(
        f"policy {r['policy']!r} on a {r['socket']}; min of {r['repeats']} interleaved repeats x {r['number']} ({r['clock']})"
    )
    print(f"read5 = {r['read5']} (five getsockopt); read4 = get_keepalive (four)")
    for note in r["notes"]:
        print(f"note: {note}")
    print()
    print(f"{'operation':<16} {'us/op':>9} {'pure-Python interpreter':>24}")
    for name in r["us_per_op"]:
        pure = r["us_per_op_pure"].get(name)
        print(f"{name:<16} {r['us_per_op'][name]:>9.3f} {'' if pure is None else format(pure, '.3f'):>24}")
    print()
    print("ratios (time / time: below 1 is faster):")
    for name, value in r["ratios"].items():
        print(f"  {name:<20} {'-' if value is None else f'{value:.2f}x'}")
    print()
    for key in ("import", "import_pure"):
        imp = r[key]
        label = "import kaext" if key == "import" else "import kaext (KAEXT_NO_EXTENSIONS=1)"
        print(
            f"{label}: {imp['ms']:.2f} ms CPU median, {imp['min_ms']:.2f} ms best, {imp['wall_ms']:.2f} ms wall median"
        )
        deps = [r for r in imp["breakdown_us"] if not r["module"].startswith("kaext")][:7]
        own = sum(r["self_us"] for r in imp["breakdown_us"] if r["module"].startswith("kaext"))
        print(
            f"  kaext's own modules {own / 1000:.1f} ms; heaviest imports (cumulative ms, -X importtime): "
            + ", ".join(f"{r['module']} {r['cumulative_us'] / 1000:.1f} (by {r['by']})" for r in deps)
        )
    print()
    for g in r["goals"]:
        print(goal_line(g))


def pure_worker(repeats: int, number: int) -> int:
    """Run in the second interpreter (KAEXT_NO_EXTENSIONS=1): the cases, as JSON."""
    us = measure_on_loopback(None, repeats, number, pure=True)
    print(json.dumps({"implementation": kaext.IMPLEMENTATION, "us_per_op": us}))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--repeats", type=int, default=40, help="interleaved repeats per case (default 40)")
    p.add_argument(
        "--number",
        type=int,
        default=2000,
        help="operations per repeat (default 2000; small batches dodge scheduler noise)",
    )
    p.add_argument("--import-runs", type=int, default=15, help="fresh interpreters per import measurement")
    p.add_argument("--pure-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.pure_worker:
        return pure_worker(args.repeats, args.number)
    result = run(args.repeats, args.number, args.import_runs)
    if args.json:
        print(json.dumps(result, indent=2))
        for g in result["goals"]:  # the convention: every goal as a GOAL line, also with --json
            print(goal_line(g), file=sys.stderr)
    else:
        print_text(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
