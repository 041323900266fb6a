"""Keepalive policies that keep a flow alive through NATs, load balancers and firewalls.

A stateful middlebox forgets a TCP flow that has been idle for its idle timeout,
silently: the next packet is dropped or answered with a reset, and a peer that
only waits never learns.  TCP keepalive probes are packets, so a probe sent
before the timeout refreshes the flow.

>>> from kaext import Policy, presets
>>> Policy.for_idle_timeout(350)
Policy(idle=175.0, interval=35.0, count=5)
>>> Policy.for_middlebox("aws-nlb") == Policy.for_idle_timeout(350)
True
>>> presets.MIDDLEBOXES["azure-lb"].idle_timeout
240

``for_idle_timeout(T)`` sends the first probe at T/2 and repeats every T/10, so
even when that probe (or its answer) is lost the next one still arrives before the
flow expires (``idle + interval < T``); with 5 probes a dead peer is declared
after about T.  ``check_idle_timeout`` tells what is wrong with any policy or
read-back state for a given timeout.

Every idle timeout below is a default; most are configurable, so pass your own
number to ``for_idle_timeout`` when you changed it.  Not listed on purpose:
application-level proxies such as the AWS Application Load Balancer (idle timeout
60 s by default) count only data, and keepalive probes carry none, so TCP
keepalive does not keep those connections open; use the protocol's own
keepalive (HTTP/2 PING, WebSocket ping) there.
"""

from __future__ import annotations

from ._capabilities import duration_ns
from ._middleboxes import MIDDLEBOXES, Middlebox
from ._policy import PROBES, Policy
from ._policy import for_idle_timeout as _for_idle_timeout
from ._policy import for_middlebox as _for_middlebox

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._types import Duration

__all__ = ["MIDDLEBOXES", "PROBES", "Middlebox", "check_idle_timeout", "for_idle_timeout", "for_middlebox"]


def for_idle_timeout(seconds: Duration, policy_class: type[Policy] = Policy) -> Policy:
    """A policy whose probes keep a flow alive through a middlebox with this idle timeout.

    The same as ``Policy.for_idle_timeout`` (see there), made with ``policy_class``.
    """
    return _for_idle_timeout(seconds, policy_class)


def for_middlebox(name: str, policy_class: type[Policy] = Policy) -> Policy:
    """``for_idle_timeout`` for a known middlebox's default idle timeout (``MIDDLEBOXES``)."""
    return _for_middlebox(name, policy_class)


def check_idle_timeout(config: Any, seconds: Duration) -> list[str]:
    """What keeps ``config`` from holding a flow open through this idle timeout; ``[]`` if nothing.

    ``config`` is a ``Policy`` or a ``KeepaliveState`` read back from a socket
    (``kaext.get_keepalive``): anything with ``idle`` and ``interval`` in seconds and
    ``keepalive`` or ``enabled``.  A ``None`` idle or interval (not set, or not
    readable) is reported, since the system default decides then.
    """
    timeout = duration_ns("idle_timeout", seconds) / 10**9
    enabled = getattr(config, "keepalive", getattr(config, "enabled", None))
    problems: list[str] = []
    if enabled is False:
        return ["keepalive is off: nothing is sent while the connection is idle"]
    idle = config.idle
    interval = config.interval
    if idle is None:
        problems.append("idle is not set: the system default decides (Linux: 7200 s)")
    elif idle >= timeout:
        problems.append(f"idle {idle:g} s is not under the idle timeout {timeout:g} s: the flow expires first")
    if interval is None:
        problems.append("interval is not set: the system default decides (Linux: 75 s)")
    elif idle is not None and idle < timeout and idle + interval >= timeout:
        problems.append(
            f"idle + interval = {idle + interval:g} s is not under the idle timeout {timeout:g} s: "
            "one lost probe lets the flow expire"
        )
    return problems
