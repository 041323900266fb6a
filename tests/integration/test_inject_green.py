"""kaext.inject with green threads: gevent's and eventlet's monkey-patched socket classes.

Monkey-patching is process-wide, so every case runs in a child interpreter of its own.
The child patches before or after ``inject()`` (``kaext.run`` injects at start-up, before
the program patches), connects and accepts through the patched ``socket`` module, and
prints what the kernel holds for both ends (plain ``getsockopt``); then ``uninject()``
and whether every class is back to the very attributes it had.  The expected values
are tcp(7)'s units for the spec's numbers: seconds for TCP_KEEPIDLE / TCP_KEEPINTVL,
milliseconds for TCP_USER_TIMEOUT.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest
import servers

pytestmark = [pytest.mark.one_implementation, pytest.mark.skipif(sys.platform != "linux", reason="tcp(7) options")]

SPEC = "7s:3s:4 user_timeout=19s"
WANT = [1, 7, 3, 4, 19_000]

_CHILD = """
import json, socket as _stdlib_socket, sys, warnings
warnings.simplefilter("ignore")  # eventlet's deprecation notice
LIB, ORDER, FORCE = sys.argv[1], sys.argv[2], sys.argv[3] == "force"
STDLIB = _stdlib_socket.socket  # the class before any patching
NAMES = ("connect", "connect_ex", "_accept", "accept", "setsockopt")

def patch():
    if LIB == "gevent":
        from gevent import monkey
        monkey.patch_all()
    else:
        import eventlet
        eventlet.monkey_patch()

def own(cls):
    return {n: cls.__dict__.get(n) for n in NAMES}

def options(s):
    t = _stdlib_socket.IPPROTO_TCP
    opts = (_stdlib_socket.TCP_KEEPIDLE, _stdlib_socket.TCP_KEEPINTVL, _stdlib_socket.TCP_KEEPCNT,
            _stdlib_socket.TCP_USER_TIMEOUT)
    return [s.getsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_KEEPALIVE)] + [s.getsockopt(t, o) for o in opts]

import kaext
before = {"stdlib": own(STDLIB)}
if ORDER == "patched-first":
    patch()
    before["green"] = own(_stdlib_socket.socket)
    kaext.inject(SPEC, accepted=True, **({"force": True} if FORCE else {}))
else:
    kaext.inject(SPEC, accepted=True, **({"force": True} if FORCE else {}))
    patch()
import socket
green = socket.socket
assert green is not STDLIB, green
if ORDER != "patched-first":
    before["green"] = None  # wrapped on arrival: what it had is checked after uninject
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
client = socket.create_connection(server.getsockname())
accepted, _ = server.accept()
if FORCE:  # the program's own values after connecting (as redis-py's asyncio client does)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 9)
ex = socket.socket()
err = ex.connect_ex(server.getsockname())
out = {"class": f"{green.__module__}.{green.__qualname__}", "client": options(client),
       "accepted": options(accepted), "connect_ex": [err, options(ex)], "injected": str(kaext.injected())}
kaext.uninject()
out["module_class"] = type(sys.modules["socket"]).__name__
out["stdlib_restored"] = own(STDLIB) == before["stdlib"]
green_now = own(green)
out["green_restored"] = green_now == before["green"] if before["green"] is not None else None
out["green_wrapped_after"] = sorted(n for n, v in green_now.items() if hasattr(v, "__wrapped__"))
after = socket.create_connection(server.getsockname())
out["after_uninject"] = options(after)
fresh = _stdlib_socket.socket()
out["fresh"] = options(fresh)
print(json.dumps(out))
"""


def _child(lib: str, order: str, force: bool) -> dict[str, object]:
    # not imported here: importing eventlet leaves its unpatched copy of socket in sys.modules
    if importlib.util.find_spec(lib) is None:
        servers.missing(f"library {lib!r} is not installed; pip install '.[test]'")
    code = textwrap.dedent(_CHILD).replace("SPEC", repr(SPEC))
    done = subprocess.run(
        [sys.executable, "-c", code, lib, order, "force" if force else "plain"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize("order", ["patched-first", "injected-first"])
@pytest.mark.parametrize("lib", ["gevent", "eventlet"])
def test_green_sockets_get_the_policy_and_uninject_restores(lib: str, order: str) -> None:
    got = _child(lib, order, force=False)
    assert got["injected"] == SPEC
    assert got["client"] == WANT, got
    assert got["accepted"] == WANT, got
    assert got["connect_ex"] == [0, WANT], got
    # uninject: the module, the standard class and the green class as they were
    assert got["module_class"] == "module"
    assert got["stdlib_restored"] is True
    assert got["green_restored"] in (True, None)
    assert got["green_wrapped_after"] == []
    assert got["after_uninject"] == got["fresh"] != WANT


@pytest.mark.parametrize("order", ["patched-first", "injected-first"])
@pytest.mark.parametrize("lib", ["gevent", "eventlet"])
def test_green_sockets_force(lib: str, order: str) -> None:
    """force=True: the program's own setsockopt through the green socket is replaced by the policy's."""
    got = _child(lib, order, force=True)
    assert got["client"] == WANT, got
    assert got["green_wrapped_after"] == []
