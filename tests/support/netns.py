"""Two hosts on one machine: Linux network namespaces joined by a veth pair.

A :class:`Lab` is two network namespaces, ``client`` (192.0.2.1) and ``server``
(192.0.2.2), joined by a veth pair on 192.0.2.0/24 (TEST-NET-1).  Nothing is
routed out of them.  Names are unique per lab (process id + counter) and
:meth:`Lab.close` removes every socket, link and namespace the lab made, so a
failing test leaves nothing behind.

Sockets are made *inside* a namespace by a tiny child process (``ip netns exec
NS python``) that hands the file descriptor back over a Unix socket
(SCM_RIGHTS).  A socket belongs for life to the namespace it was created in:
every segment it sends or receives goes through that namespace's TCP/IP stack
and the veth pair, whichever process makes the system calls.  So the test
process holds both ends of a real two-host connection and configures them
through the kaext API of the implementation under test.

Both ends get static (permanent) neighbour entries: no ARP ever runs, so when a
peer disappears the only thing that can end a connection is TCP's own timers
(an ARP failure would report EHOSTUNREACH as the connection's soft error, as it
does for a dead peer on the same LAN; a dead peer behind a router looks like
this lab).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

SUBNET_PREFIX = 24
CLIENT_ADDRESS = "192.0.2.1"
SERVER_ADDRESS = "192.0.2.2"
CLIENT_MAC = "02:00:c0:00:02:01"  # locally administered
SERVER_MAC = "02:00:c0:00:02:02"

_counter = itertools.count()

# Runs inside a namespace: make one TCP socket there and pass it to the parent.
_MAKE_SOCKET = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
    "socket.send_fds(socket.socket(fileno=int(sys.argv[1])), [b's'], [s.fileno()])\n"
)


class LabError(RuntimeError):
    """An ``ip`` command failed."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; raise :class:`LabError` with its stderr when it fails and ``check``."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def unavailable_reason() -> str | None:
    """Why two-namespace labs cannot run here, or None when they can (a real lab is built and removed)."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux-only (this is {sys.platform})"
    if os.geteuid() != 0:
        return "needs root to create network namespaces and veth pairs"
    if shutil.which("ip") is None:
        return "the `ip` command (Debian package iproute2) is not installed"
    try:
        lab = Lab()
    except (LabError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot build a two-namespace lab here: {exc}"
    try:
        lab.socket(lab.client).close()
    except (LabError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot create a socket inside a network namespace (ip netns exec): {exc}"
    finally:
        lab.close()
    return None


@dataclass
class Host:
    """One end of the lab: a namespace, its veth device, address and MAC."""

    netns: str
    dev: str
    address: str
    mac: str

    def operstate(self) -> str:
        out = ip("-n", self.netns, "-j", "link", "show", "dev", self.dev).stdout
        return str(json.loads(out)[0].get("operstate", "UNKNOWN"))


def socket_in(ns: str) -> socket.socket:
    """A fresh IPv4 TCP socket that lives in network namespace ``ns``: made by a child in
    it and passed back over a Unix socket (the caller closes it)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with parent, child:
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-I", "-S", "-c", _MAKE_SOCKET, str(child.fileno())],
            pass_fds=(child.fileno(),),
            capture_output=True,
            text=True,
            timeout=30,
        )
        if proc.returncode != 0:
            raise LabError(f"making a socket in {ns} failed: {proc.stderr.strip()}")
        parent.settimeout(5)
        _, fds, _, _ = socket.recv_fds(parent, 1, 1)
    if len(fds) != 1:
        raise LabError(f"no socket came back from {ns}")
    return socket.socket(fileno=fds[0])


@dataclass
class Lab:
    """Two hosts joined by a veth pair; every resource it creates is removed by :meth:`close`."""

    client: Host = field(init=False)
    server: Host = field(init=False)
    _namespaces: list[str] = field(default_factory=list, init=False)
    _sockets: list[socket.socket] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        tag = f"ka{os.getpid()}x{next(_counter)}"  # <= 2 + 7 + 1 + 3 chars; devices add one more
        self.client = Host(f"kaext-{tag}-c", f"{tag}c", CLIENT_ADDRESS, CLIENT_MAC)
        self.server = Host(f"kaext-{tag}-s", f"{tag}s", SERVER_ADDRESS, SERVER_MAC)
        try:
            for host in (self.client, self.server):
                self._add_netns(host.netns)
            ip(
                "link",
                "add",
                self.client.dev,
                "address",
                self.client.mac,
                "netns",
                self.client.netns,
                "type",
                "veth",
                "peer",
                "name",
                self.server.dev,
                "address",
                self.server.mac,
                "netns",
                self.server.netns,
            )
            for host in (self.client, self.server):
                self._configure(host, self.peer_of(host))
            self._wait_operstate(self.client, "UP")
            self._wait_operstate(self.server, "UP")
        except BaseException:
            self.close()
            raise

    # -- building ------------------------------------------------------------------------

    def _add_netns(self, name: str) -> None:
        ip("netns", "add", name)
        self._namespaces.append(name)

    def _configure(self, host: Host, peer: Host) -> None:
        ip("-n", host.netns, "addr", "add", f"{host.address}/{SUBNET_PREFIX}", "dev", host.dev)
        ip("-n", host.netns, "link", "set", "dev", host.dev, "up")
        ip("-n", host.netns, "neigh", "replace", peer.address, "lladdr", peer.mac, "dev", host.dev, "nud", "permanent")

    def peer_of(self, host: Host) -> Host:
        return self.server if host is self.client else self.client

    def _wait_operstate(self, host: Host, *want: str, timeout: float = 10.0) -> None:
        # The kernel applies a carrier change (operstate and the device's queueing
        # discipline) asynchronously; wait for it so no segment meets a half-changed link.
        deadline = time.monotonic() + timeout
        while (state := host.operstate()) not in want:
            if time.monotonic() > deadline:
                raise LabError(f"{host.dev} in {host.netns} stayed {state}, expected {' or '.join(want)}")
            time.sleep(0.01)

    # -- sockets -------------------------------------------------------------------------

    def socket(self, host: Host) -> socket.socket:
        """A fresh IPv4 TCP socket that lives in ``host``'s namespace (closed by :meth:`close`)."""
        sock = socket_in(host.netns)
        self._sockets.append(sock)
        return sock

    def listener(self) -> socket.socket:
        """A listening socket on the server host (any port)."""
        sock = self.socket(self.server)
        sock.bind((self.server.address, 0))
        sock.listen(8)
        return sock

    def connect(self, listener: socket.socket) -> tuple[socket.socket, socket.socket]:
        """Connect a new client-host socket to ``listener``; return (client side, server side)."""
        client = self.socket(self.client)
        client.settimeout(10)
        client.connect(listener.getsockname())
        client.settimeout(None)
        listener.settimeout(10)
        server, _ = listener.accept()
        server.settimeout(None)
        self._sockets.append(server)
        return client, server

    # -- making a peer disappear -----------------------------------------------------------

    def link_down(self, host: Host) -> None:
        """``host`` crashes: its veth end goes down; the other end loses carrier, drops what it sends."""
        ip("-n", host.netns, "link", "set", "dev", host.dev, "down")
        self._wait_operstate(self.peer_of(host), "DOWN", "LOWERLAYERDOWN")

    # -- cleaning up ----------------------------------------------------------------------

    def close(self) -> None:
        """Close every socket (with an RST, no lingering), delete the veth pair and the namespaces."""
        linger_off = (1).to_bytes(4, sys.byteorder) + (0).to_bytes(4, sys.byteorder)
        for sock in self._sockets:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_off)
            except OSError:
                pass
            sock.close()
        self._sockets.clear()
        errors = []
        for name in reversed(self._namespaces):
            # Deleting a namespace name does not free it while a socket still refers to
            # it; delete the devices explicitly so nothing is left in use.
            for host in (getattr(self, "client", None), getattr(self, "server", None)):
                if host is not None and host.netns == name:
                    ip("-n", name, "link", "del", "dev", host.dev, check=False)
            proc = ip("netns", "del", name, check=False)
            if proc.returncode != 0 and "No such file" not in proc.stderr:
                errors.append(proc.stderr.strip())
        self._namespaces.clear()
        if errors:
            raise LabError("; ".join(errors))


def namespace_unavailable() -> str | None:
    """Why a bare network namespace cannot be made here (not root, no ``ip``), or None."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux-only (this is {sys.platform})"
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    if shutil.which("ip") is None:
        return "the `ip` command (Debian package iproute2) is not installed"
    return None


class Namespace:
    """One network namespace with its loopback up, under a unique name; a context manager
    that deletes it on leaving (also on failure)."""

    def __init__(self) -> None:
        self.name = f"kaext-ns{os.getpid()}x{next(_counter)}"
        ip("netns", "add", self.name)
        try:
            ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        ip("netns", "del", self.name, check=False)

    def __enter__(self) -> str:
        return self.name

    def __exit__(self, *exc: object) -> None:
        self.close()


_CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def own_namespace() -> Iterator[None]:
    """The calling thread in a fresh, anonymous network namespace (loopback up) for the block, and
    back in its own after it (also on failure).  Root.  Sockets, ``nft`` rules and child processes
    made within belong to that namespace; it goes away with the last socket in it."""
    libc = ctypes.CDLL(None, use_errno=True)
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(_CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"unshare(CLONE_NEWNET): {os.strerror(code)}")
        try:
            ip("link", "set", "lo", "up")
            yield
        finally:
            if libc.setns(saved, _CLONE_NEWNET) != 0:
                code = ctypes.get_errno()
                raise OSError(code, f"setns back to the test's own network namespace: {os.strerror(code)}")
    finally:
        os.close(saved)
