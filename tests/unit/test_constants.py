"""kaext.constants: exactly the names this platform's headers define, with the header values.

Expected values come from tests/data/reference.json (copied from the OS headers) and,
where Python has the name, from Python's own :mod:`socket` module -- never from kaext.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Any

import pytest
from paths import DATA

import kaext

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux reference values")

REFERENCE = json.loads((DATA / "reference.json").read_text())
# MAX_TCP_* are kernel-internal limits (include/net/tcp.h), not in the user-space headers.
LINUX = {k: v for k, v in REFERENCE["constants"]["linux"].items() if not k.startswith("MAX_")}
LINUX_NAMES = {
    "SOL_SOCKET",
    "SO_KEEPALIVE",
    "IPPROTO_TCP",
    "TCP_KEEPIDLE",
    "TCP_KEEPINTVL",
    "TCP_KEEPCNT",
    "TCP_SYNCNT",
    "TCP_USER_TIMEOUT",
}
# Where the C build takes each one from.
LINUX_HEADERS = {
    "SOL_SOCKET": "sys/socket.h",
    "SO_KEEPALIVE": "sys/socket.h",
    "IPPROTO_TCP": "netinet/in.h",
    "TCP_KEEPIDLE": "netinet/tcp.h",
    "TCP_KEEPINTVL": "netinet/tcp.h",
    "TCP_KEEPCNT": "netinet/tcp.h",
    "TCP_SYNCNT": "netinet/tcp.h",
    "TCP_USER_TIMEOUT": "netinet/tcp.h",
}
# Names other platforms' headers define; Linux's do not.
OTHER_PLATFORMS = sorted(
    {name for family in REFERENCE["constants"].values() for name in family} - set(REFERENCE["constants"]["linux"])
)


def test_reference_data_is_what_this_test_expects() -> None:
    # guards the test itself: the reference names are the Linux header names listed above
    assert set(LINUX) == LINUX_NAMES


@pytest.mark.one_implementation
def test_module_exports_exactly_the_linux_header_names() -> None:
    assert set(kaext.constants.__all__) == LINUX_NAMES
    prefixes = ("SOL_", "SO_", "IPPROTO_", "TCP_", "SIO_")
    public = {n for n in vars(kaext.constants) if n.startswith(prefixes)}
    assert public == LINUX_NAMES


@pytest.mark.one_implementation
@pytest.mark.parametrize("name", sorted(LINUX_NAMES))
def test_module_value_equals_reference_and_python(name: str) -> None:
    value = getattr(kaext.constants, name)
    assert type(value) is int
    assert value == LINUX[name]
    if hasattr(socket, name):
        assert value == getattr(socket, name)


@pytest.mark.one_implementation
@pytest.mark.parametrize("name", OTHER_PLATFORMS)
def test_names_from_other_platforms_are_absent(name: str) -> None:
    assert not hasattr(kaext.constants, name)
    with pytest.raises(AttributeError, match=r"module 'kaext.constants' has no attribute "):
        getattr(kaext.constants, name)


def test_backend_constants_equal_reference(backend: Any) -> None:
    assert dict(backend.CONSTANTS) == LINUX


def test_backend_sources(backend: Any) -> None:
    sources = backend.CONSTANT_SOURCES
    assert set(sources) == LINUX_NAMES
    if backend.IMPLEMENTATION == "c":
        assert dict(sources) == LINUX_HEADERS
    else:
        # Python has every Linux name, so none needs a fallback number
        assert set(sources.values()) == {"socket"}


@pytest.mark.one_implementation
def test_module_sources_describe_its_constants() -> None:
    sources = kaext.constants.SOURCES
    assert set(sources) == LINUX_NAMES
    expected = LINUX_HEADERS if kaext.IMPLEMENTATION == "c" else {n: "socket" for n in LINUX_NAMES}
    assert sources == expected


@pytest.mark.one_implementation
def test_constants_drive_plain_setsockopt(tcp: socket.socket) -> None:
    c = kaext.constants
    tcp.setsockopt(c.IPPROTO_TCP, c.TCP_KEEPIDLE, 321)
    tcp.setsockopt(c.IPPROTO_TCP, c.TCP_KEEPINTVL, 12)
    tcp.setsockopt(c.IPPROTO_TCP, c.TCP_KEEPCNT, 4)
    tcp.setsockopt(c.IPPROTO_TCP, c.TCP_USER_TIMEOUT, 4567)
    tcp.setsockopt(c.SOL_SOCKET, c.SO_KEEPALIVE, 1)
    tcp.setsockopt(c.IPPROTO_TCP, c.TCP_SYNCNT, 3)
    assert kaext.get_keepalive(tcp) == kaext.KeepaliveState(True, 321.0, 12.0, 4)
    assert kaext.get_user_timeout(tcp) == 4.567
    assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT) == 3
