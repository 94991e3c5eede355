"""`sockgate demo` end to end: a real config whose apps sockgate runs, and nothing left after."""

from __future__ import annotations

import re
import signal
import ssl
import sys
from pathlib import Path

import httpx

from sockgate.config import load
from sockgate.demo.run import write_config
from tests.support.proc import Proxy, free_port


def _cmdlines_with(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(cmdline)
    return found


def test_the_demo_config_is_a_real_config_with_supervised_apps(tmp: Path) -> None:
    cfg = load(write_config(tmp, "127.0.0.1:8080"))
    assert [app.name for app in cfg.supervised] == ["clock", "echo"]
    for app in cfg.supervised:
        assert app.command is not None
        assert app.socket == tmp.resolve() / "sockets" / f"{app.name}.sock"
        assert app.command.argv[-2:] == ("--uds", str(app.socket))
        assert "uvicorn" in app.command.text


def test_sockgate_demo_runs_its_apps_and_stops_them(tmp: Path) -> None:
    demo = Proxy(tmp / "unused.toml")
    demo.args = [sys.executable, "-m", "sockgate", "demo", "--listen", f"127.0.0.1:{free_port()}"]
    demo.start()
    try:
        pattern = r"(/tmp/sockgate-demo-[^/]+)/sockets/echo\.sock"
        match = re.search(pattern, demo.wait_for_output(pattern))
        assert match is not None
        workdir = Path(match.group(1))
        with httpx.Client(base_url=demo.url, timeout=10) as client:
            echoed = client.get("/echo/hello?x=1")
            assert echoed.status_code == 200
            assert echoed.json()["path"] == "/hello"
            assert "EventSource" in client.get("/clock/").text
        assert "command = " in (workdir / "sockgate.toml").read_text()
        assert len(_cmdlines_with(str(workdir / "sockets"))) == 2
    finally:
        code = demo.stop(signal.SIGINT)
    assert code == 0, demo.output()
    assert not workdir.exists()
    assert _cmdlines_with(str(workdir / "sockets")) == []


def test_the_demo_prints_each_apps_own_origin_and_it_answers(tmp: Path) -> None:
    port = free_port()
    demo = Proxy(tmp / "unused.toml")
    # What the demo prints to stdout, where the Proxy helper reads its stderr.
    run = [sys.executable, "-m", "sockgate", "demo", "--listen", f"127.0.0.1:{port}"]
    demo.args = ["/bin/sh", "-c", 'exec "$@" 1>&2', "sh", *run]
    demo.start()
    try:
        for name in ("clock", "echo"):
            demo.wait_for_output(rf"  {name} +http://{name}\.localhost:{port}/ +the same app")
        own = {"Host": f"clock.localhost:{port}"}
        page = httpx.get(f"http://127.0.0.1:{port}/", headers=own, timeout=10)
        assert page.status_code == 200
        assert "EventSource" in page.text
    finally:
        code = demo.stop(signal.SIGINT)
    assert code == 0, demo.output()


def test_the_demo_serves_https_and_http2_with_the_local_ca(tmp: Path) -> None:
    port, tls_port = free_port(), free_port()
    demo = Proxy(tmp / "unused.toml", env={"XDG_DATA_HOME": str(tmp / "data")})
    run = [sys.executable, "-m", "sockgate", "demo", "--listen", f"127.0.0.1:{port}"]
    demo.args = ["/bin/sh", "-c", 'exec "$@" 1>&2', "sh", *run, "--https", f"127.0.0.1:{tls_port}"]
    demo.start()
    try:
        demo.wait_for_output(rf"  https +https://localhost:{tls_port}/clock/ +HTTP/2")
        cafile = tmp / "data" / "sockgate" / "ca" / "ca.pem"
        context = ssl.create_default_context(cafile=str(cafile))
        with httpx.Client(verify=context, http2=True, timeout=10) as client:
            page = client.get(f"https://localhost:{tls_port}/clock/")
            assert page.http_version == "HTTP/2"
            assert "EventSource" in page.text
    finally:
        code = demo.stop(signal.SIGINT)
    assert code == 0, demo.output()
