"""`sockgate status`, `stop` and `reload` find the running sockgate by its workdir: the config's,
`-w DIR`'s, or, with neither, the current directory's (where `sockgate run --app ...` keeps its
control socket without a config file)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx

from tests.conftest import ProxyFactory, RawFactory
from tests.support.proc import Proxy, run_sockgate


def app_only_proxy(here: Path, socket: Path) -> Proxy:
    """`sockgate run --app app1=SOCKET` in `here`, with no config file anywhere."""
    proxy = Proxy(here / "unused.toml", cwd=here)
    run = ["run", "--app", f"app1={socket}", "--listen", "127.0.0.1:0"]
    proxy.args = [sys.executable, "-m", "sockgate", *run]
    return proxy


def test_a_sockgate_run_without_config_is_managed_from_its_directory(
    tmp: Path, raw_app: RawFactory
) -> None:
    app = raw_app()
    here = tmp / "here"
    here.mkdir()
    proxy = app_only_proxy(here, app.path).start()
    try:
        assert httpx.get(f"{proxy.url}/app1/x").text == "ok"
        shown = run_sockgate("status", cwd=here)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines()[2].split()[:2] == ["app1", "/app1/"]

        elsewhere = run_sockgate("status", "--json", "-w", str(here), cwd=tmp)
        assert elsewhere.returncode == 0, elsewhere.stderr
        assert f'"pid": {proxy.proc.pid}' in elsewhere.stdout  # type: ignore[union-attr]

        # Its --app flags are read again: nothing changed.
        reloaded = run_sockgate("reload", cwd=here)
        assert reloaded.returncode == 0, reloaded.stderr
        assert reloaded.stdout == "sockgate: reloaded: no changes\n"

        # The flags `run` took are accepted, so the same command line stops it.
        stopped = run_sockgate("stop", "--app", f"app1={app.path}", cwd=here)
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip() == f"stopped sockgate in {here}"
        assert proxy.proc.wait(10) == 0  # type: ignore[union-attr]
    finally:
        proxy.stop()


def test_not_running_says_where_it_looked_and_how_to_look_elsewhere(tmp: Path) -> None:
    for command in ("status", "stop", "reload"):
        gone = run_sockgate(command, cwd=tmp)
        assert gone.returncode == 2, gone
        assert gone.stderr.strip() == (
            f"sockgate: sockgate is not running in {tmp} (nothing answers on "
            f"{tmp / 'sockgate.ctl'}, no live pid in {tmp / 'sockgate.pid'}); for one elsewhere "
            "pass -c PATH or -w DIR"
        )


def test_workdir_and_config_are_one_or_the_other(tmp: Path) -> None:
    (tmp / "sockgate.toml").write_text('[apps.a]\nsocket = "a.sock"\n')
    both = run_sockgate("status", "-c", "sockgate.toml", "-w", str(tmp), cwd=tmp)
    assert both.returncode == 2
    assert "pass -c PATH or -w DIR, not both" in both.stderr
    missing = run_sockgate("stop", "-w", str(tmp / "nope"), cwd=tmp)
    assert missing.returncode == 2
    assert f"-w {tmp / 'nope'}: no such directory" in missing.stderr


def test_stop_ends_either_engine(make_proxy: ProxyFactory, raw_app: RawFactory) -> None:
    """The built-in engine is asked on its control socket; nginx's has none and gets SIGTERM."""
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    assert httpx.get(f"{proxy.url}/app1/x").text == "ok"
    stopped = run_sockgate("stop", "-c", str(proxy.config_path), cwd=proxy.config_path.parent)
    assert stopped.returncode == 0, stopped.stderr
    assert proxy.proc.wait(10) == 0  # type: ignore[union-attr]
    assert not (proxy.config_path.parent / "work" / "sockgate.pid").exists()


def test_status_of_a_sockgate_without_control_socket_says_it_runs(tmp: Path) -> None:
    """Found by its workdir alone (the engine unknown), a sockgate whose pid lives but that has
    no control socket (the nginx engine) is not "not running"."""
    (tmp / "sockgate.pid").write_text(f"{os.getpid()}\n")  # a live pid: this test's own
    shown = run_sockgate("status", "-w", str(tmp), cwd=tmp)
    assert shown.returncode == 2
    assert shown.stderr.startswith(
        f"sockgate: sockgate runs in {tmp} (pid {os.getpid()}) without a control socket"
    )
