"""Type-checked (not run) by .ci/steps/05-typing.sh: the public API as a user writes it."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta

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
    options: list[tuple[int, ...]] = [tuple(o) for o in policy.socket_options()]
    knobs: dict[str, Knob] = kaext.capabilities()
    unit: str = knobs["idle"].unit
    keepidle: int = kaext.constants.TCP_KEEPIDLE
    del options, unit, keepidle
    return idle if state.enabled else kaext.get_user_timeout(sock)
