"""Stands in for :mod:`socket` where this Python has none (WASI, Emscripten builds).

kaext still imports there: ``capabilities()`` is empty (``_platform`` knows no option
for these platforms) and every call that would reach a socket raises
``OSError(ENOSYS)`` saying why.  The numbers below are placeholders that never reach a
kernel: nothing here can make a socket.
"""

from __future__ import annotations

import errno
from typing import Any, NoReturn

#: Placeholders (no kernel behind them): the names kaext's modules read at import.
AF_INET = 2
AF_INET6 = 10
SOCK_STREAM = 1
SOCK_DGRAM = 2
SOL_SOCKET = 1
SO_KEEPALIVE = 9
IPPROTO_TCP = 6
TCP_NODELAY = 1

WHY = "this Python has no usable socket module (a WASI or Emscripten build): no TCP socket can be made or configured"


def _unavailable(*args: Any, **kwargs: Any) -> NoReturn:
    raise OSError(errno.ENOSYS, WHY)


class socket:
    """No socket can be made: the constructor raises OSError(ENOSYS)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _unavailable()

    def fileno(self) -> int:
        return -1

    def getsockopt(self, *args: Any) -> int:
        _unavailable()

    def setsockopt(self, *args: Any) -> None:
        _unavailable()

    def detach(self) -> int:
        return -1


def getdefaulttimeout() -> float | None:
    return None


class gaierror(OSError):
    """The resolver's error (never raised here: ``getaddrinfo`` raises OSError(ENOSYS))."""


create_connection = _unavailable
getaddrinfo = _unavailable
inet_ntop = _unavailable
#: Stands in for :func:`select.select` too, where this Python has no select module.
select = _unavailable
