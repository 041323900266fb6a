"""Connection.apply and ``kaext-inspect --apply`` change exactly the socket that was listed.

A target process holds a SO_REUSEPORT listener; after it was listed, another listener on the
same address takes its descriptor number (the old identity check -- family and addresses --
could not tell them apart).  Expected values come from the target's own getsockopt (read
back through a pipe) and its own fstat, never from kaext.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import pytest

import kaext
from kaext import Connection, _connections, _platform, inspect

pytestmark = pytest.mark.skipif(_platform.CONNECTIONS != "proc", reason="Linux /proc and pidfd_getfd")

#: Holds a SO_REUSEPORT listener; on stdin: "swap" (a new listener on the same address takes
#: the number by dup2), "close" (the number closed), "read" (its own getsockopt).
TARGET = r"""
import json, os, socket, sys
TCP = socket.IPPROTO_TCP
def listener(port, idle):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    s.setsockopt(TCP, socket.TCP_KEEPIDLE, idle)
    return s
first = listener(0, 41)
fd = first.fileno()
port = first.getsockname()[1]
def say(value):
    print(json.dumps(value), flush=True)
def state():
    st = os.fstat(fd)
    return {"inode": st.st_ino, "port": first.getsockname()[1],
            "read": [first.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                     *(first.getsockopt(TCP, o) for o in (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL,
                                                          socket.TCP_KEEPCNT, socket.TCP_USER_TIMEOUT))]}
say({"fd": fd, **state()})
keep = []
for line in sys.stdin:
    command = line.strip()
    if command == "swap":
        second = listener(port, 52)
        os.dup2(second.fileno(), fd)  # fd now holds the second listener; the first is closed
        second.close()
        say(state())
    elif command == "close":
        os.close(fd)
        say({})
    elif command == "read":
        say(state())
"""


class Target:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.info: dict[str, Any] = self._reply()
        self.fd: int = self.info["fd"]

    def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the target exited with {self.proc.poll()}"
        return json.loads(line)  # type: ignore[no-any-return]

    def command(self, text: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self._reply()


@contextmanager
def target() -> Iterator[Target]:
    proc = subprocess.Popen(
        [sys.executable, "-c", TARGET], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/"
    )
    try:
        yield Target(proc)
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.fixture(autouse=True)
def reader(backend: ModuleType) -> ModuleType:
    """Rows listed through both backends (the apply itself uses the one ``import kaext`` chose)."""
    return backend


def listed(pid: int, fd: int, reader: ModuleType) -> Connection:
    (row,) = [r for r in _connections._list_connections(pid, reader) if r.fd == fd]
    return row


#: "7s:3s:4 user_timeout=19s" as Linux stores it: SO_KEEPALIVE 1, TCP_KEEPIDLE 7 s,
#: TCP_KEEPINTVL 3 s, TCP_KEEPCNT 4, TCP_USER_TIMEOUT 19000 ms
SPEC = "7s:3s:4 user_timeout=19s"
SPEC_RAW = [1, 7, 3, 4, 19000]


@pytest.mark.parametrize("how", ["spec", "policy", "middlebox"])
def test_apply_changes_the_listed_socket(reader: ModuleType, how: str) -> None:
    with target() as t:
        row = listed(t.pid, t.fd, reader)
        assert row.inode == t.info["inode"]  # the target's own fstat
        if how == "spec":
            row.apply(SPEC)
            expected = SPEC_RAW
        elif how == "policy":
            row.apply(kaext.Policy(idle=7, interval=3, count=4, user_timeout=19))
            expected = SPEC_RAW
        else:
            row.apply("aws-nlb")
            policy = kaext.Policy.for_middlebox("aws-nlb")
            expected = [
                1,
                int(policy.idle or 0),
                int(policy.interval or 0),
                policy.count or 0,
                int(round((policy.user_timeout or 0) * 1000)),
            ]
        assert t.command("read")["read"] == expected


def test_a_replaced_socket_is_estale_and_left_alone(reader: ModuleType) -> None:
    """The listed number now holds another listener on the same address: ESTALE, and the
    target reads that listener's options unchanged (the old check applied to it)."""
    with target() as t:
        row = listed(t.pid, t.fd, reader)
        swapped = t.command("swap")
        assert swapped["inode"] != row.inode and swapped["port"] == row.local[1]
        with pytest.raises(OSError) as info:
            row.apply(SPEC)
        assert info.value.errno == errno.ESTALE
        assert f"fd {t.fd}" in str(info.value) and str(row.inode) in str(info.value)
        assert t.command("read") == swapped  # unchanged: idle still 52, as the target set it
        assert swapped["read"][1] == 52
        fresh = listed(t.pid, t.fd, reader)  # listed again: the new socket, which apply reaches
        assert fresh.inode == swapped["inode"]
        fresh.apply(SPEC)
        assert t.command("read")["read"] == SPEC_RAW


def test_a_closed_descriptor_or_a_gone_process_is_ebadf(reader: ModuleType) -> None:
    with target() as t:
        row = listed(t.pid, t.fd, reader)
        t.command("close")
        with pytest.raises(OSError) as info:
            row.apply(SPEC)
        assert info.value.errno == errno.EBADF and "closed" in str(info.value)
    with target() as t:
        row = listed(t.pid, t.fd, reader)
    with pytest.raises(OSError) as info:  # the target has exited (and been waited for)
        row.apply(SPEC)
    assert info.value.errno == errno.EBADF


def test_this_process_replaced_closed_and_applied(reader: ModuleType) -> None:
    slot = os.open(os.devnull, os.O_RDONLY)  # below the listeners: the row of the first is listed under it
    with socket.create_server(("127.0.0.1", 0)) as first, socket.create_server(("127.0.0.1", 0)) as second:
        second.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 52)
        os.dup2(first.fileno(), slot)
        try:
            row = listed(os.getpid(), slot, reader)
            assert row.inode == os.fstat(first.fileno()).st_ino
            os.dup2(second.fileno(), slot)
            with pytest.raises(OSError) as info:
                row.apply(SPEC)
            assert info.value.errno == errno.ESTALE
            assert second.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 52
            listed(os.getpid(), first.fileno(), reader).apply(SPEC)
            assert first.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
        finally:
            os.close(slot)
        with pytest.raises(OSError) as info:  # the number closed
            row.apply(SPEC)
        assert info.value.errno == errno.EBADF


def test_bad_policy_or_a_hand_made_row_changes_nothing(reader: ModuleType) -> None:
    with target() as t:
        row = listed(t.pid, t.fd, reader)
        before = t.command("read")
        with pytest.raises(TypeError, match="policy must be a kaext.Policy or a str, got int 7"):
            row.apply(7)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"invalid keepalive spec 'no-such-middlebox'"):
            row.apply("no-such-middlebox")
        with pytest.raises(ValueError, match=r"(?s)Connection\(pid=.*state='LISTEN'"):
            row._replace(inode=0).apply(SPEC)
        assert t.command("read") == before


def test_inspect_apply_counts_a_replaced_socket(
    reader: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``kaext-inspect PID --apply``: the socket listed, then replaced before the apply (the
    listing is the one made before the swap): not applied, named and counted."""
    with target() as t:
        before = _connections._collect([t.pid], reader)
        swapped = t.command("swap")
        calls = []
        real = inspect._collect

        def collect(pids: list[int]) -> Any:
            calls.append(pids)
            return before if len(calls) == 1 else real(pids)  # then the real read-back

        monkeypatch.setattr(inspect, "_collect", collect)
        code = inspect.main([str(t.pid), "--apply", SPEC])
        out, err = capsys.readouterr()
        assert t.command("read") == swapped  # left alone
    assert code == 1
    assert f"fd {t.fd}: replaced since it was listed, not applied" in err
    assert "(1 socket replaced since listed, not applied)" in out
