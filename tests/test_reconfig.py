"""Reload in parts: what may change and what did (reconfig), the engine's swap (pools kept or
retired, streams cut at the drain deadline), and the nginx engine's check before nginx sees it."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import pytest

from sockgate import config
from sockgate.config import App, Config, Listen, Loader, Timeouts, reconfig
from sockgate.engine.shared import Engine
from sockgate.engine.stream import Stream
from sockgate.engine.upstream import AppConnection, ConnState
from sockgate.errors import ConfigError
from sockgate.nginx import run as nginx_run


def make(*apps: App, **changes: object) -> Config:
    base = Config(
        source=Path("/x/sockgate.toml"), listen=Listen("127.0.0.1", 8080), workdir=Path("/x")
    )
    return dataclasses.replace(base, apps=apps, **changes)  # type: ignore[arg-type]


A = App("a", Path("/s/a.sock"), "/a/")
B = App("b", Path("/s/b.sock"), "/b/")


# --- what may change ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("listen", Listen("127.0.0.1", 9090)),
        ("workdir", Path("/y")),
        ("engine", "nginx"),
        ("workers", 4),
    ],
)
def test_what_only_a_restart_can_change_is_refused_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        reconfig.check_fixed(make(A), make(A, **{key: value}))
    assert caught.value.key == key
    assert str(caught.value).startswith(f"/x/sockgate.toml: {key}: cannot change on reload")
    assert "restart sockgate" in str(caught.value)


RUN = config.Command(argv=("app", "--uds", "/s/r.sock"), text="app --uds {socket}", cwd=Path("/"))
R = App("r", Path("/s/r.sock"), "/r/", command=RUN)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ((A,), (A, R)),  # added
        ((A, R), (A,)),  # removed
        ((R,), (dataclasses.replace(R, command=dataclasses.replace(RUN, text="other")),)),
    ],
    ids=["added", "removed", "changed"],
)
def test_apps_sockgate_runs_cannot_change_on_reload(
    before: tuple[App, ...], after: tuple[App, ...]
) -> None:
    with pytest.raises(ConfigError) as caught:
        reconfig.check_fixed(make(*before), make(*after))
    assert caught.value.key == "apps.r"
    assert "restart sockgate" in str(caught.value)


def test_a_run_app_may_move_its_prefix_on_reload() -> None:
    reconfig.check_fixed(make(R), make(dataclasses.replace(R, prefix="/elsewhere/")))


def test_apps_and_live_settings_may_change() -> None:
    reconfig.check_fixed(
        make(A),
        make(B, max_body_size=10, allowed_hosts=("h.test",), timeouts=Timeouts(read=5)),
    )


def test_summary_names_what_changed() -> None:
    moved = dataclasses.replace(A, socket=Path("/s/new.sock"), strip_prefix=False)
    changes = reconfig.compare(
        make(A, B), make(moved, App("c", Path("/s/c.sock"), "/c/"), timeouts=Timeouts(read=5))
    )
    assert changes.summary() == "+c, -b, ~a (socket, strip_prefix changed), timeouts.read"
    assert changes.moved == ("a",)
    assert reconfig.compare(make(A), make(A)).summary() == "no changes"
    result = reconfig.applied(changes)
    assert result.ok
    assert result.message.startswith("reloaded: +c")
    assert result.as_dict()["changes"]["changed"] == {"a": ["socket", "strip_prefix"]}


def test_loader_reapplies_the_command_line_overrides(tmp_path: Path) -> None:
    path = tmp_path / "sockgate.toml"
    path.write_text(f'[apps.a]\nsocket = "{tmp_path}/a.sock"\n')
    os.chdir(tmp_path)
    loader = Loader(None, listen="127.0.0.1:9999", apps=(f"b={tmp_path}/b.sock",)).pinned(
        config.load(None)
    )
    assert loader.path == path
    path.write_text(f'listen = "127.0.0.1:1"\n[apps.c]\nsocket = "{tmp_path}/c.sock"\n')
    again = loader.load()
    assert again.listen == Listen("127.0.0.1", 9999)
    assert [app.name for app in again.apps] == ["c", "b"]


# --- the engine's swap ------------------------------------------------------------------------


def test_reconfigure_keeps_pools_whose_socket_stays_and_retires_the_rest() -> None:
    engine = Engine(make(A, B))
    pool_a, pool_b = engine.upstreams["a"], engine.upstreams["b"]
    renamed_prefix = dataclasses.replace(A, prefix="/aa/")
    moved = dataclasses.replace(B, socket=Path("/s/other.sock"))
    retired = engine.reconfigure(make(renamed_prefix, moved, timeouts=Timeouts(connect=1)))
    assert engine.upstreams["a"] is pool_a
    assert pool_a.app is renamed_prefix
    assert pool_a.connect_timeout == 1
    assert engine.upstreams["b"] is not pool_b
    assert retired == [pool_b]
    assert pool_b.retired
    assert engine.router.apps[0].prefix == "/aa/"
    assert engine.reconfigure(make())[0] is pool_a


async def _stream_pair() -> tuple[Stream, Stream, asyncio.AbstractServer]:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[Stream] = loop.create_future()
    server = await loop.create_server(lambda: Stream(accepted.set_result), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, client = await loop.create_connection(Stream, "127.0.0.1", port)
    return client, await asyncio.wait_for(accepted, 5), server


async def _close(peer: Stream, server: asyncio.AbstractServer) -> None:
    peer.close()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0)  # the transports' close callbacks run on the next loop iteration


def test_retired_pool_cuts_what_is_under_way_at_the_drain_deadline() -> None:
    async def scenario() -> None:
        engine = Engine(make(A))
        pool = engine.upstreams["a"]
        client, peer, server = await _stream_pair()
        conn = AppConnection(client, active=pool._active)
        pool._active.add(conn)
        cut_too: list[str] = []
        conn.on_cut = lambda: cut_too.append("client side")
        assert pool.active == 1
        retired = engine.reconfigure(make())
        engine.drain(retired, 0.05)
        assert conn.state is ConnState.ACTIVE  # runs on until the deadline
        assert await peer.read(asyncio.get_running_loop().time() + 5) == b""
        assert conn.cut_off
        assert conn.state is ConnState.CLOSED
        assert cut_too == ["client side"]
        assert pool.active == 0
        engine.close()
        await _close(peer, server)

    asyncio.run(scenario())


def test_a_connection_released_to_a_retired_pool_is_closed() -> None:
    async def scenario() -> None:
        engine = Engine(make(A))
        pool = engine.upstreams["a"]
        client, peer, server = await _stream_pair()
        conn = AppConnection(client, active=pool._active)
        pool._active.add(conn)
        engine.reconfigure(make())
        pool.release(conn)
        assert conn.state is ConnState.CLOSED
        assert pool.take_idle(retryable=True) is None
        assert await peer.read(asyncio.get_running_loop().time() + 5) == b""
        await _close(peer, server)

    asyncio.run(scenario())


# --- nginx: checked before nginx sees it --------------------------------------------------------


def test_nginx_reload_rejected_by_nginx_t_leaves_the_running_conf(tmp_path: Path) -> None:
    fake = tmp_path / "nginx"
    fake.write_text("#!/bin/sh\necho 'nginx: [emerg] fake refusal' >&2\nexit 1\n")
    fake.chmod(0o755)
    path = tmp_path / "sockgate.toml"
    path.write_text(f'engine = "nginx"\n[apps.a]\nsocket = "{tmp_path}/a.sock"\n')
    running = config.load(path)
    conf = nginx_run.prepare(running)
    before = conf.read_bytes()
    path.write_text(path.read_text() + f'[apps.b]\nsocket = "{tmp_path}/b.sock"\n')
    reloader = nginx_run.Reloader(str(fake), running, Loader(path))
    assert reloader() is False  # nginx is not told
    assert reloader.last is not None
    assert not reloader.last.ok
    assert "fake refusal" in reloader.last.message
    assert conf.read_bytes() == before
    assert not conf.with_name("nginx.conf.next").exists()
    assert reloader.config is running


def test_nginx_reload_installs_what_nginx_t_accepts(tmp_path: Path) -> None:
    fake = tmp_path / "nginx"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    path = tmp_path / "sockgate.toml"
    path.write_text(f'engine = "nginx"\n[apps.a]\nsocket = "{tmp_path}/a.sock"\n')
    running = config.load(path)
    conf = nginx_run.prepare(running)
    path.write_text(path.read_text() + f'[apps.b]\nsocket = "{tmp_path}/b.sock"\n')
    reloader = nginx_run.Reloader(str(fake), running, Loader(path))
    assert reloader() is True
    assert reloader.last is not None
    assert reloader.last.message == "reloaded: +b"
    assert "/b/" in conf.read_text()


def test_a_config_made_without_a_file_is_not_reloaded() -> None:
    made = dataclasses.replace(make(A), source=None)
    with pytest.raises(ConfigError, match="started without a config file"):
        Loader.of(made).load()
