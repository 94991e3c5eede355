from __future__ import annotations

import httpx

from tests.conftest import ProxyFactory, RawFactory


def test_forwards_and_strips_prefix(make_proxy: ProxyFactory, raw_app: RawFactory) -> None:
    app = raw_app()
    proxy = make_proxy({"app1": app.path})
    response = httpx.get(f"{proxy.url}/app1/foo?x=1")
    assert response.status_code == 200
    assert response.text == "ok"
    assert app.requests[0].target == b"/foo?x=1"
