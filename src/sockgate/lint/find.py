"""Which URLs in a page, and which response headers, leave an app's prefix. Pure: text in,
findings out.

A URL escapes when it resolves (against the page, or its `<base href>`) to the proxy's own
origin and the proxy would route it to another app or to no app at all. URLs to other origins,
fragments and non-HTTP schemes (`mailto:`, `javascript:`, `data:`) never escape. A cookie
escapes when its `Path` is not under the app's prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

from ..config import App
from ..http.hosts import HostPolicy
from ..http.routing import Forward, Redirect, Router

# Attributes that hold one URL, on any element; `data` only on <object> (`data-*` are others).
_URL_ATTRS = frozenset({"href", "xlink:href", "src", "action", "formaction", "poster"})
_SRCSET_ATTRS = frozenset({"srcset", "imagesrcset"})
# What a browser opens as a page: the crawler follows these when they stay inside.
_NAVIGATES = frozenset({("a", "href"), ("area", "href"), ("iframe", "src"), ("frame", "src")})
_REFRESH = re.compile(r"\s*[0-9.]*\s*[;,]?\s*(?:url\s*=\s*)?(?P<url>.*)", re.IGNORECASE | re.DOTALL)
_URL_WHITESPACE = " \t\n\r\f"
_TAB_NEWLINE = re.compile(r"[\t\n\r]")


@dataclass(frozen=True, slots=True)
class Ref:
    """One URL a page or a response points at."""

    where: str  # "a[href]", "meta[refresh]", "header:Location", ...
    value: str  # as written
    url: str  # resolved: absolute, without the fragment
    line: int | None = None  # in the page; None for headers
    navigates: bool = False  # a browser opens it as a page (links, redirects, refresh)


@dataclass(frozen=True, slots=True)
class Finding:
    page: str  # the URL whose page or response holds it
    where: str
    value: str
    resolved: str  # the absolute URL it resolves to; for a cookie, its Path
    reaches: str | None  # the app it lands in instead, None for no app
    hint: str
    line: int | None = None


class Scope:
    """Where one app lives on the proxy: the proxy's origin (every Host name it answers, on
    `port`) and the routes that decide which app a path belongs to."""

    def __init__(
        self,
        app: App,
        apps: Sequence[App] = (),
        *,
        port: int,
        listen_host: str = "127.0.0.1",
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.port = port
        self._router = Router(apps or [app])
        self._hosts = HostPolicy(listen_host, allowed_hosts)

    def __repr__(self) -> str:
        return f"<Scope {self.app.name} {self.app.prefix} port={self.port}>"

    def on_proxy(self, url: SplitResult) -> bool:
        """The URL goes to this proxy: an HTTP(S) URL to a name it answers, on its port."""
        if url.scheme not in ("http", "https") or not url.hostname:
            return False
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError:
            return False
        host = url.netloc.rpartition("@")[2].encode()
        return port == self.port and self._hosts.allows(host)

    def lands_in(self, path: str) -> App | None:
        """The app the proxy routes this path to (a mount's 301 counts as its app)."""
        decision = self._router.route(path.encode("utf-8", errors="replace") or b"/")
        if isinstance(decision, Redirect):
            decision = self._router.route(decision.location)
        return decision.app if isinstance(decision, Forward) else None

    def escape(self, url: str) -> tuple[bool, str | None]:
        """(escapes, the app it reaches instead) for an absolute URL."""
        parts = urlsplit(url)
        if not self.on_proxy(parts):
            return False, None
        app = self.lands_in(parts.path)
        if app is not None and app.name == self.app.name:
            return False, None
        return True, None if app is None else app.name

    def cookie_escapes(self, path: str) -> bool:
        return not (path == self.app.mount or path.startswith(self.app.prefix))


# --- findings ---------------------------------------------------------------------------------


def findings(page_url: str, html: str, scope: Scope) -> list[Finding]:
    """What escapes in one HTML page."""
    return check(page_url, page_refs(page_url, html), scope)


def check(page_url: str, refs: Iterable[Ref], scope: Scope) -> list[Finding]:
    """The refs that escape the scope's app, each with a hint."""
    found = []
    for ref in refs:
        escapes, reaches = scope.escape(ref.url)
        if escapes:
            hint = _hint(ref.value, scope.app) if reaches is None else _other_app(reaches)
            found.append(Finding(page_url, ref.where, ref.value, ref.url, reaches, hint, ref.line))
    return found


def cookie_findings(
    page_url: str, headers: Iterable[tuple[str, str]], scope: Scope
) -> list[Finding]:
    """Set-Cookie headers whose Path is not under the app's prefix. A cookie without a Path (or
    with one that does not start with '/') gets the page's directory, which is inside."""
    found = []
    for name, value in headers:
        path = cookie_path(value) if name.lower() == "set-cookie" else None
        if path is not None and path.startswith("/") and scope.cookie_escapes(path):
            hint = (
                f"cookie path {path} is not under {scope.app.prefix}: browsers send it to other "
                "apps, or never back to this one"
            )
            found.append(Finding(page_url, "header:Set-Cookie", value, path, None, hint))
    return found


def to_follow(refs: Iterable[Ref], scope: Scope) -> list[str]:
    """The pages a browser would open from these refs that stay in the app, in order."""
    return [
        ref.url
        for ref in refs
        if ref.navigates and not scope.escape(ref.url)[0] and scope.on_proxy(urlsplit(ref.url))
    ]


def _other_app(name: str) -> str:
    return f"lands in app {name!r}: fine if the link is meant to leave this app"


def _hint(value: str, app: App) -> str:
    text = _clean(value).replace("\\", "/")
    if text.startswith("//") or urlsplit(text).scheme:
        return (
            f"absolute URL without the prefix {app.mount or '/'}: the app does not know its prefix"
        )
    if text.startswith("/"):
        return "root-relative URL: the app links as if it were served at /"
    return f"relative URL climbs above {app.prefix}"


# --- reading pages and headers ----------------------------------------------------------------


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str, str, int]] = []  # tag, attribute, value, line

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        line = self.getpos()[0]
        values = {name: value for name, value in attrs if value is not None}
        for name, value in values.items():
            if name in _URL_ATTRS or name in _SRCSET_ATTRS or (name, tag) == ("data", "object"):
                self.found.append((tag, name, value, line))
        if tag == "meta" and values.get("http-equiv", "").strip().lower() == "refresh":
            self.found.append((tag, "refresh", values.get("content", ""), line))


def page_refs(page_url: str, html: str) -> list[Ref]:
    """Every URL the page points at, resolved against its `<base href>` (the first one)."""
    collector = _Collector()
    collector.feed(html)
    collector.close()
    base = page_url
    for tag, attr, value, _ in collector.found:
        if (tag, attr) == ("base", "href") and _clean(value):
            base = urljoin(page_url, _clean(value))
            break
    refs = []
    for tag, attr, value, line in collector.found:
        against = page_url if tag == "base" else base
        if tag == "meta":
            target = refresh_target(value)
            urls = [] if target is None else [target]
            where, navigates = "meta[refresh]", True
        else:
            urls = srcset_urls(value) if attr in _SRCSET_ATTRS else [value]
            where, navigates = f"{tag}[{attr}]", (tag, attr) in _NAVIGATES
        for raw in urls:
            resolved = resolve(against, raw)
            if resolved is not None:
                refs.append(Ref(where, raw, resolved, line, navigates))
    return refs


def header_refs(url: str, status: int, headers: Iterable[tuple[str, str]]) -> list[Ref]:
    """The URLs of `Location` (followed on 3xx) and `Refresh` response headers."""
    refs = []
    for name, value in headers:
        lower = name.lower()
        raw = (
            value if lower == "location" else refresh_target(value) if lower == "refresh" else None
        )
        resolved = None if raw is None else resolve(url, raw)
        if raw is not None and resolved is not None:
            navigates = lower == "refresh" or 300 <= status < 400
            refs.append(Ref(f"header:{name.title()}", raw, resolved, None, navigates))
    return refs


def resolve(base: str, value: str) -> str | None:
    """The absolute URL a browser makes of `value` on a page at `base`, without the fragment;
    None for an empty value or a URL with a scheme other than http(s)."""
    text = _clean(value)
    if not text:
        return None
    scheme = urlsplit(text).scheme.lower() if ":" in text else ""
    if scheme and scheme not in ("http", "https"):
        return None
    # Browsers read '\' as '/' in http(s) URLs: '\static\x' is root-relative to them.
    parts = urlsplit(urljoin(base, text.replace("\\", "/")))
    return urlunsplit(parts._replace(fragment=""))


def _clean(value: str) -> str:
    return _TAB_NEWLINE.sub("", value.strip(_URL_WHITESPACE))


def refresh_target(content: str) -> str | None:
    """The URL of a Refresh header or `<meta http-equiv=refresh content=...>`: "0; url=/x"."""
    match = _REFRESH.fullmatch(content)
    url = match.group("url").strip() if match else ""
    if url[:1] in ("'", '"'):
        end = url.find(url[0], 1)
        url = url[1:end] if end > 0 else url[1:]
    return url or None


def srcset_urls(value: str) -> list[str]:
    """The URLs of a `srcset`: candidates "URL [descriptor]" separated by commas."""
    urls: list[str] = []
    pos, size = 0, len(value)
    while True:
        while pos < size and (value[pos] in _URL_WHITESPACE or value[pos] == ","):
            pos += 1
        if pos >= size:
            return urls
        start = pos
        while pos < size and value[pos] not in _URL_WHITESPACE:
            pos += 1
        url = value[start:pos]
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            comma = value.find(",", pos)
            pos = size if comma < 0 else comma + 1
        if url:
            urls.append(url)


def cookie_path(set_cookie: str) -> str | None:
    """The `Path` attribute of a Set-Cookie value (the last one wins), None without one."""
    path = None
    for attribute in set_cookie.split(";")[1:]:
        name, _, value = attribute.partition("=")
        if name.strip().lower() == "path":
            path = value.strip()
    return path
