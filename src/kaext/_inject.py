"""Process-wide keepalive: a policy on every TCP socket connected through Python's socket layer.

``inject(policy)`` replaces ``socket.socket.connect`` and ``connect_ex`` (and,
with ``accepted=True``, ``socket.socket._accept``, which ``accept()`` calls) by
thin wrappers that call the original and then ``policy.apply(sock)``, as
truststore's ``inject_into_ssl()`` does for SSL contexts.  ``uninject()`` puts
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
"""

from __future__ import annotations

import _thread

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

_lock = _thread.allocate_lock()  # patching and unpatching
#: name -> (the attribute in socket.socket.__dict__ before we patched, or _MISSING;
#: the wrapper we installed)
_patched: dict[str, tuple[object, object]] = {}
_MISSING = object()

_reported: set[tuple[str, int | None, str]] = set()
_report_lock = _thread.allocate_lock()

# Filled by _setup() on the first inject(): socket is imported then, not with kaext.
_is_tcp: Callable[[Any], bool] | None = None
_EINPROGRESS_ETC: frozenset[int] = frozenset()


def _setup() -> None:
    global _is_tcp, _EINPROGRESS_ETC
    import errno
    import socket

    c_socket = socket.socket.__mro__[1]  # _socket.socket: its attributes are plain ints
    family = c_socket.__dict__["family"].__get__
    kind = c_socket.__dict__["type"].__get__
    proto = c_socket.__dict__["proto"].__get__
    inet = frozenset(f for f in (socket.AF_INET, getattr(socket, "AF_INET6", None)) if f is not None)
    # socket.type may carry SOCK_NONBLOCK / SOCK_CLOEXEC where they exist
    flags = getattr(socket, "SOCK_NONBLOCK", 0) | getattr(socket, "SOCK_CLOEXEC", 0)
    stream = socket.SOCK_STREAM
    tcp_protos = frozenset((0, socket.IPPROTO_TCP))

    def is_tcp(sock: Any) -> bool:
        return kind(sock) & ~flags == stream and family(sock) in inet and proto(sock) in tcp_protos

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
    import logging

    logging.getLogger("kaext").warning(
        "kaext.inject: policy %s not applied to a socket, which goes on without it: %s: %s "
        "(reported once per distinct failure)",
        policy,
        type(exc).__name__,
        exc,
    )


def _refused(sock: Any, policy: Policy, exc: Exception) -> None:
    """``policy.apply(sock)`` raised: silent for a socket that is not TCP, else reported."""
    try:
        tcp = _is_tcp(sock)  # type: ignore[misc]  # set before any wrapper is installed
    except Exception:
        tcp = False  # closed meanwhile, or not a socket at all
    if tcp:
        _report(exc, policy)


def _apply(sock: Any) -> None:
    # Never raises.  No TCP check first: ``apply`` refuses a socket that is not TCP
    # with its first system call, before anything changed (see Policy.apply), so
    # the check runs only then, and a TCP connect pays for nothing but the policy.
    policy = _policy  # read once: the old or the new policy, never a mix
    if policy is not None:
        try:
            policy.apply(sock)
        except Exception as exc:
            _refused(sock, policy, exc)


def _wrap_connect(original: Callable[..., None]) -> Callable[..., None]:
    def connect(self: Any, address: Any) -> None:
        try:
            original(self, address)
        except (BlockingIOError, InterruptedError):
            # a non-blocking connect in progress (asyncio, trio): the kernel goes on
            # with the handshake, and setsockopt works on the connecting socket
            _apply(self)
            raise
        policy = _policy  # _apply inlined: this is every connect's path
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
        err = original(self, address)
        if err in _EINPROGRESS_ETC:
            _apply(self)
        return err

    connect_ex.__doc__ = original.__doc__
    connect_ex.__wrapped__ = original  # type: ignore[attr-defined]
    return connect_ex


def _wrap_accept(original: Callable[..., tuple[int, Any]]) -> Callable[..., tuple[int, Any]]:
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


_WRAPPERS: dict[str, Callable[[Any], Any]] = {
    "connect": _wrap_connect,
    "connect_ex": _wrap_connect_ex,
    "_accept": _wrap_accept,
}


def _patch(cls: Any, name: str) -> None:
    if name in _patched:
        return
    own = cls.__dict__.get(name, _MISSING)
    wrapper = _WRAPPERS[name](getattr(cls, name))
    _patched[name] = (own, wrapper)
    setattr(cls, name, wrapper)


def _unpatch(cls: Any, name: str) -> None:
    entry = _patched.pop(name, None)
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


def inject(policy: Policy | str, *, accepted: bool = False) -> None:
    """Apply ``policy`` to every TCP socket this process connects from now on, through Python's socket layer.

    ``policy`` is a :class:`Policy`, a ``Policy.parse`` string
    (``"7s:3s:4 user_timeout=19s"``) or a middlebox name from
    ``kaext.presets.MIDDLEBOXES`` (``"aws-nlb"``).  Wraps ``socket.socket.connect``
    and ``connect_ex``, so ``socket.create_connection``, http.client, urllib3,
    requests, httpx, redis-py, the openai SDK, asyncio's selector event loop
    (non-blocking connects included), trio and anyio.  ``accepted=True`` also
    covers sockets returned by ``accept()`` (asyncio and trio servers included).
    Only IPv4 / IPv6 stream sockets are touched; UDP and AF_UNIX are not.

    The policy is applied right after ``connect()`` returns (or raises
    BlockingIOError for a non-blocking connect in progress), with ``Policy.apply``:
    Linux TCP_KEEPIDLE / TCP_KEEPINTVL (s), TCP_KEEPCNT, TCP_USER_TIMEOUT (ms),
    then SO_KEEPALIVE; the other platforms' options as ``Policy.apply`` documents.

    A connect error propagates exactly as without kaext (the same exception
    object).  A policy the kernel refuses on one socket leaves that connection
    working and is logged once per distinct failure and ``inject()`` call (logger
    ``"kaext"``, level WARNING).  A second call replaces the policy and the
    ``accepted`` choice.  Thread-safe: concurrent connects see the old or the new
    policy, never a mix.

    Not covered: event loops written in C (uvloop), the Windows proactor event
    loop, native libraries with their own sockets (libpq, grpc), and sockets
    connected before this call; ``python -m kaext.run`` covers native code on Linux.

    Raises TypeError / ValueError for a bad ``policy`` (nothing is patched then).
    """
    global _policy, _accept_policy
    resolved = as_policy(policy)
    if not isinstance(accepted, bool):
        raise TypeError(f"accepted must be True or False, got {accepted!r}")
    import socket

    with _lock:
        if _is_tcp is None:
            _setup()
        # the policy first, then the wrappers: a wrapper never sees a missing policy
        _policy = resolved
        _accept_policy = resolved if accepted else None
        with _report_lock:
            _reported.clear()  # a new policy: its failures are news
        _patch(socket.socket, "connect")
        _patch(socket.socket, "connect_ex")
        if accepted:
            _patch(socket.socket, "_accept")
        else:
            _unpatch(socket.socket, "_accept")


def uninject() -> None:
    """Undo :func:`inject`: ``socket.socket``'s methods are the very same objects as before it."""
    global _policy, _accept_policy
    with _lock:
        _policy = None
        _accept_policy = None
        if not _patched:
            return
        import socket

        for name in list(_patched):
            _unpatch(socket.socket, name)


def injected() -> Policy | None:
    """The policy :func:`inject` put in place, or None."""
    return _policy
