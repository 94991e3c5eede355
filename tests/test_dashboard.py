"""The status document, the terminal table and the HTML page (pure), the `dashboard` key of
the config and the reserved prefix in routing."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from sockgate import config
from sockgate.apps.managed import AppState, ManagedApp
from sockgate.config import App, Command
from sockgate.errors import ConfigError
from sockgate.http.routing import Dashboard, Forward, NotFound, Redirect, Router
from sockgate.status import dashboard
from sockgate.status.dashboard import AppProcess, Live, Process
from sockgate.status.monitor import app_process
from sockgate.status.stats import AppStats

APP1 = App("app1", Path("/s/app1.sock"), "/app1/")
APP2 = App("app2", Path("/s/app2.sock"), "/app2/")
ROOT = App("root", Path("/s/root.sock"), "/")
PROCESS = Process("1.0", 42, "127.0.0.1:8080", 1000.0, "/_sockgate/")
CONFIG = config.Config(None, config.Listen("127.0.0.1", 0), Path("/w"), apps=(APP1, APP2))
URLS = ("http://127.0.0.1:8080/app1/", "http://app1.localhost:8080/")


def doc_with_traffic() -> dict[str, Any]:
    one, two = AppStats(), AppStats()
    one.record(1001.0, b"GET", b"/app1/x?q=1", 200, 0.004)
    one.upgrades = 1
    two.record(1002.0, b"POST", b"/app2/</script><b>", 502, 0.001, fault="socket file missing")
    return dashboard.document(
        PROCESS,
        [
            (APP1, Live("up"), one.snapshot()),
            (APP2, Live("missing", "is the app running?"), two.snapshot()),
        ],
        now=1010.0,
        urls={"app1": URLS, "app2": CONFIG.urls(APP2, 8080)},
    )


def test_the_document_has_the_documented_schema() -> None:
    doc = doc_with_traffic()
    assert doc["schema"] == 1
    assert doc["sockgate"] == {
        "version": "1.0",
        "engine": "builtin",
        "pid": 42,
        "listen": "127.0.0.1:8080",
        "started": 1000.0,
        "uptime": 10.0,
        "dashboard": "/_sockgate/",
        "workers": 1,
        "worker": None,
    }
    one, two = doc["apps"]
    assert one == {
        "name": "app1",
        "prefix": "/app1/",
        "urls": list(URLS),  # its prefix URL, then its host URL
        "socket": "/s/app1.sock",
        "state": "up",
        "detail": "",
        "requests": 1,
        "errors": 0,
        "latency_ms": {"p50": 4.0, "p99": 4.0},
        "streams": {"upgrade": 1, "sse": 0},
        "last_error": None,
        "recent": [
            {"time": 1001.0, "method": "GET", "target": "/app1/x?q=1", "status": 200, "ms": 4.0}
        ],
        "process": None,  # not an app sockgate runs
    }
    assert two["state"] == "missing"
    assert two["detail"] == "is the app running?"
    assert two["errors"] == 1
    assert two["last_error"] == {
        "time": 1002.0,
        "text": "socket file missing (POST /app2/</script><b>)",
    }
    assert json.loads(dashboard.dumps(doc)) == doc


def test_recent_merges_apps_newest_first() -> None:
    assert [(r["app"], r["status"]) for r in dashboard.recent(doc_with_traffic())] == [
        ("app2", 502),
        ("app1", 200),
    ]


def test_the_table_shows_each_app_and_the_recent_requests() -> None:
    text = dashboard.table(doc_with_traffic())
    lines = text.splitlines()
    assert lines[0] == "sockgate 1.0, pid 42, listening on http://127.0.0.1:8080/, up 10s"
    assert lines[1].split() == [
        "APP", "PREFIX", "SOCKET", "STATE", "REQS", "ERRS", "P50", "P99", "STREAMS", "LAST",
        "ERROR",
    ]  # fmt: skip
    assert re.match(
        r"app1 +/app1/ +/s/app1.sock +up +1 +0 +4\.0ms +4\.0ms +1 ws, 0 sse +-$", lines[2]
    )
    assert "missing: is the app running?" in lines[3]
    assert lines[3].endswith("socket file missing (POST /app2/</script><b>)")
    assert "note:" not in text
    # Where to open each app, below the table: its prefix URL and its host URL, aligned.
    start = lines.index("open at:")
    assert lines[start + 1 : start + 3] == [
        "  app1  http://127.0.0.1:8080/app1/  http://app1.localhost:8080/",
        "  app2  http://127.0.0.1:8080/app2/  http://app2.localhost:8080/",
    ]
    # The recent requests as a table of their own, each column under its header.
    start = lines.index("recent requests:")
    header, *rows = lines[start + 1 :]
    assert header.split() == ["TIME", "APP", "STATUS", "MS", "REQUEST"]
    assert len(rows) == 2
    for name in ("APP", "STATUS", "MS", "REQUEST"):
        column = header.index(name)
        assert all(row[column - 1] == " " and row[column] != " " for row in rows), (name, rows)
    assert rows[0].split()[1:] == ["app2", "502", "1.0ms", "POST", "/app2/</script><b>"]


def test_each_app_is_shown_at_its_prefix_url_and_its_host_url() -> None:
    # The port listened on (`listen` says 0 here), the listen address as it is written.
    assert CONFIG.urls(APP1, 8080) == URLS
    assert CONFIG.urls(ROOT, 9) == ("http://127.0.0.1:9/", "http://root.localhost:9/")
    v6 = dataclasses.replace(CONFIG, listen=config.Listen("::1", 8080))
    assert v6.urls(APP1) == ("http://[::1]:8080/app1/", "http://app1.localhost:8080/")
    anywhere = dataclasses.replace(CONFIG, listen=config.Listen("0.0.0.0", 8080))
    assert anywhere.urls(APP1)[0] == "http://localhost:8080/app1/"
    # Without host routes, the prefix URL alone, in the document and the table.
    prefix_only = dataclasses.replace(CONFIG, host_routes=False)
    assert prefix_only.urls(APP1, 8080) == ("http://127.0.0.1:8080/app1/",)
    urls = {"app1": prefix_only.urls(APP1, 8080)}
    doc = dashboard.document(PROCESS, [(APP1, Live("up"), AppStats().snapshot())], 1.0, None, urls)
    assert doc["apps"][0]["urls"] == ["http://127.0.0.1:8080/app1/"]
    assert "  app1  http://127.0.0.1:8080/app1/" in dashboard.table(doc).splitlines()


def test_a_worker_says_its_counts_are_its_own() -> None:
    doc = dashboard.document(
        Process("1.0", 42, "127.0.0.1:8080", 1000.0, "/_sockgate/", workers=4, worker=0), []
    )
    assert doc["sockgate"]["worker"] == 0
    text = dashboard.table(doc)
    assert "note: counts are worker 0's alone, one of 4 processes" in text
    assert "no apps configured" in text


# --- apps sockgate runs -------------------------------------------------------------------------

RUNS = App("runs", Path("/s/runs.sock"), "/runs/", command=Command(("app",), "app", Path("/")))
WAITS = App("waits", Path("/s/waits.sock"), "/waits/", command=Command(("w",), "w", Path("/")))
LAZY = App(
    "lazy",
    Path("/s/lazy.sock"),
    "/lazy/",
    command=Command(("l",), "l", Path("/"), start="on-demand"),
)


def doc_with_processes() -> dict[str, Any]:
    """app1 is not run by sockgate; `runs` was restarted; `waits` is in backoff; `lazy` idles."""
    empty = AppStats().snapshot()
    runs = {
        "runs": AppProcess("running", 1234, 3, "exited with status 1", None, False),
        "waits": AppProcess("backoff", None, 4, "ended by SIGSEGV", 1.98765, False),
        "lazy": AppProcess("stopped", None, 0, None, None, True),
    }
    apps = [(a, Live("up"), empty) for a in (APP1, RUNS, WAITS, LAZY)]
    return dashboard.document(PROCESS, apps, now=1010.0, runs=runs)


def test_the_document_has_each_run_apps_process() -> None:
    doc = doc_with_processes()
    assert doc["schema"] == 1
    rows = {a["name"]: a["process"] for a in doc["apps"]}
    assert rows["app1"] is None
    assert rows["runs"] == {
        "state": "running",
        "pid": 1234,
        "starts": 3,
        "last_exit": "exited with status 1",
        "next_start_in": None,
        "on_demand": False,
    }
    assert rows["waits"]["state"] == "backoff"
    assert rows["waits"]["next_start_in"] == 1.988
    assert rows["lazy"] == {
        "state": "stopped",
        "pid": None,
        "starts": 0,
        "last_exit": None,
        "next_start_in": None,
        "on_demand": True,
    }
    assert json.loads(dashboard.dumps(doc)) == doc


@pytest.mark.parametrize(
    ("process", "shown"),
    [
        (None, "-"),
        (
            AppProcess("running", 1234, 3, "exited with status 1"),
            "running, pid 1234, started 3 times; last exit: exited with status 1",
        ),
        (AppProcess("starting", 77, 1), "starting, pid 77, started once"),
        (
            AppProcess("backoff", None, 2, "ended by SIGKILL", 2.0),
            "restarting in 2.0s, started 2 times; last exit: ended by SIGKILL",
        ),
        (AppProcess("stopped", None, 0, on_demand=True), "stopped, on demand, not started yet"),
        (AppProcess("elsewhere"), "run by the apps process"),
    ],
)
def test_a_process_in_words(process: AppProcess | None, shown: str) -> None:
    runs = {} if process is None else {"runs": process}
    doc = dashboard.document(PROCESS, [(RUNS, Live("up"), AppStats().snapshot())], 1.0, runs)
    assert dashboard.process_text(doc["apps"][0]["process"]) == shown


def test_the_table_lists_the_apps_sockgate_runs_below_it() -> None:
    lines = dashboard.table(doc_with_processes()).splitlines()
    at = lines.index("apps sockgate runs:")
    assert lines[at - 1] == ""
    assert lines[at + 1 :] == [
        "  runs   running, pid 1234, started 3 times; last exit: exited with status 1",
        "  waits  restarting in 2.0s, started 4 times; last exit: ended by SIGSEGV",
        "  lazy   stopped, on demand, not started yet",
    ]
    assert "apps sockgate runs:" not in dashboard.table(doc_with_traffic())


def test_the_page_has_a_process_column_and_its_script_words_it_as_the_table() -> None:
    page = dashboard.page(doc_with_processes(), "/_sockgate/").decode()
    assert "<th>process</th>" in page
    # Without JavaScript: the table with its list of processes.
    assert "restarting in 2.0s, started 4 times; last exit: ended by SIGSEGV" in page
    script = re.search(r"<script>(.*?)</script>", page, re.S)
    assert script is not None
    assert 'p.state === "elsewhere"' in script.group(1)
    assert "run by the apps process" in script.group(1)


def test_the_monitor_reads_a_managed_apps_state(tmp_path: Path) -> None:
    waits = ManagedApp(WAITS, tmp_path)
    waits.state, waits.starts, waits.last_exit, waits.retry_at = (
        AppState.BACKOFF,
        2,
        "exited with status 3",
        101.5,
    )
    assert app_process(waits, now=100.0) == AppProcess(
        "backoff", None, 2, "exited with status 3", 1.5, False
    )
    lazy = ManagedApp(LAZY, tmp_path)
    assert app_process(lazy, now=100.0) == AppProcess("stopped", None, 0, None, None, True)
    # On demand, a backoff ends in `stopped`, not in a start: no countdown.
    lazy.state, lazy.retry_at = AppState.BACKOFF, 101.5
    assert app_process(lazy, now=100.0).next_start_in is None
    runs = ManagedApp(RUNS, tmp_path)
    runs.state, runs.pid, runs.starts = AppState.RUNNING, 4321, 1
    assert app_process(runs, now=100.0) == AppProcess("running", 4321, 1, None, None, False)
    for managed in (waits, lazy, runs):
        managed.output.close()


def test_the_page_is_self_contained_and_its_csp_allows_only_its_own_script() -> None:
    doc = doc_with_traffic()
    page = dashboard.page(doc, "/_sockgate/").decode()
    assert 'data-events="/_sockgate/events"' in page
    local = page.replace('listening on http://" +', "")
    for own in ("http://127.0.0.1:8080/", "http://app1.localhost:8080/", "http://app2.localhost"):
        local = local.replace(own, "")  # the listen address and the apps' URLs
    assert "http://" not in local  # no external assets
    # Client-sent text never closes the script element that embeds the document.
    assert "</script><b>" not in page
    embedded = re.search(r'<script type="application/json" id=initial>(.*?)</script>', page, re.S)
    assert embedded is not None
    assert json.loads(embedded.group(1)) == doc
    script = re.search(r"<script>(.*?)</script>", page, re.S)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in dashboard.CSP
    # Without JavaScript: the terminal table, escaped.
    assert "&lt;/script&gt;&lt;b&gt;" in page


def test_an_event_is_one_data_line() -> None:
    event = dashboard.event(doc_with_traffic())
    assert event.startswith(b"data: {")
    assert event.endswith(b"}\n\n")
    assert event.count(b"\n") == 2


@pytest.mark.parametrize(
    ("seconds", "shown"), [(5, "5s"), (65, "1m5s"), (3700, "1h1m"), (90000, "1d1h")]
)
def test_durations(seconds: float, shown: str) -> None:
    assert dashboard.duration(seconds) == shown


@pytest.mark.parametrize(
    ("ms", "shown"), [(None, "-"), (0.25, "0.2ms"), (12.4, "12ms"), (12_000, "12s")]
)
def test_latencies(ms: float | None, shown: str) -> None:
    assert dashboard.latency(ms) == shown


# --- routing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "decision"),
    [
        (b"/_sockgate/", Dashboard(b"/")),
        (b"/_sockgate/status.json?x=1", Dashboard(b"/status.json")),
        (b"/_sockgate/events", Dashboard(b"/events")),
        (b"/_sockgate", Redirect(b"/_sockgate/")),
        (b"/_sockgate?x", Redirect(b"/_sockgate/?x")),
        (b"/", Dashboard(b"/", at_root=True)),
        (b"/?x=1", Dashboard(b"/", at_root=True)),
        (b"/_sockgatex", NotFound()),
        (b"/app1/_sockgate/", Forward(APP1, b"/_sockgate/")),
    ],
)
def test_the_reserved_prefix_comes_first(target: bytes, decision: object) -> None:
    assert Router([APP1], "/_sockgate/").route(target) == decision


def test_an_app_at_root_keeps_root_but_not_the_reserved_prefix() -> None:
    router = Router([ROOT, APP1], "/_sockgate/")
    assert router.route(b"/") == Forward(ROOT, b"/")
    assert router.route(b"/_sockgate/") == Dashboard(b"/")
    assert router.route(b"/other") == Forward(ROOT, b"/other")


def test_without_a_dashboard_routing_is_unchanged() -> None:
    assert Router([APP1]).route(b"/") == NotFound()
    assert Router([APP1]).route(b"/_sockgate/") == NotFound()


# --- config -----------------------------------------------------------------------------------


def load(tmp_path: Path, body: str) -> config.Config:
    path = tmp_path / "sockgate.toml"
    path.write_text(body, encoding="utf-8")
    return config.load(path)


def test_dashboard_defaults_to_the_reserved_prefix(tmp_path: Path) -> None:
    cfg = load(tmp_path, "")
    assert cfg.dashboard == "/_sockgate/"
    assert cfg.control_socket == tmp_path / "sockgate.ctl"


@pytest.mark.parametrize(
    ("value", "expected"), [("false", None), ("true", "/_sockgate/"), ('"/status/"', "/status/")]
)
def test_dashboard_values(tmp_path: Path, value: str, expected: str | None) -> None:
    assert load(tmp_path, f"dashboard = {value}\n").dashboard == expected


@pytest.mark.parametrize("value", ['""', '"/"', '"status"', '"/a/../"', '"/a b/"', "1", "[]"])
def test_bad_dashboard_values_name_file_key_and_expectation(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"dashboard = {value}\n")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'sockgate.toml'}: dashboard: ")
    assert "expected a prefix of its own such as '/_sockgate/'" in message
    assert "or false to turn the status page off" in message


@pytest.mark.parametrize("prefix", ["/_sockgate/", "/_sockgate/x/"])
def test_an_app_under_the_reserved_prefix_is_an_error(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f'[apps.a]\nsocket = "a.sock"\nprefix = "{prefix}"\n')
    assert f"apps.a.prefix: '{prefix}' is under '/_sockgate/', the prefix reserved" in str(
        caught.value
    )


def test_an_app_there_is_fine_with_the_page_moved_or_off(tmp_path: Path) -> None:
    app = '[apps.a]\nsocket = "a.sock"\nprefix = "/_sockgate/"\n'
    assert load(tmp_path, 'dashboard = "/_status/"\n' + app).apps[0].prefix == "/_sockgate/"
    assert load(tmp_path, "dashboard = false\n" + app).dashboard is None


def test_an_app_from_the_command_line_is_checked_too(tmp_path: Path) -> None:
    path = tmp_path / "sockgate.toml"
    path.write_text('dashboard = "/status/"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="reserved for sockgate's status page"):
        config.load(path, apps=["status=/tmp/x.sock"])
