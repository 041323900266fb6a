"""Running Python as a plain user (uid 65534, no capabilities), and under ``kaext testing --``.

Root only (``setpriv``, Debian package util-linux).  What cannot run here skips, or fails where
``KAEXT_REQUIRE_NETNS=1`` (the project's CI).

Inside a user namespace uid 65534 must be able to run the interpreter itself.  Where it cannot
(an interpreter under a directory only root may enter, such as pyenv's under ``/root``), the
system's interpreter of the same version stands in for it, with the test interpreter's
site-packages on ``PYTHONPATH``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import site
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


def _run(argv: list[str], extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, cwd="/", env={**_base_env(), **(extra or {})}, timeout=60
    )


def clean_env() -> dict[str, str]:
    """This environment without proxies (the tests talk to loopback) and pytest's own variables."""
    skip = ("PYTEST_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
    return {k: v for k, v in os.environ.items() if not k.startswith(skip)}


def _base_env() -> dict[str, str]:
    return {**clean_env(), "HOME": "/tmp", "USER": "nobody", "LOGNAME": "nobody"}


@functools.cache
def _inside() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...], str]:
    """(the interpreter to run inside the namespace, extra environment, why not: "" when it works)."""
    user = as_user()
    namespace = [*user, sys.executable, "-m", "kaext.testing", "--"]
    # the clients the scenarios use, where this interpreter has them (the installed-wheel runs do not)
    libraries = [name for name in ("redis", "requests") if importlib.util.find_spec(name) is not None]
    check = ["-c", "import " + ", ".join(["kaext.testing", *libraries])]
    outside = _run([*user, sys.executable, *check])
    if outside.returncode != 0:
        return (), (), f"uid {USER} cannot run {sys.executable}: {outside.stderr.strip()[-300:]}"
    ns = _run([*namespace, "/bin/sh", "-c", "exit 0"])
    if ns.returncode != 0:
        return (), (), f"kaext testing cannot make a user and network namespace here: {ns.stderr.strip()}"
    if _run([*namespace, sys.executable, *check]).returncode == 0:
        return (sys.executable,), (), ""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    path = os.pathsep.join(site.getsitepackages())
    for exe in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if os.path.exists(exe) and _run([*namespace, exe, *check], {"PYTHONPATH": path}).returncode == 0:
            return (exe,), (("PYTHONPATH", path),), ""
    return (), (), f"uid {USER} cannot run {sys.executable} inside a user namespace"


def python(namespace: bool) -> list[str]:
    """The command that runs this Python as uid 65534: in a new user and network namespace
    (``python -m kaext.testing -- PYTHON``), or plainly (``namespace=False``)."""
    if not namespace:
        return [*as_user(), sys.executable]
    exe, _, why = _inside()
    if why:
        missing(why)
    return [*as_user(), sys.executable, "-m", "kaext.testing", "--", *exe]


def env() -> dict[str, str]:
    """The environment for uid 65534: its own home and name, no proxies, no pytest variables."""
    out = _base_env()
    out.update(dict(_inside()[1]))
    return out
