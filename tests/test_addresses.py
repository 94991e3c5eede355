"""addresses.is_loopback: one rule for the listen address, Host literals and client addresses."""

from __future__ import annotations

import pytest

from sockgate.addresses import is_loopback


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),  # an IPv4 client as a dual-stack socket reports it
        ("[::ffff:127.0.0.2]", True),
        ("0:0:0:0:0:0:0:1", True),
        ("::ffff:10.0.0.1", False),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("fd00::1", False),
        ("localhost", False),  # names are the caller's to judge: nothing is resolved
        ("127.0.0.1.example", False),
        ("[::1", False),
        ("", False),
        ("unix", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback
