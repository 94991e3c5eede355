"""Whether an address is this machine's: one rule for the listen address, Host header literals and
client addresses, which decide what sockgate exposes and to whom."""

from __future__ import annotations

import ipaddress


def is_loopback(address: str) -> bool:
    """An IP literal in a loopback range (127.0.0.0/8, ::1), with or without the brackets of a
    URL's host, also as an IPv4-mapped IPv6 address (::ffff:127.0.0.1, as a dual-stack socket
    reports an IPv4 client). Names are not resolved: `localhost` is for the caller to judge."""
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
