"""The C shim on its own: ext/test_shim.c built natively, and cross-built for Windows.

Natively (cc): the test program applies and reads back every knob on a real
loopback pair and prints the constants table, which must match the reference.

Windows, without Windows: the same program cross-compiled with warnings as
errors by Debian's mingw-w64 (old headers: no TCP_KEEPIDLE/KEEPINTVL/KEEPCNT/
MAXRT, so the shim's numeric fallbacks are used and marked) and by zig
(``python -m ziglang``; newer headers, x86_64 and aarch64), then the x86_64
builds run under wine on real loopback sockets.  wine 8 refuses TCP_KEEPIDLE with
WSAENOPROTOOPT like Windows before 10 version 1709, so the run proves the shim
detects that at run time and falls back to WSAIoctl(SIO_KEEPALIVE_VALS); wine
maps Windows sockets to host sockets, so the Linux side checks in /proc/net/tcp
that the ioctl really armed the connection's keepalive timer.

Without the cross toolchains the Windows tests skip, saying what is missing;
with ``KAEXT_REQUIRE_CROSS=1`` (set by CI) they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from paths import DATA, ROOT

from kaext import _platform

SOURCE = ROOT / "ext" / "test_shim.c"

pytestmark = [
    pytest.mark.one_implementation,
    pytest.mark.skipif(not SOURCE.exists(), reason="ext/test_shim.c is not here (tests run outside a source tree)"),
]
REFERENCE = json.loads((DATA / "reference.json").read_text())
WARNINGS = ["-std=c11", "-Wall", "-Wextra", "-Werror"]
MINGW = "x86_64-w64-mingw32-gcc"
# mingw-w64 headers before version 12 lack these; the shim supplies Microsoft's numbers.
OLD_MINGW_MISSING = {"TCP_KEEPALIVE", "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_MAXRT", "TCP_MAXRTMS"}


def _missing(what: str) -> None:
    if os.environ.get("KAEXT_REQUIRE_CROSS") == "1":
        pytest.fail(f"{what}, but KAEXT_REQUIRE_CROSS=1")
    pytest.skip(f"{what} (CI installs it: .ci/steps/10-windows-cross.sh)")


def _compile(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}{result.stderr}"


class Run:
    """The parsed output of one run of the test program."""

    def __init__(self, output: str, returncode: int) -> None:
        self.output = output
        self.returncode = returncode
        self.constants: dict[str, int] = {}
        self.fallbacks: set[str] = set()
        self.knobs: dict[str, dict[str, str]] = {}
        for line in output.splitlines():
            if line.startswith("constant "):
                words = line.split()
                name, value = words[1].split("=")
                self.constants[name] = int(value)
                if "fallback" in words[2:]:
                    self.fallbacks.add(name)
            elif line.startswith("knob "):
                words = line.split()
                self.knobs[words[1]] = dict(w.split("=", 1) for w in words[2:])

    def assert_passed(self) -> None:
        failed = [line for line in self.output.splitlines() if line.startswith("FAIL")]
        assert self.returncode == 0 and not failed, self.output
        summary = re.search(r"^summary checks=(\d+) failed=0$", self.output, re.M)
        assert summary and int(summary.group(1)) > 20, self.output


def _run(cmd: list[str], env: dict[str, str] | None = None) -> Run:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    return Run(result.stdout, result.returncode)


# --------------------------------------------------------------------------------------
# Native build
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Run:
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path_factory.mktemp("native") / "test_shim"
    _compile([cc, *WARNINGS, "-o", str(exe), str(SOURCE)])
    return _run([str(exe)])


def test_native_program_passes(native: Run) -> None:
    native.assert_passed()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="compares with the Linux reference")
def test_native_constants_match_reference(native: Run) -> None:
    reference = REFERENCE["constants"]["linux"]
    assert native.constants, native.output
    for name, value in native.constants.items():
        assert reference.get(name) == value, f"{name}: header {value}, reference {reference.get(name)}"
    assert not native.fallbacks, "Linux headers define every name: no fallback may be used"


def test_native_knobs_match_platform(native: Run) -> None:
    for knob, spec in _platform.SPECS.items():
        line = native.knobs[knob]
        assert line["option"] == spec.option
        assert line["mechanism"] == "setsockopt"
        assert line["unit"] == spec.unit
        assert int(line["optname"]) == native.constants[spec.option]
    for knob in set(_platform.KNOBS) - set(_platform.SPECS):
        assert native.knobs[knob]["mechanism"] == "none"


# --------------------------------------------------------------------------------------
# Windows: cross builds, run under wine
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cross_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cross")


@pytest.fixture(scope="module")
def mingw_exe(cross_dir: Path) -> Path:
    if shutil.which(MINGW) is None:
        _missing(f"{MINGW} (Debian gcc-mingw-w64-x86-64-win32) is not installed")
    exe = cross_dir / "test_shim-mingw.exe"
    _compile([MINGW, *WARNINGS, "-O2", "-o", str(exe), str(SOURCE), "-lws2_32"])
    return exe


def _zig() -> list[str]:
    try:
        import ziglang  # noqa: F401
    except ImportError:
        _missing("the ziglang package is not installed")
    return [sys.executable, "-m", "ziglang", "cc"]


@pytest.fixture(scope="module")
def zig_exe(cross_dir: Path, mingw_exe: Path) -> Path:
    """x86_64 compiled against zig's newer mingw-w64 headers, linked by Debian's mingw-w64.

    (Linking with zig itself would first build zig's whole C runtime: minutes.)
    """
    obj = cross_dir / "test_shim-zig-x86_64.o"
    _compile(
        [
            *_zig(),
            "-target",
            "x86_64-windows-gnu",
            *WARNINGS,
            "-O2",
            "-fno-sanitize=all",
            "-fno-stack-protector",
            "-c",
            "-o",
            str(obj),
            str(SOURCE),
        ]
    )
    exe = cross_dir / "test_shim-zig.exe"
    _compile([MINGW, "-o", str(exe), str(obj), "-lws2_32"])
    return exe


@pytest.fixture(scope="module")
def wine() -> Iterator[dict[str, str]]:
    """A fresh wine prefix; yields the environment to run wine in."""
    if shutil.which("wine") is None:
        _missing("wine is not installed")
    prefix = tempfile.mkdtemp(prefix="kaext-wine-")
    env = dict(os.environ, WINEPREFIX=prefix, WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=")
    try:
        subprocess.run(["wineboot", "-i"], env=env, capture_output=True, timeout=240, check=False)
        subprocess.run(["wineserver", "-w"], env=env, capture_output=True, timeout=240, check=False)
        yield env
    finally:
        subprocess.run(["wineserver", "-k"], env=env, capture_output=True, timeout=60, check=False)
        shutil.rmtree(prefix, ignore_errors=True)


def _assert_windows_constants(run: Run) -> None:
    reference = REFERENCE["constants"]["windows"]
    for name in ("SOL_SOCKET", "SO_KEEPALIVE", "IPPROTO_TCP", "SIO_KEEPALIVE_VALS", *OLD_MINGW_MISSING):
        assert name in run.constants, f"{name} missing from the Windows constants table\n{run.output}"
    for name, value in run.constants.items():
        assert reference.get(name) == value, f"{name}: build {value}, reference {reference.get(name)}"


def _assert_wine_fallback(run: Run) -> None:
    """wine 8, like Windows before 10 1709: TCP_KEEPIDLE refused, SIO_KEEPALIVE_VALS works."""
    assert run.knobs["idle"]["mechanism"] == "sio", run.output
    assert run.knobs["interval"]["mechanism"] == "sio", run.output
    assert run.knobs["idle"]["unit"] == run.knobs["interval"]["unit"] == "ms"
    # TCP_KEEPCNT refused too: count must be unavailable, never silently dropped
    assert run.knobs["count"]["mechanism"] == "none", run.output
    assert "ok count: unsupported knob refused with ENOPROTOOPT" in run.output


def test_mingw_constants_and_fallbacks(mingw_exe: Path, wine: dict[str, str]) -> None:
    run = _run(["wine", str(mingw_exe)], env=wine)
    run.assert_passed()
    _assert_windows_constants(run)
    # marked fallback exactly where this mingw-w64's headers lack the name
    defined = subprocess.run(
        [MINGW, "-dM", "-E", "-x", "c", "-"],
        input="#include <winsock2.h>\n#include <ws2tcpip.h>\n#include <mstcpip.h>\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    macros = {line.split()[1] for line in defined.splitlines() if line.startswith("#define ")}
    assert run.fallbacks == {name for name in run.constants if name not in macros}
    assert run.fallbacks, "Debian's mingw-w64 headers are expected to lack TCP_KEEPIDLE & co."


def test_mingw_build_falls_back_to_sio_under_wine(mingw_exe: Path, wine: dict[str, str]) -> None:
    run = _run(["wine", str(mingw_exe)], env=wine)
    run.assert_passed()
    _assert_wine_fallback(run)
    assert "ok SIO: idle 0 refused (keepalive storm)" in run.output
    assert "ok SIO: idle/interval read back as unknown" in run.output


def test_zig_headers_build_and_run(zig_exe: Path, wine: dict[str, str]) -> None:
    run = _run(["wine", str(zig_exe)], env=wine)
    run.assert_passed()
    _assert_windows_constants(run)
    assert not run.fallbacks & {"TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"}, (
        "zig's headers define TCP_KEEPIDLE & co.; the build must take them from there"
    )
    # the headers have TCP_KEEPIDLE, the running "Windows" refuses it: decided at run time
    _assert_wine_fallback(run)


def test_zig_aarch64_compiles(cross_dir: Path) -> None:
    obj = cross_dir / "test_shim-aarch64.o"
    _compile([*_zig(), "-target", "aarch64-windows-gnu", *WARNINGS, "-O2", "-c", "-o", str(obj), str(SOURCE)])
    assert obj.read_bytes()[:2] == b"\x64\xaa"  # COFF machine IMAGE_FILE_MACHINE_ARM64


def test_zig_win32_compiles(cross_dir: Path) -> None:
    """32-bit Windows: SOCKET is 32 bits there; test_shim.c asserts KAEXT_SOCK_MAX is 2**32 - 2."""
    obj = cross_dir / "test_shim-x86.o"
    _compile([*_zig(), "-target", "x86-windows-gnu", *WARNINGS, "-O2", "-c", "-o", str(obj), str(SOURCE)])
    assert obj.read_bytes()[:2] == b"\x4c\x01"  # COFF machine IMAGE_FILE_MACHINE_I386


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_wine_sio_arms_the_host_keepalive_timer(mingw_exe: Path, wine: dict[str, str]) -> None:
    """idle=7 s, interval=3 s through WSAIoctl(SIO_KEEPALIVE_VALS), seen from Linux.

    /proc/net/tcp shows timer 2 (keepalive) and the time until it fires.  Right
    after the ioctl that is the idle time, 7 s (not Linux's 7200 s default); once
    it fired and the probe was answered, the next one is due after the interval,
    3 s (not 75 s).
    """
    hz = os.sysconf("SC_CLK_TCK")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(120)
        port = listener.getsockname()[1]
        proc = subprocess.Popen(
            ["wine", str(mingw_exe), "hold", str(port), "7", "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=wine,
        )
        try:
            conn, peer = listener.accept()
            with conn:
                line = proc.stdout.readline() if proc.stdout else ""
                assert line.startswith("applied mechanism=sio idle=7000 interval=3000 unit=ms"), line
                local = f"{0x0100007F:08X}:{peer[1]:04X}"
                remote = f"{0x0100007F:08X}:{port:04X}"

                def timer() -> tuple[int, float]:
                    # this connection alone: another one's TIME_WAIT may hold the same local port
                    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
                        fields = row.split()
                        if fields[1] == local and fields[2] == remote and fields[3] == "01":  # ESTABLISHED
                            active, when = fields[5].split(":")
                            return int(active, 16), int(when, 16) / hz
                    raise AssertionError(f"connection {local} not in /proc/net/tcp")

                t0 = time.monotonic()
                active, remaining = timer()
                assert active == 2, f"timer {active}, expected 2 (keepalive)"
                assert 4.0 < remaining <= 7.05, f"keepalive due in {remaining} s, expected <= 7 s (idle)"
                # one second after the first probe went out (and was answered)
                time.sleep(max(0.0, t0 + remaining + 1.0 - time.monotonic()))
                active, remaining = timer()
                assert active == 2, f"timer {active}, expected 2 (keepalive)"
                assert 0.5 < remaining <= 3.05, f"next probe due in {remaining} s, expected ~2 s (interval 3 s)"
        finally:
            try:
                assert proc.wait(timeout=60) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()


# --------------------------------------------------------------------------------------
# The run-time probe (ext/test_probe.c): error policy, Winsock not started, call order
# --------------------------------------------------------------------------------------

PROBE_SOURCE = ROOT / "ext" / "test_probe.c"


def test_native_probe_policy(tmp_path: Path) -> None:
    """Only ENOPROTOOPT means "unsupported"; every probe on a normal host answers."""
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path / "test_probe"
    _compile([cc, *WARNINGS, "-o", str(exe), str(PROBE_SOURCE)])
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "FAIL" not in result.stdout, result.stdout
    assert "ok verdict: EINVAL = unknown" in result.stdout


@pytest.fixture(scope="module")
def probe_exe(cross_dir: Path, mingw_exe: Path) -> Path:
    exe = cross_dir / "test_probe.exe"
    _compile([MINGW, *WARNINGS, "-O2", "-o", str(exe), str(PROBE_SOURCE), "-lws2_32"])
    return exe


def test_wine_probe_before_winsock_is_started(probe_exe: Path, mingw_exe: Path, wine: dict[str, str]) -> None:
    """A program that probes before anything called WSAStartup (Python: kaext imported
    before socket) gets the running kernel's answer, the same as one that started
    Winsock first: under wine, idle/interval through SIO_KEEPALIVE_VALS in ms -- not
    an assumed TCP_KEEPIDLE in seconds, which a pre-1709 Windows would then receive
    as milliseconds."""
    early = _run(["wine", str(probe_exe)], env=wine)
    started = _run(["wine", str(mingw_exe)], env=wine)
    assert early.returncode == 0 and "FAIL" not in early.output, early.output
    assert "knob idle mechanism=sio unknown=0" in early.output, early.output
    for knob in ("idle", "interval", "count", "user_timeout"):
        line = next(x for x in early.output.splitlines() if x.startswith(f"knob {knob} "))
        assert f"mechanism={started.knobs[knob]['mechanism']} " in line + " ", (line, started.knobs[knob])


def test_wine_probe_policy_build_fallback_and_sio_order(probe_exe: Path, wine: dict[str, str]) -> None:
    """WSAENOPROTOOPT alone means unsupported; the build-number fallback (1709/1703);
    SIO_KEEPALIVE_VALS (which turns keepalive on) only after TCP_KEEPCNT was accepted."""
    run = _run(["wine", str(probe_exe)], env=wine)
    for line in (
        "ok verdict: ENOPROTOOPT = unsupported",
        "ok verdict: WSAENOBUFS = unknown",
        "ok build 16298: idle via sio",
        "ok build 16299: idle via setsockopt",
        "ok build 15062: count via none",
        "ok RtlGetVersion gives a build number",
        "ok SIO order: keepalive still off after the refusal (no ioctl sent)",
    ):
        assert line in run.output, run.output
    assert run.returncode == 0, run.output
