"""Headless Chromium through playwright's sync API, on the system browser (Debian's `chromium`,
installed by the README's test command). Missing, it is a clear failure, never a skip."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, sync_playwright


@contextmanager
def chromium() -> Iterator[Browser]:
    path = shutil.which("chromium")
    if path is None:
        raise AssertionError(
            "no `chromium` on PATH: install it as the README's test command does "
            "(apt-get install -y chromium)"
        )
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()
