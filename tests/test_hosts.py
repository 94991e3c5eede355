"""Host policy (DNS rebinding protection): which Host values are answered. Pure."""

from __future__ import annotations

from pathlib import Path

import pytest

from sockgate.cli.start import exposure_warning
from sockgate.config import load
from sockgate.http.hosts import HostPolicy, hostname


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"localhost", "localhost"),
        (b"LocalHost:8080", "localhost"),
        (b"localhost.:8080", "localhost"),
        (b"127.0.0.1:8080", "127.0.0.1"),
        (b"[::1]:8080", "[::1]"),
        (b"[::1]", "[::1]"),
        (b"app.localhost", "app.localhost"),
        (b"[::1]x", None),
        (b"[::1", None),
        (b"a:b:c", None),
        (b"host:99999999", None),
        (b"\xff", None),
        (b"", None),
    ],
)
def test_hostname(raw: bytes, name: str | None) -> None:
    assert hostname(raw) == name


LOCAL = [
    b"localhost",
    b"localhost:8080",
    b"LOCALHOST",
    b"localhost.",
    b"app1.localhost:8080",
    b"a.b.localhost",
    b"127.0.0.1",
    b"127.0.0.1:8080",
    b"127.1.2.3:9",
    b"[::1]:8080",
    b"[::1]",
    b"[::ffff:127.0.0.1]:8080",  # the same rule as for the listen address and client addresses
]
FOREIGN = [
    b"evil.example",
    b"evil.example:8080",
    b"localhost.evil.example",
    b"evillocalhost",
    b"127.0.0.1.evil.example",
    b"192.168.1.5:8080",
    b"[fd00::1]:8080",
    b"[::ffff:192.168.1.5]:8080",
    b"0.0.0.0:8080",
    b"",
    b"[::1",
]


@pytest.mark.parametrize("host", LOCAL)
def test_local_names_are_answered(host: bytes) -> None:
    assert HostPolicy("127.0.0.1", ()).allows(host)


@pytest.mark.parametrize("host", FOREIGN)
def test_other_names_are_refused(host: bytes) -> None:
    assert not HostPolicy("127.0.0.1", ()).allows(host)


def test_no_host_is_allowed_since_no_browser_sends_that() -> None:
    assert HostPolicy("127.0.0.1", ()).allows(None)


def test_allowed_hosts_add_names_and_patterns() -> None:
    policy = HostPolicy("127.0.0.1", ["myhost.example", "*.example.test", "[fd00::1]"])
    assert policy.allows(b"myhost.example:8080")
    assert policy.allows(b"MyHost.Example")
    assert policy.allows(b"a.example.test")
    assert policy.allows(b"a.b.example.test:1")
    assert not policy.allows(b"example.test")  # "*.x" is for names under x
    assert policy.allows(b"[fd00::1]:8080")
    assert not policy.allows(b"other.example")


def test_star_allows_everything() -> None:
    assert HostPolicy("127.0.0.1", ["*"]).allows(b"evil.example")


def test_the_listen_address_is_allowed() -> None:
    assert HostPolicy("192.168.1.5", ()).allows(b"192.168.1.5:8080")
    assert HostPolicy("fd00::1", ()).allows(b"[fd00::1]:8080")
    # A wildcard address is not a name anyone can use in Host.
    assert not HostPolicy("0.0.0.0", ()).allows(b"0.0.0.0:8080")


def test_refusal_says_how_to_allow() -> None:
    title, detail = HostPolicy("127.0.0.1", ()).refusal(b"Evil.Example:8080")
    assert "Evil.Example:8080" in title
    assert 'allowed_hosts = ["evil.example"]' in detail
    assert "DNS rebinding" in detail


def test_a_network_listen_address_names_what_becomes_reachable(tmp_path: Path) -> None:
    path = tmp_path / "sockgate.toml"
    path.write_text(
        'listen = "0.0.0.0:8080"\nallow_remote = true\n'
        '[apps.notes]\nsocket = "/n.sock"\n[apps.todo]\nsocket = "/t.sock"\nprefix = "/t/"\n'
    )
    warning = exposure_warning(load(path))
    assert warning is not None
    assert "0.0.0.0:8080" in warning
    assert "reachable from the network: /notes/ (notes), /t/ (todo)" in warning
    path.write_text('[apps.notes]\nsocket = "/n.sock"\n')
    assert exposure_warning(load(path)) is None
