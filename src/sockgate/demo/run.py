"""`sockgate demo`: a real sockgate.toml in a temporary working directory whose two apps sockgate
runs itself (`command = ...`, uvicorn on `{socket}`), the proxy in front, and the commands to
try it. What it writes is how a user's own config with supervised apps looks."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .. import config
from ..engine import serve
from ..engine.server import Server
from ..proc.logsetup import configure

DEMO_APPS: dict[str, str] = {
    "clock": "sockgate.demo.apps:clock",
    "echo": "sockgate.demo.apps:echo",
}
"""App name -> the `module:attribute` uvicorn serves."""

GRACEFUL_SHUTDOWN = 2
"""Seconds uvicorn lets open streams (SSE, WebSocket) run on after SIGTERM before cancelling."""


def demo_command(target: str) -> str:
    """The command that serves one demo app under uvicorn on the socket sockgate gives it."""
    return (
        shlex.join(
            [
                sys.executable,  # the interpreter sockgate runs on has uvicorn: it is a dependency
                "-m",
                "uvicorn",
                target,
                "--log-level",
                "warning",
                "--timeout-graceful-shutdown",
                str(GRACEFUL_SHUTDOWN),
                "--uds",
            ]
        )
        + " {socket}"
    )


def write_config(workdir: Path, listen: str, https: str | None = None) -> Path:
    """A real sockgate.toml for the demo, so the user sees how their own would look; with
    `https` (HOST:PORT), a `[tls]` table served by the local CA."""
    lines = [
        "# Written by `sockgate demo`: sockgate starts each app, waits until its socket",
        "# (workdir/sockets/<name>.sock) accepts connections, restarts it if it exits, and",
        "# stops it on Ctrl-C. Their output: logs/<name>.log and this terminal.",
        f"listen = {json.dumps(listen)}",
        'workdir = "."',
        "",
    ]
    for name, target in DEMO_APPS.items():
        lines += [f"[apps.{name}]", f"command = {json.dumps(demo_command(target))}", ""]
    if https is not None:
        lines += ["[tls]  # certificates from sockgate's local CA: `sockgate trust`", ""]
        lines.insert(-1, f"listen = {json.dumps(https)}")
    path = workdir / "sockgate.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def run_demo(listen: str, *, echo: Callable[[str], None], https: str | None = None) -> int:
    # /tmp keeps socket paths far below the kernel's 107-byte limit.
    workdir = Path(tempfile.mkdtemp(prefix="sockgate-demo-", dir="/tmp"))
    try:
        cfg = config.load(write_config(workdir, listen, https))
        configure(cfg.error_log, app_names=[app.name for app in cfg.supervised])

        def ready(srv: Server) -> None:
            host, port = srv.address or ("127.0.0.1", 8080)
            base = f"http://{'localhost' if host in ('127.0.0.1', '::1') else host}:{port}"
            echo("")
            echo(f"sockgate demo is running (working directory {workdir})")
            echo(f"  open      {base}/clock/      a live SSE clock and a WebSocket echo box")
            echo(f"  try       curl -i {base}/echo/hello?x=1")
            echo(f"  SSE       curl -N {base}/clock/events")
            echo(f"  redirect  curl -i {base}/clock")
            for app in cfg.apps:  # each app at the root of its own origin too (host_routes)
                if own := cfg.host_url(app, port):
                    echo(f"  {app.name:<8}  {own:<30}  the same app at its own origin")
            if srv.tls_address is not None:
                tls_port = srv.tls_address[1]
                after = "HTTP/2, once `sockgate trust` has run"
                echo(f"  https     https://localhost:{tls_port}/clock/   {after}")
            echo(f"  status    {base}/_sockgate/   or   sockgate status -c {cfg.source}")
            echo(f"  config    {cfg.source}")
            echo("Ctrl-C stops the proxy and both apps.")

        return serve.run(cfg, on_ready=ready)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
