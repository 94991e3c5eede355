"""The proxies under test, each on its own loopback port, all routing /b/ to the backend nginx's
socket and /ws/, /sse/ to the app's socket (prefix stripped), plus the direct baseline. The rows
in TLS_KEYS also listen for HTTPS (HTTP/1.1 and HTTP/2) on a second port, all with one
certificate."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backends import Backend, start_nginx
from baseline import Baseline
from confs import TlsListen, haproxy_conf, nginx_proxy_conf, sockgate_toml
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
    tls: TlsListen | None = None
    """The HTTPS listener (HTTP/1.1 and HTTP/2), if the row has one."""
    tls_na: str | None = None
    """Why the TLS workloads are n/a for a row that should have had them."""

    @property
    def measured_pid(self) -> int | None:
        return self.child.pid if self.child is not None else None

    @property
    def has_tls(self) -> bool:
        return self.tls is not None and not self.na and not self.tls_na

    def tls_url(self, rest: str) -> str:
        assert self.tls is not None
        return f"https://127.0.0.1:{self.tls.port}{self.path('b', rest)}"

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
# The rows that serve HTTPS too; the TLS workloads say n/a for the others.
TLS_KEYS = ("tuned", "sg-builtin", "sg-pure", "sg-base")


def baseline_label(baseline: Baseline) -> str:
    return f"sockgate built-in at {baseline.ref}, compiled"


# nginx: the reference config and the tuned one ---------------------------------------------


def start_nginx_proxy(
    sup: Supervisor, tmp: Path, key: str, port: int, backend: Backend, tls: TlsListen | None
) -> Target:
    prefix = tmp / key
    conf = nginx_proxy_conf(prefix, port, backend, tuned=key == "tuned", tls=tls)
    child = start_nginx(sup, key, prefix, conf)
    wait_tcp(port, child)
    if tls is not None:
        wait_tcp(tls.port, child)
    return Target(key, LABELS[key], port, port, child=child,
                  access_logs=[prefix / "logs" / "access.log"], tls=tls)  # fmt: skip


# sockgate ----------------------------------------------------------------------------------


def write_sockgate_toml(
    tmp: Path,
    key: str,
    port: int,
    backend: Backend,
    engine: str,
    workers: int = 1,
    tls: TlsListen | None = None,
) -> Path:
    workdir = tmp / key
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "sockgate.toml"
    path.write_text(sockgate_toml(workdir, port, backend, engine, workers, tls), encoding="utf-8")
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
    tls: TlsListen | None = None,
) -> Target:
    """sockgate as installed (compiled if `pip install .` built it so), with `pure` from this
    checkout's plain sources, or with `baseline` the build of an older commit, for them side by
    side. Only `python -m sockgate` is used: every version has it. With `tls` also a `[tls]`
    listener with those files; a sockgate that refuses `[tls]` (an older commit) runs without
    it, its TLS workloads n/a."""
    label = LABELS[key] if baseline is None else baseline_label(baseline)
    if baseline is not None and baseline.error:
        return Target(key, label, na=f"n/a: building {baseline.ref} failed: {baseline.error}")
    env = None
    if pure:
        path = [str(SOURCES), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    elif baseline is not None:
        env = baseline.env()
    config = write_sockgate_toml(tmp, key, port, backend, engine, workers, tls)
    refused = sockgate_check(config, env)
    tls_na = None
    if refused is not None and tls is not None:
        tls_na, tls = f"n/a: sockgate check refused [tls]: {refused}", None
        config = write_sockgate_toml(tmp, key, port, backend, engine, workers)
        refused = sockgate_check(config, env)
    if refused is not None:
        return Target(key, label, na=f"n/a: sockgate check refused the config: {refused}")
    args = [sys.executable, "-m", "sockgate", "run", "-c", str(config)]
    child = sup.start(key, args, env=env)
    wait_tcp(port, child)
    if tls is not None:
        wait_tcp(tls.port, child)
    return Target(key, label, port, port, child=child,
                  access_logs=[config.parent / "logs" / "access.log"],
                  tls=tls, tls_na=tls_na)  # fmt: skip


# HAProxy -----------------------------------------------------------------------------------


def start_haproxy(
    sup: Supervisor, tmp: Path, key: str, port: int, backend: Backend, tls: TlsListen | None
) -> Target:
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


Starter = Callable[[Supervisor, Path, str, int, Backend, TlsListen | None], Target]

STARTERS: dict[str, Starter] = {
    "reference": start_nginx_proxy,
    "tuned": start_nginx_proxy,
    "sg-nginx": lambda s, t, k, p, b, _: start_sockgate(s, t, k, p, b, "nginx", 1),
    "sg-builtin": lambda s, t, k, p, b, x: start_sockgate(s, t, k, p, b, "builtin", 1, tls=x),
    "sg-pure": lambda s, t, k, p, b, x: start_sockgate(
        s, t, k, p, b, "builtin", 1, pure=True, tls=x
    ),
    "sg-workers2": lambda s, t, k, p, b, _: start_sockgate(s, t, k, p, b, "builtin", 2),
    "haproxy": start_haproxy,
}


def start_target(
    sup: Supervisor,
    tmp: Path,
    key: str,
    port: int,
    backend: Backend,
    baseline: Baseline | None = None,
    tls: TlsListen | None = None,
) -> Target:
    """Start one proxy; a proxy that cannot start is reported as n/a, not fatal. `sg-base`
    needs the `baseline` build (the same config and settings as `sg-builtin`). `tls`: the
    HTTPS listener, for the rows in TLS_KEYS (the others ignore it)."""
    label = LABELS[key]
    if key == "direct":
        return direct_target(backend)
    tls = tls if key in TLS_KEYS else None
    try:
        if key == "sg-base":
            if baseline is None:
                return Target(key, label, na="n/a: no --baseline REF given")
            label = baseline_label(baseline)
            return start_sockgate(
                sup, tmp, key, port, backend, "builtin", 1, baseline=baseline, tls=tls
            )
        return STARTERS[key](sup, tmp, key, port, backend, tls)
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        return Target(key, label, na=f"n/a: did not start: {exc}")
