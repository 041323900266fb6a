"""Threads: many threads configuring sockets while another closes and reopens sockets underneath.

Each worker owns its sockets and checks, with plain ``socket.getsockopt``, that they
hold exactly its own policy after every apply: a crash, a write that lands on the
wrong socket, or a half-applied policy would show here.  The same workers also aim
at a shared socket and at sockets that a closer thread keeps replacing; those calls
may only fail with a clean OSError (EBADF for a closed socket; ENOTSOCK and friends
when a stale descriptor number now belongs to something else).

The workers' own sockets are opened before any thread starts and closed after all
have stopped, so no stale descriptor number can ever designate one of them; what a
worker finds on its own sockets is therefore what kaext wrote there.

On a free-threaded CPython the same tests run without the GIL (the wheels workflow
runs this file there, also under pytest-run-parallel); a last test checks that
importing the extension did not turn the GIL back on, and one checks that the
generated C declares the module GIL-free.
"""

from __future__ import annotations

import collections
import errno
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import pytest
from paths import ROOT

import kaext

N_WORKERS = 32
RUN_SECONDS = 1.5  # per implementation; every worker also does a minimum of rounds
MIN_ROUNDS = 20

# Errors a call on a socket closed (or a number reused) underneath may give.
CLEAN_ERRNOS = {errno.EBADF, errno.ENOTSOCK, errno.ENOPROTOOPT, errno.EOPNOTSUPP}


def _policies(n: int) -> list[kaext.Policy]:
    caps = kaext.capabilities()
    out = []
    for i in range(n):
        out.append(
            kaext.Policy(
                idle=10 + i if "idle" in caps else None,
                interval=1 + (i % 13) if "interval" in caps else None,
                count=1 + (i % 9) if "count" in caps else None,
                user_timeout=0.5 + i if "user_timeout" in caps else None,
            )
        )
    return out


def _expected(policy: kaext.Policy) -> dict[tuple[int, int], int]:
    """(level, optname) -> value, as plain getsockopt must read it back."""
    caps = kaext.capabilities()
    want = {(socket.SOL_SOCKET, socket.SO_KEEPALIVE): int(policy.keepalive)}
    for knob in ("idle", "interval", "count", "user_timeout"):
        value = getattr(policy, knob)
        if value is None or not caps[knob].readable or caps[knob].level < 0:
            continue
        native = round(value * 1000) if caps[knob].unit == "ms" else int(value)
        want[(caps[knob].level, caps[knob].optname)] = native
    return want


def _read(sock: socket.socket, keys: dict[tuple[int, int], int]) -> dict[tuple[int, int], int]:
    out = {}
    for level, opt in keys:
        value = sock.getsockopt(level, opt)
        out[(level, opt)] = int(value != 0) if opt == socket.SO_KEEPALIVE and level == socket.SOL_SOCKET else value
    return out


class _Churn:
    """Sockets that a closer thread keeps closing and reopening, and junk fds in between."""

    def __init__(self, size: int) -> None:
        self.lock = threading.Lock()
        self.shared = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.pool = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(size)]
        self.stop = threading.Event()
        self.rounds = 0

    def run(self) -> None:
        rng = random.Random(1)
        junk: list[object] = []
        while not self.stop.is_set():
            old = self.shared
            self.shared = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            old.close()
            i = rng.randrange(len(self.pool))
            old = self.pool[i]
            old.close()  # its number is free now: the next open below may take it
            kind = rng.randrange(4)
            if kind == 0:
                self.pool[i] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            elif kind == 1 and hasattr(socket, "AF_UNIX"):
                self.pool[i] = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            else:
                self.pool[i] = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if hasattr(os, "pipe") and rng.random() < 0.3:
                junk.extend(os.pipe())  # a non-socket taking a freed number
            while len(junk) > 8:
                os.close(junk.pop(0))  # type: ignore[arg-type]
            self.rounds += 1
            time.sleep(0)
        for fd in junk:
            os.close(fd)  # type: ignore[arg-type]

    def close(self) -> None:
        self.shared.close()
        for s in self.pool:
            s.close()


@pytest.mark.thread_unsafe  # starts its own 33 threads; see the module docstring
def test_workers_own_sockets_survive_churn() -> None:
    policies = _policies(N_WORKERS)
    expected = [_expected(p) for p in policies]
    kaext.capabilities()  # probe once, before the threads (the probe opens sockets)
    own = [
        (socket.socket(socket.AF_INET, socket.SOCK_STREAM), socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        for _ in range(N_WORKERS)
    ]
    churn = _Churn(8)
    errors: list[BaseException] = []
    corrupted: list[str] = []
    errnos: collections.Counter[int] = collections.Counter()
    rounds = [0] * N_WORKERS
    counter_lock = threading.Lock()
    barrier = threading.Barrier(N_WORKERS + 1)
    deadline = [0.0]

    def worker(i: int) -> None:
        policy, want = policies[i], expected[i]
        mine, mine_by_fd = own[i]
        other = kaext.Policy(idle=7) if "idle" in kaext.capabilities() else kaext.Policy()
        rng = random.Random(i)
        barrier.wait()
        local: collections.Counter[int] = collections.Counter()
        try:
            while rounds[i] < MIN_ROUNDS or time.monotonic() < deadline[0]:
                # my own sockets: through the object and through the bare number
                policy.apply(mine)
                policy.apply(mine_by_fd.fileno())
                for s in (mine, mine_by_fd):
                    got = _read(s, want)
                    if got != want:
                        corrupted.append(f"worker {i}: {got} != {want}")
                        return
                # the shared socket (an object: closed -> EBADF) and churned numbers
                targets = [churn.shared, churn.pool[rng.randrange(len(churn.pool))].fileno()]
                for target in targets:
                    try:
                        (policy if rng.random() < 0.7 else other).apply(target)
                        kaext.get_keepalive(target)
                    except OSError as exc:
                        local[exc.errno] += 1
                rounds[i] += 1
                time.sleep(0.0002)  # leaves the closer (and, with a GIL, everyone) room to run
        except BaseException as exc:  # noqa: B036 - anything else is the failure we look for
            errors.append(exc)
        finally:
            with counter_lock:
                errnos.update(local)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(N_WORKERS)]
    closer = threading.Thread(target=churn.run, daemon=True)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # with a GIL: switch threads often, so the closer gets its turns
    for t in threads:
        t.start()
    deadline[0] = time.monotonic() + RUN_SECONDS
    closer.start()
    barrier.wait()
    for t in threads:
        t.join(timeout=30)
    churn.stop.set()
    closer.join(timeout=30)
    sys.setswitchinterval(switch)
    try:
        assert not any(t.is_alive() for t in threads), "a worker hung"
        assert not errors, f"{len(errors)} unexpected errors, first: {errors[0]!r}"
        assert not corrupted, corrupted[:3]
        assert set(errnos) <= CLEAN_ERRNOS, f"unexpected errnos: {dict(errnos)}"
        assert churn.rounds > 0 and min(rounds) >= MIN_ROUNDS
        # and once everything has stopped, every worker's sockets hold its policy
        for i, (a, b) in enumerate(own):
            assert _read(a, expected[i]) == expected[i]
            assert _read(b, expected[i]) == expected[i]
    finally:
        churn.close()
        for a, b in own:
            a.close()
            b.close()


def test_shared_socket_knobs_each_come_from_some_policy(tcp: socket.socket) -> None:
    """32 threads apply different policies to one socket: every knob ends up holding a value
    one of them wrote (with a GIL the C extension's apply is also atomic as a whole; the pure
    one, and any implementation without a GIL, may interleave knob by knob)."""
    policies = _policies(N_WORKERS)
    kaext.capabilities()
    before = _read(tcp, _expected(policies[0]))
    barrier = threading.Barrier(N_WORKERS)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        barrier.wait()
        try:
            for _ in range(50):
                policies[i].apply(tcp)
        except BaseException as exc:  # noqa: B036
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(N_WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors[:3]
    final = _read(tcp, before)
    for key, value in final.items():
        assert value in {_expected(p)[key] for p in policies}, (key, value)


def test_apply_read_back_loop() -> None:
    """Safe to run from many threads at once (pytest-run-parallel does, on free-threaded builds)."""
    policies = _policies(N_WORKERS)
    rng = random.Random(threading.get_ident())
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        for _ in range(200):
            policy = rng.choice(policies)
            policy.apply(s)
            want = _expected(policy)
            assert _read(s, want) == want
            state = kaext.get_keepalive(s)
            assert state.enabled
        s.close()
        with pytest.raises(OSError) as info:
            policies[0].apply(s)
        assert info.value.errno == errno.EBADF


@pytest.mark.thread_unsafe
@pytest.mark.one_implementation
def test_free_threaded_import_keeps_the_gil_off() -> None:
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        pytest.skip("not a free-threaded CPython")
    # In a fresh interpreter: importing a module without the Py_mod_gil slot turns the GIL on.
    code = "import sys, kaext, kaext._kaext; print(sys._is_gil_enabled())"
    cmd = [sys.executable, "-W", "error::RuntimeWarning", "-c", code]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out


_PYX = ROOT / "ext" / "_kaext.pyx"


def _cythonize(source: str, tmp_path: Path, name: str) -> str:
    pyx = tmp_path / name / "_kaext.pyx"
    pyx.parent.mkdir()
    pyx.write_text(source)
    for header in [*(ROOT / "ext").glob("*.h"), *(ROOT / "ext").glob("*.pxi")]:
        shutil.copy(header, pyx.parent)
    out = pyx.with_suffix(".c")
    subprocess.run(
        [sys.executable, "-m", "cython", "-3", "-I", str(pyx.parent), str(pyx), "-o", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.read_text()


def _default_gil_slot(c_source: str) -> str:
    """What the module's Py_mod_gil slot says when the build defines nothing special."""
    assert re.search(r"\{\s*Py_mod_gil\s*,\s*__Pyx_FREETHREADING_COMPATIBLE\s*\}", c_source), "no Py_mod_gil slot"
    values = re.findall(r"#define __Pyx_FREETHREADING_COMPATIBLE (Py_MOD_GIL_\w+)", c_source)
    assert values, "no __Pyx_FREETHREADING_COMPATIBLE definition"
    return values[-1]  # the #else branch: CYTHON_FREETHREADING_COMPATIBLE not defined


@pytest.mark.thread_unsafe  # one cythonize run is enough (and tmp_path is shared)
@pytest.mark.one_implementation
def test_generated_module_declares_gil_not_used(tmp_path: Path) -> None:
    pytest.importorskip("Cython", reason="Cython is needed to generate the C (the sanitizer step has it)")
    if not _PYX.exists():
        pytest.skip("not a source checkout")
    source = _PYX.read_text()
    directive = re.search(r"^# cython:.*\bfreethreading_compatible\s*=\s*(\w+)", source, re.M)
    assert directive and directive.group(1) == "True", "ext/_kaext.pyx must declare freethreading_compatible=True"
    assert _default_gil_slot(_cythonize(source, tmp_path, "declared")) == "Py_MOD_GIL_NOT_USED"
    # control: without the directive the same check sees the GIL-used slot
    control = source.replace(directive.group(0), directive.group(0).replace("True", "False"))
    assert _default_gil_slot(_cythonize(control, tmp_path, "control")) == "Py_MOD_GIL_USED"
