"""The `sockgate` command: init, check and run's error handling, in-process with click's
CliRunner and as real processes (`python -m sockgate` and the console script)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

import sockgate
from sockgate import config
from sockgate.cli import main
from tests.support.proc import LISTENING, Proxy, free_port, run_sockgate, write_config
from tests.support.rawapp import RawApp

SCRIPT = Path(sys.executable).parent / "sockgate"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {text!r}"
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port with a listener on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


# --- init ---------------------------------------------------------------------------------------


def test_init_writes_config_and_logs(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp)
    result = invoke("init")
    assert result.exit_code == 0, result.output
    written = tmp / "sockgate.toml"
    assert written.is_file()
    assert (tmp / "logs").is_dir()
    assert "sockgate.toml" in result.stdout
    text = written.read_text()
    # The documented names, commented.
    for key in ("listen", "workdir", "[timeouts]", "connect", "read", "send", "client_header"):
        assert key in text
    assert "keepalive" in text
    assert "[apps.app1]" in text
    assert "#" in text


def test_init_with_a_path_creates_its_directory(tmp: Path) -> None:
    target = tmp / "deep" / "er" / "gate.toml"
    result = invoke("init", "-c", str(target))
    assert result.exit_code == 0, result.output
    assert target.is_file()
    assert (target.parent / "logs").is_dir()


def test_init_refuses_to_overwrite_without_force(tmp: Path) -> None:
    target = write_config(tmp / "sockgate.toml", "# mine\n")
    result = invoke("init", "-c", str(target))
    assert result.exit_code == 1
    assert target.read_text() == "# mine\n"
    message = one_line(result.stderr)
    assert str(target) in message
    assert "--force" in message

    forced = invoke("init", "-c", str(target), "--force")
    assert forced.exit_code == 0, forced.output
    assert "[apps.app1]" in target.read_text()


def test_init_template_loads_as_written(tmp: Path) -> None:
    target = tmp / "sockgate.toml"
    assert invoke("init", "-c", str(target)).exit_code == 0
    cfg = config.load(target)
    assert cfg.source == target.resolve()
    assert str(cfg.listen) == "127.0.0.1:8080"
    assert cfg.workdir == tmp.resolve()
    assert [app.name for app in cfg.apps] == ["app1"]
    assert cfg.apps[0].socket == Path("~/app1/sock.sock").expanduser()


def test_init_template_with_its_socket_pointed_somewhere(tmp: Path) -> None:
    target = tmp / "sockgate.toml"
    assert invoke("init", "-c", str(target)).exit_code == 0
    text = target.read_text()
    sock = tmp / "app1.sock"
    pointed, count = re.subn(r'(?m)^socket = "[^"]*"', f'socket = "{sock}"', text)
    assert count == 1, "the template has one app socket line"
    target.write_text(pointed)
    cfg = config.load(target)
    app = cfg.apps[0]
    assert (app.name, app.socket, app.prefix, app.strip_prefix) == ("app1", sock, "/app1/", True)
    t = cfg.timeouts
    assert (t.connect, t.read, t.send, t.client_header, t.keepalive) == (5, 3600, 3600, 60, 75)
    assert cfg.pid_file == tmp.resolve() / "sockgate.pid"
    assert cfg.error_log == tmp.resolve() / "logs" / "error.log"
    assert cfg.access_log == tmp.resolve() / "logs" / "access.log"
    checked = invoke("check", "-c", str(target), "--listen", "127.0.0.1:0")  # 8080 may be taken
    assert checked.exit_code == 0, checked.output
    assert "missing" in row(checked.stdout, "app1")


# --- check --------------------------------------------------------------------------------------


def row(table: str, app: str) -> str:
    rows = [line for line in table.splitlines() if line.split()[:1] == [app]]
    assert len(rows) == 1, f"no single row for {app!r} in:\n{table}"
    return rows[0]


@pytest.fixture
def mixed_apps(tmp: Path) -> Iterator[dict[str, Path]]:
    """One app of each state: ok, missing, not a socket, stale."""
    not_a_socket = tmp / "file.sock"
    not_a_socket.write_text("")
    stale = tmp / "stale.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))
    with RawApp(tmp / "up.sock") as up:
        yield {
            "up": up.path,
            "gone": tmp / "gone.sock",
            "file": not_a_socket,
            "stale": stale,
        }


def mixed_config(tmp: Path, apps: dict[str, Path]) -> Path:
    body = ['listen = "127.0.0.1:0"']
    for name, path in apps.items():
        body += [f"[apps.{name}]", f'socket = "{path}"']
    body.append('prefix = "/custom/path/"')  # the last app gets its own prefix
    return write_config(tmp / "sockgate.toml", "\n".join(body) + "\n")


def test_check_shows_a_row_per_app_and_warns(tmp: Path, mixed_apps: dict[str, Path]) -> None:
    path = mixed_config(tmp, mixed_apps)
    result = invoke("check", "-c", str(path))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert str(path) in out
    expected = {
        "up": ("/up/", "ok (200)"),
        "gone": ("/gone/", "missing"),
        "file": ("/file/", "not a socket"),
        "stale": ("/custom/path/", "stale"),
    }
    for name, (prefix, state) in expected.items():
        line = row(out, name)
        cells = line.split()
        assert cells[1] == prefix, line
        assert cells[2] == str(mixed_apps[name]), line
        assert state in line, line
    # Its state, not its row: the temporary directory's random name may hold "ok".
    gone_state = row(out, "gone").split(str(mixed_apps["gone"]), 1)[1]
    assert "ok" not in gone_state
    assert "warning" in result.stderr
    assert "3" in result.stderr  # three apps are down


def test_check_strict_fails_when_an_app_is_down(tmp: Path, mixed_apps: dict[str, Path]) -> None:
    path = mixed_config(tmp, mixed_apps)
    result = invoke("check", "--strict", "-c", str(path))
    assert result.exit_code == 1
    assert "error" in result.stderr
    assert "stale" in row(result.stdout, "stale")


def test_check_strict_passes_when_every_app_answers(tmp: Path) -> None:
    with RawApp(tmp / "up.sock") as up:
        path = mixed_config(tmp, {"up": up.path})
        result = invoke("check", "--strict", "-c", str(path))
    assert result.exit_code == 0, result.output
    assert "ok (200)" in row(result.stdout, "up")
    assert result.stderr == ""
    assert [r.target for r in up.requests] == [b"/"]


def test_check_with_apps_on_the_command_line_and_no_file(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp)
    with RawApp(tmp / "up.sock") as up:
        result = invoke(
            "check",
            "--listen",
            "127.0.0.1:0",
            "--app",
            f"web={up.path}",
            "--app",
            f"api={tmp / 'no.sock'}",
        )
    assert result.exit_code == 0, result.output
    assert "command line" in result.stdout
    web, api = row(result.stdout, "web"), row(result.stdout, "api")
    assert web.split()[1:3] == ["/web/", str(up.path)]
    assert "ok (200)" in web
    assert api.split()[1:3] == ["/api/", str(tmp / "no.sock")]
    assert "missing" in api


def test_check_shows_each_apps_host_url(tmp: Path) -> None:
    port = free_port()
    with RawApp(tmp / "up.sock") as up:
        body = f'listen = "127.0.0.1:{port}"\n[apps.up]\nsocket = "{up.path}"\n'
        result = invoke("check", "-c", str(write_config(tmp / "sockgate.toml", body)))
    assert result.exit_code == 0, result.output
    header, line = row(result.stdout, "APP"), row(result.stdout, "up")
    assert header.split()[:5] == ["APP", "PREFIX", "SOCKET", "HOST", "URL"]
    assert line.split()[:4] == ["up", "/up/", str(up.path), f"http://up.localhost:{port}/"]
    assert line.index("http://up.localhost") == header.index("HOST URL")  # under its header
    assert "ok (200)" in line
    # `listen` on port 0: the port is chosen at start, so the host name alone.
    zero = write_config(tmp / "zero.toml", body.replace(f":{port}", ":0"))
    assert row(invoke("check", "-c", str(zero)).stdout, "up").split()[3] == "up.localhost"
    # host_routes = false: no host URL, no column.
    off = write_config(tmp / "off.toml", "host_routes = false\n" + body)
    out = invoke("check", "-c", str(off)).stdout
    assert "HOST URL" not in out
    assert "localhost" not in row(out, "up")


def test_check_app_option_adds_to_the_file(tmp: Path) -> None:
    path = write_config(
        tmp / "sockgate.toml",
        f'listen = "127.0.0.1:0"\n[apps.one]\nsocket = "{tmp / "one.sock"}"\n',
    )
    result = invoke("check", "-c", str(path), "--app", f"two={tmp / 'two.sock'}")
    assert result.exit_code == 0, result.output
    assert row(result.stdout, "one")
    assert row(result.stdout, "two").split()[1] == "/two/"


def test_check_without_a_file_or_apps_explains(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp)
    result = invoke("check")
    assert result.exit_code == 1
    message = one_line(result.stderr)
    assert "sockgate.toml" in message
    assert "init" in message


def test_check_suggests_the_socket_a_typo_meant(tmp: Path) -> None:
    with RawApp(tmp / "myapp.sock"):
        path = write_config(
            tmp / "sockgate.toml",
            f'listen = "127.0.0.1:0"\n[apps.a]\nsocket = "{tmp / "myap.sock"}"\n',
        )
        result = invoke("check", "-c", str(path))
    assert result.exit_code == 0, result.output
    assert f"missing: its folder exists; did you mean {tmp / 'myapp.sock'}?" in row(
        result.stdout, "a"
    )


def test_check_says_when_the_listen_address_is_taken(tmp: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        path = write_config(tmp / "sockgate.toml", f'listen = "127.0.0.1:{port}"\n')
        result = invoke("check", "-c", str(path))
    assert result.exit_code == 2, result.output  # as `run` would exit
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in result.stderr
    free = invoke("check", "-c", str(path))
    assert free.exit_code == 0, free.output
    assert f"listen 127.0.0.1:{port}: free" in free.stdout


def test_check_tells_a_taken_port_from_the_one_this_workdirs_sockgate_holds(tmp: Path) -> None:
    """A sockgate of this workdir runs on one port; the config now names another, which some
    other program holds: not "it listens on it"."""
    port = free_port()
    path = write_config(tmp / "sockgate.toml", f'listen = "127.0.0.1:{port}"\n')
    with Proxy(path) as proxy, socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        moved = write_config(tmp / "moved.toml", f'listen = "127.0.0.1:{taken}"\n')
        result = invoke("check", "-c", str(moved))
        pid = proxy.proc.pid  # type: ignore[union-attr]
    assert result.exit_code == 2, result.output
    assert (
        f"cannot listen on 127.0.0.1:{taken}: address already in use (another server runs "
        "there; change `listen` or pass --listen); a sockgate of this workdir already runs "
        f"(pid {pid}) on 127.0.0.1:{port}"
    ) in result.stderr


def test_check_knows_the_port_systemd_holds_for_it(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After `sockgate service install --socket`, systemd listens on the port until the first
    connection starts sockgate: not "another server runs there"."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp / "xdg"))
    units = tmp / "xdg" / "systemd" / "user"
    units.mkdir(parents=True)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        (units / "sockgate-site.socket").write_text(f"[Socket]\nListenStream=127.0.0.1:{port}\n")
        path = write_config(tmp / "sockgate.toml", f'listen = "localhost:{port}"\n')
        result = invoke("check", "-c", str(path))
    assert result.exit_code == 0, result.output
    assert (
        f"listen localhost:{port}: held by systemd's sockgate-site.socket (socket activation)"
    ) in result.stdout


def test_check_says_a_sockgate_of_this_workdir_already_runs(tmp: Path) -> None:
    port = free_port()
    path = write_config(tmp / "sockgate.toml", f'listen = "127.0.0.1:{port}"\n')
    with Proxy(path) as proxy:
        result = invoke("check", "-c", str(path))
        assert result.exit_code == 0, result.output
        pid = proxy.proc.pid  # type: ignore[union-attr]
        assert (
            f"listen 127.0.0.1:{port}: a sockgate of this workdir already runs (pid {pid}) and "
            "listens on it: `sockgate reload` applies this config to it"
        ) in result.stdout


INVALID: dict[str, tuple[str, str, str]] = {
    # name: (file body, the key the message names, the bad value it quotes)
    "unknown-key": ('lisen = "127.0.0.1:1"\n', "lisen", "unknown key"),
    "unknown-app-key": ('[apps.a]\nsocket = "/tmp/a.sock"\nsokcet = 1\n', "apps.a.sokcet", ""),
    "bad-duration": ('[timeouts]\nread = "10 minutes"\n', "timeouts.read", "10 minutes"),
    "zero-duration": ("[timeouts]\nconnect = 0\n", "timeouts.connect", ""),
    "bad-prefix": ('[apps.a]\nsocket = "/tmp/a.sock"\nprefix = "a"\n', "apps.a.prefix", "'a'"),
    "prefix-no-trailing-slash": (
        '[apps.a]\nsocket = "/tmp/a.sock"\nprefix = "/a"\n',
        "apps.a.prefix",
        "'/a'",
    ),
    "same-prefix": (
        '[apps.a]\nsocket = "/tmp/a.sock"\nprefix = "/x/"\n'
        '[apps.b]\nsocket = "/tmp/b.sock"\nprefix = "/x/"\n',
        "prefix",
        "/x/",
    ),
    "socket-too-long": (f'[apps.a]\nsocket = "/tmp/{"s" * 120}.sock"\n', "apps.a.socket", "107"),
    "missing-socket": ('[apps.a]\nprefix = "/a/"\n', "apps.a.socket", ""),
    "wrong-type": ('[apps.a]\nsocket = "/tmp/a.sock"\nstrip_prefix = "yes"\n', "strip_prefix", ""),
    "bad-listen": ('listen = "localhost"\n', "listen", "localhost"),
    "not-toml": ("listen = \n", "", "TOML"),
}


@pytest.mark.parametrize(("body", "key", "value"), list(INVALID.values()), ids=list(INVALID))
@pytest.mark.parametrize("command", ["check", "run"])
def test_invalid_config_is_one_line_naming_file_and_key(
    tmp: Path, command: str, body: str, key: str, value: str
) -> None:
    path = write_config(tmp / "bad.toml", body)
    result = invoke(command, "-c", str(path))
    assert result.exit_code == 1, result.output
    message = one_line(result.stderr)
    assert str(path) in message
    assert key in message
    assert value in message
    assert result.stdout == ""
    if command == "run":
        assert not (tmp / "logs").exists()
        assert not (tmp / "sockgate.pid").exists()


def test_missing_config_file_named(tmp: Path) -> None:
    result = invoke("check", "-c", str(tmp / "nope.toml"))
    assert result.exit_code == 1
    message = one_line(result.stderr)
    assert str(tmp / "nope.toml") in message
    assert "not found" in message


def test_bad_listen_override_names_the_option(tmp: Path) -> None:
    result = invoke("check", "--listen", "nonsense", "--app", f"a={tmp / 'a.sock'}")
    assert result.exit_code == 1
    message = one_line(result.stderr)
    assert "--listen" in message
    assert "nonsense" in message


def test_bad_app_option_names_the_option(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp)
    result = invoke("check", "--app", "no-equals-sign")
    assert result.exit_code == 1
    message = one_line(result.stderr)
    assert "--app" in message
    assert "NAME=SOCKET" in message


# --- run ----------------------------------------------------------------------------------------


def test_run_with_an_invalid_config_exits_1_as_a_process(tmp: Path) -> None:
    path = write_config(tmp / "sockgate.toml", '[apps.a]\nsocket = "/tmp/a.sock"\nprefix = "a"\n')
    done = run_sockgate("run", "-c", str(path), cwd=tmp)
    assert done.returncode == 1, done.stderr
    message = one_line(done.stderr)
    assert message.startswith("sockgate: ")
    assert str(path) in message
    assert "apps.a.prefix" in message
    assert "Traceback" not in done.stderr


def test_run_on_a_port_in_use_exits_2(tmp: Path, busy_port: int) -> None:
    path = write_config(tmp / "sockgate.toml", f'listen = "127.0.0.1:{busy_port}"\n')
    done = run_sockgate("run", "-c", str(path), "--app", f"a={tmp / 'a.sock'}", cwd=tmp)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert f"127.0.0.1:{busy_port}" in last
    assert "already in use" in last
    assert not (tmp / "sockgate.pid").exists(), "the pid file outlived a failed start"


def test_listen_override_is_used(tmp: Path, busy_port: int) -> None:
    """The file's `listen` is taken; --listen moves the proxy elsewhere and it serves there."""
    with RawApp(tmp / "a.sock") as app:
        path = write_config(
            tmp / "sockgate.toml",
            f'listen = "127.0.0.1:{busy_port}"\n[apps.a]\nsocket = "{app.path}"\n',
        )
        with Proxy(path, "--listen", "127.0.0.1:0") as proxy:
            assert proxy.port not in (0, busy_port)
            response = httpx.get(f"{proxy.url}/a/x")
            assert response.status_code == 200
            assert response.text == "ok"
    assert app.requests[0].target == b"/x"


def test_run_with_apps_on_the_command_line_and_no_file(tmp: Path) -> None:
    with RawApp(tmp / "a.sock") as app:
        proxy = Proxy(tmp / "absent.toml")
        proxy.args = [
            sys.executable,
            "-m",
            "sockgate",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--app",
            f"web={app.path}",
        ]
        with proxy:
            assert proxy.proc is not None
            assert (tmp / "sockgate.pid").read_text().strip() == str(proxy.proc.pid)
            assert httpx.get(f"{proxy.url}/web/hi").text == "ok"
    assert app.requests[0].target == b"/hi"
    assert (tmp / "logs" / "error.log").is_file()
    assert not (tmp / "sockgate.pid").exists()


def test_run_refuses_a_second_instance_in_the_same_workdir(tmp: Path) -> None:
    with RawApp(tmp / "a.sock") as app:
        path = write_config(
            tmp / "sockgate.toml",
            f'listen = "127.0.0.1:0"\nworkdir = "work"\n[apps.a]\nsocket = "{app.path}"\n',
        )
        pid_file = tmp / "work" / "sockgate.pid"
        with Proxy(path) as first:
            assert first.proc is not None
            assert pid_file.read_text().strip() == str(first.proc.pid)
            done = run_sockgate("run", "-c", str(path), cwd=tmp)
            assert done.returncode == 2, done.stderr
            last = done.stderr.strip().splitlines()[-1]
            assert str(first.proc.pid) in last
            assert str(pid_file) in last or "already" in last
            assert LISTENING.search(done.stderr) is None
            # The first instance is untouched: still serving, its pid file still its own.
            assert pid_file.read_text().strip() == str(first.proc.pid)
            assert httpx.get(f"{first.url}/a/").status_code == 200


def test_run_ignores_a_pid_file_of_a_dead_process(tmp: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp / "work").mkdir()
    (tmp / "work" / "sockgate.pid").write_text(f"{dead.pid}\n")
    path = write_config(tmp / "sockgate.toml", 'listen = "127.0.0.1:0"\nworkdir = "work"\n')
    with Proxy(path) as proxy:
        assert proxy.proc is not None
        assert (tmp / "work" / "sockgate.pid").read_text().strip() == str(proxy.proc.pid)


# --- the entry points -------------------------------------------------------------------------


def test_python_m_sockgate_version(tmp: Path) -> None:
    done = run_sockgate("--version", cwd=tmp)
    assert done.returncode == 0, done.stderr
    assert sockgate.__version__ in done.stdout
    assert "sockgate" in done.stdout


def test_python_m_sockgate_help_lists_the_commands(tmp: Path) -> None:
    done = run_sockgate("--help", cwd=tmp)
    assert done.returncode == 0, done.stderr
    for command in ("init", "check", "run", "demo"):
        assert re.search(rf"(?m)^\s+{command}\b", done.stdout), done.stdout


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["run", "--help"]])
def test_console_script(tmp: Path, args: list[str]) -> None:
    script = SCRIPT if SCRIPT.exists() else shutil.which("sockgate")
    assert script is not None, "the `sockgate` console script is not installed"
    done = subprocess.run(
        [str(script), *args], cwd=tmp, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    if args == ["--version"]:
        assert sockgate.__version__ in done.stdout
    elif args == ["run", "--help"]:
        assert "--listen" in done.stdout
        assert "--app" in done.stdout
    else:
        assert "check" in done.stdout


def test_console_script_init_and_check(tmp: Path) -> None:
    script = SCRIPT if SCRIPT.exists() else shutil.which("sockgate")
    assert script is not None
    env = os.environ | {"HOME": str(tmp)}  # the template's ~/app1/sock.sock lands in tmp
    init = subprocess.run(
        [str(script), "init"], cwd=tmp, env=env, capture_output=True, text=True, timeout=30
    )
    assert init.returncode == 0, init.stderr
    assert (tmp / "sockgate.toml").is_file()
    check = subprocess.run(
        # Not the template's 8080: `check` probes it, and something else may run there.
        [str(script), "check", "--listen", "127.0.0.1:0"],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr
    assert str(tmp / "app1" / "sock.sock") in row(check.stdout, "app1")
    again = subprocess.run(
        [str(script), "init"], cwd=tmp, env=env, capture_output=True, text=True, timeout=30
    )
    assert again.returncode == 1


def test_run_and_check_help_give_the_exit_codes() -> None:
    for command in ("run", "check"):
        shown = invoke(command, "--help").output
        assert "Exit codes: 0 " in shown, shown
        assert "1 invalid config" in shown


def test_the_banner_counts_its_apps_in_words(tmp: Path) -> None:
    with RawApp(tmp / "one.sock") as one:
        path = write_config(
            tmp / "sockgate.toml", f'listen = "127.0.0.1:0"\n[apps.one]\nsocket = "{one.path}"\n'
        )
        with Proxy(path) as proxy:
            assert re.search(
                r"listening on http://127\.0\.0\.1:\d+/ with 1 app$", proxy.startup_log, re.M
            )
