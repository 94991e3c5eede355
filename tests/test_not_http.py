"""An app that does not speak HTTP: `sockgate check`, the 502 page and the error log say what
came back (its first bytes, escaped) and what that usually means, the same words in all three,
never a parser's message or a raw errno."""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from sockgate.http import nothttp
from tests.conftest import ProxyFactory, RawFactory
from tests.support.proc import run_sockgate, write_config
from tests.support.rawapp import Conn

HELLO = (
    'it answered "hello\\n"; usual causes: a TLS (HTTPS) server, another protocol, or the wrong '
    "socket"
)
TLS = b"\x15\x03\x01\x00\x02\x02\x46"  # a TLS alert record: what a TLS server says to plain text


def greeter(greeting: bytes) -> Callable[[Conn], Awaitable[None]]:
    """An app that says `greeting` as a connection comes, then closes it, reading nothing."""

    async def handler(conn: Conn) -> None:
        conn.writer.write(greeting)
        conn.writer.close()

    return handler


def test_the_description_names_what_came_back() -> None:
    assert nothttp.describe(b"hello\n") == HELLO
    assert nothttp.describe(TLS) == (
        'it answered "\\x15\\x03\\x01\\x00\\x02\\x02F", a TLS alert: the app serves HTTPS (TLS) '
        "on this socket"
    )
    assert nothttp.describe(b"x" * 50).startswith('it answered "' + "x" * 40 + '"...;')
    assert nothttp.describe(b'a"\\\x7f').startswith('it answered "a\\"\\\\\\x7f"')
    # HTTP, just broken: the parser's reason is the better one.
    assert nothttp.detail("Invalid header token", b"HTTP/1.1 200 OK\r\nbad\r\n") == (
        "Invalid header token"
    )
    assert nothttp.detail("Invalid header token", b"") == "Invalid header token"
    assert nothttp.detail("x", b"HTT") == "x"


def test_check_says_what_came_back_every_time(tmp: Path, raw_app: RawFactory) -> None:
    app = raw_app(greeter(b"hello\n"), name="hello")
    config = write_config(
        tmp / "sockgate.toml", f'listen = "127.0.0.1:0"\n[apps.hello]\nsocket = "{app.path}"\n'
    )
    for _ in range(10):  # the app's close races our request: the words must not depend on it
        checked = run_sockgate("check", "-c", str(config), cwd=tmp)
        assert checked.returncode == 0, checked.stderr
        assert HELLO in checked.stdout, checked.stdout
        assert "Errno" not in checked.stdout
        assert "Expected HTTP/" not in checked.stdout


@pytest.mark.nginx_difference("nginx's own 502 page does not say what the app answered")
@pytest.mark.parametrize(
    ("greeting", "words"),
    [(b"hello\n", HELLO), (TLS, "a TLS alert: the app serves HTTPS (TLS) on this socket")],
)
def test_the_page_and_the_log_say_what_came_back(
    make_proxy: ProxyFactory, raw_app: RawFactory, greeting: bytes, words: str
) -> None:
    app = raw_app(greeter(greeting), name="hello")
    proxy = make_proxy({"hello": app.path})
    for _ in range(10):
        response = httpx.get(f"{proxy.url}/hello/", timeout=10)
        assert response.status_code == 502
        page = html.unescape(response.text)
        assert words in page, page
        assert "Errno" not in page
        assert "Expected HTTP/" not in page
    proxy.wait_for_output(re.escape(words))
