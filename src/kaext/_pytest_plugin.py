"""The pytest plugin of :mod:`kaext.testing` (entry point ``pytest11``, installed with ``kaext[testing]``).

It adds the ``kaext_path`` fixture and the ``--kaext-strict`` option (ini ``kaext_testing_strict``,
environment ``KAEXT_TESTING_STRICT=1``).  Nothing of kaext.testing is imported until a test asks
for the fixture: a test run that does not use it pays for this module only.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import Path

__all__ = ["kaext_path"]

#: The errors that say the kit cannot run here (no nft, no CAP_NET_ADMIN, not Linux, no
#: nftables NAT in the kernel): the fixture skips with their line, or fails when strict.
_UNAVAILABLE = (errno.ENOENT, errno.EPERM, errno.EACCES, errno.ENOSYS, errno.EOPNOTSUPP)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "kaext_testing_strict",
        "kaext_path fails a test (instead of skipping it) where kaext.testing cannot run",
        type="bool",
        default=False,
    )
    parser.getgroup("kaext").addoption(
        "--kaext-strict",
        action="store_true",
        default=False,
        help="kaext_path fails a test (instead of skipping it) where kaext.testing cannot run "
        "(also: ini kaext_testing_strict = true, environment KAEXT_TESTING_STRICT=1)",
    )


def _strict(config: pytest.Config) -> bool:
    return bool(
        os.environ.get("KAEXT_TESTING_STRICT") == "1"
        or config.getoption("kaext_strict", default=False)
        or config.getini("kaext_testing_strict")
    )


@pytest.fixture
def kaext_path(request: pytest.FixtureRequest) -> Iterator[Callable[[tuple[str, int]], Path]]:
    """A factory of :class:`kaext.testing.Path`: ``kaext_path((host, port))``; every path it made is
    closed after the test, whatever happened.

    Where the kit cannot run (no ``nft``, no CAP_NET_ADMIN: not root and not under
    ``kaext testing --``), the test is skipped with the kit's one-line reason, or fails with it
    under ``--kaext-strict`` / ``kaext_testing_strict = true`` / ``KAEXT_TESTING_STRICT=1``.
    """
    from . import testing

    made: list[Path] = []

    def make(target: tuple[str, int]) -> Path:
        try:
            path = testing.Path(target)
        except OSError as exc:
            if exc.errno not in _UNAVAILABLE:
                raise
            reason = f"kaext.testing cannot run here: {exc.strerror or exc}"
            if _strict(request.config):
                pytest.fail(reason, pytrace=False)
            pytest.skip(reason)
        made.append(path)
        return path

    try:
        yield make
    finally:
        for path in reversed(made):
            path.close()
