"""What `sockgate lint` found, as data, as JSON for scripts and as text for a terminal. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import App
from .find import Finding

# The version of the JSON document; bumped when a field changes meaning or goes away.
SCHEMA = 1


@dataclass(frozen=True, slots=True)
class Page:
    url: str
    status: int | None  # None when no answer came (see error)
    content_type: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class AppResult:
    app: App
    start: str  # the first URL fetched: the app's prefix on the proxy's origin
    pages: tuple[Page, ...] = ()
    findings: tuple[Finding, ...] = ()
    unvisited: int = 0  # pages found inside the app but not fetched (--max-pages)
    error: str = ""  # set when the app could not be linted at all
    host_url: str | None = None  # its own origin (host_routes), where it is served at /


@dataclass(frozen=True, slots=True)
class Via:
    """The engine the pages were fetched through."""

    kind: str  # "running" (the sockgate of this config) or "temporary" (started for the lint)
    host: str  # connected to
    port: int
    pid: int | None = None  # of the running sockgate

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Report:
    via: Via | None  # None when no app could be reached, so no engine was needed
    apps: tuple[AppResult, ...]

    @property
    def escapes(self) -> int:
        return sum(len(result.findings) for result in self.apps)

    @property
    def errors(self) -> list[str]:
        return [f"{r.app.name}: {r.error}" for r in self.apps if r.error]


def framework_hints(app: App) -> list[tuple[str, str]]:
    """The one setting each common framework needs to build URLs under the app's prefix (the
    proxy sends it as X-Forwarded-Prefix)."""
    mount = app.mount or "/"
    return [
        ("uvicorn (Starlette, FastAPI)", f"uvicorn --root-path {mount} --proxy-headers"),
        ("Flask / Werkzeug", "app.wsgi_app = ProxyFix(app.wsgi_app, x_prefix=1, x_host=1)"),
        (
            "Django",
            f'FORCE_SCRIPT_NAME = "{mount}", USE_X_FORWARDED_HOST = True, '
            f'SESSION_COOKIE_PATH = CSRF_COOKIE_PATH = "{app.prefix}"',
        ),
        (
            "Express",
            "app.set('trust proxy', 'loopback'), then prefix URLs and cookie paths with "
            "req.get('X-Forwarded-Prefix')",
        ),
    ]


# --- JSON ---------------------------------------------------------------------------------------


def to_json(report: Report) -> dict[str, Any]:
    """The `--json` document (schema in docs/prefix-apps.md)."""
    via = report.via
    return {
        "schema": SCHEMA,
        "via": None if via is None else {"kind": via.kind, "address": via.address, "pid": via.pid},
        "escapes": report.escapes,
        "errors": report.errors,
        "apps": [_app_json(result) for result in report.apps],
    }


def _app_json(result: AppResult) -> dict[str, Any]:
    return {
        "name": result.app.name,
        "prefix": result.app.prefix,
        "start": result.start,
        "host_url": result.host_url,
        "error": result.error or None,
        "pages": [
            {
                "url": p.url,
                "status": p.status,
                "content_type": p.content_type,
                "error": p.error or None,
            }
            for p in result.pages
        ],
        "unvisited": result.unvisited,
        "findings": [
            {
                "page": f.page,
                "where": f.where,
                "line": f.line,
                "value": f.value,
                "resolved": f.resolved,
                "reaches": f.reaches,
                "hint": f.hint,
            }
            for f in result.findings
        ],
        "hints": [
            {"framework": name, "setting": setting}
            for name, setting in (framework_hints(result.app) if result.findings else [])
        ],
    }


# --- text ---------------------------------------------------------------------------------------


def to_text(report: Report) -> str:
    lines = [_via_line(report.via)]
    for result in report.apps:
        lines += ["", *_app_lines(result)]
    escaping = [r for r in report.apps if r.findings]
    if escaping:
        lines += ["", *_hint_lines(escaping)]
    lines += ["", _summary(report)]
    return "\n".join(lines)


def _via_line(via: Via | None) -> str:
    if via is None:
        return "no app answered: nothing fetched"
    if via.kind == "running":
        return f"fetched through the running sockgate at {via.address} (pid {via.pid})"
    return f"fetched through a temporary built-in engine at {via.address} (sockgate is not running)"


def _app_lines(result: AppResult) -> list[str]:
    app = result.app
    head = f"{app.name} {app.prefix}"
    if result.error:
        return [f"{head}: could not lint: {result.error}"]
    pages = _count(len(result.pages), "page")
    more = f" ({result.unvisited} more not fetched: --max-pages)" if result.unvisited else ""
    if not result.findings:
        return [f"{head}: {pages}{more}, nothing escapes"]
    lines = [f"{head}: {pages}{more}, {_count(len(result.findings), 'escape')}"]
    for page in result.pages:
        found = [f for f in result.findings if f.page == page.url]
        if found:
            lines.append(f"  {page.url}  ({page.status})")
            lines += [_finding_line(f) for f in found]
    return lines


def _finding_line(finding: Finding) -> str:
    where = finding.where + (f" line {finding.line}" if finding.line is not None else "")
    if finding.where == "header:Set-Cookie":
        return f"    {where}: {finding.value}\n      {finding.hint}"
    lands = f"app {finding.reaches}" if finding.reaches else "no app"
    return f"    {where}: {finding.value!r} -> {finding.resolved} ({lands})\n      {finding.hint}"


def _hint_lines(escaping: list[AppResult]) -> list[str]:
    apps = ", ".join(f"{r.app.name} at {r.app.mount or '/'}" for r in escaping)
    shown = f" (shown for {escaping[0].app.name})" if len(escaping) > 1 else ""
    lines = [
        f"to fix: tell each app its prefix ({apps}); sockgate sends it as X-Forwarded-Prefix.",
        f"  one setting per framework{shown}:",
    ]
    for name, setting in framework_hints(escaping[0].app):
        lines.append(f"    {name}: {setting}")
    return lines + _origin_lines(escaping)


def _origin_lines(escaping: list[AppResult]) -> list[str]:
    """The other way out: each app at the root of its own origin, where no prefix is escaped."""
    own = [(r.app.name, r.host_url) for r in escaping if r.host_url]
    if len(own) == 1:
        return [f"or use it at its own origin: {own[0][1]} (served at / there: no prefix)"]
    if not own:
        return []
    width = max(len(name) for name, _ in own)
    return ["or use each at its own origin (served at / there: no prefix):"] + [
        f"    {name.ljust(width)}  {url}" for name, url in own
    ]


def _summary(report: Report) -> str:
    linted = [r for r in report.apps if not r.error]
    escaping = [r for r in linted if r.findings]
    text = (
        f"{_count(report.escapes, 'escape')} in {len(escaping)} of {_count(len(linted), 'app')}"
        if escaping
        else f"nothing escapes in {_count(len(linted), 'app')}"
    )
    if report.errors:
        text += f"; {len(report.errors)} could not be linted"
    return text


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
