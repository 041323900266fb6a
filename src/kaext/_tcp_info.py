"""The kernel's own view of a TCP socket where the OS shows it: Linux ``TCP_INFO``.

``kaext.verify --live`` reports it next to the keepalive timer; ``kaext.probe`` times
its probes by it.  Whether the OS has it is a per-OS fact (``_platform.TCP_INFO``); its
layout is Linux's ABI (``_linux_abi``).
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from . import _linux_abi, _platform

try:
    import socket
except ImportError:  # WASI / Emscripten builds: no TCP_INFO, AVAILABLE is False
    from . import _nosocket as socket  # type: ignore[no-redef]

_LAYOUT = struct.Struct(_linux_abi.TCP_INFO_LAYOUT) if _platform.TCP_INFO else None
_FIELDS = _linux_abi.TCP_INFO_FIELDS

#: Whether this system shows a socket's TCP_INFO (else :func:`tcp_info` returns None).
AVAILABLE = _LAYOUT is not None and hasattr(socket, "TCP_INFO")


class TcpInfo(NamedTuple):
    """What ``TCP_INFO`` says of a socket, in the kernel's units."""

    state: int  #: the kernel's TCP state number (1: ESTABLISHED)
    probes: int  #: keepalive (or zero-window) probes out and not answered
    rto_us: int  #: the retransmission timeout, microseconds
    last_data_recv_ms: int  #: milliseconds since data was last received
    last_ack_recv_ms: int  #: milliseconds since an acknowledgement was last received


def tcp_info(sock: Any) -> TcpInfo | None:
    """``sock``'s TCP_INFO (one getsockopt), or None where the system or the socket has none."""
    if _LAYOUT is None or not AVAILABLE:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _LAYOUT.size)
    except OSError:
        return None
    if len(raw) < _LAYOUT.size:
        return None
    v = _LAYOUT.unpack_from(raw)
    return TcpInfo(*(v[_FIELDS[name]] for name in TcpInfo._fields))
