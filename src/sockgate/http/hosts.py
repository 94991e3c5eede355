"""Which Host values sockgate answers: local names only, unless the config allows more.

A web page on evil.example can re-resolve its name to 127.0.0.1 (DNS rebinding) and then talk to
local apps from the victim's browser. Such requests still carry `Host: evil.example`, so answering
only local names (and the ones the user lists in `allowed_hosts`) keeps those pages out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ..addresses import is_loopback

LOCAL_NAMES: Final = ("localhost", "*.localhost", "127.0.0.0/8", "[::1]")
SEEN_MAX: Final = 1024  # Host values remembered with their verdict


def hostname(host: bytes) -> str | None:
    """The name in a Host header, lower case, without port or trailing dot; None if malformed."""
    try:
        text = host.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :]
        if end < 0 or (rest and not _is_port(rest)):
            return None
        return text[: end + 1]
    name, sep, port = text.rpartition(":")
    if sep and _is_port(":" + port):
        text = name
    elif ":" in text:
        return None
    return text.rstrip(".") or None


def _is_port(suffix: str) -> bool:
    return suffix.startswith(":") and suffix[1:].isdigit() and len(suffix) <= 6


class HostPolicy:
    """`allows(host)` for Host header values. Patterns: a name, `*.suffix`, or `*` for any."""

    def __init__(self, listen_host: str, allowed: Sequence[str]) -> None:
        self.allowed = tuple(allowed)
        self._any = "*" in self.allowed
        exact = {p.lower().rstrip(".") for p in self.allowed if not p.startswith("*.")}
        self._suffixes = (
            ".localhost",
            *(p.lower()[1:] for p in self.allowed if p.startswith("*.")),
        )
        listen = listen_host.lower()
        if listen not in ("0.0.0.0", "::", ""):
            exact.add(f"[{listen}]" if ":" in listen else listen)
        self._exact = frozenset(exact)
        # Verdicts by Host value: a browser sends the same few values over and over.
        self._seen: dict[bytes, bool] = {}

    def __repr__(self) -> str:
        return f"<HostPolicy allowed={self.allowed!r}>"

    def allows(self, host: bytes | None) -> bool:
        if host is None or self._any:
            return True  # HTTP/1.0 without Host: no browser sends that
        verdict = self._seen.get(host)
        if verdict is None:
            if len(self._seen) >= SEEN_MAX:
                self._seen.clear()
            verdict = self._seen[host] = self._judge(host)
        return verdict

    def _judge(self, host: bytes) -> bool:
        name = hostname(host)
        if name is None:
            return False
        return (
            name == "localhost"
            or name.endswith(self._suffixes)
            or is_loopback(name)
            or name in self._exact
        )

    def refusal(self, host: bytes) -> tuple[str, str]:
        """Title and explanation for the 421 page."""
        shown = host.decode("latin-1")
        return f"host {shown!r} is not served here", (
            f"sockgate answers only local names ({', '.join(LOCAL_NAMES)}) and those listed in "
            f"allowed_hosts, to keep web pages out of local apps (DNS rebinding); to allow this "
            f'one, add allowed_hosts = ["{hostname(host) or shown}"] to sockgate.toml'
        )
