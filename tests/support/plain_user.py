"""Running a command as a plain user (uid 65534, no capabilities), and under ``kaext testing --``.

Root only (``setpriv``, Debian package util-linux).  What cannot run here skips, or fails where
``KAEXT_REQUIRE_NETNS=1`` (the project's CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

USER = 65534  # nobody


def missing(reason: str) -> None:
    """Skip with ``reason``; fail where KAEXT_REQUIRE_NETNS=1."""
    if os.environ.get("KAEXT_REQUIRE_NETNS") == "1":
        pytest.fail(f"cannot run, but KAEXT_REQUIRE_NETNS=1: {reason}")
    pytest.skip(reason)


def as_user() -> list[str]:
    """The command prefix that runs a program as uid 65534 with no capabilities."""
    if os.geteuid() != 0:
        missing("running a command as another user needs root")
    if shutil.which("setpriv") is None:
        missing("no setpriv (Debian package util-linux)")
    return ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups", "--"]


def in_namespace() -> list[str]:
    """As uid 65534, in a new user and network namespace: ``setpriv ... python -m kaext.testing --``."""
    return [*as_user(), sys.executable, "-m", "kaext.testing", "--"]


def env() -> dict[str, str]:
    """This environment for the plain user: its own home and name, no proxies, no pytest variables."""
    skip = ("PYTEST_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
    out = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    out.update(HOME="/tmp", USER="nobody", LOGNAME="nobody")
    return out


def check_python_runs() -> None:
    """uid 65534 can start this Python inside a user namespace (the interpreter, venv and checkout readable)."""
    proc = subprocess.run(
        [*in_namespace(), sys.executable, "-c", "import kaext.testing, redis, requests"],
        capture_output=True,
        text=True,
        cwd="/",
        env=env(),
        timeout=60,
    )
    if proc.returncode != 0:
        missing(f"uid {USER} cannot run {sys.executable} in a user namespace: {proc.stderr.strip()[-300:]}")
