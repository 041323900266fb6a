"""capabilities(), system_defaults() and IMPLEMENTATION, checked against reference data and the OS."""

from __future__ import annotations

import json
import os
import socket
import sys

import pytest
from paths import DATA

import kaext
from kaext import _backend

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux reference values")

REFERENCE = json.loads((DATA / "reference.json").read_text())
RANGES = REFERENCE["ranges"]["linux"]
CONSTANTS = REFERENCE["constants"]["linux"]

# knob -> (header name, unit, (min, max) from the reference)
EXPECTED = {
    "idle": ("TCP_KEEPIDLE", "s", tuple(RANGES["idle"])),
    "interval": ("TCP_KEEPINTVL", "s", tuple(RANGES["interval"])),
    "count": ("TCP_KEEPCNT", "probes", tuple(RANGES["count"])),
    "user_timeout": ("TCP_USER_TIMEOUT", "ms", tuple(RANGES["user_timeout_ms"])),
    "connect_timeout": ("TCP_SYNCNT", "syns", tuple(RANGES["connect_timeout_syncnt"])),
}


def test_linux_has_all_five_knobs() -> None:
    assert set(kaext.capabilities()) == set(EXPECTED)


@pytest.mark.parametrize("knob", sorted(EXPECTED))
def test_knob_description(knob: str) -> None:
    option, unit, (lo, hi) = EXPECTED[knob]
    k = kaext.capabilities()[knob]
    assert isinstance(k, kaext.Knob)
    assert k.option == option
    assert k.level == socket.IPPROTO_TCP == CONSTANTS["IPPROTO_TCP"]
    assert k.optname == getattr(socket, option) == CONSTANTS[option]
    assert k.unit == unit
    assert (k.min, k.max) == (lo, hi)
    assert k.readable is True


def test_reference_ranges_match_kernel_limits() -> None:
    # the reference's ranges are the kernel's MAX_TCP_* limits
    assert RANGES["idle"][1] == CONSTANTS["MAX_TCP_KEEPIDLE"]
    assert RANGES["interval"][1] == CONSTANTS["MAX_TCP_KEEPINTVL"]
    assert RANGES["count"][1] == CONSTANTS["MAX_TCP_KEEPCNT"]
    assert RANGES["connect_timeout_syncnt"][1] == CONSTANTS["MAX_TCP_SYNCNT"]


@pytest.mark.parametrize("knob", ["idle", "interval", "count", "connect_timeout"])
def test_kernel_accepts_range_ends_and_refuses_beyond(tcp: socket.socket, knob: str) -> None:
    # the advertised range is the one the running kernel enforces (checked with plain setsockopt)
    k = kaext.capabilities()[knob]
    for value in (k.min, k.max):
        tcp.setsockopt(k.level, k.optname, value)
        assert tcp.getsockopt(k.level, k.optname) == value
    for value in (k.min - 1, k.max + 1):
        with pytest.raises(OSError, match="Invalid argument"):
            tcp.setsockopt(k.level, k.optname, value)


def test_capabilities_returns_a_copy() -> None:
    caps = kaext.capabilities()
    caps.clear()
    assert set(kaext.capabilities()) == set(EXPECTED)


def test_knob_is_frozen() -> None:
    k = kaext.capabilities()["idle"]
    with pytest.raises(AttributeError, match=r"Knob is immutable: cannot set 'max'"):
        k.max = 1  # type: ignore[misc]
    assert hash(k) == hash(kaext.capabilities()["idle"])


def _proc(name: str) -> int:
    with open(f"/proc/sys/net/ipv4/tcp_keepalive_{name}") as f:
        return int(f.read())


def test_system_defaults_equal_proc() -> None:
    if not os.path.exists("/proc/sys/net/ipv4/tcp_keepalive_time"):
        pytest.skip("no /proc/sys/net/ipv4")
    d = kaext.system_defaults()
    assert isinstance(d, kaext.KeepaliveState)
    assert d.idle == float(_proc("time"))
    assert d.interval == float(_proc("intvl"))
    assert d.count == _proc("probes")
    assert type(d.count) is int
    assert type(d.idle) is float and type(d.interval) is float


def test_system_defaults_equal_a_fresh_socket() -> None:
    d = kaext.system_defaults()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        assert d.enabled is bool(s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)) is False
        assert d.idle == s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        assert d.interval == s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
        assert d.count == s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)


def test_implementation_under_test(implementation: str) -> None:
    assert implementation in ("c", "python")
    assert _backend.IMPLEMENTATION == kaext.IMPLEMENTATION == implementation


@pytest.mark.one_implementation
def test_public_implementation_flag() -> None:
    assert kaext.IMPLEMENTATION in ("c", "python")
    try:
        from kaext import _kaext  # noqa: F401
    except ImportError:
        built = False
    else:
        built = True
    forced_pure = os.environ.get("KAEXT_NO_EXTENSIONS", "") not in ("", "0")
    assert ("c" if built and not forced_pure else "python") == kaext.IMPLEMENTATION


def test_keepalive_state_names_the_mechanism_of_each_knob(tcp: socket.socket) -> None:
    state = kaext.get_keepalive(tcp)
    assert state.mechanisms == {
        "idle": "setsockopt(IPPROTO_TCP, TCP_KEEPIDLE)",
        "interval": "setsockopt(IPPROTO_TCP, TCP_KEEPINTVL)",
        "count": "setsockopt(IPPROTO_TCP, TCP_KEEPCNT)",
    }
    # a description of the platform, not of the socket: equality ignores it
    assert state == kaext.KeepaliveState(state.enabled, state.idle, state.interval, state.count)


def test_knob_per_second_follows_the_kernel_unit(tcp: socket.socket) -> None:
    """Linux: TCP_KEEPIDLE takes seconds, TCP_USER_TIMEOUT milliseconds (tcp(7)); the
    kernel's own reading after setting 3 s each is 3 and 3000."""
    caps = kaext.capabilities()
    kaext.set_keepalive(tcp, idle=3)
    kaext.set_user_timeout(tcp, 3)
    assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 3 * caps["idle"].per_second
    assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 3 * caps["user_timeout"].per_second
    assert caps["count"].per_second is None
