"""Under systemd: `sockgate run` says READY=1 / RELOADING=1 / STOPPING=1 on $NOTIFY_SOCKET and
serves the listening socket systemd passes (LISTEN_PID, LISTEN_FDS, fd 3); `sockgate service`
writes the --user units that do both. No systemd runs here: the tests play its part, with a
datagram socket of their own and a socket passed as systemd passes it (docs/service.md)."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sockgate import config
from sockgate.proc import systemd, systemd_units
from tests.conftest import RawFactory
from tests.support.proc import Proxy, free_port, wait_for_line, write_config
from tests.support.rawapp import RawApp

# Stands in for systemd between fork and exec: the socket at fd 3, LISTEN_PID naming the
# process that will run sockgate (exec keeps the pid).
ACTIVATE = """
import os, sys
fd = int(os.environ.pop("TEST_LISTEN_FD"))
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, "-m", "sockgate", *sys.argv[1:]])
"""

# A supervised app that writes the environment it got, then listens on its socket.
ENV_APP = """
import os, socket, sys
with open(sys.argv[2], "w") as out:
    out.writelines(f"{k}\\n" for k in os.environ)
    out.write("END\\n")
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen()
while True:
    s.accept()[0].close()
"""

DEADLINE = 20.0


# --- what systemd is told -------------------------------------------------------------------


class NotifyListener:
    """systemd's end of $NOTIFY_SOCKET: a datagram socket on a path, or abstract ('@')."""

    def __init__(self, address: str) -> None:
        self.env = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.seen: list[dict[str, str]] = []

    def next(self, key: str, deadline: float = DEADLINE) -> dict[str, str]:
        """Until a message with `key` arrives (the ones before it are kept in `seen`)."""
        end = time.monotonic() + deadline
        while True:
            self.sock.settimeout(max(0.001, end - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                raise AssertionError(f"no {key} in {deadline}s; got {self.seen}") from None
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.seen.append(fields)
            if key in fields:
                return fields

    def pending(self) -> list[dict[str, str]]:
        """The messages received and not read yet, without waiting."""
        self.sock.setblocking(False)
        more = []
        while True:
            try:
                more.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return [dict(m.split("=", 1) for m in text.splitlines()) for text in more]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(str(tmp / "notify"))
    yield listener
    listener.close()


def _config(tmp: Path, app: RawApp, extra: str = "", listen: str = "127.0.0.1:0") -> Path:
    return write_config(
        tmp / "sockgate.toml",
        f'listen = "{listen}"\nworkdir = "work"\n{extra}\n[apps.app1]\nsocket = "{app.path}"\n',
    )


def test_ready_once_it_accepts_reloading_then_stopping(
    tmp: Path, raw_app: RawFactory, notify: NotifyListener
) -> None:
    path = _config(tmp, raw_app())
    with (tmp / "stderr").open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sockgate", "run", "-c", str(path)],
            env=os.environ | {"NOTIFY_SOCKET": notify.env},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        ready = notify.next("READY")
        # Told once it serves: a request made the moment READY=1 arrives is answered.
        match = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)", ready["STATUS"])
        assert match, ready
        with httpx.Client(trust_env=False, timeout=5) as client:
            assert client.get(f"http://127.0.0.1:{match[1]}/app1/").text == "ok"
        assert ready["READY"] == "1"
        assert ready["MAINPID"] == str(proc.pid)
        proc.send_signal(signal.SIGHUP)
        reloading = notify.next("RELOADING")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        assert notify.next("READY")["STATUS"] == ready["STATUS"]
        proc.send_signal(signal.SIGTERM)
        assert notify.next("STOPPING")["STOPPING"] == "1"
        assert proc.wait(DEADLINE) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in (tmp / "stderr").read_text()


def test_notify_socket_in_the_abstract_namespace(
    tmp: Path, raw_app: RawFactory, engine: str
) -> None:
    # nginx cannot report a port the kernel picked.
    port = free_port() if engine == "nginx" else 0
    path = _config(tmp, raw_app(), f'engine = "{engine}"', f"127.0.0.1:{port}")
    listener = NotifyListener(f"@sockgate-test-{uuid.uuid4().hex}")
    try:
        proxy = Proxy(path, engine=engine, env={"NOTIFY_SOCKET": listener.env}).start()
        try:
            ready = listener.next("READY")
            assert ready["MAINPID"] == str(proxy.proc.pid)  # type: ignore[union-attr]
            assert ready["STATUS"] == f"listening on 127.0.0.1:{proxy.port}"
        finally:
            code = proxy.stop(signal.SIGINT)
        assert code == 0, proxy.output()
        assert listener.next("STOPPING")["STOPPING"] == "1"
    finally:
        listener.close()


def test_workers_are_announced_once_by_their_supervisor(
    tmp: Path, raw_app: RawFactory, notify: NotifyListener
) -> None:
    path = _config(tmp, raw_app(), "workers = 3")
    proxy = Proxy(path, env={"NOTIFY_SOCKET": notify.env}).start()
    try:
        ready = notify.next("READY")
        assert ready["MAINPID"] == str(proxy.proc.pid)  # type: ignore[union-attr]
        proxy.wait_for_output("3 worker processes")
        proxy.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        proxy.wait_for_lines(r"worker \d+: reloaded", 3)
        notify.next("RELOADING")
        assert notify.next("READY")["STATUS"] == ready["STATUS"]
    finally:
        assert proxy.stop(signal.SIGTERM) == 0, proxy.output()
    notify.next("STOPPING")
    # The workers were forked with the notify socket, and each reloaded: they said nothing.
    told = [next(iter(m)) for m in notify.seen + notify.pending()]
    assert told == ["READY", "RELOADING", "READY", "STOPPING"]


# --- the listening socket from systemd --------------------------------------------------------


def _activated(path: Path, sock: socket.socket, env: dict[str, str] | None = None) -> Proxy:
    """`sockgate run -c PATH` started as systemd starts a socket-activated service."""
    proxy = Proxy(path, env={"TEST_LISTEN_FD": str(sock.fileno()), **(env or {})})
    proxy.pass_fds = (sock.fileno(),)
    proxy.args = [sys.executable, "-c", ACTIVATE, *proxy.args[3:]]
    return proxy


def _listening(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(16)
    return sock


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_it_serves_the_socket_systemd_passes(
    tmp: Path, raw_app: RawFactory, notify: NotifyListener
) -> None:
    own = free_port()
    env_file = tmp / "app-env"
    extra = (
        f"[apps.envapp]\ncommand = ['{sys.executable}', '-c', '''{ENV_APP}''', "
        f"'{{socket}}', '{env_file}']\n"
    )
    path = _config(tmp, raw_app(), listen=f"127.0.0.1:{own}")
    path.write_text(path.read_text() + extra)
    with _listening() as sock:
        port = sock.getsockname()[1]
        proxy = _activated(path, sock, {"NOTIFY_SOCKET": notify.env}).start()
        try:
            assert proxy.port == port
            assert f"socket activation: serving 127.0.0.1:{port}" in proxy.startup_log
            with httpx.Client(trust_env=False, timeout=5) as client:
                assert client.get(f"http://127.0.0.1:{port}/app1/x").text == "ok"
            assert _refused(own)  # `listen` in the config is not bound
            assert notify.next("READY")["STATUS"] == f"listening on 127.0.0.1:{port}"
            wait_for_line(env_file, "END", DEADLINE)
            inherited = set(env_file.read_text().split())
        finally:
            assert proxy.stop() == 0, proxy.output()
    # What systemd passed is sockgate's alone: the apps it starts do not take it for theirs.
    assert {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET"} & inherited == set()
    assert "SOCKGATE_APP" in inherited


def _holders(inode: int, pids: set[int]) -> set[int]:
    found = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    found.add(pid)
            except OSError:
                continue
    return found


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


def test_every_worker_serves_the_socket_systemd_passes(tmp: Path, raw_app: RawFactory) -> None:
    own = free_port()
    path = _config(tmp, raw_app(), "workers = 2", listen=f"127.0.0.1:{own}")
    with _listening() as sock:
        port = sock.getsockname()[1]
        proxy = _activated(path, sock).start()
        try:
            proxy.wait_for_output("2 worker processes")
            assert proxy.port == port
            with httpx.Client(trust_env=False, timeout=5) as client:
                for _ in range(10):
                    assert client.get(f"http://127.0.0.1:{port}/app1/").text == "ok"
            assert _refused(own)  # neither the supervisor nor a worker bound `listen`
            workers = _children(proxy.proc.pid)  # type: ignore[union-attr]
            assert len(workers) == 2
            assert _holders(os.fstat(sock.fileno()).st_ino, workers) == workers
        finally:
            assert proxy.stop() == 0, proxy.output()


def _run_activated(path: Path, sock: socket.socket | int) -> subprocess.CompletedProcess[str]:
    fd = sock if isinstance(sock, int) else sock.fileno()
    return subprocess.run(
        [sys.executable, "-c", ACTIVATE, "run", "-c", str(path)],
        env=os.environ | {"TEST_LISTEN_FD": str(fd)},
        pass_fds=(fd,),
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("udp", r"is a UDP \(IPv4\) socket, not a TCP socket"),
        ("unix", "is a Unix socket, not a TCP socket"),
        ("bound", r"\(127\.0\.0\.1:\d+\) is not listening"),
        ("file", "is not a socket"),
        ("remote", r"passed 0\.0\.0\.0:\d+, which is not a loopback address"),
        ("nginx", "socket activation is built-in engine only"),
    ],
)
def test_what_systemd_passes_is_refused_unless_sockgate_can_serve_it(
    tmp: Path, raw_app: RawFactory, kind: str, message: str
) -> None:
    extra = 'engine = "nginx"' if kind == "nginx" else ""
    path = _config(tmp, raw_app(), extra, listen=f"127.0.0.1:{free_port()}")
    if kind == "file":
        with (tmp / "plain").open("w") as plain:
            done = _run_activated(path, plain.fileno())
    else:
        sock = {
            "udp": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
            "unix": lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM),
            "bound": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),
            "remote": lambda: _listening("0.0.0.0"),
            "nginx": _listening,
        }[kind]()
        with sock:
            if kind in ("udp", "bound"):
                sock.bind(("127.0.0.1", 0))
            done = _run_activated(path, sock)
    assert done.returncode == 2, done.stderr
    assert re.search(message, done.stderr), done.stderr
    assert "Traceback" not in done.stderr


def test_remote_socket_is_served_with_allow_remote(tmp: Path, raw_app: RawFactory) -> None:
    path = _config(tmp, raw_app(), "allow_remote = true")
    with _listening("0.0.0.0") as sock:
        proxy = _activated(path, sock).start()
        try:
            assert "warning: listening on 0.0.0.0:" in proxy.startup_log
            assert proxy.port == sock.getsockname()[1]
            with httpx.Client(trust_env=False, timeout=5) as client:
                response = client.get(f"http://127.0.0.1:{proxy.port}/app1/")
            assert response.text == "ok"
        finally:
            assert proxy.stop() == 0, proxy.output()


def test_variables_meant_for_another_process_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_FDNAMES", "web")
    assert systemd.listen_fds() == 0
    assert not {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} & set(os.environ)
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "2")
    assert systemd.listen_fds() == 2


def test_notifier_sends_nothing_without_a_socket_or_from_a_child(
    monkeypatch: pytest.MonkeyPatch, notify: NotifyListener
) -> None:
    notifier = systemd.Notifier()
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier.take_environment()
    notifier.send("READY=1")  # nowhere to send: nothing happens
    monkeypatch.setenv("NOTIFY_SOCKET", notify.env)
    notifier.take_environment()
    assert "NOTIFY_SOCKET" not in os.environ
    notifier.send("READY=1", "STATUS=x")
    assert notify.next("READY") == {"READY": "1", "STATUS": "x"}
    notifier.pid += 1  # as in a forked worker
    notifier.send("READY=1")
    assert notify.pending() == []


# --- sockgate service -------------------------------------------------------------------------


def _service(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`sockgate service ARGS` with units under tmp/xdg, and on PATH only tmp/bin (where a
    test may put a systemctl of its own)."""
    (tmp / "bin").mkdir(exist_ok=True)
    env = os.environ | {
        "XDG_CONFIG_HOME": str(tmp / "xdg"),
        "PATH": str(tmp / "bin"),
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    return subprocess.run(
        [sys.executable, "-m", "sockgate", "service", *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def _project(tmp: Path, folder: str = "my site") -> Path:
    """A config in a folder (its workdir) whose name needs making unit-safe."""
    root = tmp / folder
    root.mkdir()
    return write_config(
        root / "sockgate.toml", 'listen = "127.0.0.1:8123"\n[apps.a]\nsocket = "a.sock"\n'
    )


def _verify(tmp: Path, *units: Path) -> None:
    """`systemd-analyze --user verify` (where it is installed) finds nothing to say."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    runtime = tmp / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    done = subprocess.run(
        [analyze, "--user", "verify", *map(str, units)],
        env=os.environ | {"XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


def test_install_writes_a_notify_service_for_the_config(tmp: Path) -> None:
    cfg = _project(tmp)
    done = _service(tmp, "install", "-c", str(cfg))  # no systemctl on PATH
    assert done.returncode == 0, done.stderr
    units = tmp / "xdg" / "systemd" / "user"
    service = units / "sockgate-my-site.service"
    assert f"wrote {service}" in done.stdout
    assert "systemctl is not on PATH" in done.stdout
    assert "systemctl --user daemon-reload" in done.stdout
    assert "systemctl --user enable --now sockgate-my-site.service" in done.stdout
    text = service.read_text()
    python = sys.executable
    assert "\nType=notify\n" in text
    assert f'\nExecStart={python} -m sockgate run -c "{tmp}/my site/sockgate.toml"\n' in text
    assert f'\nExecReload={python} -m sockgate reload -c "{tmp}/my site/sockgate.toml"\n' in text
    assert f"\nWorkingDirectory={tmp}/my site\n" in text
    # The installing shell's PATH: an app's command (a virtualenv's uvicorn) is found as there.
    assert f'\nEnvironment="PATH={tmp / "bin"}"\n' in text
    assert "\nRestart=on-failure\n" in text
    assert "\nKillMode=mixed\n" in text
    assert "\n[Install]\nWantedBy=default.target\n" in text
    assert not (units / "sockgate-my-site.socket").exists()
    _verify(tmp, service)


def test_install_with_socket_activation_and_force(tmp: Path) -> None:
    cfg = _project(tmp)
    done = _service(tmp, "install", "-c", str(cfg), "--socket", "--name", "web", "--no-start")
    assert done.returncode == 0, done.stderr
    assert "not started (--no-start)" in done.stdout
    assert "systemctl --user enable --now sockgate-web.socket" in done.stdout
    units = tmp / "xdg" / "systemd" / "user"
    socket_unit, service = units / "sockgate-web.socket", units / "sockgate-web.service"
    assert "\nListenStream=127.0.0.1:8123\n" in socket_unit.read_text()
    assert "\nWantedBy=sockets.target\n" in socket_unit.read_text()
    text = service.read_text()
    assert "\nRequires=sockgate-web.socket\n" in text
    assert "\nType=notify\n" in text
    assert "[Install]" not in text  # the socket starts it
    _verify(tmp, socket_unit, service)

    again = _service(tmp, "install", "-c", str(cfg), "--name", "web", "--no-start")
    assert again.returncode == 2
    assert "already installed; pass --force" in again.stderr
    assert socket_unit.exists()

    forced = _service(tmp, "install", "-c", str(cfg), "--name", "web", "--no-start", "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"removed {socket_unit} (left from an earlier install)" in forced.stdout
    assert not socket_unit.exists()
    assert "WantedBy=default.target" in service.read_text()


def test_install_refuses_what_a_service_cannot_run(tmp: Path) -> None:
    done = _service(tmp, "install", "--no-start")
    assert done.returncode == 2
    assert "no config file sockgate.toml: a service runs a config file" in done.stderr
    assert not (tmp / "xdg").exists()
    cfg = _project(tmp)
    cfg.write_text('listen = "127.0.0.1:0"\n')
    done = _service(tmp, "install", "-c", str(cfg), "--socket", "--no-start")
    assert done.returncode == 2
    assert "--socket needs a fixed port" in done.stderr
    done = _service(tmp, "install", "-c", str(cfg), "--name", "a/b", "--no-start")
    assert done.returncode == 2
    assert "--name 'a/b': use letters" in done.stderr
    cfg.write_text('listen = "127.0.0.1:8123"\nengine = "nginx"\n[apps.a]\nsocket = "a.sock"\n')
    done = _service(tmp, "install", "-c", str(cfg), "--socket", "--no-start")
    assert done.returncode == 2
    assert "--socket: socket activation is built-in engine only" in done.stderr
    assert not (tmp / "xdg").exists()


def test_install_uninstall_and_status_run_systemctl(tmp: Path) -> None:
    cfg = _project(tmp, "site")
    calls = tmp / "calls"
    fake = tmp / "bin" / "systemctl"
    fake.parent.mkdir()
    # A systemctl that notes how it was called; `status` exits 3, as for an inactive unit.
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n[ "$2" = status ] && exit 3\nexit 0\n')
    fake.chmod(0o755)
    done = _service(tmp, "install", "-c", str(cfg), "--socket")
    assert done.returncode == 0, done.stderr
    assert "enabled sockgate-site.socket" in done.stdout
    assert calls.read_text().splitlines() == [
        "--user daemon-reload",
        "--user enable --now sockgate-site.socket",
    ]
    calls.unlink()
    done = _service(tmp, "status", "-c", str(cfg))
    assert done.returncode == 3
    assert calls.read_text() == "--user status sockgate-site.socket sockgate-site.service\n"
    calls.unlink()
    units = tmp / "xdg" / "systemd" / "user"
    done = _service(tmp, "uninstall", "--name", "site")
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == [
        "--user disable --now sockgate-site.socket sockgate-site.service",
        "--user daemon-reload",
    ]
    assert f"removed {units / 'sockgate-site.service'}" in done.stdout
    assert list(units.iterdir()) == []
    done = _service(tmp, "uninstall", "--name", "site")
    assert done.returncode == 2
    assert f"no sockgate-site units in {units}" in done.stderr


def test_without_a_user_manager_install_says_how_and_uninstall_removes(tmp: Path) -> None:
    cfg = _project(tmp, "site")
    fake = tmp / "bin" / "systemctl"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Failed to connect to bus' >&2\nexit 1\n")
    fake.chmod(0o755)
    done = _service(tmp, "install", "-c", str(cfg))
    assert done.returncode == 2
    assert (
        "the units are written: `systemctl --user daemon-reload && systemctl --user enable "
        "--now sockgate-site.service` starts them"
    ) in done.stderr
    service = tmp / "xdg" / "systemd" / "user" / "sockgate-site.service"
    assert service.exists()
    done = _service(tmp, "uninstall", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "warning: disable failed (see above); removing the files" in done.stderr
    assert not service.exists()


def test_unit_files_quote_what_systemd_would_expand() -> None:
    cfg = dataclasses.replace(
        config.bare(Path("/srv/100% $HOME")), source=Path('/srv/100% $HOME/a "b".toml')
    )
    units = systemd_units.render(cfg, name="x", python="/usr/bin/python3", socket=False)
    ((_, text),) = units.files
    assert (
        'ExecStart=/usr/bin/python3 -m sockgate run -c "/srv/100%% $$HOME/a \\"b\\".toml"\n' in text
    )
    assert "WorkingDirectory=/srv/100%% $HOME\n" in text
    assert systemd_units.default_name(Path("/home/u/My Site!")) == "My-Site"
    assert systemd_units.default_name(Path("/")) == "workdir"
    home = Path("/home/u")
    assert systemd_units.unit_dir({}, home) == home / ".config/systemd/user"
    assert systemd_units.unit_dir({"XDG_CONFIG_HOME": "rel"}, home) == home / ".config/systemd/user"
    assert systemd_units.unit_dir({"XDG_CONFIG_HOME": "/x"}, home) == Path("/x/systemd/user")
