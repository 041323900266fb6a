"""Every test runs against both implementations: the C extension and the pure-Python one.

A test marked ``@pytest.mark.one_implementation`` runs once, against the one
``import kaext`` chose.  Without the extension built, the ``c`` runs are skipped
locally; with ``KAEXT_REQUIRE_EXTENSION=1`` (set by CI) they fail instead.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

import kaext
from kaext import _api, _pure

try:
    from kaext import _kaext
except ImportError:  # pure-Python install
    _kaext = None  # type: ignore[assignment]

_IMPLEMENTATIONS = {"c": _kaext, "python": _pure}
_DEFAULT = _api._impl


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "one_implementation: run once, not per implementation")
    config.addinivalue_line("markers", "root: needs root (network namespaces)")
    # pytest-run-parallel's marker (free-threaded CI): a test that starts its own threads
    config.addinivalue_line("markers", "thread_unsafe: run once even under pytest-run-parallel")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "implementation" in metafunc.fixturenames:
        if metafunc.definition.get_closest_marker("one_implementation"):
            metafunc.parametrize("implementation", [_DEFAULT.IMPLEMENTATION], indirect=True)
        else:
            metafunc.parametrize("implementation", list(_IMPLEMENTATIONS), indirect=True)


@pytest.fixture(autouse=True)
def implementation(request: pytest.FixtureRequest) -> Iterator[str]:
    """The implementation under test, installed behind the public API for this test."""
    name = getattr(request, "param", _DEFAULT.IMPLEMENTATION)
    module = _IMPLEMENTATIONS[name]
    if module is None:
        if os.environ.get("KAEXT_REQUIRE_EXTENSION") == "1":
            pytest.fail("the C extension kaext._kaext is not built, but KAEXT_REQUIRE_EXTENSION=1")
        pytest.skip("the C extension kaext._kaext is not built here")
    _api._use_implementation(module)
    try:
        yield name
    finally:
        _api._use_implementation(_DEFAULT)


@pytest.fixture
def tcp() -> Iterator[socket.socket]:
    """A fresh, unconnected IPv4 TCP socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        yield s


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected loopback TCP pair (client, server side)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        with client, server:
            yield client, server


def pytest_report_header(config: pytest.Config) -> str:
    built = "built" if _kaext is not None else "NOT built"
    return f"kaext {kaext.__version__}: default implementation {kaext.IMPLEMENTATION!r}, C extension {built}"
