"""``kaext.adapters.KeepaliveAdapter``: imports requests, so it is loaded only when asked for."""

from __future__ import annotations

from typing import Any

from requests.adapters import DEFAULT_POOLBLOCK, HTTPAdapter
from urllib3.connection import HTTPConnection

import kaext

from ._policy import as_policy

__all__ = ["KeepaliveAdapter"]


class KeepaliveAdapter(HTTPAdapter):
    """A requests ``HTTPAdapter`` whose every connection carries a keepalive policy.

    ``policy`` is a ``kaext.Policy`` or a string (a middlebox name such as
    ``"aws-nlb"``, or a ``Policy.parse`` spec); ``kwargs`` go to ``HTTPAdapter``
    (``pool_connections``, ``pool_maxsize``, ``max_retries``, ``pool_block``).

    Direct connections get it through the pool manager (``init_poolmanager``),
    connections to a proxy -- HTTP forwarding, CONNECT tunnels, and SOCKS
    (``requests[socks]``, untested) -- through the proxy managers requests makes per
    proxy (``proxy_manager_for``).
    Both pass urllib3 ``socket_options``: urllib3's
    ``HTTPConnection.default_socket_options`` (``TCP_NODELAY``), or the
    ``socket_options`` a subclass passes, merged with ``policy.socket_options()``.
    A policy this platform cannot express as socket options (Windows before 10
    version 1709 sets idle and interval with an ioctl) raises ValueError here.

    >>> session = requests.Session()                                     # doctest: +SKIP
    >>> session.mount("https://", KeepaliveAdapter("aws-nlb"))           # doctest: +SKIP
    """

    __attrs__ = [*HTTPAdapter.__attrs__, "policy"]

    policy: kaext.Policy

    def __init__(self, policy: kaext.Policy | str, **kwargs: Any) -> None:
        self.policy = as_policy(policy)
        self.policy.socket_options()  # refuse now what urllib3 could not carry
        super().__init__(**kwargs)

    def _socket_options(self, given: Any) -> list[tuple[Any, ...]]:
        base = HTTPConnection.default_socket_options if given is None else given
        return self.policy.socket_options(base)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = DEFAULT_POOLBLOCK, **pool_kwargs: Any
    ) -> None:
        pool_kwargs["socket_options"] = self._socket_options(pool_kwargs.get("socket_options"))
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs["socket_options"] = self._socket_options(proxy_kwargs.get("socket_options"))
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def __repr__(self) -> str:
        return f"KeepaliveAdapter({self.policy!r})"
