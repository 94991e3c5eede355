"""The nginx engine on the real nginx: `nginx -t` on rendered configs, and a run end to end."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import httpx
import pytest

from sockgate.config import App, Config, Listen, Timeouts
from sockgate.errors import ConfigError, NginxConfigRejected
from sockgate.nginx import run as nginx_run  # not `import test_config`: pytest would collect it
from sockgate.nginx.render import (
    TEMP_DIRS,
    FdLimit,
    command_line,
    conf_path,
    pid_path,
    render,
)

START_DEADLINE = 10.0
STOP_DEADLINE = 10.0
# The proxy in its own process, so that signals reach it as they would from a terminal.
RUN_PROXY = """
import logging, sys
from sockgate import config
from sockgate.nginx import run
logging.basicConfig(level=logging.INFO)
sys.exit(run.run(config.load(sys.argv[1])))
"""


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short and under /tmp: socket paths must fit in 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="sg", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_config(workdir: Path, *apps: App, **changes: Any) -> Config:
    apps = apps or (App("app1", workdir / "app1.sock", "/app1/"),)
    fields: dict[str, Any] = {"listen": Listen("127.0.0.1", free_port())} | changes
    return Config(source=None, workdir=workdir, apps=apps, **fields)


# --- nginx -t ----------------------------------------------------------------------------------


def rich(workdir: Path) -> Config:
    apps = (
        App("app1", workdir / "a.sock", "/app1/", max_body_size=10 * 1024**2),
        App("api", workdir / "b.sock", "/api/v2/", strip_prefix=False),
        App("quoted", workdir / "c.sock", "/it's;here/"),
        App("home", workdir / "d.sock", "/"),
        App("regexy", workdir / "e.sock", "/a.b+(c)*/", prefix_headers=("X-Mount",)),
        App("plain", workdir / "f.sock", "/plain/", rewrite=False, prefix_headers=()),
    )
    timeouts = Timeouts(connect=0.25, read=600, send=90, client_header=30, keepalive=15)
    return make_config(workdir, *apps, timeouts=timeouts, max_body_size=1024**3)


def hosts(workdir: Path, **changes: Any) -> Config:
    """Host routes with every kind of name: wildcards, a name long enough for bigger hash
    buckets, allowed names the apps' hosts cover, an app that takes every *.localhost name."""
    apps = (
        App("app1", workdir / "a.sock", "/app1/"),
        App("Notes", workdir / "b.sock", "/n/", hosts=("notes.test", "*.notes.localhost")),
        App("long", workdir / "c.sock", "/l/", hosts=(".".join(["a" * 63] * 3) + ".test",)),
    )
    allowed = ("notes.test", "*.test", "x.notes.localhost", "*.example")
    return make_config(workdir, *apps, allowed_hosts=allowed, **changes)


def builders() -> list[Any]:
    return [
        make_config,
        rich,
        hosts,
        lambda workdir: hosts(workdir, host_routes=False),
        lambda workdir: make_config(
            workdir, App("all", workdir / "a.sock", "/", hosts=("*.localhost",))
        ),
        # [::1] is a local name and the listen host: said once.
        lambda workdir: make_config(workdir, listen=Listen("::1", free_port())),
    ]


@pytest.mark.parametrize(
    "build", builders(), ids=["minimal", "rich", "hosts", "hosts-off", "all-localhost", "ipv6"]
)
def test_nginx_accepts_rendered_configs(
    workdir: Path, build: Any, caplog: pytest.LogCaptureFixture
) -> None:
    nginx_run.test_config(build(workdir))
    # Not even a warning (a server name in two servers would be one: nginx ignores the second).
    assert not [r.message for r in caplog.records if r.levelno >= logging.WARNING]
    # nginx -t leaves an empty pid file behind to prove it could; it must not look like a run.
    assert not pid_path(build(workdir)).exists()


def test_prepare_lays_out_the_workdir(workdir: Path) -> None:
    config = make_config(workdir / "nested")
    conf = nginx_run.prepare(config)
    assert conf == conf_path(config)
    for sub in ("conf", "logs", *(f"temp/{n}" for n in TEMP_DIRS)):
        assert (config.workdir / sub).is_dir(), sub
    as_root = os.geteuid() == 0
    expected = render(
        config,
        run_as_root=as_root,
        user="root:root" if as_root else None,
        fd_limit=nginx_run.own_fd_limit(),  # sized for the descriptors nginx will inherit
    )
    assert conf.read_text(encoding="utf-8") == expected


@pytest.mark.parametrize(
    "limit",
    [
        FdLimit(1024, 524288),
        FdLimit(20000, 20000),
        FdLimit(64, 64),
        FdLimit(None, None),
        nginx_run.own_fd_limit(),
    ],
    ids=str,
)
def test_nginx_takes_the_connection_limits_without_a_warning(workdir: Path, limit: FdLimit) -> None:
    """worker_connections never exceeds worker_rlimit_nofile, or nginx would warn at every
    start (and `nginx -t`, whose warnings sockgate logs)."""
    config = make_config(workdir)
    conf = nginx_run.prepare(config)
    as_root = os.geteuid() == 0
    user = "root:root" if as_root else None
    conf.write_text(render(config, run_as_root=as_root, user=user, fd_limit=limit))
    nginx = nginx_run.find_nginx()
    done = subprocess.run(
        [*command_line(config, conf, nginx), "-t"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "[warn]" not in done.stderr, done.stderr
    assert "worker_rlimit_nofile" in conf.read_text(encoding="utf-8")


def test_rejected_config_carries_nginx_message(workdir: Path) -> None:
    config = make_config(workdir, listen=Listen("sg-no-such-host.invalid", 8080))
    with pytest.raises(NginxConfigRejected) as caught:
        nginx_run.test_config(config)
    assert "[emerg] host not found" in caught.value.message
    assert str(conf_path(config)) in str(caught.value)


# --- finding nginx -----------------------------------------------------------------------------


def test_nginx_not_found_says_how_to_install_it(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(nginx_run, "FALLBACK_PATHS", (str(tmp_path / "nginx"),))
    with pytest.raises(nginx_run.NginxNotFound) as caught:
        nginx_run.find_nginx()
    message = str(caught.value)
    assert "\n" not in message
    assert "apt-get install nginx-light" in message
    assert "brew install nginx" in message
    with pytest.raises(nginx_run.NginxNotFound):
        nginx_run.run(make_config(workdir))
    assert not (workdir / "conf").exists()


def test_nginx_outside_path_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "sbin" / "nginx"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(nginx_run, "FALLBACK_PATHS", (str(tmp_path / "missing"), str(fake)))
    assert nginx_run.find_nginx() == str(fake)


# --- an app to proxy to --------------------------------------------------------------------------


class _Request:
    """httptools callbacks: collects one request at a time into `done`."""

    def __init__(self, done: list[dict[str, Any]]) -> None:
        self.done = done
        self.url = b""
        self.headers: dict[str, str] = {}

    def on_message_begin(self) -> None:
        self.url, self.headers = b"", {}

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_message_complete(self) -> None:
        self.done.append({"path": self.url.decode("latin-1"), **self.headers})


@dataclass
class EchoApp:
    """Answers every request with JSON: the path it got, its headers, and which connection."""

    path: Path
    connections: itertools.count[int] = field(default_factory=itertools.count)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn, done = next(self.connections), list[dict[str, Any]]()
        parser = httptools.HttpRequestParser(_Request(done))
        try:
            while data := await reader.read(65536):
                parser.feed_data(data)
                for request in done:
                    body = json.dumps({**request, "conn": conn}).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                await writer.drain()
                # Like a real server: `Connection: close` (the reference's map) ends the reuse.
                if any(r.get("connection", "").lower() == "close" for r in done):
                    return
                done.clear()
        except httptools.HttpParserError:
            pass
        finally:
            writer.close()


@pytest.fixture
def echo_app(workdir: Path) -> Iterator[EchoApp]:
    app = EchoApp(workdir / "app1.sock")
    ready, stop_holder = threading.Event(), []

    async def main() -> None:
        stop = asyncio.Event()
        stop_holder.append((asyncio.get_running_loop(), stop))
        async with await asyncio.start_unix_server(app.serve, app.path):
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(START_DEADLINE), "the echo app did not start"
    yield app
    loop, stop = stop_holder[0]
    loop.call_soon_threadsafe(stop.set)
    thread.join(STOP_DEADLINE)


# --- the proxy, in its own process ---------------------------------------------------------------


@dataclass
class Proxy:
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGINT) -> int:
        self.process.send_signal(signum)
        return self.process.wait(STOP_DEADLINE)


class PortTaken(Exception):
    """Another process took the free port between free_port() and nginx's bind."""


def wait_for_port(proxy: Proxy) -> None:
    """Until this proxy's nginx listens: its pid file is written once it has bound the port and
    set its signal handlers (a connect alone could reach another process that took the port)."""
    deadline = time.monotonic() + START_DEADLINE
    pid_file = proxy.workdir / "nginx.pid"
    while True:
        try:
            if pid_file.exists():
                socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"nothing listening on {proxy.port}:\n{proxy.output()}")
        # Waiting on the process, not sleeping: a proxy that dies ends the wait at once.
        with contextlib.suppress(subprocess.TimeoutExpired):
            status = proxy.process.wait(0.05)
            if "Address already in use" in proxy.output():
                raise PortTaken(proxy.port)
            pytest.fail(f"the proxy exited with {status}:\n{proxy.output()}")


TOML = """\
listen = "127.0.0.1:{port}"
workdir = "{workdir}"

[apps.app1]
socket = "{socket}"

[apps.keep]
socket = "{socket}"
strip_prefix = false

[apps.quoted]
socket = "{socket}"
prefix = "/it's;here/"
"""


@pytest.fixture
def proxy(workdir: Path, echo_app: EchoApp) -> Iterator[Proxy]:
    for _ in range(3):  # a port taken by another test in between: another one
        running = start_proxy(workdir, echo_app.path)
        try:
            wait_for_port(running)
        except PortTaken:
            continue
        try:
            yield running
        finally:
            if running.process.poll() is None:
                running.stop(signal.SIGTERM)
        return
    pytest.fail("three free ports in a row were taken before nginx could bind one")


def start_proxy(workdir: Path, socket_path: Path) -> Proxy:
    port = free_port()
    toml = workdir / "sockgate.toml"
    toml.write_text(TOML.format(port=port, workdir=workdir, socket=socket_path))
    log = workdir / "proxy.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", RUN_PROXY, str(toml)], stdout=out, stderr=subprocess.STDOUT
        )
    return Proxy(process, port, workdir, log)


def get(proxy: Proxy, path: str, **headers: str) -> httpx.Response:
    with httpx.Client(base_url=proxy.url, trust_env=False, timeout=5) as client:
        return client.get(path, headers=headers)


def test_requests_reach_the_app_as_configured(proxy: Proxy) -> None:
    seen = get(proxy, "/app1/foo?x=1", **{"X-Forwarded-Prefix": "/forged"}).json()
    assert seen["path"] == "/foo?x=1"
    assert seen["host"] == f"127.0.0.1:{proxy.port}"
    assert seen["x-forwarded-prefix"] == "/app1"
    assert seen["x-forwarded-host"] == f"127.0.0.1:{proxy.port}"
    assert seen["x-forwarded-proto"] == "http"
    assert "connection" not in seen  # no `Connection: close`: the pooled connection stays open

    again = get(proxy, "/app1/")
    assert again.json()["conn"] == seen["conn"], "nginx opened a new app connection per request"

    kept = get(proxy, "/keep/bar?y=2", **{"X-Forwarded-Prefix": "/forged"}).json()
    assert kept["path"] == "/keep/bar?y=2"
    assert "x-forwarded-prefix" not in kept

    quoted = get(proxy, "/it's;here/x").json()
    assert (quoted["path"], quoted["x-forwarded-prefix"]) == ("/x", "/it's;here")


def test_bare_prefix_redirects_and_unknown_paths_are_404(proxy: Proxy) -> None:
    redirect = get(proxy, "/app1?x=1")
    assert redirect.status_code == 301
    assert redirect.headers["location"] == "/app1/?x=1"
    assert get(proxy, "/app1").headers["location"] == "/app1/"
    assert get(proxy, "/nowhere/").status_code == 404


def test_an_apps_host_gets_every_path_but_those_with_dot_segments(proxy: Proxy) -> None:
    seen = get(proxy, "/app1/x?y=1", Host="APP1.localhost").json()
    assert seen["path"] == "/app1/x?y=1"
    assert "x-forwarded-prefix" not in seen
    # nginx resolves `..` for its own routing but would pass the path on as written.
    for target in (b"/a/../b", b"/a/%2e%2E/b", b"/a%2F..%2Fb", b"/a/.?x"):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: app1.localhost\r\n\r\n" % target)
            assert sock.recv(4096).startswith(b"HTTP/1.1 400 "), target
    assert get(proxy, "/a/.b/..c", Host="app1.localhost").json()["path"] == "/a/.b/..c"


def test_sigint_stops_nginx_cleanly(proxy: Proxy) -> None:
    assert get(proxy, "/app1/").status_code == 200
    pid_file = proxy.workdir / "nginx.pid"
    assert pid_file.read_text().strip().isdigit()
    assert proxy.stop(signal.SIGINT) == 0, proxy.output()
    assert not pid_file.exists()
    if os.geteuid() == 0:
        assert "running as root" in proxy.output()
    access = (proxy.workdir / "logs" / "access.log").read_text()
    line = next(line for line in access.splitlines() if '"GET /app1/ ' in line)
    assert line.split()[-1] == "app=app1"
    assert (proxy.workdir / "sockgate.pid").exists() is False


def test_sigquit_stops_nginx_gracefully(proxy: Proxy) -> None:
    assert get(proxy, "/app1/").status_code == 200
    assert proxy.stop(signal.SIGQUIT) == 0, proxy.output()
    assert not (proxy.workdir / "nginx.pid").exists()


def test_hup_reloads_and_term_stops_through_sockgate(proxy: Proxy) -> None:
    proxy.process.send_signal(signal.SIGHUP)
    assert get(proxy, "/app1/").status_code == 200
    assert proxy.stop(signal.SIGTERM) == 0, proxy.output()
    errors = (proxy.workdir / "logs" / "error.log").read_text()
    # nginx names the sender: sockgate itself, so each signal went through the forwarder.
    assert f"signal 1 (SIGHUP) received from {proxy.process.pid}" in errors
    # SIGTERM asks nginx for its graceful stop, like the built-in engine's drain: SIGQUIT.
    assert f"signal 3 (SIGQUIT) received from {proxy.process.pid}" in errors


def test_unwritable_workdir_is_a_config_error(workdir: Path) -> None:
    (workdir / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot write") as caught:
        nginx_run.prepare(make_config(workdir / "file" / "sub"))
    assert caught.value.key == "workdir"
