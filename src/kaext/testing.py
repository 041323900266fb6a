"""``kaext.testing``: make a peer vanish, reset or be forgotten by a NAT, in your own tests.

For example::

    with kaext.testing.Path(("127.0.0.1", server_port)) as path:
        client = connect(*path.address)     # through the path, to the server
        path.vanish()                       # every packet dropped both ways, from now on
        client.call()                       # does it end, and when?

A :class:`Path` stands between clients and a TCP server on this machine: the clients
connect to :attr:`Path.address` (the server's host, a port of the path's own) and the
kernel translates each connection to the server (NAT in the ``output`` hook).
Its methods then change what happens to every packet of every connection through it,
old and new, both ways, at the ``input`` hook: :meth:`~Path.vanish` drops them (no FIN,
no RST, no ICMP: a crashed host, a pulled cable), :meth:`~Path.reset` answers them with
a TCP RST (a rebooted host), :meth:`~Path.forget_idle` drops (or resets) the packets of
a connection that stayed idle too long (a NAT or load balancer that forgot the flow),
:meth:`~Path.heal` lets them through again.  Each path is one nftables table, named
``kaext_<pid>_<n>``, deleted when the path is closed; tables left by a process that died
are deleted when the next path is made.  On a kernel without nftables for IP traffic
(``CONFIG_NF_TABLES_INET`` off) a path is made of iptables chains of the same name
instead (``iptables-legacy``), where every method but :meth:`~Path.forget_idle` works;
``KAEXT_TESTING_FIREWALL=iptables`` (or ``nftables``) chooses one.

It needs Linux, the ``nft`` command (Debian package nftables; or ``iptables-legacy``,
package iptables) and CAP_NET_ADMIN in the caller's network namespace: root, or a plain
user under ``kaext testing -- COMMAND``, which runs COMMAND in a new user and network
namespace (loopback up, nothing else; the namespace and its rules go away with COMMAND's
last process).  :func:`ends_within`
fails a test whose call is still running after a time; the pytest plugin (installed with
``kaext[testing]``) adds the ``kaext_path`` fixture.  See the "Test your own client" page
of the documentation.

``python -m kaext.testing -- COMMAND [ARGS...]`` (``kaext testing``, ``kaext-testing``):
exit status COMMAND's (127: not found, 126: not executable); 2 when the namespace cannot
be made here (one line on stderr saying why).
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import errno
import itertools
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from . import _platform
from ._cli import Parser, UsageError, prog_name, run_tool

__all__ = ["Path", "ends_within", "main", "unavailable_reason"]

#: ``forget_idle``: seconds a connection may stay idle, at least and at most.
IDLE_RANGE = (0.01, 86400.0)
#: The nftables tables (iptables chains) of the paths: ``kaext_<pid>_<n>``.
_TABLE = re.compile(r"^kaext_(\d+)_(\d+)$")
#: Conntrack keeps a path's flows this long, idle, unacknowledged or retransmitting (the
#: kernel defaults forget a connection with unacknowledged data after 300 s).
_KEEP_FLOWS = 7 * 86400
_SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")
_HOW = "run as root, or as a plain user under `kaext testing -- COMMAND` (a new user and network namespace)"

_counter = itertools.count()
_open: weakref.WeakSet[Path] = weakref.WeakSet()


#: Which packet filter a path's rules go to: ``nftables`` or ``iptables``; unset, nftables,
#: and iptables-legacy where the kernel refuses nftables rules for IP traffic.
FIREWALL_VARIABLE = "KAEXT_TESTING_FIREWALL"


def _binary(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        for folder in _SBIN_DIRS:
            candidate = os.path.join(folder, name)
            if os.access(candidate, os.X_OK):
                return candidate
        raise OSError(
            errno.ENOENT, f"kaext.testing needs the {name} command: install {package} (apt-get install {package})"
        )
    return found


def _run(argv: list[str], script: str | None = None, env: dict[str, str] | None = None) -> str:
    """Run one firewall command; OSError with one clear line when it fails."""
    if _platform.FAMILY != "linux":
        raise OSError(errno.ENOSYS, "kaext.testing needs Linux (nftables or iptables, and network namespaces)")
    proc = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=60, env=env)
    if proc.returncode != 0:
        text = proc.stderr.strip()
        if "Operation not permitted" in text or "Permission denied" in text:
            raise OSError(errno.EPERM, f"kaext.testing needs CAP_NET_ADMIN in this network namespace: {_HOW}")
        first = next((line for line in text.splitlines() if "Error:" in line), text.split("\n")[0])
        raise OSError(errno.EINVAL, f"{os.path.basename(argv[0])} failed: {first}")
    return proc.stdout


def _dead(name: str) -> bool:
    """Whether ``name`` (``kaext_<pid>_<n>``) belongs to a process that no longer runs."""
    match = _TABLE.match(name)
    if match is None or int(match.group(1)) == os.getpid():
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass  # alive, someone else's
    return False


class _Nftables:
    """A path as one nftables table (``inet`` family): NAT, conntrack, sets of flows."""

    kind = "nftables"

    def __init__(self, name: str, ip: str, address: tuple[str, int], target_port: int) -> None:
        self.name, self._ip, self._address, self._target_port = name, ip, address, target_port

    @staticmethod
    def _nft(script: str) -> None:
        """Run ``nft -f -`` with ``script`` on stdin (one transaction)."""
        _run([_binary("nft", "nftables"), "-f", "-"], script)

    @staticmethod
    def _list(*what: str) -> list[dict[str, Any]]:
        """``nft -j list WHAT``: the objects listed (``nft -f`` prints no listing)."""
        out = _run([_binary("nft", "nftables"), "-j", "list", *what])
        items: list[dict[str, Any]] = json.loads(out or "{}").get("nftables", [])
        return items

    @classmethod
    def remove_stale(cls) -> None:
        """Delete the path tables of processes that no longer run (killed before they could)."""
        try:
            listing = cls._list("tables", "inet")
        except (OSError, ValueError):
            return
        for item in listing:
            table = item.get("table")
            if table and table.get("family") == "inet" and _dead(table.get("name", "")):
                try:
                    cls._nft(f"delete table inet {table['name']}\n")
                except OSError:
                    pass  # removed by another process meanwhile

    def _match(self) -> str:
        """The packets of this path's connections, both directions: by the flow's original tuple."""
        host, port = self._address
        return f"meta l4proto tcp ct original {self._ip} daddr {host} ct original proto-dst {port}"

    def create(self) -> None:
        host, port = self._address
        to = f"{host}:{self._target_port}" if self._ip == "ip" else f"[{host}]:{self._target_port}"
        keep = f"established: {_KEEP_FLOWS}, unack: {_KEEP_FLOWS}, retrans: {_KEEP_FLOWS}"
        t = self.name
        head = (
            f"table inet {t} {{\n"
            f"  ct timeout keep {{ protocol tcp; l3proto {self._ip}; policy = {{ {keep} }}; }}\n"
            "  set seen { typeof ct id; size 262144; flags dynamic,timeout; timeout 1d; }\n"
            "  set live { typeof ct id; size 262144; flags dynamic,timeout; }\n"
            "  set added { typeof ct id; size 262144; flags dynamic,timeout; timeout 1d; }\n"
            "  chain act { }\n"
        )
        nat = (
            "  chain nat_out { type nat hook output priority -100; "
            f"{self._ip} daddr {host} tcp dport {port} {{timeout}}dnat {self._ip} to {to}; }}\n"
        )
        tail = (
            "  chain in { type filter hook input priority 0; "
            f"{self._match()} jump act; {self._match()} update @seen {{ ct id }}; }}\n"
            "}\n"
        )
        try:
            self._nft(head + nat.replace("{timeout}", 'ct timeout set "keep" ') + tail)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # a kernel without conntrack timeout objects: the system's conntrack timeouts apply
            head = "\n".join(line for line in head.split("\n") if "ct timeout" not in line)
            try:
                self._nft(head + nat.replace("{timeout}", "") + tail)
            except OSError as again:
                if again.errno != errno.EINVAL:
                    raise
                raise OSError(
                    errno.EOPNOTSUPP,
                    "the kernel refused the path's nftables rules (it needs nf_tables with NAT and conntrack): "
                    + str(again.strerror),
                ) from None

    def act(self, rules: Sequence[str], before: str = "") -> None:
        t = self.name
        script = before + f"flush chain inet {t} act\n"
        script += "".join(f"add rule inet {t} act {rule}\n" for rule in rules)
        self._nft(script)

    def vanish(self) -> None:
        self.act(["drop"])

    def reset(self) -> None:
        self.act(["tcp flags rst accept", "reject with tcp reset"])

    def forget_idle(self, ms: int, rst: bool) -> None:
        t = self.name
        known: list[int] = []
        for item in self._list("set", "inet", t, "seen"):
            for element in (item.get("set") or {}).get("elem", []) or []:
                value = element.get("elem", {}).get("val") if isinstance(element, dict) else element
                if isinstance(value, int):
                    known.append(value)
        before = f"flush set inet {t} live\nflush set inet {t} added\n"
        if known:
            ids = ", ".join(f"{i} timeout {ms}ms" for i in known)
            before += f"add element inet {t} live {{ {ids} }}\n"
            before += f"add element inet {t} added {{ {', '.join(map(str, known))} }}\n"
        forgotten = ["tcp flags rst accept", "reject with tcp reset"] if rst else ["drop"]
        self.act(
            [*(f"ct id != @live ct id @added {verdict}" for verdict in forgotten)]
            + [f"update @live {{ ct id timeout {ms}ms }}", "update @added { ct id }"],
            before,
        )

    def heal(self) -> None:
        self.act([], f"flush set inet {self.name} live\nflush set inet {self.name} added\n")

    def delete(self) -> None:
        self._nft(f"delete table inet {self.name}\n")


class _Iptables:
    """A path as iptables chains (``iptables-legacy``, for kernels without nftables for IP):
    a chain of the path's name in the ``nat`` table (its DNAT, jumped to from ``OUTPUT``) and
    one in the ``filter`` table (what happens to the path's packets, from ``INPUT``)."""

    kind = "iptables"
    #: iptables-legacy rewrites a whole table per change: one change at a time in this process
    #: (its lock file, ``-w``, keeps other processes out)
    _serial = threading.Lock()

    def __init__(self, name: str, ip: str, address: tuple[str, int], target_port: int) -> None:
        self.name, self._ip, self._address, self._target_port = name, ip, address, target_port

    @staticmethod
    def _command(ip: str) -> str:
        return _binary("iptables-legacy" if ip == "ip" else "ip6tables-legacy", "iptables")

    @staticmethod
    def _env() -> dict[str, str] | None:
        """The environment of the iptables commands: a plain user under ``kaext testing`` cannot
        open iptables' lock (/run/xtables.lock, root's); there it takes one of its network
        namespace's own in the temporary directory (XTABLES_LOCKFILE)."""
        lock = "/run/xtables.lock"
        if os.access(lock, os.W_OK) or (not os.path.exists(lock) and os.access(os.path.dirname(lock), os.W_OK)):
            return None
        import tempfile

        netns = os.stat("/proc/self/ns/net").st_ino
        return {**os.environ, "XTABLES_LOCKFILE": os.path.join(tempfile.gettempdir(), f"kaext-xtables-{netns}.lock")}

    @classmethod
    def _call(cls, argv: list[str]) -> str:
        with cls._serial:
            return _run(argv, env=cls._env())

    def _x(self, *args: str) -> str:
        return self._call([self._command(self._ip), "-w", *args])

    def _jump(self) -> list[tuple[str, ...]]:
        """The rules that lead to the path's chains: (table, chain, match...)."""
        host, port = self._address
        prefix = "128" if self._ip == "ip6" else "32"
        return [
            ("nat", "OUTPUT", "-p", "tcp", "-d", f"{host}/{prefix}", "--dport", str(port), "-j", self.name),
            ("filter", "INPUT", "-p", "tcp", "-m", "conntrack", "--ctorigdst", host,
             "--ctorigdstport", str(port), "-j", self.name),
        ]  # fmt: skip

    @classmethod
    def remove_stale(cls) -> None:
        for ip in ("ip", "ip6"):
            try:
                command = cls._command(ip)
            except OSError:
                continue
            for table, chain in (("nat", "OUTPUT"), ("filter", "INPUT")):
                try:
                    rules = cls._call([command, "-w", "-t", table, "-S"]).splitlines()
                except OSError:
                    continue
                names = {line.split()[1] for line in rules if line.startswith("-N ")}
                for name in filter(_dead, names):
                    for line in rules:
                        words = line.split()
                        if words[:2] == ["-A", chain] and words[-2:] == ["-j", name]:
                            cls._quiet([command, "-w", "-t", table, "-D", *words[1:]])
                    cls._quiet([command, "-w", "-t", table, "-F", name])
                    cls._quiet([command, "-w", "-t", table, "-X", name])

    def create(self) -> None:
        host, _ = self._address
        to = f"{host}:{self._target_port}" if self._ip == "ip" else f"[{host}]:{self._target_port}"
        made: list[tuple[str, ...]] = []
        try:
            for table in ("nat", "filter"):
                self._x("-t", table, "-N", self.name)
                made.append((table,))
            self._x("-t", "nat", "-A", self.name, "-p", "tcp", "-j", "DNAT", "--to-destination", to)
            for table, chain, *match in self._jump():
                self._x("-t", table, "-I", chain, "1", *match)
                made.append((table, chain, *match))
        except OSError:
            self._undo(made)
            raise

    def _undo(self, made: list[tuple[str, ...]]) -> None:
        command = self._command(self._ip)
        for table, *rule in reversed(made):
            if rule:
                self._quiet([command, "-w", "-t", table, "-D", *rule])
            else:
                self._quiet([command, "-w", "-t", table, "-F", self.name])
                self._quiet([command, "-w", "-t", table, "-X", self.name])

    def _act(self, *rules: tuple[str, ...]) -> None:
        self._x("-t", "filter", "-F", self.name)
        for rule in rules:
            self._x("-t", "filter", "-A", self.name, *rule)

    def vanish(self) -> None:
        self._act(("-j", "DROP"))

    def reset(self) -> None:
        self._act(
            ("-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "ACCEPT"),
            ("-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"),
        )

    def forget_idle(self, ms: int, rst: bool) -> None:
        raise OSError(
            errno.EOPNOTSUPP,
            "forget_idle needs nftables (its per-connection idle timers are nftables sets); this path is made "
            "of iptables chains (a kernel without nftables for IP traffic, or KAEXT_TESTING_FIREWALL=iptables)",
        )

    def heal(self) -> None:
        self._act()

    @classmethod
    def _quiet(cls, argv: list[str]) -> None:
        try:
            cls._call(argv)
        except OSError:
            pass  # gone already

    def delete(self) -> None:
        self._undo([("nat",), ("filter",), *((t, c, *m) for t, c, *m in self._jump())])


def _remove_stale() -> None:
    """Delete the rules of paths whose process no longer runs (killed before it could)."""
    _Nftables.remove_stale()
    _Iptables.remove_stale()


def unavailable_reason() -> str | None:
    """Why a :class:`Path` cannot be made here (one line saying what to do), or None when it can.

    It makes and removes a real path's rules: the answer is the kernel's.
    """
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        try:
            Path(server.getsockname()).close()
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _resolve(target: object) -> tuple[socket.AddressFamily, str, int]:
    if not isinstance(target, tuple) or len(target) < 2:
        raise TypeError(f"target must be a (host, port) tuple, not {target!r}")
    host, port = target[0], target[1]
    if not isinstance(host, str):
        raise TypeError(f"target host must be a str, not {type(host).__name__}")
    if not isinstance(port, int) or isinstance(port, bool):
        raise TypeError(f"target port must be an int, not {type(port).__name__}")
    if not 1 <= port <= 65535:
        raise ValueError(f"target port={port} is out of range (1 .. 65535)")
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            return family, str(sockaddr[0]), port
    raise OSError(errno.EAFNOSUPPORT, f"target host {host!r} has no IPv4 or IPv6 address")


def _firewalls() -> list[type[_Nftables] | type[_Iptables]]:
    """The packet filters to try, in order (``KAEXT_TESTING_FIREWALL``)."""
    chosen = os.environ.get(FIREWALL_VARIABLE, "")
    if chosen == "nftables":
        return [_Nftables]
    if chosen == "iptables":
        return [_Iptables]
    if chosen:
        raise ValueError(f"{FIREWALL_VARIABLE}={chosen!r} is not a firewall kaext.testing knows (nftables, iptables)")
    return [_Nftables, _Iptables]


class Path:
    """A path to the TCP server at ``target`` ((host, port) on this machine) that can fail on demand.

    Clients connect to :attr:`address` instead of ``target``.  A context manager: leaving
    it (also on an exception or Ctrl-C) removes the path's rules, as :meth:`close` does.
    Usable from any thread; several paths at once, to one server or many.

    Raises OSError (with its errno and one line saying what to do) where the path cannot be
    made: not Linux, no ``nft`` command, no CAP_NET_ADMIN in this network namespace.
    :attr:`firewall` says which packet filter holds its rules: ``"nftables"``, or
    ``"iptables"`` where the kernel has no nftables for IP traffic (every method but
    :meth:`forget_idle` works there).
    """

    target: tuple[str, int]
    address: tuple[str, int]
    firewall: str

    def __init__(self, target: tuple[str, int]) -> None:
        family, host, port = _resolve(target)
        self.target = (host, port)
        self._lock = threading.Lock()
        self._closed = False
        self._rules: _Nftables | _Iptables | None = None
        firewalls = _firewalls()
        # The path's port: bound (so no other socket takes it), never listening.
        self._reserved = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._reserved.bind((host, 0))
            self.address = (host, int(self._reserved.getsockname()[1]))
            _remove_stale()
            name = f"kaext_{os.getpid()}_{next(_counter)}"
            ip = "ip" if family == socket.AF_INET else "ip6"
            failed: list[OSError] = []
            for kind in firewalls:
                rules = kind(name, ip, self.address, port)
                try:
                    rules.create()
                except OSError as exc:
                    if exc.errno == errno.EPERM:  # no CAP_NET_ADMIN: the answer, whichever filter
                        raise
                    failed.append(exc)  # nftables without IP support, or without its command: the next
                    continue
                self._rules = rules
                self.firewall = rules.kind
                break
            else:
                if len(failed) == 1:
                    raise failed[0]
                raise OSError(failed[0].errno, "; ".join(str(e.strerror) for e in failed))
        except BaseException:
            self._reserved.close()
            raise
        _open.add(self)

    def _act(self, what: str, *args: Any) -> None:
        with self._lock:
            if self._closed or self._rules is None:
                raise ValueError("the path is closed")
            getattr(self._rules, what)(*args)

    def vanish(self) -> None:
        """From now on every packet of every connection through the path is dropped, both ways.

        No FIN, no RST, no ICMP reaches either end; new connects get no answer (their SYNs are
        dropped too).  A peer that crashed, a cable pulled, a host behind a dead link.
        """
        self._act("vanish")

    def reset(self) -> None:
        """Each connection through the path gets a TCP RST at its next packet, either way; new connects are refused.

        A peer that rebooted (it answers what it no longer knows with an RST).  A connection
        that sends nothing gets its RST when it next sends (a request, a keepalive probe).
        """
        self._act("reset")

    def forget_idle(self, seconds: float, *, rst: bool = False) -> None:
        """From now on the path forgets a connection idle for ``seconds``, like a NAT or load balancer.

        A connection through which no packet went for ``seconds`` (counted from this call for
        connections already idle) is forgotten: its later packets are dropped, or with
        ``rst=True`` answered by a TCP RST.  Packets keep a connection remembered (keepalive
        probes included); new connects work.  ``seconds``: 0.01 .. 86400.  Needs nftables
        (:attr:`firewall` ``"nftables"``): OSError EOPNOTSUPP on an iptables path.
        """
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
            raise TypeError(f"seconds must be a number, not {type(seconds).__name__}")
        low, high = IDLE_RANGE
        if not low <= seconds <= high:
            raise ValueError(f"seconds={seconds} is out of range ({low:g} .. {high:g})")
        if not isinstance(rst, bool):
            raise TypeError(f"rst must be a bool, not {type(rst).__name__}")
        self._act("forget_idle", max(10, round(seconds * 1000)), rst)

    def heal(self) -> None:
        """Back to normal: every packet goes through again (a connection the path forgot included,
        as long as neither end gave up on it)."""
        self._act("heal")

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Remove the path's rules and free its port.

        A connection made through the path does not outlive it: its packets are no longer
        translated (close it first; its next packet may meet an RST or nothing).  Safe to call
        twice, from any thread.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self._rules is not None:
                self._rules.delete()
        finally:
            self._reserved.close()
            _open.discard(self)

    def __enter__(self) -> Path:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed or self._rules is None:
            state = "closed"
        elif self._rules.kind == "nftables":
            state = f"nftables table inet {self._rules.name}"
        else:
            state = f"iptables chains {self._rules.name}"
        return f"<kaext.testing.Path {self.address} -> {self.target}, {state}>"


@atexit.register
def _close_all() -> None:
    for path in list(_open):
        try:
            path.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------
# ends_within
# --------------------------------------------------------------------------------------


def _fail(message: str) -> BaseException:
    pytest = sys.modules.get("pytest")
    if pytest is not None:
        try:
            pytest.fail(message, pytrace=False)
        except BaseException as exc:  # pytest's Failed (an OutcomeException)
            return exc
    return AssertionError(message)


@contextmanager
def ends_within(seconds: float) -> Iterator[None]:
    """Fail the test when the block is still running after ``seconds``.

    In the main thread the block is interrupted then (``SIGALRM`` through ``setitimer``): a
    blocking call such as ``recv`` is cut short and the test fails (pytest's failure, else
    AssertionError) instead of hanging the run.  An exception the block raises in time goes
    through unchanged.  In another thread no signal can interrupt the block: the test fails
    when the block ends late, but a call that never ends still hangs there (run such calls
    in the main thread, or give them a timeout of their own).  In asyncio code, interrupt
    with ``asyncio.timeout`` / ``asyncio.wait_for`` instead.
    """
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        raise TypeError(f"seconds must be a number, not {type(seconds).__name__}")
    if not seconds > 0:
        raise ValueError(f"seconds={seconds} must be > 0")
    message = f"still running after {seconds:g} s (kaext.testing.ends_within)"
    start = time.monotonic()
    main = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    if not main:
        yield
        if time.monotonic() - start > seconds:
            raise _fail(f"ended after {time.monotonic() - start:.2f} s, later than {seconds:g} s")
        return
    fired = []

    def alarm(signum: int, frame: object) -> None:
        fired.append(True)
        raise _fail(message)

    previous = signal.signal(signal.SIGALRM, alarm)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if old_delay:  # an outer timer: re-armed with what is left of it
            left = old_delay - (time.monotonic() - start)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), old_interval)
    if fired or time.monotonic() - start > seconds:
        raise _fail(message)


# --------------------------------------------------------------------------------------
# kaext testing -- COMMAND: a user and network namespace
# --------------------------------------------------------------------------------------

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def _unshare(flags: int) -> None:
    unshare = getattr(os, "unshare", None)
    if unshare is not None:  # Python 3.12+
        unshare(flags)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(ctypes.c_int(flags)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _loopback_up() -> None:
    import fcntl  # POSIX only: kaext.testing imports everywhere, and says ENOSYS off Linux

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def enter_namespace() -> None:
    """Move this (single-threaded) process into a new network namespace with loopback up.

    A plain user gets a new user namespace too, in which it is root (uid and gid mapped to
    its own), so that it holds CAP_NET_ADMIN there; root keeps its user namespace.  Raises
    OSError with one line saying why when the kernel refuses.
    """
    if _platform.FAMILY != "linux":
        raise OSError(errno.ENOSYS, "network namespaces are Linux-only")
    uid, gid = os.geteuid(), os.getegid()
    flags = _CLONE_NEWNET if uid == 0 else _CLONE_NEWUSER | _CLONE_NEWNET
    try:
        _unshare(flags)
    except OSError as exc:
        what = "a network namespace" if uid == 0 else "a user and network namespace"
        raise OSError(
            exc.errno,
            f"cannot create {what} ({exc.strerror}): the kernel does not allow it here "
            "(unprivileged user namespaces disabled by user.max_user_namespaces, "
            "kernel.unprivileged_userns_clone or AppArmor, or a seccomp filter): run as root instead",
        ) from None
    try:
        if uid != 0:
            try:
                _write("/proc/self/setgroups", "deny")
            except FileNotFoundError:
                pass
            _write("/proc/self/uid_map", f"0 {uid} 1\n")
            _write("/proc/self/gid_map", f"0 {gid} 1\n")
        _loopback_up()
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"the new namespace cannot be set up ({exc.strerror}): the kernel restricts user namespaces here "
            "(AppArmor's kernel.apparmor_restrict_unprivileged_userns, a seccomp filter): run as root instead",
        ) from None


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=prog_name("kaext-testing", "kaext.testing"),
        usage="%(prog)s -- COMMAND [ARGS...]",
        description="Run COMMAND in a new network namespace (and, for a plain user, a new user namespace "
        "in which it is root) with loopback up, where kaext.testing.Path works without root: servers and "
        "clients COMMAND starts on 127.0.0.1 or ::1 reach each other, nothing else is reachable. "
        "Exit status: COMMAND's (127: not found, 126: not executable, 2: the namespace cannot be made here).",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND", help="the program and its arguments")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run COMMAND in a new user and network namespace (``kaext testing -- COMMAND``); its exit status.

    COMMAND replaces this process (exec): signals reach it directly and its exit status is
    the command's.
    """
    parser = _parser()
    return run_tool(lambda: parser.prog, lambda: _main(parser, sys.argv[1:] if argv is None else [*argv]))


def _main(parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    args = parser.parse_args(argv)
    command: list[str] = args.command
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        parser.error(f"no COMMAND given ({parser.prog} -- COMMAND [ARGS...])")
    if threading.active_count() > 1:
        raise UsageError("cannot enter a namespace from a process with threads")
    enter_namespace()  # an OSError: one line, exit 2 (the runner)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        sys.stderr.write(f"{parser.prog}: {command[0]}: command not found\n")
        return 127
    except OSError as exc:
        sys.stderr.write(f"{parser.prog}: {command[0]}: {exc.strerror or exc}\n")
        return 126
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
