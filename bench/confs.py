"""The config files of the proxies under test, as text: the reference and the tuned nginx (with
an HTTPS server for the tuned one), sockgate's sockgate.toml and HAProxy's haproxy.cfg."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from backends import Backend, find_nginx, nginx_temp_paths, nginx_user_line


@dataclass(frozen=True)
class TlsFiles:
    """One leaf (P-256, from a CA made in the temp dir) that every TLS row shows."""

    cert: Path  # the leaf and the CA certificate, PEM
    key: Path
    ca: Path  # what clients that verify are given (--cacert)


@dataclass(frozen=True)
class TlsListen:
    port: int
    files: TlsFiles


# nginx: the reference config and the tuned one ---------------------------------------------


def _routes(backend: Backend) -> list[tuple[str, Path, str]]:
    """(prefix name, socket, upstream name) for the three routes."""
    return [("b", backend.sock, "bench_b"), ("ws", backend.app_sock, "bench_app"),
            ("sse", backend.app_sock, "bench_app")]  # fmt: skip


def _upstreams(backend: Backend) -> str:
    blocks = []
    for name, sock in (("bench_b", backend.sock), ("bench_app", backend.app_sock)):
        blocks.append(
            f"    upstream {name} {{\n        server unix:{sock};\n        keepalive 32;\n    }}\n"
        )
    return "\n".join(blocks)


def _location(name: str, proxy_pass: str, tuned: bool) -> str:
    buffers = (
        "            proxy_buffer_size 256k;\n            proxy_buffers 4 256k;\n" if tuned else ""
    )
    return f"""        location = /{name} {{
            return 301 /{name}/;
        }}

        location /{name}/ {{
            proxy_pass {proxy_pass};

            proxy_http_version 1.1;

            proxy_set_header Host              $host;
            proxy_set_header X-Real-IP         $remote_addr;
            proxy_set_header X-Forwarded-For   $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;

            proxy_set_header Upgrade           $http_upgrade;
            proxy_set_header Connection        $connection_upgrade;

            proxy_buffering off;
            proxy_cache off;
{buffers}
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
"""


def nginx_version() -> tuple[int, ...]:
    done = subprocess.run([find_nginx(), "-v"], capture_output=True, text=True, check=False)
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", done.stderr + done.stdout)
    return tuple(int(n) for n in found.groups()) if found else (0,)


def _tls_server(tls: TlsListen, locations: str) -> str:
    """The HTTPS server of the tuned config. TLS 1.2 and 1.3 as sockgate offers (nginx before
    1.23.4 leaves 1.3 out by default); keepalive_requests raised because nginx otherwise ends an
    HTTP/2 connection with GOAWAY after 1,000 requests and h2load does not reconnect."""
    if nginx_version() >= (1, 25, 1):
        listen = f"listen 127.0.0.1:{tls.port} ssl;\n        http2 on;"
    else:
        listen = f"listen 127.0.0.1:{tls.port} ssl http2;"
    return f"""
    server {{
        {listen}
        server_name localhost;
        ssl_certificate     {tls.files.cert};
        ssl_certificate_key {tls.files.key};
        ssl_protocols       TLSv1.2 TLSv1.3;
        keepalive_requests  1000000;

{locations}
    }}
"""


def nginx_proxy_conf(
    prefix: Path, port: int, backend: Backend, tuned: bool, tls: TlsListen | None = None
) -> str:
    """The reference config (a new upstream connection per request, `Connection: close`), or
    with `tuned` the same plus an upstream keepalive pool, an empty Connection header when not
    upgrading, and proxy_buffer_size 256k; with `tls` also an HTTPS server (HTTP/2 on) with the
    same locations."""
    close_value = "''" if tuned else "close"
    locations = "\n".join(
        _location(name, f"http://{up}/" if tuned else f"http://unix:{sock}:/", tuned)
        for name, sock, up in _routes(backend)
    )
    return f"""worker_processes 1;
{nginx_user_line()}
error_log {prefix}/logs/error.log;
pid       {prefix}/nginx.pid;

events {{
    worker_connections 1024;
}}

http {{
    access_log {prefix}/logs/access.log;

{nginx_temp_paths(prefix)}

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      {close_value};
    }}

{_upstreams(backend) if tuned else ""}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;

{locations}
    }}
{_tls_server(tls, locations) if tls else ""}}}
"""


# sockgate ----------------------------------------------------------------------------------


def sockgate_toml(
    workdir: Path,
    port: int,
    backend: Backend,
    engine: str,
    workers: int,
    tls: TlsListen | None = None,
) -> str:
    lines = [f'listen = "127.0.0.1:{port}"', f'workdir = "{workdir}"', f'engine = "{engine}"']
    if workers != 1:
        lines.append(f"workers = {workers}")
    if tls is not None:
        lines += ["", "[tls]", f'listen = "127.0.0.1:{tls.port}"', "http2 = true",
                  f'cert = "{tls.files.cert}"', f'key = "{tls.files.key}"']  # fmt: skip
    for name, sock in (("b", backend.sock), ("ws", backend.app_sock), ("sse", backend.app_sock)):
        lines += ["", f"[apps.{name}]", f'socket = "{sock}"', f'prefix = "/{name}/"']
    return "\n".join(lines) + "\n"


# HAProxy -----------------------------------------------------------------------------------


def haproxy_conf(port: int, backend: Backend) -> str:
    return f"""global
    maxconn 4096
    nbthread 1

defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout http-request 60s
    timeout http-keep-alive 75s
    option forwardfor
    http-reuse always

frontend bench
    bind 127.0.0.1:{port}
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Proto http
    use_backend b if {{ path_beg /b/ }}
    use_backend app if {{ path_beg /ws/ }} || {{ path_beg /sse/ }}

backend b
    http-request replace-path ^/b(/.*) \\1
    server b unix@{backend.sock}

backend app
    # SSE: without this HAProxy holds small body chunks back (MSG_MORE) for up to 200 ms.
    option http-no-delay
    http-request replace-path ^/(ws|sse)(/.*) \\2
    server app unix@{backend.app_sock}
"""
