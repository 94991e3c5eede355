"""Shared fixtures: short socket paths, the proxy as a real process, scripted and real apps."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.proc import Gunicorn, Proxy, Uvicorn, free_port, write_config
from tests.support.rawapp import Handler, RawApp, respond_ok


@pytest.fixture
def tmp() -> Iterator[Path]:
    """A short directory under /tmp: Unix socket paths must stay under 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="sg", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


ProxyFactory = Callable[..., Proxy]
ENGINES = ("builtin", "nginx")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test marked nginx_difference(reason) is a known, documented difference of the nginx
    engine: with that engine it must fail (strict xfail), so it is neither skipped nor silently
    passing once nginx starts to match. `ids=[...]` limits it to parameter sets whose test id
    contains one of the given parts."""
    for item in items:
        marker = item.get_closest_marker("nginx_difference")
        callspec = getattr(item, "callspec", None)
        if marker is None or callspec is None or callspec.params.get("engine") != "nginx":
            continue
        reason = marker.args[0] if marker.args else marker.kwargs["reason"]
        only = marker.kwargs.get("ids")
        if only is not None and not any(part in callspec.id for part in only):
            continue
        item.add_marker(pytest.mark.xfail(reason=f"nginx engine: {reason}", strict=True))


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Every test that starts a proxy runs against both engines."""
    return str(request.param)


@pytest.fixture
def make_proxy(tmp: Path, engine: str) -> Iterator[ProxyFactory]:
    """Start `sockgate run` for some apps: make_proxy({"app1": socket_path}, extra="...")."""
    started: list[Proxy] = []

    def factory(
        apps: dict[str, Path | dict[str, object]], extra: str = "", timeouts: str = ""
    ) -> Proxy:
        port = free_port() if engine == "nginx" else 0
        lines = [
            f'listen = "127.0.0.1:{port}"',
            'workdir = "work"',
            f'engine = "{engine}"',
            extra,
            "[timeouts]",
            timeouts,
        ]
        for name, spec in apps.items():
            lines.append(f"[apps.{name}]")
            if isinstance(spec, Path):
                spec = {"socket": spec}
            for key, value in spec.items():
                if isinstance(value, bool):
                    literal = str(value).lower()
                elif isinstance(value, list):
                    literal = "[" + ", ".join(f'"{item}"' for item in value) + "]"
                else:
                    literal = f'"{value}"'
                lines.append(f"{key} = {literal}")
        path = write_config(tmp / f"sockgate{len(started)}.toml", "\n".join(lines) + "\n")
        proxy = Proxy(path, engine=engine).start()
        started.append(proxy)
        return proxy

    yield factory
    for proxy in started:
        code = proxy.stop()
        assert code == 0, f"sockgate exited with {code}:\n{proxy.output()}"
        output = proxy.output()
        for sign in ("Traceback", "Task exception was never retrieved"):
            assert sign not in output, f"the proxy's stderr shows an escaped error:\n{output}"


RawFactory = Callable[..., RawApp]


@pytest.fixture
def raw_app(tmp: Path) -> Iterator[RawFactory]:
    """A scripted app on a Unix socket that records exact bytes: raw_app(handler, name="a")."""
    apps: list[RawApp] = []

    def factory(handler: Handler = respond_ok, name: str = "raw") -> RawApp:
        app = RawApp(tmp / f"{name}.sock", handler).__enter__()
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.__exit__(None, None, None)


@pytest.fixture
def flask_sock(tmp: Path) -> Iterator[Path]:
    """The Flask test app (ProxyFix) under gunicorn on a Unix socket; yields its path."""
    path = tmp / "flask.sock"
    with Gunicorn("tests.apps.flask_app:app", path):
        yield path


@pytest.fixture
def starlette_sock(tmp: Path) -> Iterator[Path]:
    """The Starlette test app under uvicorn --uds; yields its socket path."""
    path = tmp / "st.sock"
    with Uvicorn("tests.apps.starlette_app:app", path):
        yield path
