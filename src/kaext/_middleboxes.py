"""Middleboxes that forget idle TCP flows, with their default idle timeouts and sources.

The data behind ``kaext.presets.MIDDLEBOXES`` and ``Policy.for_middlebox``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIDDLEBOXES", "Middlebox", "lookup"]


@dataclass(frozen=True)
class Middlebox:
    """A middlebox that forgets idle TCP flows: its default idle timeout and where that number comes from."""

    name: str
    idle_timeout: int  # seconds
    description: str
    source: str


_TABLE = (
    Middlebox(
        "aws-nlb",
        350,
        "AWS Network Load Balancer, TCP listener (configurable 60..6000 s since 2024-09)",
        "AWS Elastic Load Balancing, Network Load Balancers guide: 'Update the TCP idle timeout for "
        "your Network Load Balancer listener' -- default idle timeout for TCP flows 350 seconds",
    ),
    Middlebox(
        "aws-gwlb",
        350,
        "AWS Gateway Load Balancer, TCP flows (configurable 60..6000 s since 2024-09)",
        "AWS Elastic Load Balancing, Gateway Load Balancers guide: idle timeout for TCP flows 350 seconds by default",
    ),
    Middlebox(
        "aws-nat-gateway",
        350,
        "AWS VPC NAT gateway (not configurable)",
        "Amazon VPC user guide, 'Troubleshoot NAT gateways': a connection that is idle for 350 "
        "seconds or more times out",
    ),
    Middlebox(
        "azure-lb",
        240,
        "Azure Load Balancer rules, inbound NAT and outbound rules (4..100 min)",
        "Azure Load Balancer docs, 'Configure TCP reset and idle timeout': default 4 minutes",
    ),
    Middlebox(
        "azure-nat-gateway",
        240,
        "Azure NAT Gateway, TCP (configurable 4..120 min)",
        "Azure NAT Gateway docs, 'TCP idle timeout': default 4 minutes",
    ),
    Middlebox(
        "gcp-vpc",
        600,
        "Google Cloud VPC connection tracking (firewall rules; not configurable)",
        "Google Compute Engine troubleshooting docs: VPC networks implement 10-minute connection "
        "tracking; an entry idle for 10 minutes is removed",
    ),
    Middlebox(
        "gcp-cloud-nat",
        1200,
        "Google Cloud NAT, TCP established connection idle timeout (configurable)",
        "Google Cloud NAT docs, NAT timeouts: TCP established connection idle timeout default 1200 s",
    ),
    Middlebox(
        "ipvs",
        900,
        "Linux IPVS (kube-proxy IPVS mode, keepalived, Docker swarm ingress); ipvsadm --set",
        "Linux net/netfilter/ipvs/ip_vs_proto_tcp.c: tcp_timeouts[IP_VS_TCP_S_ESTABLISHED] = 15*60*HZ",
    ),
    Middlebox(
        "linux-conntrack",
        432000,
        "Linux netfilter conntrack / NAT, established TCP (5 days)",
        "Linux net/netfilter/nf_conntrack_proto_tcp.c: tcp_timeouts[TCP_CONNTRACK_ESTABLISHED] = "
        "5 DAYS; sysctl net.netfilter.nf_conntrack_tcp_timeout_established",
    ),
)

#: The known middleboxes by name: default idle timeout in seconds, with its source.
MIDDLEBOXES: dict[str, Middlebox] = {m.name: m for m in _TABLE}


def lookup(name: str) -> Middlebox | None:
    """The middlebox of this name, whatever its case (``"AWS-NLB"`` is ``"aws-nlb"``), or None."""
    return MIDDLEBOXES.get(name.lower())


def names() -> str:
    """The known names, for a message: ``"aws-nlb, aws-gwlb, ..."``."""
    return ", ".join(MIDDLEBOXES)
