"""Linux's own interfaces that kaext reads, as the kernel defines them (not per-OS facts).

The sock_diag netlink protocol ``kaext.connections()`` asks for the TCP tables, the TCP
state and timer numbers of those tables, and the one reader of ``/proc/<pid>/net/tcp``
(``kaext.connections()`` without sock_diag, ``kaext-verify --live``).  Which OS has these
at all is a per-OS fact, and lives in ``kaext._platform`` (``CONNECTIONS``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

#: sock_diag netlink (include/uapi/linux/netlink.h, sock_diag.h): the protocol, the dump
#: request's type and flags, and the message types that end a dump.
NETLINK_SOCK_DIAG: Final = 4
SOCK_DIAG_BY_FAMILY: Final = 20
NLM_F_REQUEST: Final = 0x1
NLM_F_DUMP: Final = 0x300
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3

#: TCP states by number (include/net/tcp_states.h); 13 is TCP_BOUND_INACTIVE (bound, not
#: listening, Linux 6.8+).
TCP_STATES: Final = (
    "?",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
    "BOUND_INACTIVE",
)

#: A socket's pending TCP timer, by number, in ``ss -o``'s words ("on" there is the
#: retransmit timer): sock_diag's idiag_timer and /proc/net/tcp's "tr" column
#: (net/ipv4/inet_diag.c inet_sk_diag_fill, net/ipv4/tcp_ipv4.c get_tcp4_sock).  The one
#: vocabulary of ``kaext.Connection.timer`` and ``kaext-verify --live``.
TIMERS: Final = ("off", "retransmit", "keepalive", "timewait", "persist")
#: The keepalive timer's number (``ICSK_TIME_KEEPOPEN`` as those tables report it).
KEEPALIVE_TIMER: Final = TIMERS.index("keepalive")


# The kernel's own view of a TCP socket: TCP_INFO fills struct tcp_info
# (include/uapi/linux/tcp.h): 8 one-byte fields (tcpi_state first, tcpi_probes the 4th),
# then u32 tcpi_rto (us), ato, snd_mss, rcv_mss, unacked, sacked, lost, retrans, fackets,
# last_data_sent, last_ack_sent (never filled in), last_data_recv, last_ack_recv (ms ago),
# ...: its first 104 bytes are 8 bytes and 24 u32.
#: The ``struct`` layout of the part of ``TCP_INFO`` kaext reads.
TCP_INFO_LAYOUT: Final = "8B24I"
#: Field -> index into that layout's values.
TCP_INFO_FIELDS: Final = {"state": 0, "probes": 3, "rto_us": 8, "last_data_recv_ms": 8 + 11, "last_ack_recv_ms": 8 + 12}


def timer_name(number: int) -> str:
    """A timer number as ``TIMERS`` names it (an unknown number as itself)."""
    return TIMERS[number] if 0 <= number < len(TIMERS) else str(number)


class ProcTcpLine(NamedTuple):
    """One socket's line of ``/proc/<pid>/net/tcp`` or ``tcp6`` (net/ipv4/tcp_ipv4.c
    get_tcp4_sock, net/ipv6/tcp_ipv6.c get_tcp6_sock), its numbers as the kernel prints them."""

    inode: int  #: the socket's inode
    state: int  #: the TCP state (``TCP_STATES``)
    local: str  #: the local address, as printed: ``0100007F:1F90`` (32-bit words in host order, the port)
    remote: str  #: the remote address, likewise
    timer: int  #: the pending timer (``TIMERS``)
    when: int  #: clock_t ticks (USER_HZ, ``os.sysconf("SC_CLK_TCK")``) until the timer fires
    probes: int  #: icsk_probes_out (the "timeout" column): keepalive or zero-window probes unanswered


def proc_tcp(path: str) -> Iterator[ProcTcpLine]:
    """The lines of a ``/proc/<pid>/net/tcp``-format file, parsed (OSError if it cannot be read)."""
    with open(path, encoding="ascii") as f:
        next(f, None)  # the header
        for line in f:
            fields = line.split()
            if len(fields) < 10:
                continue
            timer, when = fields[5].split(":")
            yield ProcTcpLine(
                int(fields[9]), int(fields[3], 16), fields[1], fields[2], int(timer, 16), int(when, 16), int(fields[8])
            )
