"""Separate processes holding TCP sockets, for the kaext.connections / kaext.inspect tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

CHILD = Path(__file__).parent / "inspect_child.py"
#: An unprivileged user and another one, as numbers (they need not exist in /etc/passwd).
TARGET_UID = 65533
OTHER_UID = 65534


class Child:
    """A running ``inspect_child.py``: its pid, its sockets, and its own reading of them."""

    def __init__(self, proc: subprocess.Popen[str], info: dict[str, Any]) -> None:
        self.proc = proc
        self.info = info
        self.pid: int = info["pid"]

    def sock(self, name: str) -> dict[str, Any]:
        """``{"fd", "inode", "local", "remote"}`` of ``listener``, ``client`` or ``server``."""
        return self.info[name]  # type: ignore[no-any-return]

    def read(self) -> dict[str, list[int]]:
        """The child's own getsockopt of each socket: [SO_KEEPALIVE, idle, interval, count, user_timeout ms]."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("read\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())  # type: ignore[no-any-return]


@contextmanager
def child(
    family: str = "ipv4",
    *,
    listener: Sequence[int] | None = None,
    client: Sequence[int] | None = None,
    server: Sequence[int] | None = None,
    user: int | None = None,
    netns: str | None = None,
) -> Iterator[Child]:
    """A process holding a listener and both ends of one connection, each set with plain
    setsockopt to ``[keepalive, idle, interval, count, user_timeout_ms]`` (None: untouched);
    run as ``user``, or inside network namespace ``netns`` (``ip netns exec``)."""
    config = {"family": family, "listener": listener, "client": client, "server": server}
    python = sys.executable if user is None else python_for(user)
    assert python is not None
    prefix = ["ip", "netns", "exec", netns] if netns else []
    as_user: dict[str, Any] = {}
    if user is not None and netns:  # entering the namespace takes root: the user from there on
        prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    elif user is not None:
        as_user = {"user": user, "group": user, "extra_groups": []}
    proc = subprocess.Popen(
        # the program as text: the user it runs as may not be able to read this tree
        [*prefix, python, "-c", CHILD.read_text(encoding="utf-8"), json.dumps(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
        **as_user,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"the child exited with {proc.wait()}"
        yield Child(proc, json.loads(line))
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@cache
def python_for(user: int) -> str | None:
    """A Python interpreter that ``user`` may run (ours may live in root's home), or None."""
    if os.geteuid() != 0:
        return None
    for candidate in dict.fromkeys([sys.executable, getattr(sys, "_base_executable", ""), "/usr/bin/python3"]):
        if not candidate:
            continue
        try:
            done = subprocess.run(
                [candidate, "-c", "pass"],
                user=user,
                group=user,
                extra_groups=[],
                cwd="/",
                capture_output=True,
                check=False,
            )
        except OSError:  # not executable by that user
            continue
        if done.returncode == 0:
            return candidate
    return None


def cli_env(implementation: str) -> dict[str, str]:
    """The environment for ``python -m kaext.inspect`` using the implementation under test."""
    env = dict(os.environ)
    env.pop("KAEXT_NO_EXTENSIONS", None)
    if implementation == "python":
        env["KAEXT_NO_EXTENSIONS"] = "1"
    return env


def run_cli(implementation: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m kaext.inspect ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "kaext.inspect", *args],
        env=cli_env(implementation),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


#: Runs the inspector after dropping to other credentials; argv[1]: JSON [ruid, euid, args].
AS_USER = """
import codecs, contextlib, ctypes, io, json, os, sys
import kaext.inspect
codecs.lookup("ascii")  # /proc/<pid>/net/tcp is read as ASCII: its codec, while the stdlib is readable
# a dry run as root loads every module (our interpreter may live where the user cannot read)
with contextlib.redirect_stderr(io.StringIO()):
    kaext.inspect.main(["--bogus"])
ruid, euid, args = json.loads(sys.argv[1])
os.setgroups([])
os.setresgid(ruid, euid, euid)
os.setresuid(ruid, euid, euid)
sys.exit(kaext.inspect.main(args))
"""


def run_cli_as(implementation: str, ruid: int, euid: int, *args: str) -> subprocess.CompletedProcess[str]:
    """The inspector with real user id ``ruid`` and effective (and file system) user id ``euid``."""
    return subprocess.run(
        [sys.executable, "-c", AS_USER, json.dumps([ruid, euid, list(args)])],
        env=cli_env(implementation),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )
