"""Ready integrations: requests, httpx and asyncio connections that carry a keepalive policy.

Nothing here is imported by ``import kaext``; requests and httpx are imported only
when you use their integration, and neither is a dependency of kaext.

``policy`` is everywhere a ``kaext.Policy`` or a string: a middlebox name from
``kaext.presets.MIDDLEBOXES`` (``"aws-nlb"``: ``Policy.for_middlebox``) or a
``Policy.parse`` spec (``"5m:30s:4 user_timeout=7m"``); see :func:`as_policy`.

* :class:`KeepaliveAdapter` -- a ``requests.adapters.HTTPAdapter`` whose direct and
  proxied connections (HTTP forwarding, CONNECT tunnels; SOCKS untested) carry the policy, merged
  with urllib3's default socket options (``TCP_NODELAY``).
* :func:`httpx_client` / :func:`httpx_async_client` -- an ``httpx.Client`` /
  ``httpx.AsyncClient`` made exactly as ``httpx.Client(**kwargs)`` makes it
  (environment proxies, ``NO_PROXY``, ``trust_env``, ``proxy=``, ``mounts=``),
  whose every TCP connection, direct or to a proxy, carries the policy.
* :func:`open_connection` / :func:`create_connection` -- asyncio's, connected
  first and then configured, so the first write goes to a connected socket.
* :func:`redis_kwargs` -- keyword arguments for ``redis.Redis(...)`` and
  ``redis.asyncio.Redis(...)``: the policy on every connection (before it connects),
  a connect timeout and one retry, so a call ends within 1.5 x the policy's budget.
* :func:`grpc_options` -- gRPC channel arguments: its keepalive pings from the policy.
* :func:`dead_peer_budget` / :func:`reconnect_timeout` -- the seconds those are built from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import kaext

from ._policy import as_policy

if TYPE_CHECKING:
    import asyncio

    import httpx

    from ._requests_adapter import KeepaliveAdapter

__all__ = [
    "KeepaliveAdapter",
    "as_policy",
    "create_connection",
    "httpx_async_client",
    "dead_peer_budget",
    "grpc_options",
    "httpx_client",
    "open_connection",
    "reconnect_timeout",
    "redis_kwargs",
]


def __getattr__(name: str) -> Any:
    # requests is imported only when its adapter is asked for.
    if name == "KeepaliveAdapter":
        from ._requests_adapter import KeepaliveAdapter

        globals()[name] = KeepaliveAdapter
        return KeepaliveAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------
# httpx
# --------------------------------------------------------------------------------------


def httpx_client(policy: kaext.Policy | str, **kwargs: Any) -> httpx.Client:
    """``httpx.Client(**kwargs)`` whose every TCP connection carries ``policy``.

    The client is made by httpx itself from ``kwargs``, so proxies from the
    environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``), ``NO_PROXY``,
    ``trust_env``, ``proxy=``, ``mounts=`` and ``transport=`` behave exactly as with
    plain httpx.  Then every ``httpx.HTTPTransport`` of the client (the default one,
    one per proxy, and those passed in ``mounts=`` / ``transport=``) gets a network
    backend that applies the policy to each new TCP socket right after it connects:
    to the origin, or to the HTTP proxy (a SOCKS proxy too, by httpcore's source;
    untested).  (httpcore's own ``socket_options`` reach direct connections only.)
    Transports of other types
    (``httpx.MockTransport``, your own) are used as given.

    A policy that cannot be applied makes the request fail with its ``OSError``.
    """
    from . import _httpx_adapter

    return _httpx_adapter.client(as_policy(policy), kwargs)


def httpx_async_client(policy: kaext.Policy | str, **kwargs: Any) -> httpx.AsyncClient:
    """``httpx.AsyncClient(**kwargs)`` whose every TCP connection carries ``policy``.

    As :func:`httpx_client`, for ``httpx.AsyncHTTPTransport`` (asyncio or trio).
    """
    from . import _httpx_adapter

    return _httpx_adapter.async_client(as_policy(policy), kwargs)


# --------------------------------------------------------------------------------------
# asyncio
# --------------------------------------------------------------------------------------


async def open_connection(
    host: str | None, port: int | str | None, policy: kaext.Policy | str, **kwargs: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection(host, port, **kwargs)``, then ``policy`` applied to its socket.

    The policy is applied once the connection is established and before the
    (reader, writer) pair is returned, so nothing has been sent yet.  If it cannot
    be applied the connection is aborted and the error raised.
    """
    policy = as_policy(policy)
    import asyncio  # here, not at import: a Python without sockets (WASI) has no asyncio

    reader, writer = await asyncio.open_connection(host, port, **kwargs)
    _apply_or_abort(policy, writer.transport)
    return reader, writer


async def create_connection(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    host: str,
    port: int,
    policy: kaext.Policy | str,
    **kwargs: Any,
) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
    """``loop.create_connection(protocol_factory, host, port, **kwargs)`` on the running loop,
    then ``policy`` applied to the connected socket (aborted and raised if it cannot be)."""
    policy = as_policy(policy)
    import asyncio

    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(protocol_factory, host, port, **kwargs)
    _apply_or_abort(policy, transport)
    return transport, protocol


def _apply_or_abort(policy: kaext.Policy, transport: asyncio.BaseTransport) -> None:
    try:
        policy.apply(transport.get_extra_info("socket"))
    except BaseException:
        import asyncio

        if isinstance(transport, asyncio.Transport):
            transport.abort()
        else:
            transport.close()
        raise


# --------------------------------------------------------------------------------------
# Budgets: how long a dead peer may take to be noticed, and a reconnect
# --------------------------------------------------------------------------------------


def dead_peer_budget(policy: kaext.Policy | str) -> float | None:
    """The seconds within which ``policy`` ends a connection whose peer vanished.

    The longer of the keepalive schedule (``idle + interval * count``: a connection
    waiting for data) and the user timeout (a connection with data unacknowledged);
    ``Policy.from_timeout(T)`` gives ``T``.  None when the policy bounds neither (no
    idle, interval and count, no user timeout).
    """
    policy = as_policy(policy)
    candidates = []
    if policy.idle is not None and policy.interval is not None and policy.count is not None:
        candidates.append(policy.idle + policy.interval * policy.count)
    if policy.user_timeout is not None:
        candidates.append(policy.user_timeout)
    return max(candidates) if candidates else None


def reconnect_timeout(policy: kaext.Policy | str) -> float | None:
    """The connect timeout the adapters give a library: seconds, or None (no bound known).

    Half of :func:`dead_peer_budget`, so that noticing the dead peer (the budget) and
    one reconnect to a host that is gone (half of it) end within 1.5 x the budget;
    the policy's own ``connect_timeout`` where it has one and it is shorter.
    """
    policy = as_policy(policy)
    budget = dead_peer_budget(policy)
    own = getattr(policy, "connect_timeout", None)
    choices = [float(x) for x in (own, None if budget is None else budget / 2) if x is not None]
    return min(choices) if choices else None


# --------------------------------------------------------------------------------------
# redis-py
# --------------------------------------------------------------------------------------


def redis_kwargs(policy: kaext.Policy | str) -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis(...)`` and ``redis.asyncio.Redis(...)`` (redis-py >= 5).

    The same dict works for both clients (and ``ConnectionPool`` / ``from_url``
    keyword arguments):

    * ``socket_keepalive=True``, ``socket_keepalive_options=policy.tcp_options()``:
      redis-py sets them on each socket before it connects (the sync client) or
      right after (asyncio), so a connection whose server vanished ends within the
      policy's budget (:func:`dead_peer_budget`) -- instead of redis-py 8's own
      30 s / 5 s / 3 keepalive;
    * ``socket_connect_timeout``: half of :func:`reconnect_timeout` (a quarter of the
      budget): redis-py's retry wraps its connect too, so a reconnect to a host that is
      gone is two connect attempts;
    * ``retry=None, retry_on_error=[redis.exceptions.ConnectionError]``: redis-py
      then makes its own ``Retry(NoBackoff(), 1)`` of the client's kind (sync or
      asyncio): one immediate retry on a new connection, instead of redis-py 8's ten
      retries with exponential backoff, each of which may wait for a connect.

    So a call whose server vanished raises within 1.5 x the budget (the lost
    connection, then one reconnect that times out), and a call whose connection was
    merely reset (a restarted server, a NAT's RST) is retried once on a fresh one.
    Pass your own ``retry=`` after these keyword arguments to choose otherwise (it then
    governs how long a call may take). ``socket_timeout`` (redis-py's read timeout, 5 s
    by default in redis-py 8) is left to you: set ``None`` for blocking commands
    (``BLPOP``, pub/sub) that wait longer.  Needs redis-py only when called.
    """
    import redis.exceptions

    policy = as_policy(policy)
    kwargs: dict[str, Any] = {
        "socket_keepalive": True,
        "socket_keepalive_options": policy.tcp_options(),
        "retry": None,
        "retry_on_error": [redis.exceptions.ConnectionError],
    }
    connect = reconnect_timeout(policy)
    if connect is not None:
        kwargs["socket_connect_timeout"] = connect / 2  # two attempts: the connect and its one retry
    return kwargs


# --------------------------------------------------------------------------------------
# grpcio
# --------------------------------------------------------------------------------------


def grpc_options(policy: kaext.Policy | str) -> list[tuple[str, int]]:
    """Channel arguments for ``grpc.insecure_channel(target, options=...)`` / ``secure_channel``.

    gRPC's C core makes its own sockets, out of reach of Python's socket layer (and of
    :func:`kaext.inject`); its keepalive is an HTTP/2 ping, and on Linux it also sets
    ``TCP_USER_TIMEOUT`` to the ping's timeout.  From the policy:

    * ``grpc.keepalive_time_ms``: the policy's idle time (a ping after that much silence);
    * ``grpc.keepalive_timeout_ms``: the rest of :func:`dead_peer_budget` (the ping's
      answer must come within it, else the connection is closed);
    * ``grpc.keepalive_permit_without_calls=1`` and ``grpc.http2.max_pings_without_data=0``:
      pings on an idle channel too, and no limit on them.

    A server answers pings more frequent than it allows (5 minutes by default) with
    GOAWAY ``too_many_pings``: allow them there
    (``grpc.http2.min_ping_interval_without_data_ms``, ``grpc.http2.max_ping_strikes=0``).
    ValueError when the policy has no idle time or no budget.
    """
    policy = as_policy(policy)
    budget = dead_peer_budget(policy)
    if policy.idle is None or budget is None:
        raise ValueError(f"policy {policy} needs an idle time and a budget (idle, interval, count) for gRPC's pings")
    time_ms = max(1, round(policy.idle * 1000))
    timeout_ms = max(1, round(budget * 1000) - time_ms)
    return [
        ("grpc.keepalive_time_ms", time_ms),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
