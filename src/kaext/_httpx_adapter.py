"""httpx clients whose every TCP connection carries a policy (``kaext.adapters.httpx_client``).

httpx builds its transports from the client's arguments (environment proxies,
``NO_PROXY``, ``trust_env``, ``proxy=``, ``mounts=``); httpcore passes
``socket_options`` to direct connections only, never to the connection to a proxy.
So the client is made by httpx unchanged, and then each httpcore connection pool
behind it gets a network backend that wraps the one it had and applies the policy
to every TCP stream it opens: httpcore opens every connection -- direct, to an
HTTP proxy (forwarding or CONNECT), to a SOCKS proxy (not tested) -- through that backend.

This reaches two private attributes, ``Client._transport`` / ``Client._mounts``
(httpx) and ``ConnectionPool._network_backend`` (httpcore); tested with httpx 0.28
and httpcore 1.0.  If they move, this module raises RuntimeError instead of
silently making a client without the policy.
"""

from __future__ import annotations

import typing
from typing import Any

import httpcore
import httpx

import kaext

__all__ = ["async_client", "client"]


def _unsupported(what: str) -> RuntimeError:
    return RuntimeError(
        f"kaext.adapters cannot reach {what} in httpx {httpx.__version__} / httpcore "
        f"{httpcore.__version__}; the client would not carry the policy"
    )


def _transports(client: httpx.Client | httpx.AsyncClient) -> list[Any]:
    try:
        default = client._transport
        mounts = client._mounts
    except AttributeError:
        raise _unsupported("the client's transports") from None
    return [default, *(t for t in mounts.values() if t is not None)]


def _pool_of(transport: Any, kind: type[Any]) -> Any:
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, kind) or not hasattr(pool, "_network_backend"):
        raise _unsupported(f"the connection pool of {type(transport).__name__}")
    return pool


# --------------------------------------------------------------------------------------
# sync
# --------------------------------------------------------------------------------------


class PolicyBackend(httpcore.NetworkBackend):
    """An httpcore network backend that applies a policy to each TCP stream ``inner`` opens."""

    def __init__(self, policy: kaext.Policy, inner: httpcore.NetworkBackend) -> None:
        self.policy = policy
        self.inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self.inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        try:
            self.policy.apply(stream.get_extra_info("socket"))
        except BaseException:
            stream.close()
            raise
        return stream

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        return self.inner.connect_unix_socket(path, timeout=timeout, socket_options=socket_options)

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def client(policy: kaext.Policy, kwargs: dict[str, Any]) -> httpx.Client:
    made = httpx.Client(**kwargs)
    # Nothing has been opened yet, so there is nothing to close on failure.
    for transport in _transports(made):
        if isinstance(transport, httpx.HTTPTransport):
            pool = _pool_of(transport, httpcore.ConnectionPool)
            inner = pool._network_backend
            if isinstance(inner, PolicyBackend):  # a transport shared with another client
                inner = inner.inner
            pool._network_backend = PolicyBackend(policy, inner)
    return made


# --------------------------------------------------------------------------------------
# async (asyncio or trio, whichever httpcore's AutoBackend finds)
# --------------------------------------------------------------------------------------


class AsyncPolicyBackend(httpcore.AsyncNetworkBackend):
    """An async httpcore network backend that applies a policy to each TCP stream ``inner`` opens."""

    def __init__(self, policy: kaext.Policy, inner: httpcore.AsyncNetworkBackend) -> None:
        self.policy = policy
        self.inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self.inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        try:
            self.policy.apply(stream.get_extra_info("socket"))
        except BaseException:
            await stream.aclose()
            raise
        return stream

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self.inner.connect_unix_socket(path, timeout=timeout, socket_options=socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def async_client(policy: kaext.Policy, kwargs: dict[str, Any]) -> httpx.AsyncClient:
    made = httpx.AsyncClient(**kwargs)
    # Nothing has been opened yet, so there is nothing to close on failure.
    for transport in _transports(made):
        if isinstance(transport, httpx.AsyncHTTPTransport):
            pool = _pool_of(transport, httpcore.AsyncConnectionPool)
            inner = pool._network_backend
            if isinstance(inner, AsyncPolicyBackend):
                inner = inner.inner
            pool._network_backend = AsyncPolicyBackend(policy, inner)
    return made
