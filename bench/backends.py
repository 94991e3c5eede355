"""The backend behind every proxy: nginx (1 worker, no access log) serving /tiny, /1m and /64m
from a Unix socket and from a loopback TCP port, and the uvicorn app (SSE, WebSocket echo) from
bench/app.py, also on both."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from procs import BenchError, Child, Supervisor, wait_tcp, wait_unix

TINY_BODY = "hello, bench\n"
MIB = 1 << 20
FILES = {"1m": MIB, "64m": 64 * MIB}
NGINX_TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
APP_SCRIPT = Path(__file__).with_name("app.py")


@dataclass
class Backend:
    sock: Path
    port: int
    app_sock: Path
    app_port: int
    nginx: Child
    app: Child


def find_nginx() -> str:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BenchError("nginx is not installed (apt-get install nginx-light)")


def nginx_user_line() -> str:
    """As root, nginx drops its workers to `nobody`, who cannot reach sockets in our 0700 temp
    dir: keep them on our own account, as sockgate's nginx engine does."""
    if os.geteuid() != 0:
        return ""
    try:
        account = pwd.getpwuid(os.geteuid())
        return f"user {account.pw_name} {grp.getgrgid(account.pw_gid).gr_name};"
    except KeyError:
        return "user root;"


def nginx_prefix_dirs(prefix: Path) -> None:
    for name in ("logs", *(f"temp/{d}" for d in NGINX_TEMP_DIRS)):
        (prefix / name).mkdir(parents=True, exist_ok=True)


def nginx_temp_paths(prefix: Path) -> str:
    return "\n".join(f"    {name}_temp_path {prefix}/temp/{name};" for name in NGINX_TEMP_DIRS)


def start_nginx(sup: Supervisor, name: str, prefix: Path, conf_text: str) -> Child:
    """Write PREFIX/conf/nginx.conf and run nginx on it in the foreground (-g 'daemon off;')."""
    conf = prefix / "conf" / "nginx.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(conf_text, encoding="utf-8")
    nginx_prefix_dirs(prefix)
    args = [find_nginx(), "-p", f"{prefix}/", "-c", str(conf), "-e", f"{prefix}/logs/error.log"]
    return sup.start(name, [*args, "-g", "daemon off;"])


def write_files(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    block = os.urandom(MIB)
    for name, size in FILES.items():
        with (root / name).open("wb") as out:
            for _ in range(size // MIB):
                out.write(block)


def backend_conf(prefix: Path, sock: Path, port: int, files: Path) -> str:
    return f"""worker_processes 1;
{nginx_user_line()}
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log;

events {{
    worker_connections 8192;
}}

http {{
    access_log off;
{nginx_temp_paths(prefix)}
    sendfile on;
    tcp_nopush on;
    # A proxy's keep-alive pool should not be closed every 1,000 requests (nginx's default).
    keepalive_requests 1000000;

    server {{
        listen unix:{sock};
        listen 127.0.0.1:{port};
        root {files};

        location = /tiny {{
            default_type text/plain;
            return 200 "{TINY_BODY.strip()}\\n";
        }}

        location / {{
            try_files $uri =404;
        }}
    }}
}}
"""


def start_backend(sup: Supervisor, tmp: Path, port: int, app_port: int) -> Backend:
    files = tmp / "files"
    write_files(files)
    prefix = tmp / "backend"
    sock = tmp / "b.sock"
    app_sock = tmp / "app.sock"
    nginx = start_nginx(sup, "backend-nginx", prefix, backend_conf(prefix, sock, port, files))
    app = sup.start(
        "backend-app",
        [sys.executable, str(APP_SCRIPT), "--uds", str(app_sock), "--port", str(app_port)],
    )
    wait_unix(sock, nginx)
    wait_tcp(port, nginx)
    wait_unix(app_sock, app)
    wait_tcp(app_port, app)
    return Backend(sock, port, app_sock, app_port, nginx, app)
