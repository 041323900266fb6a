"""kaext._platform's per-OS tables against the reference data and against the C shim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import kaext
from kaext import _backend, _capabilities, _platform

REFERENCE = json.loads((Path(__file__).parent / "data" / "reference.json").read_text())
CONSTANTS = REFERENCE["constants"]

try:
    from kaext import _kaext
except ImportError:  # pure-Python install
    _kaext = None  # type: ignore[assignment]

# _platform family -> reference.json OS keys whose headers name the options
FAMILY_REFERENCE = {
    "linux": ("linux",),
    "darwin": ("darwin",),
    "freebsd": ("freebsd",),
    "netbsd": ("netbsd",),
    "dragonfly": ("dragonfly",),
    "sunos": ("illumos", "solaris"),
    "windows": ("windows",),
}
UNITS = {"s", "ms", "probes"}


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
            "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"]


@pytest.mark.one_implementation
def test_windows_sio_spec() -> None:
    for knob in ("idle", "interval"):
        spec = _platform.WINDOWS_SIO[knob]
        assert (spec.option, spec.unit, spec.readable, spec.mechanism) == ("SIO_KEEPALIVE_VALS", "ms", False, _platform.MECH_SIO)
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
