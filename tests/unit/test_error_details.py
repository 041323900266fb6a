"""Errors carry enough to act on: knob, value, valid range, OS option name, errno and strerror.

Also as attributes of the OSError (``knob``, ``option``, ``value``, ``fd``), which stays a
plain OSError.  Both implementations (see conftest.py).
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from typing import Any

import pytest

import kaext
from kaext import _platform


def _strerror(code: int) -> str:
    return os.strerror(code)


def test_udp_refusal_names_knob_value_option_errno(implementation: str) -> None:
    caps = kaext.capabilities()
    if "idle" not in caps:
        pytest.skip("no idle knob here")
    option = caps["idle"].option
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(OSError) as info:
        kaext.set_keepalive(udp, idle=60)
    exc = info.value
    assert type(exc) is OSError
    assert exc.errno in (errno.ENOPROTOOPT, errno.EOPNOTSUPP)
    message = str(exc)
    assert _strerror(exc.errno) in message
    assert "idle=60" in message and option in message and "not a TCP socket" in message
    assert (exc.knob, exc.option, exc.value) == ("idle", option, 60)  # type: ignore[attr-defined]


def test_closed_socket_says_closed_and_carries_the_fd(implementation: str) -> None:
    s = socket.socket()
    s.close()
    with pytest.raises(OSError) as info:
        kaext.Policy(idle=30).apply(s)
    exc = info.value
    assert exc.errno == errno.EBADF
    assert _strerror(errno.EBADF) in str(exc) and "closed" in str(exc)
    assert exc.fd == -1  # type: ignore[attr-defined]


def test_impossible_fd_number_says_out_of_range(implementation: str) -> None:
    fd = _platform.FD_MAX + 1
    with pytest.raises(OSError) as info:
        kaext.get_keepalive(fd)
    assert info.value.errno == errno.EBADF
    assert "out of range" in str(info.value) and str(_platform.FD_MAX) in str(info.value)
    assert info.value.fd == fd  # type: ignore[attr-defined]


def test_not_a_socket(implementation: str) -> None:
    with tempfile.TemporaryFile() as f, pytest.raises(OSError) as info:
        kaext.set_keepalive(f, idle=10)
    assert info.value.errno == errno.ENOTSOCK
    assert _strerror(errno.ENOTSOCK) in str(info.value) and "not a socket" in str(info.value)


def test_kernel_refusal_names_the_valid_range(backend: Any, tcp: socket.socket) -> None:
    caps = kaext.capabilities()
    if "idle" not in caps or caps["idle"].min < 1:
        pytest.skip("no idle knob with a positive minimum here")
    # Bypass the API's validation to see what the backend says when the kernel refuses.
    with pytest.raises(OSError) as info:
        backend.apply(tcp, backend.Plan(1 << _platform.IDLE, 0, 0, 0, 0, 1))
    exc = info.value
    assert exc.errno == errno.EINVAL
    message = str(exc)
    assert "idle=0" in message and caps["idle"].option in message
    assert f"{caps['idle'].min} s" in message and f"{caps['idle'].max} s" in message
    assert (exc.knob, exc.value) == ("idle", 0)  # type: ignore[attr-defined]


@pytest.mark.parametrize("knob", ["idle", "interval", "count", "user_timeout"])
def test_value_errors_name_knob_value_option_and_range(knob: str, tcp: socket.socket) -> None:
    caps = kaext.capabilities()
    if knob not in caps:
        pytest.skip(f"no {knob} here")
    info_knob = caps[knob]
    too_big = 10**12
    with pytest.raises(ValueError) as info:
        kaext.Policy(**{knob: too_big})
    message = str(info.value)
    assert knob in message and str(too_big) in message and info_knob.option in message
    assert str(info_knob.min) in message and str(info_knob.max) in message


def test_type_errors_name_knob_and_type() -> None:
    with pytest.raises(TypeError) as info:
        kaext.Policy(idle="30")  # type: ignore[arg-type]
    assert "idle" in str(info.value) and "str" in str(info.value)
    with pytest.raises(TypeError) as info:
        kaext.Policy(count=2.5)  # type: ignore[arg-type]
    assert "count" in str(info.value) and "float" in str(info.value)


def _refusing_calls(target: Any) -> dict[str, Any]:
    """Public calls that a UDP socket refuses, on ``target`` (the socket or its int fd)."""
    calls: dict[str, Any] = {
        "get_keepalive": lambda: kaext.get_keepalive(target),
        "Policy.from_socket": lambda: kaext.Policy.from_socket(target),
        "Policy().apply": lambda: kaext.Policy().apply(target),
    }
    if "idle" in kaext.capabilities():
        calls["set_keepalive"] = lambda: kaext.set_keepalive(target, idle=60)
    if "user_timeout" in kaext.capabilities():
        calls["get_user_timeout"] = lambda: kaext.get_user_timeout(target)
    return calls


@pytest.mark.parametrize("as_int", [False, True], ids=["socket", "int-fd"])
def test_a_refusal_on_a_live_socket_carries_its_fd(implementation: str, as_int: bool) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        target = udp.fileno() if as_int else udp
        for name, call in _refusing_calls(target).items():
            with pytest.raises(OSError) as info:
                call()
            assert info.value.errno in (errno.ENOPROTOOPT, errno.EOPNOTSUPP), name
            assert info.value.fd == udp.fileno(), name  # type: ignore[attr-defined]


@pytest.mark.parametrize("as_int", [False, True], ids=["socket", "int-fd"])
def test_each_backend_puts_the_fd_on_a_refusal(backend: Any, as_int: bool) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        target = udp.fileno() if as_int else udp
        for call in (
            lambda: backend.apply(target, backend.Plan(0, 0, 0, 0, 0, 1)),
            lambda: backend.read(target, _platform.WANT_ALL),
        ):
            with pytest.raises(OSError) as info:
                call()
            assert info.value.fd == udp.fileno()  # type: ignore[attr-defined]
    with tempfile.TemporaryFile() as f:
        with pytest.raises(OSError) as info:
            backend.apply(f.fileno() if as_int else f, backend.Plan(0, 0, 0, 0, 0, 1))
        assert info.value.errno == errno.ENOTSOCK and info.value.fd == f.fileno()  # type: ignore[attr-defined]


def test_a_kernel_refusal_of_a_value_carries_the_fd(backend: Any, tcp: socket.socket) -> None:
    caps = kaext.capabilities()
    if "idle" not in caps or caps["idle"].min < 1:
        pytest.skip("no idle knob with a positive minimum here")
    with pytest.raises(OSError) as info:
        backend.apply(tcp, backend.Plan(1 << _platform.IDLE, 0, 0, 0, 0, 1))
    assert info.value.errno == errno.EINVAL and info.value.fd == tcp.fileno()  # type: ignore[attr-defined]
