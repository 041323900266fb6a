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
    "httpx_client",
    "open_connection",
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
