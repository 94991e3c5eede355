"""A built-in sockgate serving HTTPS (and HTTP/2) with its local CA in a test folder."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.proc import Proxy, write_config

HTTPS_LINE = re.compile(r"also https://([\w.\[\]:]+):(\d+)/")


@contextmanager
def https_sockgate(
    tmp: Path, apps: dict[str, Path], extra: str = ""
) -> Iterator[tuple[Proxy, int]]:
    """`sockgate run` with `[tls]` on a free port and the CA in tmp/ca; yields the proxy and
    its HTTPS port. `extra`: top-level keys and tables after the apps."""
    lines = ['listen = "127.0.0.1:0"', 'workdir = "work"']
    for name, socket in apps.items():
        lines += [f"[apps.{name}]", f'socket = "{socket}"']
    lines += ["[tls]", 'listen = "127.0.0.1:0"', f'ca_dir = "{tmp / "ca"}"', extra]
    path = write_config(tmp / "sockgate.toml", "\n".join(lines) + "\n")
    with Proxy(path) as proxy:
        match = HTTPS_LINE.search(proxy.wait_for_output(HTTPS_LINE))
        assert match is not None
        yield proxy, int(match.group(2))
        output = proxy.output()
    for sign in ("Traceback", "Task exception was never retrieved", "from eof_received"):
        assert sign not in output, output
