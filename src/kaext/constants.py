"""The socket option constants, as a drop-in namespace: exactly the names this platform's headers define.

>>> from kaext import constants
>>> sock.setsockopt(constants.IPPROTO_TCP, constants.TCP_KEEPIDLE, 60)   # doctest: +SKIP

With the C extension every value was taken from the platform's own headers when
kaext was built (``<netinet/tcp.h>``, ``<winsock2.h>``, ...); ``SOURCES`` names
the header of each.  Linux: ``SOL_SOCKET``, ``SO_KEEPALIVE``, ``IPPROTO_TCP``,
``TCP_KEEPIDLE``, ``TCP_KEEPINTVL``, ``TCP_KEEPCNT``, ``TCP_SYNCNT``,
``TCP_USER_TIMEOUT``.  A name the platform does not define is absent here too
(``AttributeError``), as in :mod:`socket`; ``hasattr`` tells.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._backend import CONSTANT_SOURCES as _SOURCES
from ._backend import CONSTANTS as _CONSTANTS

#: Header (or module) each constant came from.
SOURCES: dict[str, str] = dict(_SOURCES)

globals().update(_CONSTANTS)

__all__ = sorted(_CONSTANTS)

if TYPE_CHECKING:
    # Names that exist on at least one platform; check with hasattr() before use.
    SOL_SOCKET: int
    SO_KEEPALIVE: int
    IPPROTO_TCP: int
    TCP_KEEPIDLE: int
    TCP_KEEPINTVL: int
    TCP_KEEPCNT: int
    TCP_KEEPALIVE: int
    TCP_KEEPINIT: int
    TCP_USER_TIMEOUT: int
    TCP_SYNCNT: int
    TCP_CONNECTIONTIMEOUT: int
    TCP_RXT_CONNDROPTIME: int
    TCP_KEEPALIVE_THRESHOLD: int
    TCP_KEEPALIVE_ABORT_THRESHOLD: int
    TCP_MAXRT: int
    TCP_MAXRTMS: int
    SIO_KEEPALIVE_VALS: int
