"""Every app shown at both of its URLs, its prefix URL and its host URL (http://NAME.localhost:
PORT/), with the port really listened on: the start-up log and status.json; and a supervised app
told its prefix and host URL by the placeholders of its `command` and `env`."""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sockgate import config
from sockgate.engine import serve
from tests.conftest import ProxyFactory, RawFactory
from tests.support.proc import Proxy, free_port, write_config
from tests.support.procs import SOCKAPP, marker, wait_marked


def test_the_start_up_log_names_each_apps_host_url(
    make_proxy: ProxyFactory, raw_app: RawFactory
) -> None:
    app = raw_app(name="a1")
    proxy = make_proxy({"app1": app.path})
    own = f"http://app1.localhost:{proxy.port}/"
    proxy.wait_for_output(rf"  /app1/ -> {re.escape(str(app.path))} \(app1\), also {own}")


def test_without_host_routes_the_log_names_the_prefix_alone(
    tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = config.App("app2", tmp / "a.sock", "/app2/")
    cfg = config.Config(None, config.Listen("127.0.0.1", 0), tmp, apps=(app,))
    caplog.set_level(logging.INFO, "sockgate")
    serve.log_banner(cfg, "127.0.0.1", 8080)
    assert f"  /app2/ -> {tmp / 'a.sock'} (app2), also http://app2.localhost:8080/" in caplog.text
    caplog.clear()
    serve.log_banner(dataclasses.replace(cfg, host_routes=False), "127.0.0.1", 8080)
    assert f"  /app2/ -> {tmp / 'a.sock'} (app2)\n" in caplog.text
    assert "localhost" not in caplog.text


def test_status_json_gives_both_urls_with_the_port_listened_on(
    tmp: Path, raw_app: RawFactory
) -> None:
    app = raw_app(name="a1")
    body = f'listen = "127.0.0.1:0"\nworkdir = "work"\n[apps.app1]\nsocket = "{app.path}"\n'
    with Proxy(write_config(tmp / "sockgate.toml", body)) as proxy:
        doc = httpx.get(f"{proxy.url}/_sockgate/status.json", timeout=10).json()
        (shown,) = doc["apps"]
        port = proxy.port  # `listen` says 0: the port the kernel gave
        assert shown["urls"] == [
            f"http://127.0.0.1:{port}/app1/",
            f"http://app1.localhost:{port}/",
        ]
        # Both answer: the prefix route and the app at the root of its own host.
        assert httpx.get(shown["urls"][0], timeout=10).status_code == 200
        own = {"Host": f"app1.localhost:{port}"}
        assert httpx.get(f"{proxy.url}/", headers=own, timeout=10).status_code == 200
        assert [r.target for r in app.requests] == [b"/", b"/"]
        page = httpx.get(f"{proxy.url}/_sockgate/", timeout=10).text
        assert f"http://app1.localhost:{port}/" in page  # the page's data and its table


@pytest.fixture
def mark() -> Iterator[str]:
    value = marker()
    yield value
    wait_marked(value, 0)


def test_a_supervised_app_is_told_its_prefix_and_host_url(tmp: Path, mark: str) -> None:
    port = free_port()  # {host_url} needs the port before sockgate runs
    body = (
        f'listen = "127.0.0.1:{port}"\nworkdir = "work"\n[apps.notes]\nprefix = "/n/"\n'
        f'command = ["{sys.executable}", "{SOCKAPP}", "{{socket}}",\n'
        '  "--say", "at {prefix} and {host_url}"]\n'
        f'env = {{ SGTEST_MARK = "{mark}", SOCKAPP_SAY = "{{url}}" }}\n'
    )
    with Proxy(write_config(tmp / "sockgate.toml", body)) as proxy:
        assert httpx.get(f"{proxy.url}/n/", timeout=10).status_code == 200
        proxy.wait_for_output(rf"(?m)notes \| say at /n/ and http://notes\.localhost:{port}/$")
        proxy.wait_for_output(rf"(?m)notes \| env http://127\.0\.0\.1:{port}/n/$")
        # The command as it runs, substituted, in the log.
        proxy.wait_for_output(rf"--say 'at /n/ and http://notes\.localhost:{port}/'")
