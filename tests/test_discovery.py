"""`sockets_dir`: every NAME.sock there is routed at /NAME/, live, without a config entry."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from sockgate import config
from sockgate.cli import main
from sockgate.config import App
from sockgate.errors import ConfigError
from sockgate.http import routing
from tests.support.proc import Proxy, write_config
from tests.support.rawapp import RawApp


def _config(tmp: Path, apps: str = "", extra: str = "") -> Path:
    body = f'listen = "127.0.0.1:0"\nworkdir = "work"\nsockets_dir = "disc"\n{extra}\n{apps}'
    return write_config(tmp / "sockgate.toml", body)


def test_a_socket_is_routed_as_soon_as_it_appears_and_404_once_gone(tmp: Path) -> None:
    disc = tmp / "work" / "disc"
    with Proxy(_config(tmp)) as proxy, httpx.Client(base_url=proxy.url, timeout=10) as client:
        proxy.wait_for_output(r"/NAME/ -> .*/disc/NAME\.sock \(discovered\)")
        assert disc.is_dir()  # made by run, so sockets can be dropped in
        assert client.get("/notes/x").status_code == 404
        with RawApp(disc / "notes.sock") as app:
            # No wait, no reload: the very next request is routed.
            assert client.get("/notes/x?y=1").status_code == 200
            assert app.requests[-1].target == b"/x?y=1"
            redirect = client.get("/notes")
            assert (redirect.status_code, redirect.headers["location"]) == (301, "/notes/")
            assert client.get("/other/").status_code == 404
        assert not (disc / "notes.sock").exists()
        assert client.get("/notes/x").status_code == 404
        proxy.wait_for_output(r"discovered app notes at /notes/")
        proxy.wait_for_output(r"app notes is gone")
        with RawApp(disc / "notes.sock"):
            assert client.get("/notes/again").status_code == 200


def test_a_discovered_app_answers_at_the_root_of_its_own_host(tmp: Path) -> None:
    disc = tmp / "work" / "disc"
    with Proxy(_config(tmp)) as proxy, httpx.Client(base_url=proxy.url, timeout=10) as client:
        proxy.wait_for_output(
            rf"/NAME/ -> .*/disc/NAME\.sock \(discovered\), also http://NAME\.localhost:{proxy.port}/"
        )
        own = {"Host": f"notes.localhost:{proxy.port}"}
        assert client.get("/x", headers=own).status_code == 404  # no such socket yet
        with RawApp(disc / "notes.sock") as app:
            # At the root of its host: the path as sent, nothing stripped, no prefix header.
            assert client.get("/x?y=1", headers=own).status_code == 200
            assert client.get("/", headers=own).status_code == 200
            assert [r.target for r in app.requests] == [b"/x?y=1", b"/"]
            assert app.requests[-1].header(b"x-forwarded-prefix") is None
            assert app.requests[-1].header(b"host") == own["Host"].encode()
        assert client.get("/x", headers=own).status_code == 404


def test_explicit_apps_win_over_discovered_ones(tmp: Path) -> None:
    disc = tmp / "work" / "disc"
    disc.mkdir(parents=True)
    apps = (
        f'[apps.notes]\nsocket = "{tmp / "explicit.sock"}"\n'
        f'[apps.root]\nsocket = "{tmp / "root.sock"}"\nprefix = "/"\n'
    )
    with (
        RawApp(tmp / "explicit.sock") as explicit,
        RawApp(tmp / "root.sock") as root,
        RawApp(disc / "notes.sock") as shadowed,
        RawApp(disc / "todo.sock") as todo,
        Proxy(_config(tmp, apps)) as proxy,
        httpx.Client(base_url=proxy.url, timeout=10) as client,
    ):
        assert client.get("/notes/a").status_code == 200
        assert client.get("/todo/b").status_code == 200  # longer than the catch-all "/"
        assert client.get("/elsewhere/c").status_code == 200
    assert [r.target for r in explicit.requests] == [b"/a"]
    assert [r.target for r in todo.requests] == [b"/b"]
    assert [r.target for r in root.requests] == [b"/elsewhere/c"]
    assert shadowed.requests == []


def test_check_lists_explicit_and_discovered_apps(tmp: Path) -> None:
    disc = tmp / "work" / "disc"
    disc.mkdir(parents=True)
    (disc / "plain.txt").write_text("not a socket")
    apps = f'[apps.notes]\nsocket = "{tmp / "notes.sock"}"\n'
    with RawApp(tmp / "notes.sock"), RawApp(disc / "todo.sock"):
        result = CliRunner().invoke(main, ["check", "-c", str(_config(tmp, apps))])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "ok (200)" in rows["notes"]
    assert "[discovered]" not in rows["notes"]
    assert rows["todo"].split()[1:3] == ["/todo/", str(disc / "todo.sock")]
    assert "ok (200) [discovered]" in rows["todo"]
    assert "plain" not in rows
    line = f"discovery: every NAME.sock in {disc} at /NAME/ and at NAME.localhost (1 now)"
    assert line in result.stdout


def test_sockets_dir_is_relative_to_workdir_and_builtin_only(tmp: Path) -> None:
    cfg = config.load(_config(tmp))
    assert cfg.sockets_dir == (tmp / "work" / "disc").resolve()
    with pytest.raises(ConfigError, match=r"sockgate\.toml: sockets_dir: discovery is built-in"):
        config.load(_config(tmp, extra='engine = "nginx"'))


def test_the_router_asks_discovery_only_when_no_longer_prefix_matches() -> None:
    asked: list[bytes] = []
    found = App("todo", Path("/d/todo.sock"), "/todo/")

    def discover(name: bytes) -> App | None:
        asked.append(name)
        return found if name == b"todo" else None

    long = App("deep", Path("/d.sock"), "/todo/deep/")
    router = routing.Router([long, App("root", Path("/r.sock"), "/")], discover=discover)
    assert router.route(b"/todo/deep/x") == routing.Forward(long, b"/x")
    assert asked == []
    assert router.route(b"/todo/x?q") == routing.Forward(found, b"/x?q")
    assert router.route(b"/todo?q") == routing.Redirect(b"/todo/?q")
    assert isinstance(router.route(b"/nope/x"), routing.Forward)  # the catch-all
    assert asked == [b"todo", b"todo", b"nope"]
