"""``kaext.watch``: why each TCP connection died, as it dies.

Linux, root (CAP_BPF and CAP_PERFMON).  :class:`Watch` loads two BPF programs built by kaext
itself (instructions assembled here, field offsets read from the running kernel's BTF,
``/sys/kernel/btf/vmlinux``; no clang, kernel headers or libbpf) and attaches them to raw
tracepoints:

* ``inet_sock_set_state``: a connection that reaches TCP_CLOSE is reported, with the state it
  left, the error the kernel gave it (``sk_err``), its retransmissions, the keepalive probes
  out, how long it had been idle and the keepalive policy on it; the process that connected
  (at SYN_SENT) or closed it (at FIN_WAIT1 / LAST_ACK / an abort) is remembered for it;
* ``tcp_send_reset``: the reset the kernel sends when keepalive gives up
  (``SK_RST_REASON_TCP_KEEPALIVE_TIMEOUT``) marks the connection, which tells a keepalive
  timeout from a retransmission timeout (both end with ETIMEDOUT).

Deaths reach user space through a BPF ring buffer; when it is full the program counts the
death as dropped (:attr:`Watch.dropped`), never silently.  Nothing is pinned: the programs stay
attached only while the watcher's descriptors are open, so :meth:`Watch.close`, the end of the
process or a SIGKILL detaches everything.  The programs only read: no connection is changed.

Scope: the connections of a cgroup v2 directory and its descendants (the cgroup a socket
was created in, as for ``kaext.enforce``), or every connection of the host.

Command line: ``python -m kaext.watch`` / ``kaext-watch`` / ``kaext watch``::

    kaext-watch (--cgroup PATH | --all) [--json] [--listen [ADDR:]PORT] [--labels L,...]
"""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import sys
import time

from . import _backend, _platform
from ._btf import BTF
from ._cli import Parser, UsageError, prog_name, run_tool
from ._policy import Policy
from ._record import Record

try:
    import socket
except ImportError:  # WASI / Emscripten builds: no BPF there either; Watch() raises OSError
    from . import _nosocket as socket  # type: ignore[no-redef]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from types import FrameType
    from typing import Any

__all__ = ["CAUSES", "LABELS", "Death", "Watch", "main", "otel_counter", "otlp_export", "prometheus_counter"]

#: Every cause a death can have, in the order summaries list them.
CAUSES = (
    "peer_fin",
    "peer_rst",
    "keepalive_timeout",
    "user_timeout",
    "retransmit_timeout",
    "connect_timeout",
    "connect_refused",
    "local_close",
    "local_abort",
    "unknown",
)

#: Labels a death counter may carry (all bounded: no addresses, no pids).
LABELS = ("cause", "state", "process", "cgroup")

_PRIVILEGES = "needs root: CAP_BPF and CAP_PERFMON"

# TCP states (include/net/tcp_states.h; the numbers of /proc/net/tcp, a stable ABI)
_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
}
_ESTABLISHED, _SYN_SENT, _FIN_WAIT1, _CLOSE, _CLOSE_WAIT, _LAST_ACK = 1, 2, 4, 7, 8, 9

# --- BPF: the encoding (Documentation/bpf/standardization/instruction-set.rst) -----------
_MAP_HASH_LRU, _MAP_ARRAY, _MAP_RINGBUF = 9, 2, 27
_PROG_RAW_TRACEPOINT = 17
_F_PROBE_READ_KERNEL, _F_MAP_LOOKUP, _F_MAP_UPDATE, _F_MAP_DELETE = 113, 1, 2, 3
_F_PID_TGID, _F_COMM, _F_JIFFIES64, _F_RINGBUF_OUTPUT = 14, 16, 118, 130

_HEADER = 48  # of an event: u64 jiffies, u32 tgid, u32 flags, char comm[16], u64 cgroup id, u8 old state
_SPAN_GAP = 64  # fields closer than this are read in one span
_MAX_EVENT = 400  # the event lives on the program's stack (512 bytes)
_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q", 16: "16s"}
_RB_NO_WAKEUP = 1
_POLL_S = 0.05  # how often a waiting reader looks at the ring buffer
_SOCK_VALUE = 24
_GUARD = -56  # the stack slot of the address of the outer program's per-CPU "running" flag
_MAP_PERCPU_ARRAY = 6
# the "running" flags (a per-CPU array) of the two tracepoints; in the "dropped" array, slot 0
# counts the deaths the ring buffer had no room for, slot + 1 the nested program's stand-ins
_STATE_SLOT, _RESET_SLOT = 0, 2
_FLAG_KEEPALIVE_RESET = 1


class _Asm:
    """Instructions, and jumps to named labels resolved at the end."""

    def __init__(self) -> None:
        self.code: list[list[int]] = []
        self.labels: dict[str, int] = {}
        self.jumps: list[tuple[int, str]] = []
        self._n = 0

    def emit(self, op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> None:
        self.code.append([op, dst, src, off, imm])

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def fresh(self, stem: str) -> str:
        self._n += 1
        return f"{stem}{self._n}"

    def jump(self, op: int, dst: int, label: str, imm: int = 0, src: int = 0) -> None:
        self.jumps.append((len(self.code), label))
        self.emit(op, dst, src, 0, imm)

    # the instructions used, by what they do
    def mov(self, d: int, s: int) -> None:
        self.emit(0xBF, d, s)

    def movi(self, d: int, k: int) -> None:
        self.emit(0xB7, d, 0, 0, k)

    def mov32(self, d: int, s: int) -> None:
        self.emit(0xBC, d, s)

    def addi(self, d: int, k: int) -> None:
        self.emit(0x07, d, 0, 0, k)

    def rshi(self, d: int, k: int) -> None:
        self.emit(0x77, d, 0, 0, k)

    def ldx(self, size: int, d: int, s: int, off: int) -> None:
        self.emit({1: 0x71, 2: 0x69, 4: 0x61, 8: 0x79}[size], d, s, off)

    def stx(self, size: int, d: int, off: int, s: int) -> None:
        self.emit({1: 0x73, 2: 0x6B, 4: 0x63, 8: 0x7B}[size], d, s, off)

    def st(self, size: int, d: int, off: int, k: int) -> None:
        self.emit({1: 0x72, 2: 0x6A, 4: 0x62, 8: 0x7A}[size], d, 0, off, k)

    def atomic_add64(self, d: int, off: int, s: int) -> None:
        self.emit(0xDB, d, s, off, 0)

    def ld64(self, d: int, value: int, src: int = 0) -> None:
        self.emit(0x18, d, src, 0, value & 0xFFFFFFFF)
        self.emit(0, 0, 0, 0, (value >> 32) & 0xFFFFFFFF)

    def ld_map(self, d: int, fd: int) -> None:
        self.ld64(d, fd, src=1)  # BPF_PSEUDO_MAP_FD

    def call(self, helper: int) -> None:
        self.emit(0x85, 0, 0, 0, helper)

    def exit(self) -> None:
        self.emit(0x95)

    def jeq(self, d: int, k: int, label: str) -> None:
        self.jump(0x15, d, label, k)

    def jne(self, d: int, k: int, label: str) -> None:
        self.jump(0x55, d, label, k)

    def jlt(self, d: int, k: int, label: str) -> None:
        self.jump(0xA5, d, label, k)

    def jne_reg(self, d: int, s: int, label: str) -> None:
        self.jump(0x5D, d, label, src=s)

    def ja(self, label: str) -> None:
        self.jump(0x05, 0, label)

    def probe_read(self, fp_off: int, size: int, src: int, src_off: int) -> None:
        """fp[fp_off:fp_off+size] = kernel memory at src + src_off (clobbers r0-r5)."""
        self.mov(1, 10)
        self.addi(1, fp_off)
        self.movi(2, size)
        self.mov(3, src)
        self.addi(3, src_off)
        self.call(_F_PROBE_READ_KERNEL)

    def assemble(self) -> bytes:
        for index, label in self.jumps:
            self.code[index][3] = self.labels[label] - (index + 1)
        return b"".join(
            struct.pack("<BBhi", op, (dst & 0xF) | (src & 0xF) << 4, off, imm - (1 << 32) if imm >= 1 << 31 else imm)
            for op, dst, src, off, imm in self.code
        )


class _Layout:
    """The offsets the programs read, from the running kernel's BTF (all from the start of the sock)."""

    def __init__(self, btf: BTF) -> None:
        def tcp(path: str) -> int:
            return btf.field("tcp_sock", path).offset

        def sock(path: str) -> int:
            return btf.field("sock", path).offset

        params = btf.tracepoint_params("inet_sock_set_state")
        if len(params) != 3:
            raise LookupError(f"this kernel's tracepoint inet_sock_set_state has {len(params)} arguments, not 3")
        # the reason of the reset keepalive sends when it gives up (Linux 6.10 and later); without
        # it a keepalive timeout is told from a retransmission timeout by the probes out
        self.keepalive_reason: int | None = None
        try:
            if len(btf.tracepoint_params("tcp_send_reset")) == 3:
                self.keepalive_reason = btf.enum_value("sk_rst_reason", "SK_RST_REASON_TCP_KEEPALIVE_TIMEOUT")
        except LookupError:
            pass
        base = tcp("inet_conn.icsk_inet.sk")
        if base != 0 or btf.field("sock", "sk_protocol").size != 2:
            raise LookupError("this kernel's struct tcp_sock does not start with its struct sock")
        self.protocol = sock("sk_protocol")
        self.cgroup = sock("sk_cgrp_data.cgroup")
        self.cgroup_level = btf.field("cgroup", "level").offset
        # the ancestors of a cgroup: their addresses (newer kernels) or their ids (older ones)
        try:
            self.cgroup_ancestors, self.ancestor_ids = btf.field("cgroup", "ancestors").offset, False
        except LookupError:
            self.cgroup_ancestors, self.ancestor_ids = btf.field("cgroup", "ancestor_ids").offset, True
        self.cgroup_kn = btf.field("cgroup", "kn").offset
        self.kn_id = btf.field("kernfs_node", "id").offset
        # what a death's event carries from the sock: name -> (offset, size), and their sizes as
        # kaext reads them (a kernel whose fields differ in size is refused, never misread)
        fields = {
            "family": ("sock", "__sk_common.skc_family", 2),
            "saddr": ("sock", "__sk_common.skc_rcv_saddr", 4),
            "daddr": ("sock", "__sk_common.skc_daddr", 4),
            "saddr6": ("sock", "__sk_common.skc_v6_rcv_saddr", 16),
            "daddr6": ("sock", "__sk_common.skc_v6_daddr", 16),
            "dport": ("sock", "__sk_common.skc_dport", 2),
            "sport": ("tcp_sock", "inet_conn.icsk_inet.inet_sport", 2),  # skc_num is 0 once the port is released
            "flags": ("sock", "__sk_common.skc_flags", 8),
            "err": ("sock", "sk_err", 4),
            "user_timeout": ("tcp_sock", "inet_conn.icsk_user_timeout", 4),
            "probes_out": ("tcp_sock", "inet_conn.icsk_probes_out", 1),
            "lrcvtime": ("tcp_sock", "inet_conn.icsk_ack.lrcvtime", 4),
            "total_retrans": ("tcp_sock", "total_retrans", 4),
            "keepalive_probes": ("tcp_sock", "keepalive_probes", 1),
            "keepalive_time": ("tcp_sock", "keepalive_time", 4),
            "keepalive_intvl": ("tcp_sock", "keepalive_intvl", 4),
            "lsndtime": ("tcp_sock", "lsndtime", 4),
            "rcv_tstamp": ("tcp_sock", "rcv_tstamp", 4),
        }
        at: dict[str, tuple[int, int]] = {}
        for name, (struct_name, path, size) in fields.items():
            found = btf.field(struct_name, path)
            if found.size != size:
                raise LookupError(f"this kernel's {struct_name}.{path} has {found.size} bytes, not {size}")
            at[name] = (found.offset, size)
        # the fields in spans of the sock read whole (one bpf_probe_read_kernel each), laid
        # one after the other in the event after its header, each at a multiple of 8
        self.spans: list[tuple[int, int, int]] = []  # (sock offset, length, event offset)
        self.where: dict[str, tuple[int, int]] = {}  # name -> (event offset, size)
        place = _HEADER
        for name, (offset, size) in sorted(at.items(), key=lambda item: item[1][0]):
            if self.spans and offset + size - self.spans[-1][0] <= self.spans[-1][1] + _SPAN_GAP:
                first, length, ev = self.spans[-1]
                self.spans[-1] = (first, max(length, offset + size - first), ev)
            else:
                if self.spans:
                    place += (self.spans[-1][1] + 7) & ~7
                self.spans.append((offset, size, place))
            first, _length, ev = self.spans[-1]
            self.where[name] = (ev + offset - first, size)
        self.event_size = place + ((self.spans[-1][1] + 7) & ~7)
        if self.event_size > _MAX_EVENT:
            raise LookupError(f"this kernel's sock fields are spread too far ({self.event_size} bytes to read)")
        self.keepopen_bit = btf.enum_value("sock_flags", "SOCK_KEEPOPEN")


def _filter(a: _Asm, lay: _Layout, scope: tuple[int, int] | None, out: str) -> None:
    """Go to ``out`` unless r7 (a sock) is TCP and in the scope: (cgroup level, cgroup id) or None (all)."""
    a.st(8, 10, -16, 0)
    a.probe_read(-16, 2, 7, lay.protocol)
    a.ldx(8, 1, 10, -16)
    a.jne(1, socket.IPPROTO_TCP, out)
    if scope is None:
        return
    level, cgroup_id = scope
    a.probe_read(-32, 8, 7, lay.cgroup)
    a.ldx(8, 6, 10, -32)
    a.jeq(6, 0, out)
    a.st(8, 10, -24, 0)
    a.probe_read(-24, 4, 6, lay.cgroup_level)
    a.ldx(8, 1, 10, -24)
    a.jlt(1, level, out)
    a.probe_read(-16, 8, 6, lay.cgroup_ancestors + 8 * level)
    if not lay.ancestor_ids:
        a.ldx(8, 6, 10, -16)
        a.jeq(6, 0, out)
        a.probe_read(-16, 8, 6, lay.cgroup_kn)
        a.ldx(8, 6, 10, -16)
        a.jeq(6, 0, out)
        a.probe_read(-16, 8, 6, lay.kn_id)
    a.ldx(8, 1, 10, -16)
    a.ld64(2, cgroup_id)
    a.jne_reg(1, 2, out)


def _remember_process(a: _Asm, socks: int) -> None:
    """socks[r7] gets the current process (its tgid and comm), keeping the flags it had."""
    a.stx(8, 10, -8, 7)
    a.ld_map(1, socks)
    a.mov(2, 10)
    a.addi(2, -8)
    a.call(_F_MAP_LOOKUP)
    fresh = a.fresh("new")
    a.jeq(0, 0, fresh)
    a.mov(8, 0)
    a.call(_F_PID_TGID)
    a.rshi(0, 32)
    a.stx(4, 8, 0, 0)
    a.mov(1, 8)
    a.addi(1, 8)
    a.movi(2, 16)
    a.call(_F_COMM)
    a.ja("out")
    a.label(fresh)
    for off in (-40, -32, -24):
        a.st(8, 10, off, 0)
    a.call(_F_PID_TGID)
    a.rshi(0, 32)
    a.stx(4, 10, -40, 0)
    a.mov(1, 10)
    a.addi(1, -32)
    a.movi(2, 16)
    a.call(_F_COMM)
    a.ld_map(1, socks)
    a.mov(2, 10)
    a.addi(2, -8)
    a.mov(3, 10)
    a.addi(3, -40)
    a.movi(4, 0)
    a.call(_F_MAP_UPDATE)
    a.ja("out")


def _prologue(a: _Asm, maps: tuple[int, int, int, int], slot: int, nested: bool) -> None:
    """The start of a program, which then finds its context in r1 again.

    A tracepoint's program that is already running on a CPU is skipped by the kernel when the
    tracepoint fires again there (a softirq interrupting it: a timer ending a connection, a
    segment arriving).  So each program is loaded twice: the outer one marks, in a per-CPU flag
    of its tracepoint's own (``slot``: one per tracepoint, or one program's end would take
    down the other's mark), that it is running; the nested one goes on only while that flag is
    up, that is, exactly when the outer one has been interrupted and the kernel skipped it, and
    counts that it stood in (``dropped`` map, slot + 1): the outer program's skips less these
    are what was missed (:attr:`Watch.missed`).
    """
    _socks, _ring, dropped, running = maps
    a.mov(6, 1)
    a.st(4, 10, -60, slot)
    a.ld_map(1, running)
    a.mov(2, 10)
    a.addi(2, -60)
    a.call(_F_MAP_LOOKUP)
    if nested:
        a.jeq(0, 0, "exit")
        a.ldx(4, 1, 0, 0)
        a.jeq(1, 0, "exit")
        _count(a, dropped, slot + 1, -60, "body")
    else:
        a.stx(8, 10, _GUARD, 0)
        a.jeq(0, 0, "body")
        a.st(4, 0, 0, 1)
    a.label("body")
    a.mov(1, 6)


def _count(a: _Asm, counters: int, slot: int, key_at: int, then: str) -> None:
    """Add 1 to ``slot`` of the ``counters`` array (its key on the stack at ``key_at``), then
    go on at ``then`` (clobbers r0-r5)."""
    a.st(4, 10, key_at, slot)
    a.ld_map(1, counters)
    a.mov(2, 10)
    a.addi(2, key_at)
    a.call(_F_MAP_LOOKUP)
    a.jeq(0, 0, then)
    a.movi(1, 1)
    a.atomic_add64(0, 0, 1)


def _epilogue(a: _Asm, nested: bool) -> None:
    """The end of every path: the outer program's flag down, then exit 0."""
    a.label("out")
    if not nested:
        a.ldx(8, 1, 10, _GUARD)
        a.jeq(1, 0, "exit")
        a.st(4, 1, 0, 0)
    a.label("exit")
    a.movi(0, 0)
    a.exit()


def _state_program(lay: _Layout, scope: tuple[int, int] | None, maps: tuple[int, int, int, int], nested: bool) -> bytes:
    """inet_sock_set_state(sk, oldstate, newstate): remember processes, report a TCP_CLOSE."""
    socks, ring, dropped, _running = maps
    a = _Asm()
    _prologue(a, maps, _STATE_SLOT, nested)
    ev = -64 - lay.event_size  # the event on the stack, below 48 bytes of scratch and the guard
    a.ldx(8, 7, 1, 0)
    a.ldx(8, 8, 1, 8)
    a.ldx(8, 9, 1, 16)
    a.mov32(8, 8)
    a.mov32(9, 9)
    for state in (_CLOSE, _SYN_SENT, _FIN_WAIT1, _LAST_ACK):
        a.jeq(9, state, "wanted")
    a.ja("out")
    a.label("wanted")
    _filter(a, lay, scope, "out")
    a.jeq(9, _CLOSE, "close")
    _remember_process(a, socks)
    a.label("close")
    a.jeq(8, 10, "out")  # a listener closing: no connection
    for off in range(0, _HEADER, 8):
        a.st(8, 10, ev + off, 0)
    a.stx(1, 10, ev + 40, 8)
    for offset, length, place in lay.spans:
        a.probe_read(ev + place, length, 7, offset)
    # the socket's cgroup id (the filter left the cgroup's address at fp-32)
    if scope is None:
        a.probe_read(-32, 8, 7, lay.cgroup)
    a.ldx(8, 6, 10, -32)
    a.jeq(6, 0, "no_cgroup")
    a.probe_read(-16, 8, 6, lay.cgroup_kn)
    a.ldx(8, 6, 10, -16)
    a.jeq(6, 0, "no_cgroup")
    a.probe_read(ev + 32, 8, 6, lay.kn_id)
    a.label("no_cgroup")
    # the process remembered for it
    a.stx(8, 10, -8, 7)
    a.ld_map(1, socks)
    a.mov(2, 10)
    a.addi(2, -8)
    a.call(_F_MAP_LOOKUP)
    a.jeq(0, 0, "unknown_process")
    for off in (0, 8, 16):
        a.ldx(8, 1, 0, off)
        a.stx(8, 10, ev + 8 + off, 1)
    a.ld_map(1, socks)
    a.mov(2, 10)
    a.addi(2, -8)
    a.call(_F_MAP_DELETE)
    a.label("unknown_process")
    # nobody remembered and no error: closed (aborted) by the process running now
    a.ldx(4, 1, 10, ev + 8)
    a.jne(1, 0, "emit")
    a.ldx(4, 1, 10, ev + lay.where["err"][0])
    a.jne(1, 0, "emit")
    a.jeq(8, _ESTABLISHED, "current")
    a.jeq(8, _CLOSE_WAIT, "current")
    a.jeq(8, _SYN_SENT, "current")
    a.ja("emit")
    a.label("current")
    a.call(_F_PID_TGID)
    a.rshi(0, 32)
    a.stx(4, 10, ev + 8, 0)
    a.mov(1, 10)
    a.addi(1, ev + 16)
    a.movi(2, 16)
    a.call(_F_COMM)
    a.label("emit")
    a.call(_F_JIFFIES64)
    a.stx(8, 10, ev, 0)
    a.ld_map(1, ring)
    a.mov(2, 10)
    a.addi(2, ev)
    a.movi(3, lay.event_size)
    a.movi(4, _RB_NO_WAKEUP)  # the reader looks every _POLL_S: no wake-up per death
    a.call(_F_RINGBUF_OUTPUT)
    a.jeq(0, 0, "out")
    _count(a, dropped, 0, -12, "out")  # the ring buffer had no room: dropped
    _epilogue(a, nested)
    return a.assemble()


def _reset_program(lay: _Layout, scope: tuple[int, int] | None, maps: tuple[int, int, int, int], nested: bool) -> bytes:
    """tcp_send_reset(sk, skb, reason): mark a connection whose keepalive gave up."""
    assert lay.keepalive_reason is not None
    socks = maps[0]
    a = _Asm()
    _prologue(a, maps, _RESET_SLOT, nested)
    a.ldx(8, 7, 1, 0)
    a.ldx(8, 2, 1, 16)
    a.mov32(2, 2)
    a.jne(2, lay.keepalive_reason, "out")
    a.jeq(7, 0, "out")
    _filter(a, lay, scope, "out")
    a.stx(8, 10, -8, 7)
    a.ld_map(1, socks)
    a.mov(2, 10)
    a.addi(2, -8)
    a.call(_F_MAP_LOOKUP)
    a.jeq(0, 0, "fresh")
    a.st(4, 0, 4, _FLAG_KEEPALIVE_RESET)
    a.ja("out")
    a.label("fresh")
    for off in (-40, -32, -24):
        a.st(8, 10, off, 0)
    a.st(4, 10, -36, _FLAG_KEEPALIVE_RESET)
    a.ld_map(1, socks)
    a.mov(2, 10)
    a.addi(2, -8)
    a.mov(3, 10)
    a.addi(3, -40)
    a.movi(4, 0)
    a.call(_F_MAP_UPDATE)
    _epilogue(a, nested)
    return a.assemble()


# --- what a death is -----------------------------------------------------------------------


class Death(Record):
    """One TCP connection that ended, and why (immutable).

    ``cause``: one of :data:`CAUSES`; ``pid`` / ``process``: the process that connected,
    closed or aborted it (None where the kernel does not know it: a connection accepted
    before it was closed by the peer or a timer); ``cgroup``: the cgroup v2 directory the
    socket belongs to (or ``cgroup id N`` once that directory is gone); ``local`` /
    ``remote``: ``(host, port)``; ``state``: the TCP state it left for CLOSE; ``idle``:
    seconds since it last sent data or received anything; ``probes``: keepalive (or zero
    window) probes unanswered at the end; ``retransmits``: retransmitted segments over its
    life; ``policy``: the keepalive policy on the socket as a :class:`kaext.Policy` spec
    string (None: no keepalive and no user timeout); ``error``: the errno name the kernel
    gave the connection (``ETIMEDOUT``, ``ECONNRESET``...; None: none).
    """

    __slots__ = (
        "cause",
        "pid",
        "process",
        "cgroup",
        "local",
        "remote",
        "state",
        "idle",
        "probes",
        "retransmits",
        "policy",
        "error",
    )
    _fields = __slots__

    cause: str
    pid: int | None
    process: str | None
    cgroup: str | None
    local: tuple[str, int]
    remote: tuple[str, int]
    state: str
    idle: float
    probes: int
    retransmits: int
    policy: str | None
    error: str | None

    def __init__(
        self,
        cause: str,
        pid: int | None,
        process: str | None,
        cgroup: str | None,
        local: tuple[str, int],
        remote: tuple[str, int],
        state: str,
        idle: float,
        probes: int,
        retransmits: int,
        policy: str | None,
        error: str | None = None,
    ) -> None:
        self._init(cause, pid, process, cgroup, local, remote, state, idle, probes, retransmits, policy, error)

    def as_dict(self) -> dict[str, object]:
        """The object of one ``kaext-watch --json`` line."""
        d = self._asdict()
        d["local"] = list(self.local)
        d["remote"] = list(self.remote)
        return d

    def __str__(self) -> str:
        who = f"{self.process}[{self.pid}]" if self.pid is not None else "-"

        def fmt(address: tuple[str, int]) -> str:
            return f"[{address[0]}]:{address[1]}" if ":" in address[0] else f"{address[0]}:{address[1]}"

        facts = f"state={self.state} idle={self.idle:g}s probes={self.probes} retransmits={self.retransmits}"
        policy = f" policy={self.policy!r}" if self.policy else ""
        error = f" error={self.error}" if self.error else ""
        return f"{self.cause:<18} {who} {fmt(self.local)} -> {fmt(self.remote)} {facts}{policy}{error}"


def _classify(old: int, err: int, flags: int | None, user_timeout: int, probes: int, keepalive: bool) -> str:
    """The cause of a death, from the state it left, its sk_err, the keepalive reset mark (None:
    this kernel's resets carry no reason), its user timeout, the probes out and SO_KEEPALIVE."""
    if old == _LAST_ACK:
        return "peer_fin"  # the peer closed first, then this end
    if old in (_FIN_WAIT1, 5, 11):  # FIN_WAIT1, FIN_WAIT2, CLOSING: this end closed first
        return "local_close"
    if old == _SYN_SENT:
        if err == errno.ETIMEDOUT:
            return "connect_timeout"
        if err == errno.ECONNREFUSED:
            return "connect_refused"
        if err in (0, errno.ECONNABORTED):
            return "local_abort"
        return "unknown"  # an ICMP error (EHOSTUNREACH...): whether the SYNs timed out is not known
    if old in (_ESTABLISHED, _CLOSE_WAIT, 3):
        if err in (errno.ECONNRESET, errno.EPIPE):
            return "peer_rst"
        if err in (0, errno.ECONNABORTED):
            return "local_abort"
        if err == errno.ECONNREFUSED:
            return "unknown"
        # ETIMEDOUT, or the soft error of the last ICMP message (tcp_write_err): a timer gave up
        if flags is not None and flags & _FLAG_KEEPALIVE_RESET:
            return "keepalive_timeout"
        if flags is None and keepalive and probes:  # no reset reason (before Linux 6.10): the probes out
            return "keepalive_timeout"
        if user_timeout:
            return "user_timeout"
        return "retransmit_timeout"
    return "unknown"


def _kernel_hz() -> int:
    """The kernel's tick rate (the unit of the jiffies the programs read)."""
    import gzip

    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            for line in f:
                if line.startswith("CONFIG_HZ="):
                    return int(line.split("=", 1)[1])
    except (OSError, ValueError):
        pass

    def jiffies() -> int:
        with open("/proc/timer_list", encoding="ascii") as f:
            for line in f:
                if line.startswith("jiffies:"):
                    return int(line.split()[1])
        raise OSError(errno.ENOENT, "no jiffies in /proc/timer_list")

    try:
        t0, j0 = time.monotonic(), jiffies()
        time.sleep(0.2)
        rate = (jiffies() - j0) / (time.monotonic() - t0)
        return min((100, 250, 300, 1000), key=lambda hz: abs(hz - rate))
    except OSError:
        return 250


class Watch:
    """The deaths of TCP connections, as they happen: the BPF programs attached while it is open.

    ``Watch(cgroup)`` watches a cgroup v2 directory and its descendants; ``Watch(all=True)`` the
    whole host.  Use as a context manager (or call :meth:`close`); iterate, or call
    :meth:`poll`, for :class:`Death` records.  ``counts``: deaths reported so far, per cause;
    ``dropped``: deaths the kernel could not hand over (a full ring buffer; raise
    ``ring_size``).  ``on_death``: callables called with each :class:`Death` (the metrics
    exporters hook in there).

    Raises PermissionError without the privileges, OSError (ENOSYS) naming what is missing
    on a kernel or install that cannot do it, FileNotFoundError / ValueError for a bad cgroup.
    """

    def __init__(
        self, cgroup: str | os.PathLike[str] | None = None, *, all: bool = False, ring_size: int = 1 << 24
    ) -> None:
        self._fds: list[int] = []
        self.counts: dict[str, int] = dict.fromkeys(CAUSES, 0)
        self.on_death: list[Callable[[Death], None]] = []
        self._dropped_seen = 0
        self._missed_seen = 0
        self._outer: list[tuple[int, int]] = []  # (program, the slot counting its stand-ins)
        if (cgroup is None) == (not all):
            raise ValueError("Watch needs a cgroup or all=True (not both)")
        if not isinstance(ring_size, int) or ring_size < 4096 or ring_size & (ring_size - 1):
            raise ValueError(f"ring_size must be a power of two of at least 4096 bytes, got {ring_size!r}")
        if not _platform.ENFORCE:
            raise OSError(errno.ENOSYS, "kaext.watch needs Linux (BPF)")
        if _backend.IMPLEMENTATION != "c":
            raise OSError(errno.ENOSYS, "kaext.watch needs kaext's C extension (this is the pure-Python install)")
        self.scope: str | None = None
        scope = None
        if cgroup is not None:
            from .enforce import _resolve

            path, rel = _resolve(cgroup)
            self.scope = path
            scope = (len([c for c in rel.split("/") if c]), os.stat(path).st_ino)
        self._cgroup_root = self._cgroup2_root()
        self._cgroup_names: dict[int, str] = {}
        try:
            btf = BTF.vmlinux()
            lay = _Layout(btf)
        except LookupError as exc:
            raise OSError(errno.ENOSYS, f"kaext.watch cannot read this kernel's sockets: {exc}") from None
        self._keepopen = 1 << lay.keepopen_bit
        self._layout = lay
        self._policies: dict[tuple[int, ...], str | None] = {}
        # the event as one struct: the header, then the fields where the spans put them
        layout, place, names = ["=QII16sQB"], 41, []
        for name, (offset, size) in sorted(lay.where.items(), key=lambda item: item[1][0]):
            layout.append(f"{offset - place}x{_FORMATS[size]}")
            place = offset + size
            names.append(name)
        self._event = struct.Struct("".join(layout))
        self._event_names = names
        self._hz = _kernel_hz()
        try:
            self._socks = self._bpf(_backend.bpf_map_new, _MAP_HASH_LRU, 8, _SOCK_VALUE, 65536, "kaext_w_socks")
            self._ring = self._bpf(_backend.bpf_map_new, _MAP_RINGBUF, 0, 0, ring_size, "kaext_w_ring")
            self._dropped = self._bpf(_backend.bpf_map_new, _MAP_ARRAY, 4, 8, 4, "kaext_w_dropped")
            self._running = self._bpf(_backend.bpf_map_new, _MAP_PERCPU_ARRAY, 4, 4, 4, "kaext_w_running")
            maps = (self._socks, self._ring, self._dropped, self._running)
            builders: list[tuple[str, Callable[..., bytes]]] = [("inet_sock_set_state", _state_program)]
            if lay.keepalive_reason is not None:
                builders.append(("tcp_send_reset", _reset_program))
            for slot, (tracepoint, build) in zip((_STATE_SLOT, _RESET_SLOT), builders, strict=False):
                for nested in (False, True):
                    prog = self._load(tracepoint, build(lay, scope, maps, nested))
                    self._bpf(_backend.bpf_raw_tracepoint_open, tracepoint, prog)
                    if not nested:
                        self._outer.append((prog, slot + 1))
            self._reader = _Ring(self._ring, ring_size)
        except BaseException:
            self.close()
            raise

    def _bpf(self, fn: Callable[..., int], *args: object) -> int:
        try:
            fd = fn(*args)
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise PermissionError(exc.errno, f"kaext.watch {_PRIVILEGES} ({exc.strerror})") from None
            if exc.errno == errno.EINVAL and fn is _backend.bpf_map_new and args[0] == _MAP_RINGBUF:
                raise OSError(exc.errno, "this kernel has no BPF ring buffer (Linux 5.8 and later have)") from None
            if fn is _backend.bpf_raw_tracepoint_open:
                raise OSError(exc.errno, f"this kernel has no raw tracepoint {args[0]} ({exc.strerror})") from None
            raise
        self._fds.append(fd)
        return fd

    def _load(self, tracepoint: str, code: bytes) -> int:
        try:
            return self._bpf(_backend.bpf_prog_new, _PROG_RAW_TRACEPOINT, code, "kaext_watch")
        except PermissionError:
            raise
        except OSError as exc:
            log = str(exc.filename or "").splitlines()
            last = "; ".join(log[-2:])
            raise OSError(
                exc.errno,
                f"this kernel refuses kaext.watch's {tracepoint} program: {exc.strerror}"
                + (f" (verifier: {last})" if last else ""),
            ) from None

    @staticmethod
    def _cgroup2_root() -> str | None:
        from .enforce import _mounts

        mounts = _mounts("cgroup2")
        return os.path.realpath(mounts[0]) if mounts else None

    def _cgroup_path(self, cgroup_id: int) -> str | None:
        if not cgroup_id:
            return None
        name = self._cgroup_names.get(cgroup_id)
        if name is None and self._cgroup_root is not None:
            top = self.scope or self._cgroup_root
            for dirpath, _dirs, _files in os.walk(top):
                try:
                    self._cgroup_names[os.stat(dirpath).st_ino] = dirpath
                except OSError:
                    pass
            name = self._cgroup_names.get(cgroup_id)
            if name is None:  # gone (ids are never reused): not looked for again
                name = self._cgroup_names[cgroup_id] = f"cgroup id {cgroup_id}"
        return name

    @property
    def dropped(self) -> int:
        """Deaths the programs could not hand over (the ring buffer was full)."""
        if not self._fds:
            return self._dropped_seen
        value = _backend.bpf_map_lookup(self._dropped, b"\0\0\0\0", 8)
        self._dropped_seen = int.from_bytes(value, sys.byteorder)
        return self._dropped_seen

    def _policy(self, keepalive: bool, idle: int, interval: int, count: int, user_timeout: int) -> str | None:
        """The spec string of a socket's keepalive settings (jiffies, ms), or None: nothing set."""
        key = (keepalive, idle, interval, count, user_timeout)
        spec = self._policies.get(key, False)
        if spec is not False:
            return spec  # type: ignore[return-value]
        spec = None
        if keepalive or user_timeout:
            import warnings

            with warnings.catch_warnings():  # a policy kaext would warn about is still reported as it is
                warnings.simplefilter("ignore")
                ut = user_timeout / 1000 if user_timeout else None
                if keepalive:
                    hz = self._hz
                    p = Policy(idle // hz if idle else None, interval // hz if interval else None, count or None, ut)
                else:
                    p = Policy(user_timeout=ut, keepalive=False)
            spec = str(p)
        if len(self._policies) < 4096:
            self._policies[key] = spec
        return spec

    @property
    def missed(self) -> int:
        """Runs the kernel skipped that nothing stood in for: each may have been a death, or the
        keepalive mark of one.  A program already running on a CPU is skipped when its
        tracepoint fires there again (a softirq interrupting it); its nested copy stands in
        then, unless it was running too.  So: the outer programs' skips (``recursion_misses``)
        less the nested ones' stand-ins.  0 in practice."""
        if not self._fds:
            return self._missed_seen
        total = 0
        for fd, slot in self._outer:
            with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as f:
                for line in f:
                    if line.startswith("recursion_misses:"):
                        total += int(line.split()[1])
            value = _backend.bpf_map_lookup(self._dropped, slot.to_bytes(4, sys.byteorder), 8)
            total -= int.from_bytes(value, sys.byteorder)
        self._missed_seen = max(total, 0)
        return self._missed_seen

    def _death(self, raw: bytes) -> Death:
        now, tgid, flags, comm, cgroup_id, old, *values = self._event.unpack_from(raw)
        fields = dict(zip(self._event_names, values, strict=True))
        family, sport, dport, err = fields["family"], fields["sport"], fields["dport"], fields["err"]
        user_timeout, retrans, probes_out = fields["user_timeout"], fields["total_retrans"], fields["probes_out"]
        sk_flags, ka_time, ka_intvl, ka_probes = (
            fields["flags"],
            fields["keepalive_time"],
            fields["keepalive_intvl"],
            fields["keepalive_probes"],
        )
        lsnd, rcv, lrcv = fields["lsndtime"], fields["rcv_tstamp"], fields["lrcvtime"]
        if family == socket.AF_INET6:
            saddr, daddr = fields["saddr6"], fields["daddr6"]
        else:
            saddr, daddr = fields["saddr"], fields["daddr"]
        if family == socket.AF_INET6:
            local: tuple[str, int] = (socket.inet_ntop(socket.AF_INET6, saddr), socket.ntohs(sport))
            remote: tuple[str, int] = (socket.inet_ntop(socket.AF_INET6, daddr), socket.ntohs(dport))
        else:
            local = (socket.inet_ntop(socket.AF_INET, struct.pack("=I", saddr)), socket.ntohs(sport))
            remote = (socket.inet_ntop(socket.AF_INET, struct.pack("=I", daddr)), socket.ntohs(dport))
        now32 = now & 0xFFFFFFFF
        ages = [(now32 - t) & 0xFFFFFFFF for t in (lsnd, rcv, lrcv) if t]
        idle = round(min(ages) / self._hz, 3) if ages else 0.0
        keepalive = bool(sk_flags & self._keepopen)
        policy = self._policy(keepalive, ka_time, ka_intvl, ka_probes, user_timeout)
        pid = tgid or None
        return Death(
            _classify(
                old,
                err,
                flags if self._layout.keepalive_reason is not None else None,
                user_timeout,
                probes_out,
                keepalive,
            ),
            pid,
            comm.split(b"\0", 1)[0].decode("utf-8", "replace") if pid else None,
            self._cgroup_path(cgroup_id),
            local,
            remote,
            _STATES.get(old, str(old)),
            idle,
            probes_out,
            retrans,
            policy,
            errno.errorcode.get(err) if err else None,
        )

    def poll(self, timeout: float | None = 0) -> list[Death]:
        """The deaths waiting now, after waiting up to ``timeout`` seconds for one (None: forever)."""
        if not self._fds:
            raise ValueError("this Watch is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            deaths = [self._death(raw) for raw in self._reader.read()]
            left = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
            if deaths or left <= 0:
                break
            time.sleep(left)
        for death in deaths:
            self.counts[death.cause] += 1
            for hook in self.on_death:
                hook(death)
        return deaths

    def __iter__(self) -> Iterator[Death]:
        while True:
            yield from self.poll(None)

    def close(self) -> None:
        """Detach the programs and free the maps (idempotent)."""
        if self._fds:
            try:
                self.dropped  # noqa: B018 -- keep the last counts readable after close
                self.missed  # noqa: B018
            except OSError:
                pass
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()
        for fd in reversed(self._fds):
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def summary(self) -> str:
        """One line: deaths per cause (those seen), and the dropped ones."""
        seen = ", ".join(f"{cause}={n}" for cause, n in self.counts.items() if n) or "none"
        return f"{sum(self.counts.values())} deaths ({seen}); {self.dropped} dropped, {self.missed} missed"


class _Ring:
    """The consumer side of a BPF ring buffer (kernel/bpf/ringbuf.c), over mmap."""

    _BUSY, _DISCARD = 1 << 31, 1 << 30

    def __init__(self, fd: int, size: int) -> None:
        import mmap

        page = mmap.PAGESIZE
        self._size = size
        self._page = page
        self._consumer = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._data = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)

    def read(self) -> list[bytes]:
        out = []
        cons = struct.unpack_from("<Q", self._consumer, 0)[0]
        prod = struct.unpack_from("<Q", self._data, 0)[0]
        while cons < prod:
            pos = self._page + (cons & (self._size - 1))
            length = struct.unpack_from("<I", self._data, pos)[0]
            if length & self._BUSY:
                break
            size = length & ~(self._BUSY | self._DISCARD)
            if not length & self._DISCARD:
                out.append(self._data[pos + 8 : pos + 8 + size])
            cons += (size + 8 + 7) & ~7
            struct.pack_into("<Q", self._consumer, 0, cons)
        return out

    def close(self) -> None:
        self._consumer.close()
        self._data.close()


# --- metrics ---------------------------------------------------------------------------------


def _label_values(death: Death, labels: Sequence[str]) -> dict[str, str]:
    values = {
        "cause": death.cause,
        "state": death.state,
        "process": death.process or "",
        "cgroup": death.cgroup or "",
    }
    return {name: values[name] for name in labels}


def _check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    labels = tuple(labels)
    bad = [name for name in labels if name not in LABELS]
    if bad or "cause" not in labels or len(set(labels)) != len(labels):
        raise ValueError(f"labels must name each of {', '.join(LABELS)} at most once, cause included; got {labels!r}")
    return labels


def prometheus_counter(watch: Watch, labels: Sequence[str] = ("cause",), registry: Any = None) -> Any:
    """Count ``watch``'s deaths in a prometheus_client Counter ``kaext_tcp_deaths_total`` (the
    ``metrics`` extra) registered in ``registry`` (default: the global one), and the dropped ones
    in ``kaext_tcp_deaths_dropped_total`` (the program runs the kernel skipped in
    ``kaext_tcp_deaths_missed_total``); returns the deaths counter."""
    from prometheus_client import REGISTRY, Counter
    from prometheus_client.core import CounterMetricFamily

    names = _check_labels(labels)
    reg = REGISTRY if registry is None else registry
    counter = Counter(
        "kaext_tcp_deaths",
        "TCP connections that ended, by cause (kaext.watch)",
        list(names),
        registry=reg,
    )
    for cause in CAUSES:  # every cause present from the start, at 0
        if names == ("cause",):
            counter.labels(cause=cause)

    class _Dropped:
        def collect(self) -> Iterator[Any]:
            family = CounterMetricFamily(
                "kaext_tcp_deaths_dropped", "TCP connection deaths kaext.watch could not report (ring buffer full)"
            )
            family.add_metric([], watch._dropped_seen if not watch._fds else watch.dropped)
            yield family
            missed = CounterMetricFamily(
                "kaext_tcp_deaths_missed",
                "runs of kaext.watch's programs the kernel skipped (each may have been a death)",
            )
            missed.add_metric([], watch._missed_seen if not watch._fds else watch.missed)
            yield missed

    reg.register(_Dropped())
    watch.on_death.append(lambda death: counter.labels(**_label_values(death, names)).inc())
    return counter


def otel_counter(watch: Watch, meter_provider: Any = None, labels: Sequence[str] = ("cause",)) -> Any:
    """Count ``watch``'s deaths in an OpenTelemetry counter ``kaext.tcp.deaths`` (the ``otel``
    extra) of ``meter_provider`` (default: the global one), one attribute per label; returns it."""
    from opentelemetry import metrics

    names = _check_labels(labels)
    meter = (meter_provider or metrics.get_meter_provider()).get_meter("kaext.watch")
    counter = meter.create_counter(
        "kaext.tcp.deaths", unit="{connection}", description="TCP connections that ended, by cause (kaext.watch)"
    )
    watch.on_death.append(lambda death: counter.add(1, _label_values(death, names)))
    return counter


def otlp_export(watch: Watch, endpoint: str, labels: Sequence[str] = ("cause",), interval: float = 10.0) -> Any:
    """Export ``watch``'s deaths counter (:func:`otel_counter`) over OTLP/HTTP to ``endpoint``
    (``http://HOST:4318/v1/metrics``) every ``interval`` seconds, with the OpenTelemetry SDK's own
    exporter (the ``otel`` extra).  Returns the SDK's MeterProvider: its ``shutdown()`` sends
    the last counts and stops."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    if not interval > 0:
        raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint), int(interval * 1000))
    provider = MeterProvider(metric_readers=[reader])
    otel_counter(watch, provider, labels)
    return provider


# --- command line ------------------------------------------------------------------------------


def _parser() -> Parser:
    p = Parser(
        prog=prog_name("kaext-watch", "kaext.watch"),
        description="Report each TCP connection that ends, as it ends, with its cause (Linux, root, BPF).",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--cgroup", metavar="PATH", help="watch this cgroup v2 directory and its descendants")
    scope.add_argument("--all", action="store_true", help="watch every TCP connection of the host")
    p.add_argument("--json", action="store_true", help="one JSON object per death")
    p.add_argument(
        "--listen",
        metavar="[ADDR:]PORT",
        help="serve kaext_tcp_deaths_total on http://ADDR:PORT/metrics (needs prometheus_client: kaext[metrics])",
    )
    p.add_argument(
        "--labels",
        default="cause",
        metavar="L,...",
        help=f"labels of the counter, from {', '.join(LABELS)} (default: cause)",
    )
    p.add_argument(
        "--otlp",
        metavar="URL",
        help="export the counter over OTLP/HTTP to URL, e.g. http://127.0.0.1:4318/v1/metrics (kaext[otel])",
    )
    p.add_argument("--otlp-interval", type=float, default=10.0, metavar="S", help="seconds between exports (10)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    return p


def _listen(spec: str) -> tuple[str, int]:
    host, _, port = spec.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise ValueError(f"--listen {spec!r}: the port must be a number from 0 to 65535")
    return host.strip("[]") or "127.0.0.1", number


def main(argv: Sequence[str] | None = None) -> int:
    """``kaext-watch``: report deaths until SIGINT/SIGTERM (or ``--duration``); returns the exit status
    (0 done, 2 bad arguments or an error, 130 Ctrl-C before watching began)."""
    parser = _parser()
    return run_tool(lambda: parser.prog, lambda: _main(parser, sys.argv[1:] if argv is None else list(argv)))


def _main(parser: Parser, argv: list[str]) -> int:
    args = parser.parse_args(argv)
    prog = parser.prog
    if not args.cgroup and not args.all:
        parser.error("give --cgroup PATH or --all")
    if not args.otlp_interval > 0:
        parser.error(f"--otlp-interval must be a positive number of seconds, got {args.otlp_interval}")
    if args.duration is not None and not args.duration > 0:
        parser.error(f"--duration must be a positive number of seconds, got {args.duration}")
    try:
        labels = _check_labels([name.strip() for name in args.labels.split(",") if name.strip()])
        listen = _listen(args.listen) if args.listen else None
    except ValueError as exc:
        parser.error(str(exc))
    stop: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            watch = Watch(args.cgroup, all=args.all) if args.cgroup else Watch(all=True)
        except (ValueError, TypeError, LookupError) as exc:  # an OSError: the runner's one line
            raise UsageError(str(exc)) from None
        with watch:
            if listen is not None:
                try:
                    from prometheus_client import CollectorRegistry, start_http_server
                except ImportError:
                    raise UsageError("--listen needs prometheus_client (pip install kaext[metrics])") from None
                registry = CollectorRegistry()
                prometheus_counter(watch, labels, registry)
                try:
                    start_http_server(listen[1], listen[0], registry)
                except OSError as exc:
                    raise UsageError(f"--listen {args.listen}: {exc.strerror or exc}") from None
            provider = None
            if args.otlp:
                try:
                    provider = otlp_export(watch, args.otlp, labels, args.otlp_interval)
                except ImportError:
                    raise UsageError("--otlp needs the OpenTelemetry SDK (pip install kaext[otel])") from None
            try:
                return _report(prog, watch, args.json, args.duration, stop)
            finally:
                if provider is not None:
                    provider.shutdown()  # the last counts, sent
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _report(prog: str, watch: Watch, as_json: bool, duration: float | None, stop: list[int]) -> int:
    """Print deaths until a signal arrives or ``duration`` passes, then the summary; the exit status.
    A reader that went away (broken pipe) ends it through the runner, quietly."""
    print(f"{prog}: watching {watch.scope or 'the host'}", file=sys.stderr, flush=True)
    deadline = None if duration is None else time.monotonic() + duration
    while not stop:
        left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
        if left <= 0:
            break
        for death in watch.poll(left):
            print(json.dumps(death.as_dict()) if as_json else str(death), flush=True)
    for death in watch.poll(0):
        print(json.dumps(death.as_dict()) if as_json else str(death), flush=True)
    print(f"{prog}: {watch.summary()}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
