"""Reload (issue 7): SIGHUP, `sockgate reload` and `run --watch` read the config again. Streams to
apps whose route stays keep flowing; new requests follow the new config; streams to a removed
app end after the drain deadline (`timeouts.shutdown`); an invalid config changes nothing."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import RawFactory
from tests.support.clients import DEADLINE, RawClient, request_bytes
from tests.support.proc import Proxy, free_port, run_sockgate, wait_for_line

AppSpec = dict[str, object]
RELOADED = r"\breloaded: "
REFUSED = r"reload refused, the running config stays"


class Site:
    """A sockgate.toml that a test rewrites between reloads, and the proxy that runs it."""

    def __init__(self, tmp: Path, engine: str, *, timeouts: str = "", workers: int = 1) -> None:
        self.tmp = tmp
        self.engine = engine
        self.path = tmp / "sockgate.toml"
        self.port = free_port() if engine == "nginx" else 0
        self.timeouts = timeouts
        self.workers = workers
        self.reloads = 0
        self.proxy: Proxy | None = None

    def write(self, apps: dict[str, AppSpec], *, extra: str = "", port: int | None = None) -> None:
        lines = [
            f'listen = "127.0.0.1:{self.port if port is None else port}"',
            'workdir = "work"',
            f'engine = "{self.engine}"',
            f"workers = {self.workers}",
            extra,
            "[timeouts]",
            self.timeouts,
        ]
        for name, spec in apps.items():
            lines.append(f"[apps.{name}]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in spec.items()]
        # As editors save: another file renamed over this one.
        partial = self.path.with_name(self.path.name + ".tmp")
        partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
        partial.replace(self.path)

    def start(self, apps: dict[str, AppSpec], *args: str) -> Proxy:
        self.write(apps)
        self.proxy = Proxy(self.path, *args, engine=self.engine).start()
        return self.proxy

    @property
    def running(self) -> Proxy:
        assert self.proxy is not None
        return self.proxy

    def trigger(self, how: str) -> None:
        proc = self.running.proc
        assert proc is not None
        if how == "sighup":
            proc.send_signal(signal.SIGHUP)
        elif how == "command":
            done = run_sockgate("reload", "-c", str(self.path), cwd=self.tmp)
            assert done.returncode == 0, done.stderr
            if self.engine == "nginx":
                assert f"pid {proc.pid}" in done.stdout  # signalled: nginx has no control socket
            else:
                assert done.stdout.startswith("sockgate: reload"), done.stdout  # the outcome
        else:
            assert how == "watch"  # the edit itself reloads

    def reload(self, how: str, apps: dict[str, AppSpec], *, extra: str = "") -> str:
        """Write the new config, reload it `how`, and return the log line that says so."""
        self.write(apps, extra=extra)
        self.trigger(how)
        self.reloads += 1
        return self.running.wait_for_lines(RELOADED, self.reloads)[-1]

    def url(self, path: str) -> str:
        return f"{self.running.url}{path}"

    def error_log(self) -> str:
        path = self.tmp / "work" / "logs" / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def settle(check: Callable[[], bool], engine: str, what: str) -> None:
    """The built-in engine serves the new config from the "reloaded" line on: `check` must hold
    at once. nginx loads it in new worker processes after the SIGHUP, with no event to wait on:
    `check` is retried until a deadline."""
    if engine == "builtin":
        assert check(), what
        return
    end = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < end, what
        time.sleep(0.05)  # nginx starts its new workers on its own; bounded by the deadline


def status(site: Site, path: str) -> int:
    # A new connection each time: what a new client sees.
    return httpx.get(site.url(path), timeout=DEADLINE).status_code


@pytest.fixture
def site(tmp: Path, engine: str) -> Iterator[Site]:
    made = Site(tmp, engine, timeouts='shutdown = "1s"')
    yield made
    if made.proxy is not None:
        code = made.proxy.stop()
        output = made.proxy.output()
        assert code == 0, output
        assert "Traceback" not in output, output


# --- streams that survive reloads ------------------------------------------------------------


class Streams:
    """An open WebSocket and an open SSE stream to the Starlette app."""

    def __init__(self, site: Site) -> None:
        self._stack = contextlib.ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(f"ws://127.0.0.1:{site.running.port}/st/ws", open_timeout=DEADLINE)
        )
        client = self._stack.enter_context(httpx.Client(timeout=DEADLINE))
        response = self._stack.enter_context(
            client.stream("GET", site.url("/st/events?n=100000&gap=0.05"))
        )
        assert response.headers["content-type"].startswith("text/event-stream")
        self._lines = response.iter_lines()
        self.last_id = -1
        self.sent = 0

    def next_event(self) -> int:
        for line in self._lines:
            if line.startswith("id: "):
                event = int(line[4:])
                # One stream all along: no event lost, none repeated (a reconnect would).
                assert event == self.last_id + 1, (self.last_id, event)
                self.last_id = event
                return event
        raise AssertionError("the SSE stream ended")

    def flowing(self) -> None:
        """An SSE event arrives and a WebSocket message makes the round trip."""
        self.next_event()
        self.sent += 1
        self.ws.send(f"message {self.sent}")
        assert self.ws.recv(timeout=DEADLINE) == f"echo: message {self.sent}"

    def echo_until_closed(self) -> None:
        while True:
            self.ws.send("still there?")
            assert self.ws.recv(timeout=DEADLINE) == "echo: still there?"

    def events_until_closed(self) -> None:
        while True:
            self.next_event()

    def close(self) -> None:
        self._stack.close()


@pytest.mark.nginx_difference(
    "on reload nginx's old workers keep open streams only until worker_shutdown_timeout "
    "(timeouts.shutdown), then close them"
)
@pytest.mark.parametrize("how", ["sighup", "command", "watch"])
def test_websocket_and_sse_survive_three_reloads(
    site: Site, starlette_sock: Path, raw_app: RawFactory, how: str
) -> None:
    other = raw_app(name="b")
    st: AppSpec = {"socket": str(starlette_sock)}
    site.start({"st": st}, *(["--watch"] if how == "watch" else []))
    streams = Streams(site)
    try:
        streams.flowing()
        line = site.reload(how, {"st": st, "b": {"socket": str(other.path)}})
        assert "+b" in line
        streams.flowing()
        settle(lambda: status(site, "/b/x") == 200, site.engine, "the added app is not served")

        moved = {"socket": str(other.path), "prefix": "/bee/"}
        line = site.reload(how, {"st": st, "b": moved}, extra='allowed_hosts = ["example.test"]')
        assert "~b (prefix changed)" in line
        assert "allowed_hosts" in line
        streams.flowing()
        settle(lambda: status(site, "/bee/x") == 200, site.engine, "the new prefix is not served")
        assert status(site, "/b/x") == 404

        line = site.reload(how, {"st": st})
        assert "-b" in line
        settle(lambda: status(site, "/bee/x") == 404, site.engine, "the removed app is served")
        # Longer than the drain deadline (1 s): streams of an unchanged app are never drained.
        until = time.monotonic() + 2.5
        while time.monotonic() < until:
            streams.flowing()  # paced by the app's SSE events, 50 ms apart
    finally:
        streams.close()
    assert status(site, "/st/x") == 200


def test_hosts_added_on_reload_route_while_streams_on_another_app_flow(
    site: Site, starlette_sock: Path, raw_app: RawFactory
) -> None:
    other = raw_app(name="b")
    st: AppSpec = {"socket": str(starlette_sock)}
    site.start({"st": st, "b": {"socket": str(other.path)}})

    def at_bee(path: str) -> int:
        host = {"Host": f"bee.test:{site.running.port}"}
        return httpx.get(site.url(path), headers=host, timeout=DEADLINE).status_code

    assert at_bee("/x") == 421  # not a name of this sockgate's yet
    streams = Streams(site)
    try:
        streams.flowing()
        line = site.reload(
            "sighup", {"st": st, "b": {"socket": str(other.path), "hosts": ["bee.test"]}}
        )
        assert "~b (hosts changed)" in line
        streams.flowing()
        settle(lambda: at_bee("/y?z=1") == 200, site.engine, "the added host is not routed")
        assert other.requests[-1].target == b"/y?z=1"  # at the root of its host: not stripped
        assert status(site, "/b/x") == 200  # its prefix route stays
        for _ in range(5):
            streams.flowing()
    finally:
        streams.close()


# --- new requests follow the new config ---------------------------------------------------------


@pytest.mark.nginx_difference(
    "a kept-alive connection stays with nginx's old worker: its next request gets the old "
    "routes, or the connection is closed"
)
def test_next_request_on_a_kept_alive_connection_follows_the_new_routes(
    site: Site, raw_app: RawFactory
) -> None:
    a, b = raw_app(name="a"), raw_app(name="b")
    site.start({"a": {"socket": str(a.path)}})
    with RawClient(site.running.port) as client:
        client.send(request_bytes("/a/x"))
        assert client.response().status == 200
        site.reload(
            "sighup", {"a": {"socket": str(a.path), "prefix": "/a2/"}, "b": {"socket": str(b.path)}}
        )
        for path, expected in [("/b/y", 200), ("/a2/y", 200), ("/a/y", 404), ("/b/z", 200)]:
            client.send(request_bytes(path))
            assert client.response().status == expected, path
    assert [r.target for r in b.requests] == [b"/y", b"/z"]
    assert [r.target for r in a.requests] == [b"/x", b"/y"]
    # Same socket: app a's pool was kept, so its connection too.
    assert a.connections == 1


def test_limits_and_allowed_hosts_follow_a_reload(site: Site, raw_app: RawFactory) -> None:
    app = raw_app(name="app1")
    apps: dict[str, AppSpec] = {"app1": {"socket": str(app.path)}}
    site.start(apps)

    def answers(host: str, body: bytes) -> int:
        url = site.url("/app1/x")
        return httpx.post(url, headers={"Host": host}, content=body, timeout=DEADLINE).status_code

    assert answers("example.test", b"") == 421
    assert answers("localhost", b"x" * 2000) == 200
    site.reload("sighup", apps, extra='allowed_hosts = ["example.test"]\nmax_body_size = "1k"')
    # Both at once: with nginx, a new connection may still meet an old worker for a moment.
    settle(
        lambda: answers("example.test", b"") == 200 and answers("localhost", b"x" * 2000) == 413,
        site.engine,
        "the new host or the new limit is not applied",
    )


# --- a removed app: drained ---------------------------------------------------------------------


def test_streams_to_a_removed_app_end_after_the_drain_deadline(
    site: Site, starlette_sock: Path, raw_app: RawFactory
) -> None:
    keep = raw_app(name="keep")
    site.start({"st": {"socket": str(starlette_sock)}, "keep": {"socket": str(keep.path)}})
    streams = Streams(site)
    try:
        streams.flowing()
        line = site.reload("sighup", {"keep": {"socket": str(keep.path)}})
        reloaded_at = time.monotonic()
        assert "-st" in line
        settle(lambda: status(site, "/st/x") == 404, site.engine, "the removed app is served")
        assert status(site, "/keep/x") == 200
        with pytest.raises(ConnectionClosed):
            streams.echo_until_closed()
        # Cut short, never ended as if complete.
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            streams.events_until_closed()
        ended = time.monotonic() - reloaded_at
    finally:
        streams.close()
    assert 0.5 < ended < 6, f"the streams ended {ended:.2f}s after the reload (deadline 1s)"
    if site.engine == "builtin":
        # Waited for: the clients see the close before the line that says so reaches the log
        # (read from the proxy's stderr by a thread), so a look at the output now may miss it.
        site.running.wait_for_output(r"st: 2 connections cut at the drain deadline")


# --- refused reloads ----------------------------------------------------------------------------


def test_invalid_config_reload_changes_nothing(site: Site, raw_app: RawFactory) -> None:
    app = raw_app(name="app1")
    site.start({"app1": {"socket": str(app.path)}})
    conf = site.tmp / "work" / "conf" / "nginx.conf"
    rendered = conf.read_bytes() if site.engine == "nginx" else b""
    site.write({"app1": {"socket": str(app.path), "prefix": "app1"}})
    site.trigger("sighup")
    line = site.running.wait_for_lines(REFUSED, 1)[0]
    assert f"{site.path}: apps.app1.prefix: 'app1'" in line
    assert status(site, "/app1/x") == 200
    assert f"{site.path}: apps.app1.prefix" in wait_for_line(
        site.tmp / "work" / "logs" / "error.log", REFUSED.split(",")[0]
    )
    # The command checks before it signals: the error on its stderr, exit 1, nothing sent.
    done = run_sockgate("reload", "-c", str(site.path), cwd=site.tmp)
    assert done.returncode == 1
    assert "apps.app1.prefix" in done.stderr
    assert len(site.running.wait_for_lines(REFUSED, 1)) == 1
    if site.engine == "nginx":
        assert conf.read_bytes() == rendered
        assert not conf.with_name("nginx.conf.next").exists()
        assert "(SIGHUP)" not in site.error_log(), "the invalid config reached nginx"
    # Fixed, it loads: the refused attempt left nothing behind.
    site.write({"app1": {"socket": str(app.path), "prefix": "/one/"}})
    site.trigger("sighup")
    assert "~app1 (prefix changed)" in site.running.wait_for_lines(RELOADED, 1)[0]
    settle(lambda: status(site, "/one/x") == 200, site.engine, "the fixed config is not served")


@pytest.mark.parametrize("key", ["listen", "workdir"])
def test_settings_only_a_restart_can_change_are_refused(
    site: Site, raw_app: RawFactory, key: str
) -> None:
    app = raw_app(name="app1")
    apps: dict[str, AppSpec] = {"app1": {"socket": str(app.path)}}
    site.start(apps)
    if key == "listen":
        site.write(apps | {"new": {"socket": str(app.path)}}, port=free_port())
    else:
        site.write(apps | {"new": {"socket": str(app.path)}})
        site.path.write_text(site.path.read_text().replace('"work"', '"elsewhere"'))
    site.trigger("sighup")
    line = site.running.wait_for_lines(REFUSED, 1)[0]
    assert f"{key}: cannot change on reload" in line
    assert "restart sockgate" in line
    assert status(site, "/app1/x") == 200
    assert status(site, "/new/x") == 404  # nothing of that file was applied
    if site.engine == "nginx":
        assert "(SIGHUP)" not in site.error_log()


@pytest.mark.nginx_difference(
    "the nginx engine has no control socket: `sockgate reload` signals it, the outcome is logged"
)
def test_reload_command_prints_the_outcome_and_fails_when_refused(
    site: Site, raw_app: RawFactory
) -> None:
    app = raw_app(name="app1")
    apps: dict[str, AppSpec] = {"app1": {"socket": str(app.path)}}
    site.start(apps)
    site.write(apps | {"b": {"socket": str(app.path)}})
    done = run_sockgate("reload", "-c", str(site.path), cwd=site.tmp)
    assert (done.returncode, done.stdout) == (0, "sockgate: reloaded: +b\n"), done.stderr
    site.write(apps, port=free_port())
    done = run_sockgate("reload", "-c", str(site.path), cwd=site.tmp)
    assert done.returncode == 1
    assert "listen: cannot change on reload" in done.stderr
    assert status(site, "/b/x") == 200  # the last config that was applied stays


# --- process models -----------------------------------------------------------------------------


def test_reload_with_two_workers(tmp: Path, raw_app: RawFactory) -> None:
    a, b = raw_app(name="a"), raw_app(name="b")
    site = Site(tmp, "builtin", workers=2)
    proxy = site.start({"a": {"socket": str(a.path)}})
    try:
        proxy.wait_for_output("2 worker processes")
        site.write({"a": {"socket": str(a.path)}, "b": {"socket": str(b.path)}})
        site.trigger("sighup")
        assert "+b" in proxy.wait_for_lines(r"reloading 2 workers: ", 1)[0]
        workers = proxy.wait_for_lines(r"worker \d+: reloaded: \+b", 2)
        assert len({line.split(":")[1] for line in workers}) == 2
        for _ in range(20):  # a new connection each: both workers answer
            assert status(site, "/b/x") == 200
        # An invalid config is reported once, by the supervisor, and reaches no worker.
        site.write({"a": {"socket": str(a.path), "strip_prefix": "yes"}})
        site.trigger("sighup")
        refused = proxy.wait_for_lines(REFUSED, 1)
        assert "apps.a.strip_prefix" in refused[0]
        site.write({"a": {"socket": str(a.path)}})
        site.trigger("command")
        proxy.wait_for_lines(r"worker \d+: reloaded: -b", 2)
        assert len(proxy.wait_for_lines(REFUSED, 1)) == 1
        assert status(site, "/b/x") == 404
    finally:
        assert proxy.stop() == 0, proxy.output()


def test_reload_command_when_not_running(tmp: Path) -> None:
    Site(tmp, "builtin").write({"a": {"socket": str(tmp / "a.sock")}})
    done = run_sockgate("reload", cwd=tmp)
    assert done.returncode == 2
    assert "sockgate is not running" in done.stderr
    assert "sockgate.pid" in done.stderr


def test_watch_needs_a_config_file(tmp: Path) -> None:
    done = run_sockgate("run", "--watch", "--app", f"a={tmp / 'a.sock'}", cwd=tmp)
    assert done.returncode == 2
    assert "--watch needs a config file" in done.stderr
