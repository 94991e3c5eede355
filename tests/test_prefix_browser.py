"""A real browser under a prefix, on both engines: a login-redirect flow that stays inside
`/app1/`, and cookies scoped to their app (a second app never receives them)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.conftest import ProxyFactory
from tests.support.browser import chromium

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def test_login_flow_stays_inside_the_prefix_and_cookies_stay_with_their_app(
    make_proxy: ProxyFactory, browser: Browser, flask_sock: Path, starlette_sock: Path
) -> None:
    proxy = make_proxy({"app1": flask_sock, "app2": starlette_sock})
    context = browser.new_context()
    try:
        page = context.new_page()
        # GET /app1/ -> 302 /login (moved to /app1/login) -> the form.
        page.goto(f"{proxy.url}/app1/")
        assert page.url == f"{proxy.url}/app1/login"
        page.fill("input[name=user]", "ada")
        # POST /app1/login -> 302 /app1/ -> the page, logged in.
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert page.url == f"{proxy.url}/app1/"
        assert page.text_content("#hello") == "Hello ada"
        # The absolute link Flask built leads back inside the prefix, still logged in.
        with page.expect_navigation():
            page.click("#home")
        assert page.url == f"{proxy.url}/app1/"
        assert page.text_content("#hello") == "Hello ada"

        cookies = {c["name"]: c["path"] for c in context.cookies()}
        assert cookies == {"session": "/app1/", "theme": "/app1/"}

        # The app next door is not sent app1's cookies.
        page.goto(f"{proxy.url}/app2/echo")
        seen = dict(json.loads(page.text_content("body") or "{}")["headers"])
        assert "cookie" not in seen, seen
    finally:
        context.close()
