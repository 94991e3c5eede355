"""The status page in headless Chromium: it renders every app, and an app that goes down and
comes back shows so within 2 s, live over SSE, without a reload; so does the process of an app
sockgate runs, through a kill and its restart. Screenshots are kept in
pytest's tmp_path (the last runs stay under /tmp/pytest-of-USER/) to be looked at."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.conftest import ProxyFactory, RawFactory
from tests.support.browser import chromium
from tests.support.proc import Proxy, Uvicorn
from tests.support.procs import marker, sockapp, supervised_config, wait_marked

pytestmark = pytest.mark.timeout(120)
LIVE_WITHIN_MS = 2000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def row_state(page: Page, app: str) -> str | None:
    return page.get_attribute(f'tr[data-app="{app}"]', "data-state")


def cell(page: Page, app: str, name: str) -> str:
    return page.text_content(f'tr[data-app="{app}"] td.{name}') or ""


def wait_state(page: Page, app: str, condition: str) -> None:
    """Until the app's row satisfies `condition` (a JS expression over `state`), at most 2 s."""
    page.wait_for_function(
        f"""() => {{
            const row = document.querySelector('tr[data-app="{app}"]');
            const state = row && row.dataset.state;
            return {condition};
        }}""",
        timeout=LIVE_WITHIN_MS,
    )


@pytest.mark.parametrize("engine", ["builtin"])  # the status page is a built-in engine feature
def test_the_page_shows_an_app_going_down_and_coming_back_live(
    make_proxy: ProxyFactory, raw_app: RawFactory, browser: Browser, tmp: Path, tmp_path: Path
) -> None:
    st_sock = tmp / "st.sock"
    other = raw_app(name="other")
    starlette = Uvicorn("tests.apps.starlette_app:app", st_sock).__enter__()
    try:
        proxy = make_proxy({"app1": st_sock, "other": other.path})
        page = browser.new_page()
        try:
            page.goto(f"{proxy.url}/_sockgate/")
            assert page.title() == "sockgate status"
            assert page.text_content("tr[data-app=app1] td.name") == "app1"
            assert page.get_attribute("tr[data-app=app1] a", "href") == "/app1/"
            assert row_state(page, "app1") == "up"
            assert row_state(page, "other") == "up"
            page.evaluate("window.sameDocument = true")  # gone if the page were reloaded

            assert httpx.get(f"{proxy.url}/app1/echo").status_code == 200
            page.wait_for_function(
                "() => document.querySelector('tr[data-app=app1] td.requests').textContent === '1'",
                timeout=LIVE_WITHIN_MS + 1000,
            )
            assert page.text_content("#live") == "live"
            assert "/app1/echo" in (page.text_content("#recent") or "")

            starlette.__exit__(None, None, None)
            wait_state(page, "app1", "state === 'missing' || state === 'stale'")
            assert row_state(page, "other") == "up"
            assert cell(page, "app1", "name") == "app1"
            page.screenshot(path=tmp_path / "app1-down.png", full_page=True)

            starlette = Uvicorn("tests.apps.starlette_app:app", st_sock).__enter__()
            wait_state(page, "app1", "state === 'up'")
            page.screenshot(path=tmp_path / "app1-up-again.png", full_page=True)
            assert page.evaluate("window.sameDocument") is True
        finally:
            page.close()
    finally:
        starlette.__exit__(None, None, None)


def test_the_page_follows_a_supervised_app_through_a_kill_and_its_restart(
    browser: Browser, tmp: Path, tmp_path: Path
) -> None:
    mark = marker()
    path = supervised_config(tmp, mark, {"a": {"command": sockapp()}})
    try:
        with Proxy(path) as proxy:
            proxy.wait_for_output(r"app a: ready on")
            (pid,) = wait_marked(mark, 1)
            page = browser.new_page()
            try:
                page.goto(f"{proxy.url}/_sockgate/")
                assert page.get_attribute('tr[data-app="a"]', "data-process") == "running"
                assert cell(page, "a", "process") == f"running, pid {pid}, started once"
                page.evaluate("window.sameDocument = true")
                os.kill(pid, signal.SIGKILL)
                # Back to running (0.5 s of backoff, then a start), seen over SSE.
                page.wait_for_function(
                    """() => {
                        const td = document.querySelector('tr[data-app="a"] td.process');
                        return td && td.textContent.includes('started 2 times') &&
                               td.textContent.startsWith('running');
                    }""",
                    timeout=LIVE_WITHIN_MS + 2000,
                )
                (new_pid,) = wait_marked(mark, 1)
                assert cell(page, "a", "process") == (
                    f"running, pid {new_pid}, started 2 times; last exit: ended by SIGKILL"
                )
                assert new_pid != pid
                assert page.evaluate("window.sameDocument") is True
                page.screenshot(path=tmp_path / "supervised-restarted.png", full_page=True)
            finally:
                page.close()
    finally:
        wait_marked(mark, 0)
