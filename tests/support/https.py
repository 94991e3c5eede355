"""A sockgate serving HTTPS (and HTTP/2) with its local CA in a test folder, on either engine."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.proc import Proxy, free_port, wait_for_port, write_config

HTTPS_LINE = re.compile(r"also https://([\w.\[\]:]+):(\d+)/")


@contextmanager
def https_sockgate(
    tmp: Path, apps: dict[str, Path], extra: str = "", engine: str = "builtin"
) -> Iterator[tuple[Proxy, int]]:
    """`sockgate run` with `[tls]` on a free port and the CA in tmp/ca; yields the proxy and
    its HTTPS port. `extra`: top-level keys and tables after the apps."""
    nginx = engine == "nginx"  # nginx takes no port 0
    plain, https = (free_port(), free_port()) if nginx else (0, 0)
    lines = [f'listen = "127.0.0.1:{plain}"', 'workdir = "work"', f'engine = "{engine}"']
    for name, socket in apps.items():
        lines += [f"[apps.{name}]", f'socket = "{socket}"']
    lines += ["[tls]", f'listen = "127.0.0.1:{https}"', f'ca_dir = "{tmp / "ca"}"', extra]
    path = write_config(tmp / "sockgate.toml", "\n".join(lines) + "\n")
    with Proxy(path, engine=engine) as proxy:
        match = HTTPS_LINE.search(proxy.wait_for_output(HTTPS_LINE))
        assert match is not None
        port = int(match.group(2))
        if nginx:
            assert proxy.proc is not None
            wait_for_port(port, proxy.proc)
        yield proxy, port
        output = proxy.output()
    for sign in ("Traceback", "Task exception was never retrieved", "from eof_received"):
        assert sign not in output, output


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    """curl, quiet but for errors, bounded in time; its output as text."""
    return subprocess.run(
        ["curl", "-sS", "--max-time", "20", *args], capture_output=True, text=True, check=False
    )
