"""Type aliases of the public API (imported on first use: they need :mod:`typing`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol, TypeAlias


class HasFileno(Protocol):
    """Anything with ``fileno()``: asyncio's transport socket, trio's socket, a socket.socket."""

    def fileno(self) -> int: ...


#: A socket.socket, anything with ``fileno()`` (asyncio transports' sockets, trio), or an int fd.
SocketLike: TypeAlias = HasFileno | int
#: Seconds as int or float, or a ``datetime.timedelta``.
Duration: TypeAlias = int | float | timedelta
