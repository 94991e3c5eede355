"""HTTPS and HTTP/2 in headless Chromium (issue 20): with the local CA added to the NSS database
of a test HOME by `sockgate trust`, Chromium loads an app at its prefix and at its own host with
no certificate warning, over h2; one page keeps twenty Server-Sent Events streams live at once
(over HTTP/1.1 it would get six); a WebSocket echoes over wss://. Without the trust, Chromium
refuses the certificate."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Error, Page, sync_playwright

from tests.support.https import https_sockgate
from tests.support.proc import Proxy, wait_for_line

pytestmark = pytest.mark.timeout(120)

DEADLINE_MS = 15_000  # for what should take milliseconds: generous, never a measure


def trust(home: Path, ca_dir: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "sockgate", "trust", "--ca-dir", str(ca_dir)],
        env=os.environ | {"HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@contextmanager
def chromium_at(home: Path) -> Iterator[Browser]:
    path = subprocess.run(["which", "chromium"], capture_output=True, text=True, check=False)
    assert path.returncode == 0, "no `chromium` on PATH: apt-get install -y chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path.stdout.strip(),
            args=["--no-sandbox"],
            env=os.environ | {"HOME": str(home)},
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def served(tmp: Path, starlette_sock: Path, engine: str) -> Iterator[tuple[Proxy, int]]:
    with https_sockgate(tmp, {"app1": starlette_sock}, engine=engine) as started:
        yield started


def protocol(page: Page) -> str:
    return str(page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol"))


def test_chromium_trusts_the_local_ca_and_speaks_h2(tmp: Path, served: tuple[Proxy, int]) -> None:
    proxy, port = served
    home = tmp / "home"
    home.mkdir()
    trust(home, tmp / "ca")
    with chromium_at(home) as browser:
        page = browser.new_page()
        for url in (f"https://localhost:{port}/app1/x", f"https://app1.localhost:{port}/x"):
            response = page.goto(url, timeout=DEADLINE_MS)  # a certificate error raises
            assert response is not None
            assert response.status == 200
            assert protocol(page) == "h2"
            assert '"path":"/x"' in page.content()
        # Twenty event streams from one page, all live at once on the one connection.
        live = page.evaluate(
            """(count) => new Promise((resolve) => {
                let seen = new Set();
                for (let i = 0; i < count; i++) {
                    const source = new EventSource(`/events?n=1000&gap=0.5&s=${i}`);
                    source.onmessage = () => {
                        seen.add(i);
                        if (seen.size === count) resolve(seen.size);
                    };
                }
                setTimeout(() => resolve(seen.size), 10000);
            })""",
            20,
        )
        assert live == 20
        echoed = page.evaluate(
            """(url) => new Promise((resolve, reject) => {
                const ws = new WebSocket(url);
                ws.onopen = () => ws.send("through tls");
                ws.onmessage = (event) => { resolve(event.data); ws.close(); };
                ws.onerror = () => reject(new Error("websocket failed"));
            })""",
            f"wss://app1.localhost:{port}/ws",
        )
        assert echoed == "echo: through tls"
    if proxy.engine == "builtin":
        # Chromium took the WebSocket over HTTP/2 (RFC 8441), since sockgate offers it (nginx
        # does not: there it was an HTTP/1.1 upgrade on a connection of its own).
        log = proxy.config_path.parent / "work" / "logs" / "access.log"
        wait_for_line(log, '"GET /ws HTTP/2.0" 101')


def test_without_trust_chromium_refuses_the_certificate(
    tmp: Path, served: tuple[Proxy, int]
) -> None:
    _, port = served
    home = tmp / "untrusting"
    home.mkdir()
    with chromium_at(home) as browser:
        page = browser.new_page()
        with pytest.raises(Error, match="ERR_CERT_AUTHORITY_INVALID"):
            page.goto(f"https://localhost:{port}/app1/x", timeout=DEADLINE_MS)
