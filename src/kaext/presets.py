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

import errno
import math
from dataclasses import dataclass
from typing import Any

from . import _api
from ._api import Duration, Policy

__all__ = ["MIDDLEBOXES", "Middlebox", "check_idle_timeout", "for_idle_timeout", "for_middlebox"]

#: Probes sent before the peer is declared dead (``count``).
PROBES = 5


@dataclass(frozen=True)
class Middlebox:
    """A middlebox that forgets idle TCP flows: its default idle timeout and where that number comes from."""

    name: str
    idle_timeout: int  # seconds
    description: str
    source: str


_TABLE = (
    Middlebox(
        "aws-nlb", 350, "AWS Network Load Balancer, TCP listener (configurable 60..6000 s since 2024-09)",
        "AWS Elastic Load Balancing, Network Load Balancers guide: 'Update the TCP idle timeout for "
        "your Network Load Balancer listener' -- default idle timeout for TCP flows 350 seconds",
    ),
    Middlebox(
        "aws-gwlb", 350, "AWS Gateway Load Balancer, TCP flows (configurable 60..6000 s since 2024-09)",
        "AWS Elastic Load Balancing, Gateway Load Balancers guide: idle timeout for TCP flows "
        "350 seconds by default",
    ),
    Middlebox(
        "aws-nat-gateway", 350, "AWS VPC NAT gateway (not configurable)",
        "Amazon VPC user guide, 'Troubleshoot NAT gateways': a connection that is idle for 350 "
        "seconds or more times out",
    ),
    Middlebox(
        "azure-lb", 240, "Azure Load Balancer rules, inbound NAT and outbound rules (4..100 min)",
        "Azure Load Balancer docs, 'Configure TCP reset and idle timeout': default 4 minutes",
    ),
    Middlebox(
        "azure-nat-gateway", 240, "Azure NAT Gateway, TCP (configurable 4..120 min)",
        "Azure NAT Gateway docs, 'TCP idle timeout': default 4 minutes",
    ),
    Middlebox(
        "gcp-vpc", 600, "Google Cloud VPC connection tracking (firewall rules; not configurable)",
        "Google Compute Engine troubleshooting docs: VPC networks implement 10-minute connection "
        "tracking; an entry idle for 10 minutes is removed",
    ),
    Middlebox(
        "gcp-cloud-nat", 1200, "Google Cloud NAT, TCP established connection idle timeout (configurable)",
        "Google Cloud NAT docs, NAT timeouts: TCP established connection idle timeout default 1200 s",
    ),
    Middlebox(
        "ipvs", 900, "Linux IPVS (kube-proxy IPVS mode, keepalived, Docker swarm ingress); ipvsadm --set",
        "Linux net/netfilter/ipvs/ip_vs_proto_tcp.c: tcp_timeouts[IP_VS_TCP_S_ESTABLISHED] = 15*60*HZ",
    ),
    Middlebox(
        "linux-conntrack", 432000, "Linux netfilter conntrack / NAT, established TCP (5 days)",
        "Linux net/netfilter/nf_conntrack_proto_tcp.c: tcp_timeouts[TCP_CONNTRACK_ESTABLISHED] = "
        "5 DAYS; sysctl net.netfilter.nf_conntrack_tcp_timeout_established",
    ),
)

#: The known middleboxes by name: default idle timeout in seconds, with its source.
MIDDLEBOXES: dict[str, Middlebox] = {m.name: m for m in _TABLE}


def for_idle_timeout(seconds: Duration, policy_class: type[Policy] = Policy) -> Policy:
    """A policy whose probes keep a flow alive through a middlebox with this idle timeout.

    With ``T`` the timeout in whole seconds (rounded down): ``idle = T // 2``,
    ``interval = max(1, T // 10)``, ``count = 5`` (fewer when ``T`` is under 10 s, so
    that ``idle + interval * count <= T``), each clamped to what this platform
    accepts (``kaext.capabilities()``), and always ``idle + interval < T``: a lost
    first probe is made good by the second before the flow expires.  A dead peer is
    then declared after ``idle + interval * count`` (about ``T``).  The user timeout is
    left as it is.  Needs ``T >= 3`` (1 s idle, 1 s interval).
    """
    timeout_ns = _api._duration_ns("idle_timeout", seconds)
    if timeout_ns <= 0:
        raise ValueError(f"idle_timeout={seconds!r} must be positive")
    budget = timeout_ns // 10**9
    caps = _api._caps()
    if "idle" not in caps:
        raise OSError(
            errno.ENOPROTOOPT, "idle cannot be set on this platform, so no policy can probe before an idle timeout; "
            "see kaext.capabilities()",
        )
    idle_knob = caps["idle"]
    idle = min(_whole_seconds_max(idle_knob), max(budget // 2, _whole_seconds_min(idle_knob)))
    interval = None
    count = None
    if "interval" in caps:
        knob = caps["interval"]
        interval = min(_whole_seconds_max(knob), max(budget // 10, 1, _whole_seconds_min(knob)))
    if idle + (interval or 0) >= budget:
        raise ValueError(
            f"idle_timeout={seconds!r} is too short: the first probe and one retry must both go out "
            f"before it (idle {idle} s + interval {interval or 0} s must be under {budget} s)"
        )
    if "count" in caps:
        # 5 probes, fewer for a short timeout so that a dead peer is declared within it
        fit = (budget - idle) // interval if interval else PROBES
        count = min(caps["count"].max, max(min(PROBES, fit), caps["count"].min))
    return policy_class(idle=idle, interval=interval, count=count)


def for_middlebox(name: str, policy_class: type[Policy] = Policy) -> Policy:
    """``for_idle_timeout`` for a known middlebox's default idle timeout (``MIDDLEBOXES``)."""
    if not isinstance(name, str):
        raise TypeError(f"middlebox name must be a str, got {type(name).__name__}")
    box = MIDDLEBOXES.get(name)
    if box is None:
        raise ValueError(f"unknown middlebox {name!r}; known: {', '.join(MIDDLEBOXES)}")
    return for_idle_timeout(box.idle_timeout, policy_class)


def check_idle_timeout(config: Any, seconds: Duration) -> list[str]:
    """What keeps ``config`` from holding a flow open through this idle timeout; ``[]`` if nothing.

    ``config`` is a ``Policy`` or a ``KeepaliveState`` read back from a socket
    (``kaext.get_keepalive``): anything with ``idle`` and ``interval`` in seconds and
    ``keepalive`` or ``enabled``.  A ``None`` idle or interval (not set, or not
    readable) is reported, since the system default decides then.
    """
    timeout = _api._duration_ns("idle_timeout", seconds) / 10**9
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


def _whole_seconds_max(knob: _api.Knob) -> int:
    return knob.max // 1000 if knob.unit == "ms" else knob.max


def _whole_seconds_min(knob: _api.Knob) -> int:
    return max(1, math.ceil(knob.min / 1000) if knob.unit == "ms" else knob.min)
