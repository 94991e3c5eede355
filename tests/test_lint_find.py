"""The pure part of `sockgate lint`: which URLs of a page and which response headers leave an
app's prefix, on a fixture page with a known set of escaping and staying links."""

from __future__ import annotations

from pathlib import Path

import pytest

from sockgate.config import App
from sockgate.lint.find import (
    Scope,
    cookie_findings,
    findings,
    header_refs,
    page_refs,
    refresh_target,
    resolve,
    srcset_urls,
    to_follow,
)

FIXTURES = Path(__file__).parent / "fixtures" / "lint"
APP1 = App("app1", Path("/tmp/app1.sock"), "/app1/")
APP2 = App("app2", Path("/tmp/app2.sock"), "/app2/")
PAGE = "http://127.0.0.1:8080/app1/"


def scope(app: App = APP1, *apps: App, **kwargs: object) -> Scope:
    return Scope(app, apps or (APP1, APP2), port=8080, **kwargs)  # type: ignore[arg-type]


def escaping(html: str, page: str = PAGE, where: Scope | None = None) -> set[tuple[str, str]]:
    return {(f.where, f.value) for f in findings(page, html, where or scope())}


def test_the_fixture_page_escapes_exactly_where_it_says() -> None:
    text = (FIXTURES / "index.html").read_text()
    found = findings(PAGE, text, scope())
    assert {(f.where, f.value, f.resolved, f.reaches) for f in found} == {
        ("link[href]", "/static/site.css", "http://127.0.0.1:8080/static/site.css", None),
        ("script[src]", "/static/app.js", "http://127.0.0.1:8080/static/app.js", None),
        ("meta[refresh]", "/timeout", "http://127.0.0.1:8080/timeout", None),
        ("a[href]", "/login", "http://127.0.0.1:8080/login", None),
        ("a[href]", "/Upper?a=1&b=2", "http://127.0.0.1:8080/Upper?a=1&b=2", None),
        ("a[href]", "http://localhost:8080/about", "http://localhost:8080/about", None),
        ("a[href]", "//localhost:8080/help", "http://localhost:8080/help", None),
        ("a[href]", "/app2/", "http://127.0.0.1:8080/app2/", "app2"),
        ("img[srcset]", "/img/large.png", "http://127.0.0.1:8080/img/large.png", None),
        ("form[action]", "/search", "http://127.0.0.1:8080/search", None),
        ("button[formaction]", "../admin", "http://127.0.0.1:8080/admin", None),
    }
    marked = {n for n, line in enumerate(text.splitlines(), 1) if "<!-- ESCAPES -->" in line}
    assert sorted(f.line for f in found) == sorted(marked), "one finding per marked line"
    assert {f.page for f in found} == {PAGE}


def test_hints_say_what_kind_of_url_it_is() -> None:
    text = (FIXTURES / "index.html").read_text()
    hints = {f.value: f.hint for f in findings(PAGE, text, scope())}
    assert hints["/login"] == "root-relative URL: the app links as if it were served at /"
    assert hints["http://localhost:8080/about"].startswith("absolute URL without the prefix /app1")
    assert hints["//localhost:8080/help"].startswith("absolute URL without the prefix /app1")
    assert hints["../admin"] == "relative URL climbs above /app1/"
    assert hints["/app2/"].startswith("lands in app 'app2'")


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ('<area href="/map">', {("area[href]", "/map")}),
        ('<iframe src="/frame"></iframe>', {("iframe[src]", "/frame")}),
        (
            '<video poster="/poster.jpg"><source src="/v.mp4"></video>',
            {("video[poster]", "/poster.jpg"), ("source[src]", "/v.mp4")},
        ),
        (
            '<audio src="/a.ogg"></audio><embed src="/e.swf"><track src="/t.vtt">',
            {("audio[src]", "/a.ogg"), ("embed[src]", "/e.swf"), ("track[src]", "/t.vtt")},
        ),
        (
            '<object data="/o.svg"></object><div data="/not-a-url"></div>',
            {("object[data]", "/o.svg")},
        ),
        (
            '<input type="image" src="/go.png"><input formaction="/do">',
            {("input[src]", "/go.png"), ("input[formaction]", "/do")},
        ),
        (
            '<svg><a xlink:href="/x"></a><use href="/sprite.svg#i"></use></svg>',
            {("a[xlink:href]", "/x"), ("use[href]", "/sprite.svg#i")},
        ),
        (
            '<link rel="preload" as="image" imagesrcset="/p.png 2x">',
            {("link[imagesrcset]", "/p.png")},
        ),
        ('<a href="  /spaced\n  ">x</a>', {("a[href]", "  /spaced\n  ")}),
        ('<a href="\\static\\x">x</a>', {("a[href]", "\\static\\x")}),
        ('<a href="http://LOCALHOST:8080/x">x</a>', {("a[href]", "http://LOCALHOST:8080/x")}),
        (
            '<a href="http://app.localhost:8080/x">x</a>',
            {("a[href]", "http://app.localhost:8080/x")},
        ),
        ('<a href="http://[::1]:8080/x">x</a>', {("a[href]", "http://[::1]:8080/x")}),
        ('<a href="http://127.0.0.2:8080/x">x</a>', {("a[href]", "http://127.0.0.2:8080/x")}),
        ('<meta http-equiv="refresh" content="0;url=/r">', {("meta[refresh]", "/r")}),
    ],
)
def test_each_kind_of_url_is_found(html: str, expected: set[tuple[str, str]]) -> None:
    assert escaping(html) == expected


@pytest.mark.parametrize(
    "html",
    [
        '<a href="sub/page">x</a><a href="../app1/x">y</a><a href="/app1/">z</a>',
        '<a href="#frag">x</a><a href="">empty</a><a href>bare</a><form action></form>',
        '<a href="mailto:a@b">m</a><a href="tel:1">t</a><a href="javascript:go()">j</a>',
        '<img src="data:image/png;base64,AAAA"><a href="blob:x">b</a>',
        '<a href="http://example.com/x">x</a><a href="https://localhost/x">y</a>',
        '<a href="http://localhost:8081/x">other port</a><a href="http://10.0.0.1:8080/x">z</a>',
        '<meta http-equiv="refresh" content="5"><meta name="refresh" content="0;url=/x">',
        '<script>var a = "<a href=/x>";</script><!-- <a href="/y"> --><style>a{}</style>',
        '<p title="/not/a/url" class="/x">text /x</p>',
    ],
)
def test_what_does_not_escape(html: str) -> None:
    assert escaping(html) == set()


def test_base_href_changes_what_relative_urls_resolve_to() -> None:
    html = '<head><base href="/"></head><a href="page">x</a><a href="/app1/ok">y</a>'
    found = findings(PAGE, html, scope())
    assert {(f.where, f.value, f.resolved) for f in found} == {
        ("base[href]", "/", "http://127.0.0.1:8080/"),
        ("a[href]", "page", "http://127.0.0.1:8080/page"),
    }
    # Only the first <base href> counts, wherever the links are.
    later = '<a href="x">x</a><base href="/app1/deeper/"><base href="/">'
    assert escaping(later) == {("base[href]", "/")}


def test_allowed_hosts_and_the_listen_address_are_the_proxy_too() -> None:
    html = '<a href="http://my.example:8080/x">x</a><a href="http://192.168.1.5:8080/y">y</a>'
    assert escaping(html) == set()
    wider = scope(APP1, APP1, allowed_hosts=["my.example"], listen_host="192.168.1.5")
    assert escaping(html, where=wider) == {
        ("a[href]", "http://my.example:8080/x"),
        ("a[href]", "http://192.168.1.5:8080/y"),
    }


def test_a_nested_app_and_a_catch_all_app() -> None:
    inner = App("inner", Path("/tmp/i.sock"), "/app1/inner/")
    root = App("root", Path("/tmp/r.sock"), "/")
    html = '<a href="/app1/inner/x">x</a><a href="/elsewhere">y</a><a href="/app1/x">z</a>'
    found = findings(PAGE, html, scope(APP1, APP1, inner, root))
    assert {(f.value, f.reaches) for f in found} == {
        ("/app1/inner/x", "inner"),
        ("/elsewhere", "root"),
    }
    from_root = findings("http://127.0.0.1:8080/", html, scope(root, APP1, inner, root))
    assert {(f.value, f.reaches) for f in from_root} == {
        ("/app1/inner/x", "inner"),
        ("/app1/x", "app1"),
    }


def test_location_and_refresh_headers() -> None:
    headers = [("location", "/login?next=%2F#f"), ("Refresh", "3; url=../out"), ("X-Other", "/x")]
    refs = header_refs("http://127.0.0.1:8080/app1/a/b", 302, headers)
    assert [(r.where, r.value, r.url, r.navigates) for r in refs] == [
        ("header:Location", "/login?next=%2F#f", "http://127.0.0.1:8080/login?next=%2F", True),
        ("header:Refresh", "../out", "http://127.0.0.1:8080/app1/out", True),
    ]
    created = header_refs(PAGE, 201, [("Location", "/app1/items/1")])
    assert [r.navigates for r in created] == [False], "only a 3xx Location is followed"


@pytest.mark.parametrize(
    ("header", "escapes"),
    [
        ("sid=1; Path=/; HttpOnly", True),
        ("sid=1; path=/other/", True),
        ("sid=1; Path=/app10", True),
        ("sid=1; Path=/app1/; Path=/", True),  # the last Path wins
        ("sid=1; Path=/app1", False),
        ("sid=1; Path=/app1/", False),
        ("sid=1; Path=/app1/deeper; Secure", False),
        ("sid=1; HttpOnly", False),  # the default path is the page's directory: inside
        ("sid=1; Path=relative", False),  # not starting with '/': the default path
        ("sid=1; Path=/; Path=/app1/", False),
    ],
)
def test_cookie_paths(header: str, escapes: bool) -> None:
    found = cookie_findings(
        PAGE, [("Set-Cookie", header), ("X-Set-Cookie", "a=1; Path=/")], scope()
    )
    assert len(found) == int(escapes)
    if escapes:
        assert found[0].where == "header:Set-Cookie"
        assert found[0].value == header
        assert "/app1/" in found[0].hint


def test_the_crawler_follows_pages_that_stay_inside() -> None:
    html = (
        '<a href="a">a</a><a href="/x">out</a><img src="i.png"><iframe src="f"></iframe>'
        '<a href="http://example.com/">e</a><link href="s.css"><a href="a#again">a</a>'
        '<meta http-equiv="refresh" content="1;url=next">'
    )
    assert to_follow(page_refs(PAGE, html), scope()) == [
        PAGE + "a",
        PAGE + "f",
        PAGE + "a",
        PAGE + "next",
    ]


@pytest.mark.parametrize(
    ("content", "url"),
    [
        ("0; url=/x", "/x"),
        ("0;URL='/x y'", "/x y"),
        ('5, url="/q"', "/q"),
        ("0; /bare", "/bare"),
        ("  3  ", None),
        ("", None),
    ],
)
def test_refresh_target(content: str, url: str | None) -> None:
    assert refresh_target(content) == url


def test_srcset_urls() -> None:
    assert srcset_urls("a.png 1x, /b.png 2x,c.png") == ["a.png", "/b.png", "c.png"]
    assert srcset_urls(" /w.png 100w,\n /x,y.png 200w ") == ["/w.png", "/x,y.png"]
    assert srcset_urls("/z.png, ,") == ["/z.png"]


def test_resolve_drops_fragments_and_other_schemes() -> None:
    assert resolve(PAGE, "x#f") == PAGE + "x"
    assert resolve(PAGE, "/app1/../x") == "http://127.0.0.1:8080/x"
    assert resolve(PAGE, "mailto:a@b") is None
    assert resolve(PAGE, " \t") is None
