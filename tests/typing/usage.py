"""Type-checked (not run) by .ci/steps/05-typing.sh: the public API as a user writes it."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta
from typing import Literal, assert_type

import kaext
from kaext import KeepaliveState, Knob, Policy


def configure(sock: socket.socket, writer: asyncio.StreamWriter) -> float | None:
    kaext.set_keepalive(sock, idle=60, interval=timedelta(seconds=10), count=5)
    kaext.set_user_timeout(sock, 2.5)
    state: KeepaliveState = kaext.get_keepalive(sock.fileno())
    idle: float | None = state.idle
    policy = Policy.from_timeout(60)
    policy.apply(writer.get_extra_info("socket"))
    current: Policy = Policy.from_socket(sock)
    current.apply(writer.get_extra_info("socket"))
    bounded = Policy(idle=60, connect_timeout=timedelta(seconds=10))
    assert_type(bounded.connect_timeout, float | None)
    bounded.apply(sock)
    options: list[tuple[int, ...]] = [tuple(o) for o in policy.socket_options()]
    knobs: dict[str, Knob] = kaext.capabilities()
    unit: str = knobs["idle"].unit
    keepidle: int = kaext.constants.TCP_KEEPIDLE
    del options, unit, keepidle
    return idle if state.enabled else kaext.get_user_timeout(sock)


def integrations(policy: Policy) -> None:
    """kaext.adapters as a user writes it: requests, httpx, asyncio."""
    import httpx
    import requests

    from kaext import adapters
    from kaext.adapters import KeepaliveAdapter

    session = requests.Session()
    adapter: requests.adapters.HTTPAdapter = KeepaliveAdapter("aws-nlb", pool_maxsize=4)
    session.mount("https://", adapter)
    same: Policy = adapters.as_policy("5m:30s:4")
    client: httpx.Client = adapters.httpx_client(policy, timeout=10)
    async_client: httpx.AsyncClient = adapters.httpx_async_client(same, http2=False)
    del client, async_client


async def connect(policy: Policy) -> bytes:
    from kaext.adapters import open_connection

    reader, writer = await open_connection("127.0.0.1", 8080, policy, limit=2**16)
    writer.write(b"x")
    return await reader.read(1)


def report(pid: int | None = None) -> list[str]:
    lines: list[str] = []
    for row in kaext.connections(pid):
        conn: kaext.Connection = row
        host, port = conn.local
        keepalive: KeepaliveState | None = conn.keepalive
        idle = keepalive.idle if keepalive is not None else None
        left: float | None = conn.timer_left
        lines.append(f"{conn.pid}/{conn.fd} {host}:{port} {conn.state} idle={idle} left={left} {conn.reason or ''}")
    return lines


def fix(pid: int) -> int:
    inodes: list[int] = []
    for row in kaext.connections(pid):
        if row.state == "ESTABLISHED":
            row.apply("aws-nlb")
            row.apply(kaext.Policy.parse("5m:30s:4"))
            inodes.append(row.inode)
    return len(inodes)


def enforce_on(cgroup: str) -> list[str]:
    import kaext.enforce

    e: kaext.enforce.Enforcement = kaext.enforce.attach(cgroup, "aws-nlb", force=True)
    policy: kaext.Policy = e.policy
    counts: tuple[int, int, int] = (e.applied, e.skipped, e.failed)
    flags: tuple[bool, bool] = (e.respect_existing, e.force)
    removed: bool = kaext.enforce.detach(cgroup)
    status: int = kaext.enforce.main(["--list", "--json"])
    return [f"{x.cgroup}: {x.policy}" for x in kaext.enforce.enforcements()] + [
        str(policy),
        str(counts),
        str(flags),
        str(removed),
        str(status),
    ]


def implementation_is_one_of_two() -> None:
    # a Literal, not any str: a typo in a comparison is a type error
    assert_type(kaext.IMPLEMENTATION, Literal["c", "python"])


def dead_peer_test(port: int) -> tuple[str, int]:
    import kaext.testing

    reason: str | None = kaext.testing.unavailable_reason()
    with kaext.testing.Path(("127.0.0.1", port)) as path:
        address: tuple[str, int] = path.address
        target: tuple[str, int] = path.target
        path.vanish()
        path.reset()
        path.forget_idle(2.5, rst=True)
        path.heal()
    with kaext.testing.ends_within(3):
        pass
    status: int = kaext.testing.main(["--", "true"])
    return (str(reason) + str(status) + str(target), address[1])
