"""The C shim against the real headers of every OS kaext targets, compiled here on Linux.

The ``ziglang`` package ships each OS's own libc headers (macOS, FreeBSD, NetBSD,
OpenBSD, musl Linux, mingw-w64 for Windows).  For each target the shim is:

* compiled with warnings as errors (``ext/test_shim.c``, the program that exercises
  the whole shim; compile only, nothing is linked);
* run through the target's preprocessor (``ext/shim_facts.c``): which option number,
  header name and unit the shim picks per knob, and its constants table;
* compiled once more with ``_Static_assert``s written from the reference data, so
  the compiler itself confirms the numbers.

Expected values come from ``tests/data/reference.json`` (constants from each OS's
headers) and ``tests/data/platform_facts.json`` (knob, unit, range per OS from each
OS's kernel source) -- never from the shim.  Not shipped by zig, so not compiled
here: illumos/Solaris and DragonFly headers.

Without ``ziglang`` the tests skip; with ``KAEXT_REQUIRE_CROSS=1`` (CI) they fail.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from paths import DATA, ROOT

EXT = ROOT / "ext"
REFERENCE = json.loads((DATA / "reference.json").read_text())["constants"]
FACTS = json.loads((DATA / "platform_facts.json").read_text())
WARNINGS = ["-std=c11", "-Wall", "-Wextra", "-Werror"]

pytestmark = [
    pytest.mark.one_implementation,
    pytest.mark.skipif(not (EXT / "shim_facts.c").exists(), reason="needs the source tree (ext/)"),
]

#: zig target -> (OS key in the reference data, object file check)
TARGETS = {
    "x86_64-macos": ("darwin", "macho-x86_64"),
    "aarch64-macos": ("darwin", "macho-arm64"),
    "x86_64-freebsd": ("freebsd", "elf-x86_64"),
    "x86_64-netbsd": ("netbsd", "elf-x86_64"),
    "x86_64-openbsd": ("openbsd", "elf-x86_64"),
    "x86_64-linux-musl": ("linux", "elf-x86_64"),
    "x86-windows-gnu": ("windows", "coff-x86"),
    "x86_64-windows-gnu": ("windows", "coff-x86_64"),
    "aarch64-windows-gnu": ("windows", "coff-arm64"),
}
KNOBS = ("idle", "interval", "count", "user_timeout", "connect_timeout")


def _zig() -> list[str]:
    try:
        import ziglang  # noqa: F401
    except ImportError:
        if os.environ.get("KAEXT_REQUIRE_CROSS") == "1":
            pytest.fail("the ziglang package is not installed, but KAEXT_REQUIRE_CROSS=1")
        pytest.skip("the ziglang package is not installed (CI installs it: .ci/steps/10-windows-cross.sh)")
    return [sys.executable, "-m", "ziglang", "cc"]


def _c_int(expression: str) -> int:
    """The value of a preprocessed C integer constant expression (numbers, casts, | & << ~ - +)."""
    text = re.sub(r"\(\s*(long\s+long|long|int)\s*\)", "", expression)  # signed casts only
    if not re.fullmatch(r"[0-9a-fA-FxXuUlL()|&<>+\-~ ]+", text):
        raise ValueError(f"not a plain integer expression: {expression!r}")

    def number(match: re.Match[str]) -> str:
        token = match.group(0).rstrip("uUlL")
        if token.startswith(("0x", "0X")):
            return str(int(token, 16))
        return str(int(token, 8) if len(token) > 1 and token.startswith("0") else int(token))

    text = re.sub(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]*\b", number, text)
    return int(eval(text, {"__builtins__": {}}, {}))  # digits and operators only (checked above)


class Build:
    """One target: the compile of test_shim.c, the preprocessed facts, the static asserts."""

    def __init__(
        self,
        target: str,
        compiled: subprocess.CompletedProcess[str],
        obj: Path,
        facts: subprocess.CompletedProcess[str],
        asserts: subprocess.CompletedProcess[str],
    ) -> None:
        self.target = target
        self.os = TARGETS[target][0]
        self.compiled, self.obj, self.asserts = compiled, obj, asserts
        assert facts.returncode == 0, facts.stderr
        self.knobs: dict[str, tuple[int, int, str, str]] = {}
        self.values: dict[str, int] = {}
        for line in facts.stdout.splitlines():
            m = re.fullmatch(r'kaext_fact knob (\w+) (\d+) (.+?) "(\w*)" "(\w*)"', line.strip())
            if m:
                self.knobs[m[1]] = (int(m[2]), _c_int(m[3]), m[4], m[5])
            m = re.fullmatch(r'kaext_fact value "(\w+)" (.+)', line.strip())
            if m:
                self.values[m[1]] = _c_int(m[2])
        table = re.search(r"kaext_constants\[\]\s*=\s*\{(.*?)\};", facts.stdout, re.DOTALL)
        assert table, facts.stdout[-2000:]
        self.constants: dict[str, tuple[int, bool]] = {}
        for m in re.finditer(r'\{\s*"(\w+)"\s*,\s*\(long long\)\((.+?)\)\s*,\s*[^{}]*?,\s*([01])\s*\}', table.group(1)):
            self.constants[m[1]] = (_c_int(m[2]), m[3] == "1")


def _expected_knob(os_key: str, knob: str) -> dict[str, object] | None:
    facts: dict[str, dict[str, object]] = FACTS["knobs"][os_key]
    return facts.get(knob)


def _static_asserts(target: str) -> str:
    """A translation unit asserting, in the compiler, what the reference data says."""
    os_key = TARGETS[target][0]
    constants = REFERENCE[os_key]
    lines = ['#include "kaext_shim.h"']
    macro = {
        "idle": "IDLE",
        "interval": "INTERVAL",
        "count": "COUNT",
        "user_timeout": "USER_TIMEOUT",
        "connect_timeout": "CONNECT_TIMEOUT",
    }
    for knob in KNOBS:
        expected = _expected_knob(os_key, knob)
        name = macro[knob]
        if expected is None:
            lines.append(f'_Static_assert(KAEXT_HAVE_{name} == 0, "{target}: no {knob} knob");')
            continue
        number = constants[str(expected["option"])]
        lines.append(f'_Static_assert(KAEXT_HAVE_{name} == 1, "{target}: {knob} knob");')
        what = f"{target}: {knob} is {expected['option']} {number}"
        lines.append(f'_Static_assert(KAEXT_{name}_OPT == {number}, "{what}");')
    for name in ("SOL_SOCKET", "SO_KEEPALIVE", "IPPROTO_TCP"):
        lines.append(f'_Static_assert({name} == {constants[name]}, "{target}: {name}");')
    if os_key == "windows":
        sio = constants["SIO_KEEPALIVE_VALS"]
        lines.append(f'_Static_assert((unsigned long)KAEXT_V_SIO_KEEPALIVE_VALS == {sio}UL, "SIO");')
        lines.append('_Static_assert(sizeof(struct tcp_keepalive) == 12, "three 32-bit u_long");')
        # a handle above KAEXT_SOCK_MAX is refused; one below must fit in SOCKET (32 bits on
        # win32, 64 on win64), short of INVALID_SOCKET (all ones)
        socket_max = 2 ** _socket_bits(target) - 2
        lines.append(
            "_Static_assert(KAEXT_SOCK_MAX < (unsigned long long)INVALID_SOCKET, "
            f'"{target}: KAEXT_SOCK_MAX fits in SOCKET");'
        )
        lines.append(f'_Static_assert(KAEXT_SOCK_MAX == {socket_max}ULL, "{target}: KAEXT_SOCK_MAX {socket_max}");')
        lines.append(f'_Static_assert(sizeof(SOCKET) * 8 == {_socket_bits(target)}, "{target}: SOCKET size");')
    else:
        lines.append("#include <limits.h>")
        lines.append(f'_Static_assert(KAEXT_SOCK_MAX <= INT_MAX, "{target}: KAEXT_SOCK_MAX fits in int");')
    if os_key == "netbsd":
        lines.append("#include <sys/protosw.h>")
        lines.append(f'_Static_assert(PR_SLOWHZ == {FACTS["netbsd_pr_slowhz"]}, "slow ticks per second");')
    lines.append("int kaext_static_asserts_hold;")
    return "\n".join(lines) + "\n"


def _socket_bits(target: str) -> int:
    """Bits of a Windows SOCKET (a UINT_PTR) on ``target``."""
    return 32 if target.startswith("x86-") else 64


def _build(zig: list[str], target: str, workdir: Path, env: dict[str, str]) -> Build:
    def run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*zig, "-target", target, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
            check=False,
        )

    obj = workdir / f"test_shim-{target}.o"
    compiled = run([*WARNINGS, "-O2", "-c", "-o", str(obj), str(EXT / "test_shim.c")])
    facts = run(["-E", "-P", f"-I{EXT}", str(EXT / "shim_facts.c")])
    asserts_c = workdir / f"asserts-{target}.c"
    asserts_c.write_text(_static_asserts(target))
    asserts = run([*WARNINGS, f"-I{EXT}", "-c", "-o", str(workdir / f"asserts-{target}.o"), str(asserts_c)])
    return Build(target, compiled, obj, facts, asserts)


@pytest.fixture(scope="module")
def builds() -> Iterator[dict[str, Build]]:
    zig = _zig()
    with tempfile.TemporaryDirectory(prefix="kaext-cross-") as tmp:
        workdir = Path(tmp)
        cache = str(workdir / "zig-cache")
        env = dict(os.environ, ZIG_GLOBAL_CACHE_DIR=cache, ZIG_LOCAL_CACHE_DIR=cache)
        with ThreadPoolExecutor(max_workers=2) as pool:
            jobs = {t: pool.submit(_build, zig, t, workdir, env) for t in TARGETS}
            yield {t: job.result() for t, job in jobs.items()}


_MACHINES = {
    "macho-x86_64": (b"\xcf\xfa\xed\xfe", 4, b"\x07\x00\x00\x01"),
    "macho-arm64": (b"\xcf\xfa\xed\xfe", 4, b"\x0c\x00\x00\x01"),
    "elf-x86_64": (b"\x7fELF", 18, b"\x3e\x00"),
    "coff-x86": (b"", 0, b"\x4c\x01"),
    "coff-x86_64": (b"", 0, b"\x64\x86"),
    "coff-arm64": (b"", 0, b"\x64\xaa"),
}


@pytest.mark.parametrize("target", TARGETS)
def test_shim_compiles_with_warnings_as_errors(builds: dict[str, Build], target: str) -> None:
    build = builds[target]
    assert build.compiled.returncode == 0, build.compiled.stderr
    magic, offset, machine = _MACHINES[TARGETS[target][1]]
    head = build.obj.read_bytes()[:24]
    assert head.startswith(magic) and head[offset : offset + len(machine)] == machine, (target, head)


@pytest.mark.parametrize("target", TARGETS)
def test_knob_options_and_units(builds: dict[str, Build], target: str) -> None:
    """Per knob: the option the shim picks, its number in that OS's headers, and the unit."""
    build = builds[target]
    assert set(build.knobs) == set(KNOBS), build.knobs
    for knob in KNOBS:
        have, optname, name, unit = build.knobs[knob]
        expected = _expected_knob(build.os, knob)
        if expected is None:
            assert have == 0, f"{target}: {knob} must be unavailable, the shim picks {name} {optname}"
            continue
        assert (have, name, unit) == (1, expected["option"], expected["unit"]), f"{target}: {knob}"
        assert optname == REFERENCE[build.os][name], f"{target}: {knob} {name} = {optname}"


@pytest.mark.parametrize("target", TARGETS)
def test_constants_table_matches_reference(builds: dict[str, Build], target: str) -> None:
    build = builds[target]
    reference = REFERENCE[build.os]
    assert {"SOL_SOCKET", "SO_KEEPALIVE", "IPPROTO_TCP"} <= set(build.constants)
    for name, (value, fallback) in build.constants.items():
        assert reference.get(name) == value, f"{target}: {name} = {value}, reference {reference.get(name)}"
        assert not fallback, f"{target}: zig's headers define {name}; no fallback may be used"
    for name in ("SOL_SOCKET", "SO_KEEPALIVE", "IPPROTO_TCP"):
        assert build.values[name] == reference[name], f"{target}: {name}"


@pytest.mark.parametrize("target", TARGETS)
def test_static_asserts_from_reference(builds: dict[str, Build], target: str) -> None:
    """The target's compiler evaluates the numbers itself (casts, ioctl macros, struct sizes)."""
    assert builds[target].asserts.returncode == 0, builds[target].asserts.stderr


def test_netbsd_slow_ticks_from_header(builds: dict[str, Build]) -> None:
    """NetBSD's TCP_KEEPIDLE/TCP_KEEPINTVL count PR_SLOWHZ ticks a second (sys/protosw.h)."""
    build = builds["x86_64-netbsd"]
    assert build.values["PR_SLOWHZ"] == FACTS["netbsd_pr_slowhz"] == FACTS["units_per_second"]["ticks"]


@pytest.mark.parametrize("target", ["x86-windows-gnu", "x86_64-windows-gnu", "aarch64-windows-gnu"])
def test_windows_handle_bound(builds: dict[str, Build], target: str) -> None:
    """A handle kaext accepts must fit in SOCKET without reaching INVALID_SOCKET (~0).

    32-bit Windows: SOCKET is 32 bits, so 2**32 + fd would be truncated onto fd.  The
    compiler checks KAEXT_SOCK_MAX == 2**bits - 2 (the static asserts); the Python side
    (``kaext._platform.FD_MAX``) says the same for a build of that pointer size."""
    build = builds[target]
    assert build.values["SIO_KEEPALIVE_VALS"] == REFERENCE["windows"]["SIO_KEEPALIVE_VALS"]
    assert build.asserts.returncode == 0, build.asserts.stderr
    assert f"KAEXT_SOCK_MAX == {2 ** _socket_bits(target) - 2}ULL" in _static_asserts(target)


@pytest.mark.parametrize("target", TARGETS)
def test_kernel_model_agrees_with_the_headers(builds: dict[str, Build], target: str) -> None:
    """The per-OS kernel model (tests/support/kernel_model) and the shim compiled against that OS's
    real headers: the same option, number and unit for every knob (issue 19)."""
    import kernel_model

    from kaext import _platform

    build = builds[target]
    model = kernel_model.MODELS[build.os]()
    numbers = model.numbers()
    specs = _platform.specs(model.family)
    for knob in KNOBS:
        have, optname, name, unit = build.knobs[knob]
        if not have:
            assert knob not in specs, f"{target}: the model's {model.family} sets {knob}, the headers have none"
            continue
        spec = specs[knob]
        assert (spec.option, numbers[spec.option], spec.unit) == (name, optname, unit), f"{target}: {knob}"
        assert spec.option in model.check, f"{target}: the model's kernel does not know {spec.option}"
