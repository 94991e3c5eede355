"""Shared fixtures: short socket paths, the proxy as a real process, scripted and real apps;
and the kind of each test (unit or integration; nginx, browser, compiled), given at collection."""

from __future__ import annotations

import gc
import shutil
import sys
import tempfile
import tracemalloc
import warnings
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.support import kinds
from tests.support.https import https_sockgate
from tests.support.proc import Gunicorn, PortTaken, Proxy, Uvicorn, free_port, write_config
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
    references = kinds.References()
    for item in items:
        mark_nginx_difference(item)
        mark_kind(item, references)


def mark_nginx_difference(item: pytest.Item) -> None:
    """A test marked nginx_difference(reason) is a known, documented difference of the nginx
    engine: with that engine it must fail (strict xfail), so it is neither skipped nor silently
    passing once nginx starts to match. `ids=[...]` limits it to parameter sets whose test id
    contains one of the given parts."""
    marker = item.get_closest_marker("nginx_difference")
    callspec = getattr(item, "callspec", None)
    if marker is None or callspec is None or callspec.params.get("engine") != "nginx":
        return
    reason = marker.args[0] if marker.args else marker.kwargs["reason"]
    only = marker.kwargs.get("ids")
    if only is not None and not any(part in callspec.id for part in only):
        return
    item.add_marker(pytest.mark.xfail(reason=f"nginx engine: {reason}", strict=True))


# --- the kind of each test ------------------------------------------------------------------------
#
# Every test is `unit` or `integration`, read from its code (tests/support/kinds.py): integration
# when it or a fixture it uses starts a process (the proxy, an app, nginx, Chromium, a build),
# unit when it runs in this process alone. On top: `nginx` (needs the nginx binary), `browser`
# (drives headless Chromium) and `compiled` (only meaningful for the compiled build).
# `scripts/check --fast` runs `unit or not (nginx or browser or compiled)`.

# Tests that run nginx from inside sockgate's own code, which that reading does not follow (ids
# without their parameters).
RUNS_NGINX = frozenset(
    {
        # `nginx -t` on a rendered config, in this process
        "tests/test_nginx_run.py::test_nginx_accepts_rendered_configs",
        "tests/test_nginx_run.py::test_rejected_config_carries_nginx_message",
        # `sockgate check --engine nginx` through CliRunner: `nginx -t`
        "tests/test_proxy_edges.py::test_check_with_nginx_runs_nginx_t",
        "tests/test_proxy_edges.py::test_check_with_nginx_shows_what_nginx_refuses",
    }
)
# ... and the other tests that start a process from inside sockgate's code.
STARTS_PROCESSES_IN_SOCKGATE = RUNS_NGINX | {
    # the nginx engine's reload runs `nginx -t` of a fake nginx (a shell script)
    "tests/test_reconfig.py::test_nginx_reload_rejected_by_nginx_t_leaves_the_running_conf",
    "tests/test_reconfig.py::test_nginx_reload_installs_what_nginx_t_accepts",
}
# Fixtures (module, name) that run sockgate's nginx engine without an engine parameter.
NGINX_FIXTURES = frozenset({("tests.test_nginx_run", "proxy")})
# The compiled build's own tests: its build hook, and the rules the compiled modules follow.
COMPILED = frozenset(
    {
        "tests/test_build.py::test_without_a_working_compiler_the_wheel_is_plain_python",
        "tests/test_build.py::test_a_required_compile_that_fails_fails_the_build",
        "tests/test_build.py::test_compiled_modules_never_await_in_except_or_finally",
        "tests/test_build.py::test_compiled_classes_never_override_a_base_class_default",
        "tests/test_build.py::test_compiled_modules_keep_their_constants_final",
    }
)
KIND_MARKERS = ("unit", "integration")


def fixture_functions(item: pytest.Item) -> list[tuple[str, object]]:
    """(module, function) of every fixture the test uses, directly or through other fixtures."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    return [
        (getattr(defs[-1].func, "__module__", ""), defs[-1].func)
        for defs in info.name2fixturedefs.values()
        if defs
    ]


def mark_kind(item: pytest.Item, references: kinds.References) -> None:
    test_id = item.nodeid.partition("[")[0]
    fixtures = fixture_functions(item)
    callspec = getattr(item, "callspec", None)
    params = list(callspec.params.values()) if callspec is not None else []
    starts, browser = references.traits(
        [getattr(item, "obj", None), *(f for _, f in fixtures), *params]
    )
    engine = callspec.params.get("engine") if callspec is not None else None
    nginx_fixture = any(
        (module, getattr(func, "__name__", "")) in NGINX_FIXTURES for module, func in fixtures
    )
    starts = starts or test_id in STARTS_PROCESSES_IN_SOCKGATE
    if not any(item.get_closest_marker(name) for name in KIND_MARKERS):
        item.add_marker("integration" if starts else "unit")
    if engine == "nginx" or test_id in RUNS_NGINX or nginx_fixture:
        item.add_marker("nginx")
    if browser:
        item.add_marker("browser")
    if test_id in COMPILED:
        item.add_marker("compiled")


GUARD = kinds.ChildProcessGuard()


def guarded(item: pytest.Item) -> Generator[None, object, object]:
    """Runs a phase of a test; a unit test that started a process in it fails."""
    GUARD.watching = item.get_closest_marker("unit") is not None
    try:
        result = yield
    finally:
        GUARD.watching = False
        started = GUARD.take()
    if started:
        raise AssertionError(
            "a unit test started a process: " + "; ".join(started) + ". If it must, the "
            "reading in tests/support/kinds.py misses how: add it to STARTS_PROCESSES_IN_SOCKGATE "
            "in tests/conftest.py"
        )
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    result = yield from guarded(item)
    left = collect_garbage(whole_heap=wider_fixtures_ended(item, nextitem))
    if left:
        raise AssertionError(
            "left to the garbage collector (PYTHONTRACEMALLOC=20 shows where each was made):\n"
            + "\n".join(left)
        )
    return result


# --- what a test leaves to the garbage collector ------------------------------------------------
#
# A socket, transport or file a test leaves open warns when the collector frees it: whenever it
# happens to run, in whichever later test (failed by filterwarnings = error), which passes
# when run alone. So the collector runs after each test, once its fixtures are torn down, and
# what it frees with a warning fails that test's teardown.
#
# A collection of the whole heap takes 0.1 to 0.2 s here, too long after each of 2,000 tests.
# What survives a collection is frozen (gc.freeze): the next one looks only at what was made
# since, what one test made. A teardown that ends fixtures wider than a test (module-scoped,
# or all of them at the end) looks at the whole heap again: those let go of objects that
# stayed frozen meanwhile.


def pytest_collection_finish() -> None:
    gc.collect()
    gc.freeze()


def wider_fixtures_ended(item: pytest.Item, nextitem: pytest.Item | None) -> bool:
    """Whether the teardown of `item` ended fixtures wider than a test: at the end, or when the
    next test is in another module and this one used module-scoped (or class, package)
    fixtures."""
    if nextitem is None:
        return True
    if nextitem.parent is item.parent:
        return False
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else ()
    return any(d.scope in ("class", "module", "package") for each in defs for d in each)


def collect_garbage(*, whole_heap: bool) -> list[str]:
    """Run the collector; what the objects it freed warned or raised as they went."""
    problems: list[str] = []

    def unraisable(args: sys.UnraisableHookArgs) -> None:
        problems.append(
            f"{args.err_msg or 'Exception ignored in'} {args.object!r}: {args.exc_value!r}"
        )

    previous, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if whole_heap:
                gc.unfreeze()
            gc.collect()
            gc.freeze()
    finally:
        sys.unraisablehook = previous
    for warning in caught:
        made = tracemalloc.get_object_traceback(warning.source) if warning.source else None
        where = (
            "".join(f"\n    {line}" for line in made.format(most_recent_first=True)) if made else ""
        )
        problems.append(f"{warning.category.__name__}: {warning.message}{where}")
    return problems


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
        for _ in range(2):  # nginx's free port taken by another test in between: another one
            try:
                return start(apps, extra, timeouts)
            except PortTaken:
                continue
        return start(apps, extra, timeouts)

    def start(apps: dict[str, Path | dict[str, object]], extra: str, timeouts: str) -> Proxy:
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
def https_proxy(tmp: Path, starlette_sock: Path) -> Iterator[tuple[Proxy, int]]:
    """The Starlette app as app1 behind a built-in sockgate with HTTPS: (proxy, https port)."""
    with https_sockgate(tmp, {"app1": starlette_sock}) as started:
        yield started


@pytest.fixture
def starlette_sock(tmp: Path) -> Iterator[Path]:
    """The Starlette test app under uvicorn --uds; yields its socket path."""
    path = tmp / "st.sock"
    with Uvicorn("tests.apps.starlette_app:app", path):
        yield path
