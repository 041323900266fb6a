"""kaext._platform's per-OS tables against the reference data and against the C shim."""

from __future__ import annotations

import json
import re
from pathlib import Path

import families
import pytest
from paths import DATA, ROOT

import kaext
from kaext import _backend, _capabilities, _platform

REFERENCE = json.loads((DATA / "reference.json").read_text())
CONSTANTS = REFERENCE["constants"]

try:
    from kaext import _kaext
except ImportError:  # pure-Python install
    _kaext = None  # type: ignore[assignment]

# _platform family with knobs -> reference.json OS keys whose headers name the options
FAMILY_REFERENCE = {family: families.headers(family) for family, specs in _platform.FAMILY_SPECS.items() if specs}
UNITS = {"s", "ms", "ticks", "probes", "syns"}  # ticks: NetBSD slow ticks (PR_SLOWHZ = 2); syns: TCP_SYNCNT


def _tables() -> dict[str, dict[str, _platform.KnobSpec]]:
    return {family: _platform.specs(family) for family in FAMILY_REFERENCE}


@pytest.mark.one_implementation
@pytest.mark.parametrize("family", sorted(FAMILY_REFERENCE))
def test_options_exist_in_that_os_headers(family: str) -> None:
    specs = _tables()[family]
    assert specs, family
    for knob, spec in specs.items():
        assert knob in _platform.KNOBS
        assert any(spec.option in CONSTANTS[os] for os in FAMILY_REFERENCE[family]), (family, knob, spec.option)
        assert spec.unit in UNITS
        assert (spec.unit == "probes") == (knob == "count")
        assert 0 <= spec.min <= spec.max <= _platform.INT_MAX
        if spec.fallback is not None:  # a fallback is that OS's header value, never another's
            assert CONSTANTS[FAMILY_REFERENCE[family][0]][spec.option] == spec.fallback


@pytest.mark.one_implementation
def test_issue_contract_per_os() -> None:
    t = _tables()
    assert t["darwin"]["idle"].option == "TCP_KEEPALIVE"
    assert t["darwin"]["user_timeout"].option == "TCP_RXT_CONNDROPTIME"
    assert (t["darwin"]["interval"].fallback, t["darwin"]["count"].fallback) == (0x101, 0x102)
    assert t["windows"]["user_timeout"].option == "TCP_MAXRT"
    assert t["windows"]["idle"].min >= 1, "idle 0 makes Windows send a keepalive storm"
    assert t["windows"]["count"].max == 255
    assert _platform.specs("openbsd") == {}
    assert _platform.UNSUPPORTED["openbsd"]["idle"].startswith("OpenBSD has no per-socket")
    for family in ("freebsd", "netbsd", "sunos"):
        assert [t[family][k].option for k in ("idle", "interval", "count")] == [
            "TCP_KEEPIDLE",
            "TCP_KEEPINTVL",
            "TCP_KEEPCNT",
        ]


@pytest.mark.one_implementation
def test_windows_sio_spec() -> None:
    for knob in ("idle", "interval"):
        spec = _platform.WINDOWS_SIO[knob]
        expected = ("SIO_KEEPALIVE_VALS", "ms", False, _platform.MECH_SIO)
        assert (spec.option, spec.unit, spec.readable, spec.mechanism) == expected
        assert spec.min >= 1, "idle 0 makes Windows send a keepalive storm"
        assert "2 h" in spec.note and "1 s" in spec.note
        assert spec.describe() == "WSAIoctl(SIO_KEEPALIVE_VALS)"
    assert CONSTANTS["windows"]["SIO_KEEPALIVE_VALS"] == 0x98000004


@pytest.mark.one_implementation
def test_dragonfly_units_by_release() -> None:
    assert _platform.release_before("5.6-RELEASE", 5, 8)
    assert not _platform.release_before("5.8-RELEASE", 5, 8)
    assert not _platform.release_before("6.4-RELEASE", 5, 8)
    assert _platform.DRAGONFLY_OLD["idle"].unit == "ms"


def test_capabilities_follow_the_backend_mechanism() -> None:
    """Every capability is the spec of the mechanism the backend probed."""
    impl = _backend
    for index, knob in enumerate(_platform.KNOBS):
        mech = impl.mechanism(index)
        caps = kaext.capabilities()
        if not mech:
            assert knob not in caps
            with pytest.raises(OSError) as info:
                _capabilities.knob(knob)
            assert info.value.errno is not None and "cannot be set" in str(info.value)
            continue
        knob_caps = caps[knob]
        assert knob_caps.unit == impl.knob_unit(index)
        spec = _platform.spec_for(knob, impl.KNOB_OPTIONS[index][0], mech)
        assert spec is not None
        assert knob_caps.mechanism == spec.describe()
        if mech == _platform.MECH_SETSOCKOPT:
            assert knob_caps.mechanism == f"setsockopt(IPPROTO_TCP, {knob_caps.option})"


@pytest.mark.one_implementation
@pytest.mark.skipif(_kaext is None, reason="C extension not built")
def test_c_shim_options_equal_platform_options() -> None:
    from kaext import _pure

    for index, knob in enumerate(_platform.KNOBS):
        spec = _platform.SPECS.get(knob)
        entry = _kaext.KNOB_OPTIONS[index]
        assert (entry[0] if entry else None) == (spec.option if spec else None), knob
        assert _pure.KNOB_OPTIONS[index] == entry, knob
        assert _kaext.mechanism(index) == _pure.mechanism(index), knob
        assert _kaext.knob_unit(index) == _pure.knob_unit(index), knob


@pytest.mark.one_implementation
def test_unsupported_knob_error_names_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a knob missing from capabilities (as on OpenBSD), set_keepalive raises ENOPROTOOPT."""
    import errno
    import socket

    caps = dict(_capabilities.caps())
    caps.pop("count", None)
    monkeypatch.setattr(_capabilities, "_CAPABILITIES", caps)
    monkeypatch.setattr(_platform, "FAMILY", "openbsd")
    with socket.socket() as s, pytest.raises(OSError) as info:
        kaext.set_keepalive(s, count=3)
    assert info.value.errno == errno.ENOPROTOOPT
    assert "OpenBSD has no per-socket keepalive options" in str(info.value)
    with socket.socket() as s:
        kaext.set_keepalive(s)  # SO_KEEPALIVE alone still works
        assert kaext.get_keepalive(s).enabled


@pytest.mark.one_implementation
def test_every_family_is_importable_by_name() -> None:
    """Each OS family's arithmetic can be checked on any OS: tables by name, not by sys.platform."""
    assert _platform.specs("dragonfly", "5.6-RELEASE") is _platform.DRAGONFLY_OLD
    assert _platform.specs("dragonfly", "6.4-RELEASE") is _platform.DRAGONFLY
    assert _platform.specs("darwin")["user_timeout"].unit == "s"  # TCP_RXT_CONNDROPTIME: seconds
    assert _platform.specs("other") == {}
    for family, table in _platform.FAMILY_SPECS.items():
        for knob, spec in table.items():
            assert spec.unit == ("probes" if knob == "count" else spec.unit)
            assert spec.describe() == f"setsockopt(IPPROTO_TCP, {spec.option})", family
    for alternatives in _platform.ALTERNATIVES.values():
        for knob, choices in alternatives.items():
            assert knob in _platform.KNOBS and choices


@pytest.mark.one_implementation
def test_socket_handle_maximum_per_target() -> None:
    # POSIX: an int fd; Windows: SOCKET = UINT_PTR, INVALID_SOCKET = ~0
    assert _platform.fd_max("linux", 8) == _platform.fd_max("darwin", 4) == 2**31 - 1
    assert _platform.fd_max("windows", 4) == 2**32 - 2
    assert _platform.fd_max("windows", 8) == 2**64 - 2


@pytest.mark.one_implementation
def test_windows_sio_defaults_match_the_shim() -> None:
    """The two Windows SIO_KEEPALIVE_VALS defaults: the same numbers in kaext_windows.h."""
    header = ROOT / "ext" / "kaext_windows.h"
    if not header.exists():
        pytest.skip("not a source checkout")
    text = header.read_text()
    defines = dict(re.findall(r"#define (KAEXT_WIN_DEFAULT_\w+) (\d+)", text))
    assert int(defines["KAEXT_WIN_DEFAULT_IDLE_MS"]) == _platform.WINDOWS_SIO_DEFAULT_IDLE_MS == 2 * 3600 * 1000
    assert int(defines["KAEXT_WIN_DEFAULT_INTERVAL_MS"]) == _platform.WINDOWS_SIO_DEFAULT_INTERVAL_MS == 1000


@pytest.mark.one_implementation
def test_only_platform_looks_at_sys_platform() -> None:
    package = Path(kaext.__file__).parent
    users = sorted(p.name for p in package.glob("*.py") if "sys.platform" in p.read_text())
    assert users == ["_platform.py"]
