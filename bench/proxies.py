"""The proxies under test, each on its own loopback port, all routing /b/ to the backend nginx's
socket and /ws/, /sse/ to the app's socket (prefix stripped), plus the direct baseline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backends import Backend, nginx_temp_paths, nginx_user_line, start_nginx
from baseline import Baseline
from procs import BenchError, Child, Supervisor, wait_tcp

CHECK_TIMEOUT = 30.0
# This checkout's plain sources: the `sg-pure` target runs them (never compiled in place).
SOURCES = Path(__file__).resolve().parents[1] / "src"


@dataclass
class Target:
    """Where a workload sends its load, and which process tree pays for it."""

    key: str
    label: str
    port: int = 0
    app_port: int = 0
    prefixes: dict[str, str] = field(
        default_factory=lambda: {"b": "/b", "ws": "/ws", "sse": "/sse"}
    )
    child: Child | None = None
    access_logs: list[Path] = field(default_factory=list)
    na: str | None = None

    @property
    def measured_pid(self) -> int | None:
        return self.child.pid if self.child is not None else None

    def path(self, route: str, rest: str) -> str:
        return self.prefixes[route] + rest

    def url(self, rest: str) -> str:
        return f"http://127.0.0.1:{self.port}{self.path('b', rest)}"

    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.app_port}{self.path('ws', '/echo')}"


LABELS = {
    "reference": "reference nginx",
    "tuned": "tuned nginx",
    "sg-nginx": "sockgate nginx engine",
    "sg-builtin": "sockgate built-in",
    "sg-base": "sockgate built-in at the baseline, compiled",
    "sg-pure": "sockgate built-in, pure Python",
    "sg-workers2": "sockgate built-in, workers=2",
    "haproxy": "HAProxy",
    "direct": "direct, no proxy",
}
ORDER = tuple(LABELS)
# Only with `--baseline REF`: a build of sockgate at an older commit (bench/baseline.py).
OPTIONAL = ("sg-base",)


def baseline_label(baseline: Baseline) -> str:
    return f"sockgate built-in at {baseline.ref}, compiled"


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


def nginx_proxy_conf(prefix: Path, port: int, backend: Backend, tuned: bool) -> str:
    """The reference config (a new upstream connection per request, `Connection: close`), or
    with `tuned` the same plus an upstream keepalive pool, an empty Connection header when not
    upgrading, and proxy_buffer_size 256k."""
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
}}
"""


def start_nginx_proxy(sup: Supervisor, tmp: Path, key: str, port: int, backend: Backend) -> Target:
    prefix = tmp / key
    conf = nginx_proxy_conf(prefix, port, backend, tuned=key == "tuned")
    child = start_nginx(sup, key, prefix, conf)
    wait_tcp(port, child)
    return Target(key, LABELS[key], port, port, child=child,
                  access_logs=[prefix / "logs" / "access.log"])  # fmt: skip


# sockgate ----------------------------------------------------------------------------------


def sockgate_toml(workdir: Path, port: int, backend: Backend, engine: str, workers: int) -> str:
    lines = [f'listen = "127.0.0.1:{port}"', f'workdir = "{workdir}"', f'engine = "{engine}"']
    if workers != 1:
        lines.append(f"workers = {workers}")
    for name, sock in (("b", backend.sock), ("ws", backend.app_sock), ("sse", backend.app_sock)):
        lines += ["", f"[apps.{name}]", f'socket = "{sock}"', f'prefix = "/{name}/"']
    return "\n".join(lines) + "\n"


def write_sockgate_toml(
    tmp: Path, key: str, port: int, backend: Backend, engine: str, workers: int = 1
) -> Path:
    workdir = tmp / key
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "sockgate.toml"
    path.write_text(sockgate_toml(workdir, port, backend, engine, workers), encoding="utf-8")
    return path


def sockgate_check(config: Path, env: dict[str, str] | None = None) -> str | None:
    """None when `sockgate check -c CONFIG` accepts the file, else what it said."""
    done = subprocess.run(
        [sys.executable, "-m", "sockgate", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=CHECK_TIMEOUT,
        check=False,
    )
    if done.returncode == 0:
        return None
    said = (done.stderr.strip() or done.stdout.strip()).splitlines()
    return said[-1] if said else f"exit status {done.returncode}"


def start_sockgate(
    sup: Supervisor,
    tmp: Path,
    key: str,
    port: int,
    backend: Backend,
    engine: str,
    workers: int,
    *,
    pure: bool = False,
    baseline: Baseline | None = None,
) -> Target:
    """sockgate as installed (compiled if `pip install .` built it so), with `pure` from this
    checkout's plain sources, or with `baseline` the build of an older commit, for them side by
    side. Only `python -m sockgate` is used: every version has it."""
    label = LABELS[key] if baseline is None else baseline_label(baseline)
    if baseline is not None and baseline.error:
        return Target(key, label, na=f"n/a: building {baseline.ref} failed: {baseline.error}")
    config = write_sockgate_toml(tmp, key, port, backend, engine, workers)
    env = None
    if pure:
        path = [str(SOURCES), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    elif baseline is not None:
        env = baseline.env()
    refused = sockgate_check(config, env)
    if refused is not None:
        return Target(key, label, na=f"n/a: sockgate check refused the config: {refused}")
    args = [sys.executable, "-m", "sockgate", "run", "-c", str(config)]
    child = sup.start(key, args, env=env)
    wait_tcp(port, child)
    return Target(key, label, port, port, child=child,
                  access_logs=[config.parent / "logs" / "access.log"])  # fmt: skip


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


def start_haproxy(sup: Supervisor, tmp: Path, key: str, port: int, backend: Backend) -> Target:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        return Target(key, LABELS[key], na="n/a: haproxy is not installed")
    conf = tmp / "haproxy.cfg"
    conf.write_text(haproxy_conf(port, backend), encoding="utf-8")
    checked = subprocess.run(
        [haproxy, "-c", "-q", "-f", str(conf)], capture_output=True, text=True, check=False
    )
    if checked.returncode != 0:
        raise BenchError(f"haproxy -c refused {conf}:\n{checked.stdout}{checked.stderr}")
    child = sup.start(key, [haproxy, "-f", str(conf), "-db"])
    wait_tcp(port, child)
    return Target(key, LABELS[key], port, port, child=child)


# all of them -------------------------------------------------------------------------------


def direct_target(backend: Backend) -> Target:
    return Target(
        "direct",
        LABELS["direct"],
        backend.port,
        backend.app_port,
        prefixes={"b": "", "ws": "", "sse": ""},
    )


Starter = Callable[[Supervisor, Path, str, int, Backend], Target]

STARTERS: dict[str, Starter] = {
    "reference": start_nginx_proxy,
    "tuned": start_nginx_proxy,
    "sg-nginx": lambda s, t, k, p, b: start_sockgate(s, t, k, p, b, "nginx", 1),
    "sg-builtin": lambda s, t, k, p, b: start_sockgate(s, t, k, p, b, "builtin", 1),
    "sg-pure": lambda s, t, k, p, b: start_sockgate(s, t, k, p, b, "builtin", 1, pure=True),
    "sg-workers2": lambda s, t, k, p, b: start_sockgate(s, t, k, p, b, "builtin", 2),
    "haproxy": start_haproxy,
}


def start_target(
    sup: Supervisor,
    tmp: Path,
    key: str,
    port: int,
    backend: Backend,
    baseline: Baseline | None = None,
) -> Target:
    """Start one proxy; a proxy that cannot start is reported as n/a, not fatal. `sg-base`
    needs the `baseline` build (the same config and settings as `sg-builtin`)."""
    label = LABELS[key]
    if key == "direct":
        return direct_target(backend)
    try:
        if key == "sg-base":
            if baseline is None:
                return Target(key, label, na="n/a: no --baseline REF given")
            label = baseline_label(baseline)
            return start_sockgate(sup, tmp, key, port, backend, "builtin", 1, baseline=baseline)
        return STARTERS[key](sup, tmp, key, port, backend)
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        return Target(key, label, na=f"n/a: did not start: {exc}")
