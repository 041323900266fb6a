"""Both implementations are peers under one test suite.

The public-API tests run against the implementation ``import kaext`` chose (the C
extension, or the pure-Python one with ``KAEXT_NO_EXTENSIONS=1``: CI runs the suite
both ways).  Tests of the backend interface itself take the ``backend`` fixture,
parametrised over ``kaext._pure`` and ``kaext._kaext`` (without the extension built
the ``c`` cases are skipped locally; with ``KAEXT_REQUIRE_EXTENSION=1``, set by CI,
they fail instead).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

import kaext
from kaext import _pure

try:
    from kaext import _kaext
except ImportError:  # pure-Python install
    _kaext = None  # type: ignore[assignment]

# The suite's helpers (servers, network namespaces, processes, the kernel models) are
# imported by name from tests/support/, whatever folder the test module is in.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "support"))

BACKENDS: dict[str, ModuleType | None] = {"c": _kaext, "python": _pure}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "one_implementation: independent of the implementation (CI's pure-Python rerun may skip it)",
    )
    config.addinivalue_line("markers", "root: needs root (network namespaces)")
    # pytest-run-parallel's marker (free-threaded CI): a test that starts its own threads
    config.addinivalue_line("markers", "thread_unsafe: run once even under pytest-run-parallel")


#: kaext's own pin directory (kaext.enforce makes it, root's and 0700, and keeps it: no user may
#: plant one).  A run of the suite that made it removes it at the end, when it is empty again.
_KAEXT_PINS = "/sys/fs/bpf/kaext"


@pytest.fixture(scope="session", autouse=True)
def _kaext_pin_directory_removed_if_the_suite_made_it() -> Iterator[None]:
    existed = os.path.lexists(_KAEXT_PINS)
    yield
    if not existed and os.path.isdir(_KAEXT_PINS) and not os.listdir(_KAEXT_PINS):
        try:
            os.rmdir(_KAEXT_PINS)
        except OSError:
            pass  # not ours to insist on: another process may be using it meanwhile


@pytest.fixture(autouse=True)
def implementation() -> str:
    """The implementation under test: the one ``import kaext`` chose ("c" or "python")."""
    return kaext.IMPLEMENTATION


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> ModuleType:
    """A backend module, ``kaext._kaext`` ("c") or ``kaext._pure`` ("python"), used directly."""
    module = BACKENDS[request.param]
    if module is None:
        if os.environ.get("KAEXT_REQUIRE_EXTENSION") == "1":
            pytest.fail("the C extension kaext._kaext is not built, but KAEXT_REQUIRE_EXTENSION=1")
        pytest.skip("the C extension kaext._kaext is not built here")
    return module


@pytest.fixture
def tcp() -> Iterator[socket.socket]:
    """A fresh, unconnected IPv4 TCP socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        yield s


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listening loopback TCP socket (IPv4)."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        yield s


@pytest.fixture
def no_injection() -> Iterator[None]:
    """The test starts and ends without kaext.inject active."""
    kaext.uninject()
    yield
    kaext.uninject()


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
    return f"kaext {kaext.__version__}: implementation under test {kaext.IMPLEMENTATION!r}, C extension {built}"
