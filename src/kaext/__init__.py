"""kaext: TCP keepalive and TCP user timeout, the same way on every platform.

>>> import socket, kaext
>>> s = socket.create_connection(("example.org", 443))          # doctest: +SKIP
>>> kaext.set_keepalive(s, idle=60, interval=10, count=5)         # doctest: +SKIP
>>> kaext.get_keepalive(s)                                        # doctest: +SKIP
KeepaliveState(enabled=True, idle=60.0, interval=10.0, count=5)

Everything is in seconds (int, float or ``datetime.timedelta``).  See
``kaext.capabilities()`` for what this platform supports and
``python -m kaext.verify`` for a check of what the kernel really stores.
"""

from __future__ import annotations

from . import constants
from ._backend import IMPLEMENTATION
from ._capabilities import Knob, capabilities
from ._functions import (
    KeepaliveState,
    disable_keepalive,
    get_keepalive,
    get_user_timeout,
    set_keepalive,
    set_user_timeout,
    system_defaults,
)
from ._inject import inject, injected, uninject
from ._policy import Policy
from ._version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._connections import Connection, connections
    from ._types import Duration, SocketLike
else:

    def __getattr__(name: str) -> object:
        # The type aliases need typing; build them on first use, not at import.
        if name in ("Duration", "SocketLike"):
            from . import _types

            return getattr(_types, name)
        # Running processes (kaext.connections): socket and struct, loaded when first used.
        if name in ("Connection", "connections"):
            from . import _connections

            return getattr(_connections, name)
        raise AttributeError(f"module 'kaext' has no attribute {name!r}")


__all__ = [
    "IMPLEMENTATION",
    "Connection",
    "Duration",
    "KeepaliveState",
    "Knob",
    "Policy",
    "SocketLike",
    "__version__",
    "capabilities",
    "connections",
    "constants",
    "disable_keepalive",
    "get_keepalive",
    "get_user_timeout",
    "inject",
    "injected",
    "set_keepalive",
    "set_user_timeout",
    "system_defaults",
    "uninject",
]
