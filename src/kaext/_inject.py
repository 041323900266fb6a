"""Process-wide keepalive: a policy on every TCP socket connected through Python's socket layer.

``inject(policy)`` replaces ``socket.socket.connect`` and ``connect_ex`` (and,
with ``accepted=True``, ``socket.socket._accept``, which ``accept()`` calls) by
thin wrappers that call ``policy.apply(sock)`` and then the original -- before the
SYN, so that the policy's ``connect_timeout`` (and user timeout) bound the handshake
too; where ``apply`` refuses the unconnected socket it is applied after the connect,
as before --, as truststore's ``inject_into_ssl()`` does for SSL contexts.  ``uninject()`` puts
the very same function objects back.

What goes through these methods: ``socket.create_connection``, http.client,
urllib3, requests, httpx / httpcore, redis-py, the openai SDK, asyncio's
selector event loop (the default on Linux and macOS; a non-blocking connect
gets the policy while the handshake is still in progress), trio and anyio.
What does not: event loops written in C (uvloop connects inside libuv), the
Windows proactor event loop (``ConnectEx``), native libraries that make their
own sockets (libpq under psycopg, grpc's core), and sockets connected before
``inject()`` was called.  ``python -m kaext.run`` covers native code on Linux
with a preloaded library.

Green threads: a ``socket.socket`` that gevent or eventlet monkey-patching put in
place, before or after ``inject()``, is wrapped the same way (the socket module's
class is swapped for a subclass that notices ``socket.socket`` being replaced while
a policy is injected).  ``force=True`` also wraps ``setsockopt``, so that the
program's own later values for the knobs the policy sets are replaced by the
policy's.  A forked child starts with fresh locks.
"""

from __future__ import annotations

import _thread
import os

from ._policy import Policy, as_policy

# Nothing heavy at import time: ``import kaext`` imports this module.  socket,
# logging and the middlebox table are imported when first needed.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["inject", "injected", "uninject"]

#: What every wrapper reads, one reference each (a connect sees the old or the new
#: policy, never a mix): the policy for connected sockets, and the one for accepted
#: sockets (None unless ``inject(..., accepted=True)``).
_policy: Policy | None = None
_accept_policy: Policy | None = None
#: With ``inject(..., force=True)``: (level, option) -> the value the policy's plan
#: writes there (the OS unit), which replaces the program's own in setsockopt; else None.
_forced: dict[tuple[int, int], int] | None = None

_lock = _thread.RLock()  # patching and unpatching; fork() waits for it
#: (class, name) -> (the attribute in class.__dict__ before we patched, or _MISSING;
#: the wrapper we installed).  Keyed by the class itself: uninject() puts back what
#: was on each class it patched, whatever socket.socket is by then.
_patched: dict[tuple[type, str], tuple[object, object]] = {}
_MISSING = object()
#: The socket module whose class inject() swapped (see _watch): (module, its class
#: before, the class it was given).
_watched: tuple[Any, type, type] | None = None

_reported: set[tuple[str, int | None, str]] = set()
_report_lock = _thread.allocate_lock()


def _before_fork() -> None:
    # fork() waits until no thread is inside inject() / uninject(): the child gets a
    # whole state, and every module those import is either not yet imported or
    # completely (a thread in the middle of importing one would leave its import lock
    # held for ever in the child).  Re-entrant: a signal handler that forks while its
    # own thread is inside inject() does not wait for itself.
    _lock.acquire()


def _after_fork_in_parent() -> None:
    _lock.release()


def _after_fork_in_child() -> None:
    # The parent's other threads do not exist here: fresh locks, none held.
    global _lock, _report_lock
    _lock = _thread.RLock()
    _report_lock = _thread.allocate_lock()


if hasattr(os, "register_at_fork"):  # not on Windows: no fork there
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)

# Filled by _setup() on the first inject(): socket is imported then, not with kaext.
_is_tcp: Callable[[Any], bool] | None = None
_EINPROGRESS_ETC: frozenset[int] = frozenset()
_logger: Any = None  # logging.getLogger("kaext")


def _setup() -> None:
    # Imports everything the wrappers need, here (under _lock, which fork() waits for),
    # not on a connect.
    global _is_tcp, _EINPROGRESS_ETC, _logger
    import _socket
    import errno
    import logging
    import socket

    _logger = logging.getLogger("kaext")

    # _socket.socket's own attributes are plain ints (socket.socket's are enums); taken
    # from _socket itself, whatever socket.socket is (eventlet's GreenSocket is no subclass)
    c_socket = _socket.socket
    family = c_socket.__dict__["family"].__get__
    kind = c_socket.__dict__["type"].__get__
    proto = c_socket.__dict__["proto"].__get__
    inet = frozenset(f for f in (socket.AF_INET, getattr(socket, "AF_INET6", None)) if f is not None)
    # socket.type may carry SOCK_NONBLOCK / SOCK_CLOEXEC where they exist
    flags = getattr(socket, "SOCK_NONBLOCK", 0) | getattr(socket, "SOCK_CLOEXEC", 0)
    stream = socket.SOCK_STREAM
    tcp_protos = frozenset((0, socket.IPPROTO_TCP))

    def is_tcp(sock: Any) -> bool:
        if isinstance(sock, c_socket):
            return kind(sock) & ~flags == stream and family(sock) in inet and proto(sock) in tcp_protos
        # a green socket (gevent, eventlet) holds a real one and says what it is
        return int(sock.type) & ~flags == stream and sock.family in inet and sock.proto in tcp_protos

    _is_tcp = is_tcp
    codes = ("EINPROGRESS", "EWOULDBLOCK", "EAGAIN", "EINTR", "WSAEWOULDBLOCK")
    _EINPROGRESS_ETC = frozenset([0] + [getattr(errno, c) for c in codes if hasattr(errno, c)])


def _report(exc: BaseException, policy: Policy) -> None:
    """Log a failure to apply the policy, once per distinct failure."""
    # kaext's OSError names the knob and option (never the fd): one report per cause
    detail = (exc.knob, exc.option) if hasattr(exc, "knob") and hasattr(exc, "option") else str(exc)
    key = (type(exc).__name__, getattr(exc, "errno", None), str(detail))
    with _report_lock:
        if key in _reported:
            return
        _reported.add(key)
    _logger.warning(
        "kaext.inject: policy %s not applied to a socket, which goes on without it: %s: %s "
        "(reported once per distinct failure)",
        policy,
        type(exc).__name__,
        exc,
    )


def _refused(sock: Any, policy: Policy, exc: Exception) -> None:
    """``policy.apply(sock)`` raised: silent for a socket that is not TCP, else reported.

    Only kaext's own refusals are taken here: an OSError naming the option (the kernel
    said no, or the socket is closed) or a TypeError (not a socket).  Anything else --
    a signal handler's exception raised while ``apply`` ran (a SIGALRM TimeoutError)
    -- is raised again, unchanged, to the caller of connect / accept.
    """
    if not (hasattr(exc, "option") or isinstance(exc, TypeError)):
        raise exc
    try:
        tcp = _is_tcp(sock)  # type: ignore[misc]  # set before any wrapper is installed
    except (AttributeError, TypeError, ValueError):
        tcp = False  # not a socket at all (never an OSError: a signal handler's passes)
    if tcp:
        _report(exc, policy)


def _apply(sock: Any) -> None:
    # Raises only what _refused raises again.  No TCP check first: ``apply`` refuses a
    # socket that is not TCP with its first system call, before anything changed (see
    # Policy.apply), so the check runs only then, and a TCP connect pays for nothing
    # but the policy.
    policy = _policy  # read once: the old or the new policy, never a mix
    if policy is not None:
        try:
            policy.apply(sock)
        except Exception as exc:
            _refused(sock, policy, exc)


def _before(sock: Any) -> bool:
    """The policy on ``sock`` before its connect(), so that its connect timeout (and the user
    timeout) bound the handshake too: True when applied.  False when there is no policy, or
    ``apply`` refused (not a TCP socket, a closed one): the connect then says what it says,
    and the policy is applied after it, as it always was, with the usual report."""
    policy = _policy  # read once: the old or the new policy, never a mix
    if policy is None:
        return False
    try:
        policy.apply(sock)
    except Exception as exc:
        if not (hasattr(exc, "option") or isinstance(exc, TypeError)):
            raise  # a signal handler's exception, not a refusal: the caller's
        return False
    return True


def _wrap_connect(original: Callable[..., None]) -> Callable[..., None]:
    def connect(self: Any, address: Any) -> None:
        if _before(self):
            original(self, address)  # the options are on the socket before its SYN
            return
        try:
            original(self, address)
        except (BlockingIOError, InterruptedError):
            # a non-blocking connect in progress (asyncio, trio), or a blocking one
            # interrupted by a signal: the kernel goes on with the handshake, and
            # setsockopt works on the connecting socket
            _apply(self)
            raise
        policy = _policy  # _apply inlined
        if policy is not None:
            try:
                policy.apply(self)
            except Exception as exc:
                _refused(self, policy, exc)

    connect.__doc__ = original.__doc__
    connect.__wrapped__ = original  # type: ignore[attr-defined]
    return connect


def _wrap_connect_ex(original: Callable[..., int]) -> Callable[..., int]:
    def connect_ex(self: Any, address: Any) -> int:
        if _before(self):
            return original(self, address)
        err = original(self, address)
        if err in _EINPROGRESS_ETC:
            _apply(self)
        return err

    connect_ex.__doc__ = original.__doc__
    connect_ex.__wrapped__ = original  # type: ignore[attr-defined]
    return connect_ex


def _wrap_accept(original: Callable[..., tuple[int, Any]]) -> Callable[..., tuple[int, Any]]:
    # socket.socket._accept (and gevent's): the new descriptor, before accept() wraps it
    def _accept(self: Any) -> tuple[int, Any]:
        fd, addr = original(self)
        policy = _accept_policy
        if policy is not None:
            try:
                policy.apply(fd)
            except Exception as exc:
                _refused(self, policy, exc)  # the listening socket says what fd is
        return fd, addr

    _accept.__doc__ = original.__doc__
    _accept.__wrapped__ = original  # type: ignore[attr-defined]
    return _accept


def _wrap_accept_object(original: Callable[..., tuple[Any, Any]]) -> Callable[..., tuple[Any, Any]]:
    # accept() of a class without _accept (eventlet's GreenSocket): the new socket object
    def accept(self: Any) -> tuple[Any, Any]:
        conn, addr = original(self)
        policy = _accept_policy
        if policy is not None:
            try:
                policy.apply(conn)
            except Exception as exc:
                _refused(conn, policy, exc)
        return conn, addr

    accept.__doc__ = original.__doc__
    accept.__wrapped__ = original  # type: ignore[attr-defined]
    return accept


def _wrap_setsockopt(original: Callable[..., None]) -> Callable[..., None]:
    # force=True: the program's own value for a knob the policy sets is replaced by the
    # policy's (an int value on a TCP socket); the call itself is the program's
    def setsockopt(self: Any, level: Any, optname: Any, value: Any, *optlen: Any) -> None:
        forced = _forced  # read once
        if forced is not None and not optlen and isinstance(level, int) and isinstance(optname, int):
            wins = forced.get((level, optname))
            if wins is not None and isinstance(value, int) and value != wins and _forced_on(self):
                value = wins
        return original(self, level, optname, value, *optlen)

    setsockopt.__doc__ = original.__doc__
    setsockopt.__wrapped__ = original  # type: ignore[attr-defined]
    return setsockopt


def _forced_on(sock: Any) -> bool:
    try:
        return _is_tcp(sock)  # type: ignore[misc]  # set before any wrapper is installed
    except (AttributeError, TypeError, ValueError):
        return False  # not a socket we can tell: the program's value stands


_WRAPPERS: dict[str, Callable[[Any], Any]] = {
    "connect": _wrap_connect,
    "connect_ex": _wrap_connect_ex,
    "_accept": _wrap_accept,
    "accept": _wrap_accept_object,
    "setsockopt": _wrap_setsockopt,
}


def _force_values(policy: Policy) -> dict[tuple[int, int], int]:
    """(level, option) -> value for every socket option the policy's plan writes.

    The option numbers are this platform's (``kaext.constants``, from its headers),
    the values the plan's, in each option's own unit (Linux: TCP_KEEPIDLE and
    TCP_KEEPINTVL seconds, TCP_KEEPCNT probes, TCP_USER_TIMEOUT ms; SO_KEEPALIVE 0/1).
    Knobs set otherwise than by setsockopt (Windows' SIO_KEEPALIVE_VALS) are not in it.
    """
    from . import constants
    from ._platform import KNOBS, MECH_SETSOCKOPT, SPECS

    plan = policy._plan
    values = (plan.idle, plan.interval, plan.count, plan.user_timeout, plan.connect_timeout)
    forced: dict[tuple[int, int], int] = {}
    for k, knob in enumerate(KNOBS):
        spec = SPECS.get(knob)
        if not plan.set_mask & (1 << k) or spec is None or spec.mechanism != MECH_SETSOCKOPT:
            continue
        option = getattr(constants, spec.option, None)
        if option is not None:
            forced[(constants.IPPROTO_TCP, option)] = values[k]
    if plan.keepalive in (0, 1):
        forced[(constants.SOL_SOCKET, constants.SO_KEEPALIVE)] = plan.keepalive
    return forced


def _names(cls: type, accepted: bool, force: bool) -> list[str]:
    """The methods of ``cls`` inject() wraps for these choices."""
    names = ["connect", "connect_ex"]
    if accepted:
        names.append("_accept" if hasattr(cls, "_accept") else "accept")
    if force:
        names.append("setsockopt")
    return names


def _patch(cls: type, name: str) -> None:
    if (cls, name) in _patched or not hasattr(cls, name):
        return
    own = cls.__dict__.get(name, _MISSING)
    wrapper = _WRAPPERS[name](getattr(cls, name))
    _patched[(cls, name)] = (own, wrapper)
    setattr(cls, name, wrapper)


def _unpatch(cls: type, name: str) -> None:
    entry = _patched.pop((cls, name), None)
    if entry is None:
        return
    own, wrapper = entry
    if cls.__dict__.get(name) is not wrapper:
        # someone patched over us: leave theirs; ours passes through once the
        # policy is gone
        return
    if own is _MISSING:
        delattr(cls, name)
    else:
        setattr(cls, name, own)


def _inner_classes() -> set[type]:
    """Socket classes reached only through a green socket, whose setsockopt force=True wraps.

    eventlet's GreenSocket copies its inner socket's bound ``setsockopt`` into each
    instance; that inner socket is of the ``socket`` class of eventlet's own unpatched
    copy of the socket module (``sys.modules["__original_module_socket"]``).  Its
    connect is not wrapped: GreenSocket's is, and calls it.
    """
    import sys

    cls = getattr(sys.modules.get("__original_module_socket"), "socket", None)
    return {cls} if isinstance(cls, type) else set()


def _sync(cls: type, inner: bool = False) -> None:
    """``cls`` wrapped for the current choices (called with _lock held)."""
    if inner:
        wanted = ["setsockopt"] if _forced is not None else []
    else:
        wanted = _names(cls, _accept_policy is not None, _forced is not None)
    for name in _WRAPPERS:
        if name in wanted:
            _patch(cls, name)
        else:
            _unpatch(cls, name)


def _adopt(cls: object) -> None:
    """A new ``socket.socket`` was put in place (gevent, eventlet): wrap it too, while injected."""
    if isinstance(cls, type) and hasattr(cls, "connect"):
        with _lock:
            if _policy is not None:
                _sync(cls)
                for other in _inner_classes():
                    _sync(other, inner=True)


def _watch(module: Any) -> None:
    """Make ``module`` (socket) call _adopt when its ``socket`` attribute is replaced.

    gevent's and eventlet's monkey-patching replace ``socket.socket`` with their own
    class, whose connect never reaches the one inject() wrapped; ``kaext.run`` injects
    before the program patches.  The module's class becomes a subclass of its own that
    notices that assignment; uninject() puts the module's class back.
    """
    global _watched
    if _watched is not None:
        return
    import types

    base = type(module)
    if base is not types.ModuleType:
        return  # someone else's module class: left alone

    class SocketModule(types.ModuleType):
        def __setattr__(self, name: str, value: Any) -> None:
            super().__setattr__(name, value)
            if name == "socket":
                _adopt(value)

    module.__class__ = SocketModule
    _watched = (module, base, SocketModule)


def _unwatch() -> None:
    global _watched
    if _watched is None:
        return
    module, base, ours = _watched
    _watched = None
    if type(module) is ours:  # else someone changed it since: theirs stays
        module.__class__ = base


def inject(policy: Policy | str, *, accepted: bool = False, force: bool = False) -> None:
    """Apply ``policy`` to every TCP socket this process connects from now on, through Python's socket layer.

    ``policy`` is a :class:`Policy`, a ``Policy.parse`` string
    (``"7s:3s:4 user_timeout=19s"``) or a middlebox name from
    ``kaext.presets.MIDDLEBOXES`` (``"aws-nlb"``).  Wraps ``socket.socket.connect``
    and ``connect_ex``, so ``socket.create_connection``, http.client, urllib3,
    requests, httpx, redis-py, the openai SDK, asyncio's selector event loop
    (non-blocking connects included), trio and anyio.  ``accepted=True`` also
    covers sockets returned by ``accept()`` (asyncio and trio servers included).
    Only IPv4 / IPv6 stream sockets are touched; UDP and AF_UNIX are not.
    gevent's and eventlet's socket classes are wrapped too, whether they were
    monkey-patched in before or after this call.

    The policy is applied just before ``connect()`` runs, on the socket that has not
    sent its SYN yet, with ``Policy.apply``: Linux TCP_KEEPIDLE / TCP_KEEPINTVL (s),
    TCP_KEEPCNT, TCP_USER_TIMEOUT (ms), TCP_SYNCNT (the ``connect_timeout``), then
    SO_KEEPALIVE; the other platforms' options as ``Policy.apply`` documents.  So a
    policy's ``connect_timeout`` (and on Linux its user timeout) ends a connect to a
    host that does not answer within it, reconnects included.  Where ``apply`` refuses
    the unconnected socket, it is applied right after ``connect()`` returns (or raises
    BlockingIOError for a non-blocking connect in progress, or InterruptedError).

    ``force=True``: the policy wins over the program's own settings.  Without it, a
    program that sets keepalive itself after connecting (redis-py's asyncio client,
    ``socket_keepalive_options``) overwrites the policy knob by knob.  With it,
    ``socket.socket.setsockopt`` is wrapped too: an int value for an option the policy
    writes (SO_KEEPALIVE, and those of the knobs it sets: Linux TCP_KEEPIDLE,
    TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT, TCP_SYNCNT) on a TCP socket is replaced by the
    policy's value in that option's unit; the call still succeeds.  Options the
    policy leaves alone, and other sockets, keep the program's values.

    A connect error propagates exactly as without kaext (the same exception
    object), and so does an exception a signal handler raises meanwhile.  A policy
    the kernel refuses on one socket leaves that connection working and is logged
    once per distinct failure and ``inject()`` call (logger ``"kaext"``, level
    WARNING).  A second call replaces the policy and the ``accepted`` and ``force``
    choices.  Thread-safe: concurrent connects see the old or the new policy, never
    a mix.  A child made by ``fork()`` can call it, whatever the parent's threads
    were doing then.

    Not covered: event loops written in C (uvloop), the Windows proactor event
    loop, native libraries with their own sockets (libpq, grpc), and sockets
    connected before this call; ``python -m kaext.run`` covers native code on Linux.

    Raises TypeError / ValueError for a bad ``policy`` (nothing is patched then).
    """
    global _policy, _accept_policy, _forced
    if not isinstance(accepted, bool):
        raise TypeError(f"accepted must be True or False, got {accepted!r}")
    if not isinstance(force, bool):
        raise TypeError(f"force must be True or False, got {force!r}")
    with _lock:  # everything here imports under it: see _before_fork
        resolved = as_policy(policy)
        forced = _force_values(resolved) if force else None
        import socket

        if _is_tcp is None:
            _setup()
        # the policy first, then the wrappers: a wrapper never sees a missing policy
        _policy = resolved
        _accept_policy = resolved if accepted else None
        _forced = forced
        with _report_lock:
            _reported.clear()  # a new policy: its failures are news
        inner = _inner_classes()
        for cls in {socket.socket, *(c for c, _ in _patched), *inner}:
            _sync(cls, inner=cls in inner)
        _watch(socket)


def uninject() -> None:
    """Undo :func:`inject`: every class it wrapped holds the very same methods as before it."""
    global _policy, _accept_policy, _forced
    with _lock:
        _policy = None
        _accept_policy = None
        _forced = None
        _unwatch()
        for cls, name in list(_patched):
            _unpatch(cls, name)


def injected() -> Policy | None:
    """The policy :func:`inject` put in place, or None."""
    return _policy
