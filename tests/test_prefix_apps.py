"""Real frameworks under a prefix, driven through the proxy by httpx, on both engines: Flask under
gunicorn with ProxyFix(x_prefix=1), Starlette under uvicorn --root-path, Django with
FORCE_SCRIPT_NAME. Each app believes it lives at `/`; its redirects, cookies and links must
stay inside `/app1/`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ProxyFactory
from tests.support.proc import Gunicorn, Proxy, Uvicorn


@pytest.fixture
def django_sock(tmp: Path) -> Iterator[Path]:
    path = tmp / "django.sock"
    with Gunicorn("tests.apps.django_app:application", path):
        yield path


@pytest.fixture
def starlette_login_sock(tmp: Path) -> Iterator[Path]:
    path = tmp / "stl.sock"
    with Uvicorn("tests.apps.starlette_login:app", path, "--root-path", "/app1"):
        yield path


def cookie_paths(client: httpx.Client) -> dict[str, str]:
    return {cookie.name: cookie.path for cookie in client.cookies.jar}


def log_in(proxy: Proxy, client: httpx.Client, **extra: str) -> httpx.Response:
    """GET /app1/ -> redirect to the login form -> POST it -> redirect -> the page."""
    form = client.get(f"{proxy.url}/app1/")
    assert form.status_code == 200, form.text
    assert [r.headers["location"] for r in form.history] == ["/app1/login"]
    action = re.search(r'action="([^"]*)"', form.text)
    assert action is not None, form.text
    assert action.group(1) == "/app1/login"
    page = client.post(f"{proxy.url}{action.group(1)}", data={"user": "ada", **extra})
    assert page.status_code == 200, page.text
    assert [str(r.url) for r in page.history] == [f"{proxy.url}/app1/login"]
    assert str(page.url) == f"{proxy.url}/app1/"
    assert 'id="hello">Hello ada<' in page.text
    # The absolute link the framework built points inside the prefix, at the proxy's origin.
    assert f'href="{proxy.url}/app1/"' in page.text
    return page


def test_flask_under_gunicorn_with_proxyfix(make_proxy: ProxyFactory, flask_sock: Path) -> None:
    proxy = make_proxy({"app1": flask_sock})
    with httpx.Client(follow_redirects=True) as client:
        log_in(proxy, client)
        assert cookie_paths(client) == {"session": "/app1/", "theme": "/app1/"}
        links = client.get(f"{proxy.url}/app1/links").json()
    assert links == {
        "index": "/app1/",
        "external": f"{proxy.url}/app1/",
        "script_root": "/app1",
    }


def test_flask_absolute_redirect_to_its_own_origin(
    make_proxy: ProxyFactory, flask_sock: Path
) -> None:
    proxy = make_proxy({"app1": flask_sock})
    response = httpx.get(f"{proxy.url}/app1/away")
    assert response.status_code == 302
    assert response.headers["location"] == f"{proxy.url}/app1/login"


def test_flask_with_rewrite_off_escapes_the_prefix(
    make_proxy: ProxyFactory, flask_sock: Path
) -> None:
    """What rewriting is for: without it, the hand-written redirect leaves /app1/."""
    proxy = make_proxy({"app1": {"socket": flask_sock, "rewrite": False}})
    response = httpx.get(f"{proxy.url}/app1/")
    assert response.headers["location"] == "/login"
    assert httpx.get(f"{proxy.url}/login").status_code == 404


def test_flask_without_prefix_headers_builds_links_at_the_root(
    make_proxy: ProxyFactory, flask_sock: Path
) -> None:
    proxy = make_proxy({"app1": {"socket": flask_sock, "prefix_headers": []}})
    links = httpx.get(f"{proxy.url}/app1/links").json()
    assert links["index"] == "/"
    assert links["script_root"] == ""


def test_starlette_under_uvicorn_root_path(
    make_proxy: ProxyFactory, starlette_login_sock: Path
) -> None:
    proxy = make_proxy({"app1": starlette_login_sock})
    with httpx.Client(follow_redirects=True) as client:
        log_in(proxy, client)
        assert cookie_paths(client) == {"user": "/app1/"}
        links = client.get(f"{proxy.url}/app1/links").json()
    assert links["index"] == "/app1/"
    assert links["external"] == f"{proxy.url}/app1/"
    assert links["root_path"] == "/app1"


def test_django_under_gunicorn_with_force_script_name(
    make_proxy: ProxyFactory, django_sock: Path
) -> None:
    proxy = make_proxy({"app1": django_sock})
    with httpx.Client(follow_redirects=True) as client:
        token = _csrf_token(proxy, client)
        assert cookie_paths(client) == {"csrftoken": "/app1/"}
        log_in(proxy, client, csrfmiddlewaretoken=token)
        assert cookie_paths(client) == {"csrftoken": "/app1/", "sessionid": "/app1/"}
        links = client.get(f"{proxy.url}/app1/links").json()
    assert links == {
        "index": "/app1/",
        "external": f"{proxy.url}/app1/",
        "script_name": "/app1",
        "path_info": "/links",
    }


def _csrf_token(proxy: Proxy, client: httpx.Client) -> str:
    form = client.get(f"{proxy.url}/app1/login")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert token is not None, form.text
    return token.group(1)


@pytest.mark.parametrize(
    ("extra", "client"),
    [((), None), (("--proxy-headers", "--forwarded-allow-ips=*"), "127.0.0.1")],
    ids=["root-path-only", "proxy-headers"],
)
def test_uvicorn_trusts_forwarded_headers_on_a_socket_only_when_told(
    make_proxy: ProxyFactory, tmp: Path, extra: tuple[str, ...], client: str | None
) -> None:
    """uvicorn has no client address for a Unix socket peer; --proxy-headers alone does not
    trust it, --forwarded-allow-ips='*' does (then X-Forwarded-For/Proto are used)."""
    path = tmp / "stp.sock"
    with Uvicorn("tests.apps.starlette_login:app", path, "--root-path", "/app1", *extra):
        proxy = make_proxy({"app1": path})
        links = httpx.get(f"{proxy.url}/app1/links").json()
        proxy.stop()
    assert links["client"] == client
    assert links["scheme"] == "http"
    assert links["index"] == "/app1/"
