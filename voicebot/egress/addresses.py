"""Which addresses a request to the operator's systems may reach: the policy the egress layer applies where
the address is known, after the name was resolved, and before anything is sent."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a request may connect to: public ones, and what is allowed explicitly.

    Refused unless allowed: loopback (unless ``allow_loopback``), private
    networks, link-local (169.254.0.0/16, where cloud metadata services
    answer), shared (100.64.0.0/10), multicast, reserved and unspecified
    addresses, and IPv6's equivalents; an IPv4 address written as IPv6 is
    judged as IPv4.
    """

    allow_loopback: bool = False
    allowed_networks: tuple[Network, ...] = ()

    def problem(self, host: str) -> str | None:
        """None if ``host`` (an IP address) may be connected to; otherwise why not."""
        address = as_address(host)
        if address is None:
            return f"{host} is not an IP address"
        if any(address in network for network in self.allowed_networks):
            return None
        if address.is_loopback:
            return None if self.allow_loopback else f"{address} is a loopback address"
        if address.is_global and not address.is_multicast:
            return None
        return f"{address} is not a public address"

    def url_problem(self, host: str) -> str | None:
        """The same judgement on a URL's host where it is an address or ``localhost`` (a name is judged
        when it is resolved, before each new connection)."""
        if host == "localhost" or host.endswith(".localhost"):
            return None if self.allow_loopback else "localhost is a loopback address"
        return None if as_address(host) is None else self.problem(host)


def as_address(host: str) -> Address | None:
    """``host`` as an IP address (an IPv4 address written as IPv6 as IPv4), or None for a name."""
    try:
        address: Address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback_host(host: str) -> bool:
    """``localhost``, or a loopback address."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    address = as_address(host)
    return address is not None and address.is_loopback


def operator_url_problem(url: object, policy: AddressPolicy) -> str:
    """What is wrong with a URL of the operator's (a tool, the caller context) before anything is sent; "" if
    nothing: https to an allowed address, http only to loopback with TOOLS_ALLOW_LOOPBACK."""
    if not isinstance(url, str):
        return "is missing"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return "is not a URL"
    if not host or parts.scheme not in ("http", "https"):
        return "must be an https:// URL"
    loopback = is_loopback_host(host)
    if parts.scheme == "http" and not loopback:
        return "must be https:// (http:// only to loopback, with TOOLS_ALLOW_LOOPBACK=1)"
    problem = policy.url_problem(host)
    if problem and loopback:
        return "is on loopback: set TOOLS_ALLOW_LOOPBACK=1 (local trials only)"
    if problem:
        return f"is not allowed: {problem} (name its network in TOOLS_ALLOW_NETWORKS to allow it)"
    return ""
