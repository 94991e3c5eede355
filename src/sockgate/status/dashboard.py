"""The status document and its three faces: the JSON of `status.json` (schema in docs/dashboard.md),
the HTML status page (self-contained: inline style and script, no external assets; it updates
itself over SSE), and the terminal table of `sockgate status`. Pure: the page and the table are
rendered from the document alone, so the CLI renders what the control socket sends."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ..config import App
from .stats import AppSnapshot

SCHEMA = 1
# The most recent requests the page and the table list, across apps.
RECENT_SHOWN = 20


@dataclass(frozen=True, slots=True)
class Live:
    """An app's socket as last probed: "up", or the fault's short name and its reason."""

    state: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Process:
    """The process that answers (with workers, one of them: its counts are its own)."""

    version: str
    pid: int
    listen: str
    started: float
    dashboard: str | None
    workers: int = 1
    worker: int | None = None  # the worker's slot when workers > 1


# An app whose process runs in another process of sockgate's (the apps process, with workers > 1
# or nginx): this one does not see it.
ELSEWHERE = "elsewhere"


@dataclass(frozen=True, slots=True)
class AppProcess:
    """The process of an app sockgate runs (`command`), as its supervisor last saw it.

    `state` is the supervisor's (running, starting, backoff, stopped, stopping), or ELSEWHERE
    with everything else unknown; `next_start_in` is seconds until the restart, while in backoff.
    """

    state: str
    pid: int | None = None
    starts: int | None = None
    last_exit: str | None = None
    next_start_in: float | None = None
    on_demand: bool = False


def document(
    process: Process,
    apps: Sequence[tuple[App, Live, AppSnapshot]],
    now: float | None = None,
    runs: Mapping[str, AppProcess] | None = None,
    urls: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """`runs` holds the process of each app sockgate runs, by app name (no entry: not run);
    `urls` where each app is opened, by app name (`Config.urls`: prefix URL, then host URL)."""
    now = time.time() if now is None else now
    runs = runs or {}
    urls = urls or {}
    return {
        "schema": SCHEMA,
        "time": round(now, 3),
        "sockgate": {
            "version": process.version,
            "engine": "builtin",
            "pid": process.pid,
            "listen": process.listen,
            "started": round(process.started, 3),
            "uptime": round(now - process.started, 3),
            "dashboard": process.dashboard,
            "workers": process.workers,
            "worker": process.worker,
        },
        "apps": [
            _app(app, live, snap, runs.get(app.name), urls.get(app.name, ()))
            for app, live, snap in apps
        ],
    }


def _app(
    app: App, live: Live, snap: AppSnapshot, run: AppProcess | None, urls: Sequence[str]
) -> dict[str, Any]:
    timed = snap.p50 is not None and snap.p99 is not None
    return {
        "name": app.name,
        "prefix": app.prefix,
        "urls": list(urls),
        "socket": str(app.socket),
        "state": live.state,
        "detail": live.detail,
        "requests": snap.requests,
        "errors": snap.errors,
        "latency_ms": {"p50": _ms(snap.p50), "p99": _ms(snap.p99)} if timed else None,
        "streams": {"upgrade": snap.upgrades, "sse": snap.sse},
        "last_error": (
            {"time": round(snap.last_error.time, 3), "text": snap.last_error.text}
            if snap.last_error
            else None
        ),
        "recent": [
            {
                "time": round(r.time, 3),
                "method": r.method,
                "target": r.target,
                "status": r.status,
                "ms": _ms(r.seconds),
            }
            for r in snap.recent
        ],
        "process": None if run is None else _process(run),
    }


def _process(run: AppProcess) -> dict[str, Any]:
    wait = run.next_start_in
    return {
        "state": run.state,
        "pid": run.pid,
        "starts": run.starts,
        "last_exit": run.last_exit,
        "next_start_in": None if wait is None else round(max(0.0, wait), 3),
        "on_demand": run.on_demand,
    }


def process_text(proc: dict[str, Any] | None) -> str:
    """An app's process in words, as the table and the page show it ("-" for none):
    `running, pid 1234, started 3 times; last exit: exited with status 1`."""
    if proc is None:
        return "-"
    if proc["state"] == ELSEWHERE:
        return "run by the apps process"
    wait = proc["next_start_in"]
    text = f"restarting in {wait:.1f}s" if wait is not None else proc["state"]
    if proc["pid"] is not None:
        text += f", pid {proc['pid']}"
    if proc["on_demand"]:
        text += ", on demand"
    starts = proc["starts"]
    text += ", not started yet" if not starts else f", started {_times(starts)}"
    if proc["last_exit"]:
        text += f"; last exit: {proc['last_exit']}"
    return text


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def recent(doc: dict[str, Any], limit: int = RECENT_SHOWN) -> list[dict[str, Any]]:
    """The most recent requests across apps, newest first, each with its app's name."""
    merged = [r | {"app": a["name"]} for a in doc["apps"] for r in a["recent"]]
    return sorted(merged, key=lambda r: r["time"], reverse=True)[:limit]


def scope_note(doc: dict[str, Any]) -> str:
    """With workers, what the counts cover ("" for a single process)."""
    me = doc["sockgate"]
    if me["worker"] is None:
        return ""
    return (
        f"counts are worker {me['worker']}'s alone, one of {me['workers']} processes "
        "(each keeps its own); socket states hold for all"
    )


# --- the terminal table -----------------------------------------------------------------------


def table(doc: dict[str, Any]) -> str:
    me = doc["sockgate"]
    lines = [
        f"sockgate {me['version']}, pid {me['pid']}, listening on http://{me['listen']}/, "
        f"up {duration(me['uptime'])}"
    ]
    if note := scope_note(doc):
        lines.append(f"note: {note}")
    rows = [
        ["APP", "PREFIX", "SOCKET", "STATE", "REQS", "ERRS", "P50", "P99", "STREAMS", "LAST ERROR"]
    ]
    for a in doc["apps"]:
        lat = a["latency_ms"] or {"p50": None, "p99": None}
        state = a["state"] + (f": {a['detail']}" if a["detail"] and a["state"] != "up" else "")
        streams = a["streams"]
        rows.append(
            [
                a["name"],
                a["prefix"],
                a["socket"],
                state,
                str(a["requests"]),
                str(a["errors"]),
                latency(lat["p50"]),
                latency(lat["p99"]),
                f"{streams['upgrade']} ws, {streams['sse']} sse",
                a["last_error"]["text"] if a["last_error"] else "-",
            ]
        )
    if len(rows) == 1:
        lines.append("no apps configured")
    else:
        lines += columns(rows)
    lines += _url_lines(doc)
    lines += _process_lines(doc)
    shown = recent(doc, 10)
    if shown:
        lines += ["", "recent requests:"]
        requests = [["TIME", "APP", "STATUS", "MS", "REQUEST"]]
        for r in shown:
            clock = time.strftime("%H:%M:%S", time.localtime(r["time"]))
            when = [clock, r["app"], str(r["status"]), latency(r["ms"])]
            requests.append([*when, f"{r['method']} {r['target']}"])
        lines += ["  " + line for line in columns(requests)]
    return "\n".join(lines)


def columns(rows: list[list[str]]) -> list[str]:
    """`rows` (the header first) as lines, each column as wide as its widest cell; the last
    column, which may be long, is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]
        ).rstrip()
        for row in rows
    ]


def _url_lines(doc: dict[str, Any]) -> list[str]:
    """Below the table, one line per app: where to open it (prefix URL, then host URL)."""
    rows = [[a["name"], *a["urls"]] for a in doc["apps"] if a.get("urls")]
    if not rows:
        return []
    width = max(len(row) for row in rows)
    rows = [row + [""] * (width - len(row)) for row in rows]
    return ["", "open at:"] + ["  " + line for line in columns(rows)]


def _process_lines(doc: dict[str, Any]) -> list[str]:
    """Below the table, one line per app sockgate runs: its process (too wide for a column)."""
    runs = [(a["name"], a["process"]) for a in doc["apps"] if a.get("process") is not None]
    if not runs:
        return []
    width = max(len(name) for name, _ in runs)
    return ["", "apps sockgate runs:"] + [
        f"  {name.ljust(width)}  {process_text(proc)}" for name, proc in runs
    ]


def latency(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 10:
        return f"{ms:.1f}ms"
    if ms < 10_000:
        return f"{ms:.0f}ms"
    return f"{ms / 1000:.0f}s"


def duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


# --- the HTML page ----------------------------------------------------------------------------


def _asset(name: str) -> str:
    return (resources.files(__package__) / "assets" / name).read_text(encoding="utf-8")


# The page, its style and its script are package data (assets/); the script builds the rows
# with createElement/textContent only: targets and errors come from clients.
_STYLE = _asset("dashboard.css")
_SCRIPT = (
    _asset("dashboard.js")
    .replace("RECENT_SHOWN", str(RECENT_SHOWN))
    .replace("ELSEWHERE", ELSEWHERE)
)
_PAGE = string.Template(_asset("dashboard.html"))


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only this script and this style may run: no other script, no remote resources, no framing.
CSP = (
    f"default-src 'none'; script-src {_sha256(_SCRIPT)}; style-src {_sha256(_STYLE)}; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def page(doc: dict[str, Any], prefix: str) -> bytes:
    """The status page; it draws itself from the embedded document, then from `PREFIXevents`.
    Without JavaScript it shows the terminal table."""
    data = json.dumps(doc).replace("<", "\\u003c")  # no "</script>" inside the script element
    return _PAGE.substitute(
        style=_STYLE,
        script=_SCRIPT,
        events=html.escape(prefix + "events"),
        prefix=html.escape(prefix),
        table=html.escape(table(doc)),
        data=data,
    ).encode()


def dumps(doc: dict[str, Any]) -> bytes:
    """The document as `status.json` serves it."""
    return json.dumps(doc, indent=1).encode() + b"\n"


def event(doc: dict[str, Any]) -> bytes:
    """One Server-Sent Event carrying the document (JSON has no raw newlines)."""
    return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"
