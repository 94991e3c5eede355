"""`sockgate demo`: two demo apps on Unix sockets in a temporary working directory, the proxy in
front, and the commands to try it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .. import config, server
from ..logsetup import configure
from .launcher import DemoApps


def write_config(workdir: Path, listen: str, sockets: dict[str, Path]) -> Path:
    """A real sockgate.toml for the demo, so the user sees how their own would look."""
    lines = [f'listen = "{listen}"', 'workdir = "."', ""]
    for name, socket in sockets.items():
        lines += [f"[apps.{name}]", f'socket = "{socket}"', ""]
    path = workdir / "sockgate.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def run_demo(listen: str, *, echo: Callable[[str], None]) -> int:
    # /tmp keeps socket paths far below the kernel's 107-byte limit.
    workdir = Path(tempfile.mkdtemp(prefix="sockgate-demo-", dir="/tmp"))
    try:
        with DemoApps(workdir) as apps:
            cfg = config.load(write_config(workdir, listen, apps.apps))
            configure(cfg.error_log)

            def ready(srv: server.Server) -> None:
                host, port = srv.address or ("127.0.0.1", 8080)
                base = f"http://{'localhost' if host in ('127.0.0.1', '::1') else host}:{port}"
                echo("")
                echo(f"sockgate demo is running (working directory {workdir})")
                echo(f"  open      {base}/clock/      a live SSE clock and a WebSocket echo box")
                echo(f"  try       curl -i {base}/echo/hello?x=1")
                echo(f"  SSE       curl -N {base}/clock/events")
                echo(f"  redirect  curl -i {base}/clock")
                echo(f"  status    {base}/_sockgate/   or   sockgate status -c {cfg.source}")
                echo(f"  config    {cfg.source}")
                echo("Ctrl-C stops the proxy and both apps.")

            return server.run(cfg, on_ready=ready)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
