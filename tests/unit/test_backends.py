"""The backend contract: ``kaext._kaext`` and ``kaext._pure`` used directly, side by side.

Every test here takes the ``backend`` fixture (conftest.py), so it runs against both
modules in one process, whichever one ``import kaext`` chose.  Expected values come
from the kernel through plain ``socket.getsockopt`` and from ``kaext._platform``.
"""

from __future__ import annotations

import errno
import socket
import sys
import tempfile
from typing import Any

import pytest

from kaext import _errors, _platform

try:
    from kaext import _kaext
except ImportError:
    _kaext = None  # type: ignore[assignment]

PLAN_FIELDS = ("set_mask", "idle", "interval", "count", "user_timeout", "keepalive", "connect_timeout")
LINUX = sys.platform.startswith("linux")


def test_numbers_are_platform_s(backend: Any) -> None:
    """Knob count, steps and mechanisms: the shim's numbers equal _platform's."""
    assert len(_platform.KNOBS) == backend.NKNOBS
    assert backend.STEP_KEEPALIVE == _platform.STEP_KEEPALIVE
    assert backend.STEP_PROBE == _platform.STEP_PROBE
    assert backend.ROLLBACK_SHIFT == _platform.ROLLBACK_SHIFT
    assert (backend.MECH_NONE, backend.MECH_SETSOCKOPT, backend.MECH_SIO) == (
        _platform.MECH_NONE,
        _platform.MECH_SETSOCKOPT,
        _platform.MECH_SIO,
    )
    assert backend.FD_MAX == _platform.FD_MAX


def test_plan_is_a_named_record(backend: Any) -> None:
    plan = backend.Plan(0b0101, 11, 22, 33, 44, 1)
    assert backend.Plan._fields == PLAN_FIELDS
    assert tuple(getattr(plan, name) for name in PLAN_FIELDS) == (0b0101, 11, 22, 33, 44, 1, 0)
    with pytest.raises(AttributeError, match=r"not writable|immutable: cannot set 'idle'"):
        plan.idle = 5
    assert repr(plan) == (
        "Plan(set_mask=5, idle=11, interval=22, count=33, user_timeout=44, keepalive=1, connect_timeout=0)"
    )
    assert backend.Plan(0b10000, 0, 0, 0, 0, -1, 3).connect_timeout == 3


def test_mechanism_of_every_knob_has_a_spec(backend: Any) -> None:
    for index, knob in enumerate(_platform.KNOBS):
        mech = backend.mechanism(index)
        entry = backend.KNOB_OPTIONS[index]
        spec = _platform.spec_for(knob, entry[0] if entry else "", mech)
        if mech == _platform.MECH_NONE:
            assert spec is None and backend.knob_unit(index) == ""
        else:
            assert spec is not None and backend.knob_unit(index) == spec.unit
    assert backend.mechanism(-1) == backend.mechanism(len(_platform.KNOBS)) == _platform.MECH_NONE


@pytest.mark.skipif(_kaext is None, reason="C extension not built")
def test_both_backends_agree() -> None:
    from kaext import _pure

    assert _kaext.KNOB_OPTIONS == _pure.KNOB_OPTIONS
    knobs = range(len(_platform.KNOBS))
    assert [_kaext.mechanism(k) for k in knobs] == [_pure.mechanism(k) for k in knobs]
    assert [_kaext.knob_unit(k) for k in knobs] == [_pure.knob_unit(k) for k in knobs]


@pytest.mark.skipif(not LINUX, reason="Linux option numbers and units")
def test_apply_writes_what_getsockopt_reads(backend: Any, tcp: socket.socket) -> None:
    plan = backend.Plan(0b1111, 61, 7, 4, 12345, 1)
    backend.apply(tcp, plan)
    assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 61
    assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 7
    assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
    assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 12345
    assert tcp.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    syncnt = tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT)
    assert backend.read(tcp) == (1, 61, 7, 4, 12345, syncnt)
    # keepalive -1 leaves SO_KEEPALIVE; an unset knob is not written
    backend.apply(tcp, backend.Plan(0b0001, 99, 0, 0, 0, -1))
    assert backend.read(tcp) == (1, 99, 7, 4, 12345, syncnt)
    backend.apply(tcp, backend.Plan(0b10000, 0, 0, 0, 0, -1, 2))  # connect_timeout: TCP_SYNCNT
    assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT) == 2
    assert backend.read(tcp) == (1, 99, 7, 4, 12345, 2)
    backend.apply(tcp, backend.Plan(0, 0, 0, 0, 0, 0))
    assert tcp.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


@pytest.mark.skipif(not LINUX, reason="Linux option numbers")
def test_read_asks_only_for_what_is_wanted(backend: Any, tcp: socket.socket) -> None:
    want = 1 << _platform.USER_TIMEOUT
    user_timeout = tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
    assert backend.read(tcp, want) == (0, None, None, None, user_timeout, None)
    state = backend.read(tcp, _platform.WANT_KEEPALIVE)
    assert state == (tcp.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE), None, None, None, None, None)
    syncnt = tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT)
    assert backend.read(tcp, 1 << _platform.CONNECT_TIMEOUT) == (0, None, None, None, None, syncnt)


def test_udp_is_refused_at_the_first_tcp_call(backend: Any) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        before = udp.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        with pytest.raises(OSError) as info:
            backend.apply(udp, backend.Plan(0, 0, 0, 0, 0, 1))  # SO_KEEPALIVE only: the TCP probe refuses
        assert info.value.errno in (errno.ENOPROTOOPT, errno.EOPNOTSUPP)
        assert info.value.option == "TCP_NODELAY"  # type: ignore[attr-defined]
        assert udp.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == before
        with pytest.raises(OSError, match="the check that the socket is TCP - not a TCP socket"):
            backend.read(udp, _platform.WANT_ALL)


def test_bad_descriptors(backend: Any) -> None:
    plan = backend.Plan(0, 0, 0, 0, 0, 1)
    for fd in (-1, backend.FD_MAX + 1, 2**64, -(2**64)):
        with pytest.raises(OSError) as info:
            backend.apply(fd, plan)
        assert info.value.errno == errno.EBADF and info.value.fd == fd  # type: ignore[attr-defined]
    with tempfile.TemporaryFile() as f, pytest.raises(OSError) as info:
        backend.apply(f, plan)
    assert info.value.errno == errno.ENOTSOCK
    for bad in (True, "3", None, 1.5):
        with pytest.raises(
            TypeError, match="expected a socket, an object with fileno\\(\\), or an int file descriptor; got "
        ):
            backend.apply(bad, plan)


def test_a_refused_knob_is_named_with_its_unit(backend: Any, tcp: socket.socket) -> None:
    """The kernel's EINVAL names the knob, the value in the spec's unit, and the range."""
    index = _platform.IDLE
    entry = backend.KNOB_OPTIONS[index]
    spec = _platform.spec_for("idle", entry[0] if entry else "", backend.mechanism(index))
    if spec is None or spec.min < 1:
        pytest.skip("no idle knob with a positive minimum here")
    with pytest.raises(OSError) as info:
        backend.apply(tcp, backend.Plan(1 << index, 0, 0, 0, 0, 1))
    message = str(info.value)
    assert info.value.errno == errno.EINVAL
    assert f"idle=0 {spec.unit} ({'WSAIoctl' if spec.ioctl else 'setsockopt'} {spec.option})" in message
    assert f"{spec.min} {spec.unit}" in message


# --------------------------------------------------------------------------------------
# Error messages take the unit from the spec, on every OS (no system call needed)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "knob", "value", "shown", "valid"),
    [
        # macOS: TCP_RXT_CONNDROPTIME is seconds (once printed as "ms")
        (_platform.DARWIN["user_timeout"], "user_timeout", 30, "user_timeout=30 s", "0 s .. 4294967 s"),
        # Linux: TCP_USER_TIMEOUT is ms
        (_platform.LINUX["user_timeout"], "user_timeout", 30, "user_timeout=30 ms", "0 ms (0 s) .. 2147483647 ms"),
        # DragonFly before 5.8 and Solaris before 11.4: ms (once printed as "s")
        (_platform.DRAGONFLY_OLD["idle"], "idle", 5000, "idle=5000 ms", "1 ms (0.001 s) .. "),
        (_platform.SOLARIS_OLD_IDLE, "idle", 5000, "idle=5000 ms", "10000 ms (10 s) .. 864000000 ms"),
        (_platform.WINDOWS_SIO["interval"], "interval", 0, "interval=0 ms (WSAIoctl SIO_KEEPALIVE_VALS)", "1 ms"),
        (_platform.LINUX["count"], "count", 0, "count=0 (setsockopt TCP_KEEPCNT)", "1 probe .. 127 probes"),
    ],
)
def test_error_unit_comes_from_the_spec(
    spec: _platform.KnobSpec, knob: str, value: int, shown: str, valid: str
) -> None:
    step = _platform.KNOBS.index(knob)
    exc = _errors.socket_error(errno.EINVAL, step, spec.option, value, spec)
    assert shown in str(exc), str(exc)
    assert f"kaext accepts {knob} = " in str(exc) and valid in str(exc), str(exc)
    assert (exc.knob, exc.option, exc.value) == (knob, spec.option, value)  # type: ignore[attr-defined]
