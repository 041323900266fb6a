"""A Policy in each framework's native option shape.

Every shape is built from ``kaext.capabilities()``: a knob's ``mechanism`` says
whether this platform sets it with a plain ``setsockopt`` (which a list of
``(level, optname, value)`` tuples or an ``{optname: value}`` dict can carry) or
with something else (an ioctl), and ``option``/``unit`` say which portable name
means the same thing.  No shape ever drops a knob silently: it raises
``ValueError`` (``strict=True``, the default) or warns with ``RuntimeWarning``
and leaves the knob out (``strict=False``).
"""

from __future__ import annotations

import math

try:
    import socket
except ImportError:  # WASI / Emscripten builds: kaext imports, nothing can be set
    from . import _nosocket as socket  # type: ignore[no-redef]
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from . import _backend
from ._backend import Plan
from ._capabilities import Knob, caps
from ._platform import KNOBS
from .constants import PORTABLE


class Policy(Protocol):
    """What a shape needs of a ``kaext.Policy`` (this module sits below it)."""

    keepalive: bool
    idle: float | None
    interval: float | None
    count: int | None
    user_timeout: float | None
    connect_timeout: float | None
    _plan: Plan

    def apply(self, sock: Any) -> None: ...


_APPLY_HINT = "apply the policy to the socket instead: policy.apply(sock) or policy.socket_factory()"


def _is_setsockopt(knob: Knob) -> bool:
    return knob.mechanism.is_setsockopt


def _refuse(shape: str, what: str, strict: bool) -> None:
    message = f"{shape} cannot express {what}"
    if strict:
        raise ValueError(f"{message}; pass strict=False to leave it out with a warning, or {_APPLY_HINT}")
    warnings.warn(f"{message}: left out ({_APPLY_HINT})", RuntimeWarning, stacklevel=4)


def _set_knobs(policy: Policy) -> list[tuple[str, Knob, int]]:
    """(knob name, Knob, value in the OS unit) for every knob the policy sets."""
    plan = policy._plan
    mask = plan.set_mask
    known = caps()
    out = []
    for index, name in enumerate(KNOBS):
        if mask & (1 << index):
            out.append((name, known[name], getattr(plan, name)))
    return out


def _tcp_level_knobs(policy: Policy, shape: str, strict: bool) -> list[tuple[str, Knob, int]]:
    """The knobs as plain TCP-level setsockopt calls; refuse the ones that are not."""
    out = []
    for name, knob, value in _set_knobs(policy):
        if _is_setsockopt(knob):
            out.append((name, knob, value))
        else:
            _refuse(shape, f"{name}: this platform sets it with {knob.mechanism}, not a socket option", strict)
    return out


def socket_options(policy: Policy, base: Iterable[Sequence[Any]], strict: bool) -> list[tuple[Any, ...]]:
    merged: list[tuple[Any, ...]] = []
    for item in base:
        entry = tuple(item)
        if len(entry) != 3:
            raise TypeError(f"base entries must be (level, optname, value) tuples, got {item!r}")
        merged.append(entry)
    own: list[tuple[Any, ...]] = [
        (knob.level, knob.optname, value) for _, knob, value in _tcp_level_knobs(policy, "socket_options()", strict)
    ]
    consts = _backend.CONSTANTS
    # SO_KEEPALIVE last, as Policy.apply does: a refused TCP-level option leaves it untouched.
    own.append((consts["SOL_SOCKET"], consts["SO_KEEPALIVE"], 1 if policy.keepalive else 0))
    keys = {(level, opt) for level, opt, _ in own}
    return [*(e for e in merged if (e[0], e[1]) not in keys), *own]


def tcp_options(policy: Policy, base: Mapping[int, Any] | None, strict: bool) -> dict[int, Any]:
    if not policy.keepalive:
        _refuse(
            "tcp_options()",
            "keepalive=False: the dict holds TCP-level options only, SO_KEEPALIVE is the "
            "library's own switch (redis-py: socket_keepalive=False)",
            strict,
        )
    out = dict(base) if base is not None else {}
    for _, knob, value in _tcp_level_knobs(policy, "tcp_options()", strict):
        out[knob.optname] = value
    user = caps().get("user_timeout")
    if policy.user_timeout is None and user is not None and _is_setsockopt(user) and user.min == 0:
        # No user timeout in the policy: say 0 (the system default) rather than nothing,
        # so that a library's own default stays out (py-amqp: TCP_USER_TIMEOUT=1000 ms
        # unless socket_settings has the option).  A caller's base entry is kept.
        out.setdefault(user.optname, 0)
    return out


def named_options(policy: Policy, base: Mapping[str, Any] | None, strict: bool) -> dict[str, Any]:
    out = dict(base) if base is not None else {}
    if not policy.keepalive:
        _refuse("named_options()", "keepalive=False: a {name: value} dict cannot turn SO_KEEPALIVE off", strict)
    if policy.keepalive and policy.idle is None and policy.interval is None and policy.count is None:
        _refuse(
            "named_options()",
            "keepalive on without idle, interval or count: pika turns SO_KEEPALIVE on only "
            "when a TCP_KEEP* name is present",
            strict,
        )
    for name, knob, value in _tcp_level_knobs(policy, "named_options()", strict):
        if name not in PORTABLE:
            # connect_timeout: pika takes the keepalive options and the user timeout only; it
            # bounds its connect with its own socket_timeout (documented with the shape)
            continue
        portable, unit = PORTABLE[name]
        # Consumers of this shape (pika) look the name up in the socket module.
        if unit != knob.unit or getattr(socket, portable, None) != knob.optname:
            _refuse(
                "named_options()",
                f"{name}: this platform sets it with {knob.option} ({knob.unit}), which Python's "
                f"socket module does not offer as {portable} ({unit})",
                strict,
            )
            continue
        out[portable] = value
    return out


def libpq_params(policy: Policy, strict: bool) -> dict[str, int]:
    out = {"keepalives": 1 if policy.keepalive else 0}
    if policy.idle is not None:
        out["keepalives_idle"] = math.ceil(policy.idle)
    if policy.interval is not None:
        out["keepalives_interval"] = math.ceil(policy.interval)
    if policy.count is not None:
        out["keepalives_count"] = policy.count
    if policy.connect_timeout is not None:
        # libpq's own wall-clock bound on each connection attempt, whole seconds, at least 2
        # (libpq: "the minimum allowed timeout is 2 seconds"): rounded down, never past the policy's
        out["connect_timeout"] = max(2, math.floor(policy.connect_timeout))
    if policy.user_timeout is not None:
        knob = caps()["user_timeout"]
        if knob.option == "TCP_USER_TIMEOUT":
            out["tcp_user_timeout"] = math.ceil(policy.user_timeout * 1000)
        else:
            _refuse(
                "libpq_params()",
                f"user_timeout: libpq's tcp_user_timeout sets TCP_USER_TIMEOUT only, this platform uses {knob.option}",
                strict,
            )
    return out


AddrInfo = Sequence[Any]


def socket_factory(policy: Policy) -> Callable[[AddrInfo], socket.socket]:
    def factory(addr_info: AddrInfo) -> socket.socket:
        sock = socket.socket(addr_info[0], addr_info[1], addr_info[2])
        try:
            policy.apply(sock)
        except BaseException:
            sock.close()
            raise
        return sock

    factory.__doc__ = f"A new socket for ``(family, type, proto, ...)``, configured with {policy!r}."
    factory.__qualname__ = factory.__name__ = "kaext_socket_factory"
    return factory
