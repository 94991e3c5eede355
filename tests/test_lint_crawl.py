"""The crawler and the report on their own: fetch failures, what is parsed, the text layout."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from sockgate.config import App
from sockgate.lint.crawl import crawl
from sockgate.lint.find import Finding, Scope
from sockgate.lint.report import AppResult, Page, Report, Via, to_json, to_text

APP1 = App("app1", Path("/tmp/app1.sock"), "/app1/")
APP2 = App("app2", Path("/tmp/app2.sock"), "/app2/")

Answer = Callable[[bytes], bytes | None]  # request target -> whole response, None: close


def response(body: bytes, content_type: bytes, status: bytes = b"200 OK") -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )


def crawl_against(answer: Answer, max_pages: int = 20) -> AppResult:
    """Crawl /app1/ of a loopback HTTP server that answers with `answer`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        reply = answer(head.split(b" ")[1])
        if reply is not None:
            writer.write(reply)
        writer.close()

    async def main() -> AppResult:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        scope = Scope(APP1, (APP1, APP2), port=port)
        async with server:
            return await crawl(
                scope, ("127.0.0.1", port), f"http://127.0.0.1:{port}/app1/", max_pages
            )

    return asyncio.run(main())


def test_a_start_page_that_cannot_be_fetched_is_an_error() -> None:
    result = crawl_against(lambda target: None)
    assert result.pages == ()
    assert result.error.startswith("GET http://127.0.0.1:")
    assert result.error.endswith("/app1/: the connection closed before the answer was complete")


def test_a_linked_page_that_fails_is_recorded_and_the_crawl_goes_on() -> None:
    pages = {
        b"/app1/": b'<a href="broken">b</a><a href="fine">f</a>',
        b"/app1/fine": b'<a href="/out">o</a>',
    }

    def answer(target: bytes) -> bytes | None:
        body = pages.get(target)
        return None if body is None else response(body, b"text/html")

    result = crawl_against(answer)
    assert result.error == ""
    assert [(p.url.rsplit("/", 1)[1], p.status, bool(p.error)) for p in result.pages] == [
        ("", 200, False),
        ("broken", None, True),
        ("fine", 200, False),
    ]
    assert [f.value for f in result.findings] == ["/out"]


def test_only_html_is_parsed_and_its_charset_is_used() -> None:
    pages = {
        b"/app1/": response(b'<a href="/x">x</a><a href="t">t</a><a href="l">l</a>', b"text/html"),
        b"/app1/t": response(b'<a href="/in-text">x</a>', b"text/plain"),
        b"/app1/l": response(
            '<a href="/caf\xe9">x</a>'.encode("latin-1"),
            b"application/xhtml+xml; charset=iso-8859-1",
        ),
    }
    result = crawl_against(pages.get)
    assert [f.value for f in result.findings] == ["/x", "/caf\xe9"]


def test_a_redirect_is_checked_then_followed_only_inside() -> None:
    pages = {
        b"/app1/": response(b"", b"text/plain", b"302 Found\r\nLocation: in"),
        b"/app1/in": response(b"", b"text/plain", b"301 Moved\r\nLocation: /elsewhere"),
    }
    result = crawl_against(pages.get)
    assert [p.status for p in result.pages] == [302, 301]
    assert [(f.where, f.value, f.page.rsplit("/", 1)[1]) for f in result.findings] == [
        ("header:Location", "/elsewhere", "in")
    ]


def test_max_pages_leaves_the_rest_unvisited() -> None:
    links = b"".join(b'<a href="p%d">p</a>' % i for i in range(5))
    result = crawl_against(lambda target: response(links, b"text/html"), max_pages=3)
    assert len(result.pages) == 3
    assert result.unvisited == 3  # p0..p4 found, p0 and p1 fetched


# --- the report ---------------------------------------------------------------------------------


def finding(page: str, value: str) -> Finding:
    return Finding(page, "a[href]", value, "http://h:1" + value, None, "a hint", 3)


def test_the_framework_hints_come_once_for_several_apps() -> None:
    report = Report(
        Via("running", "127.0.0.1", 8080, pid=42),
        (
            AppResult(
                APP1,
                "http://h:1/app1/",
                (Page("http://h:1/app1/", 200),),
                (finding("http://h:1/app1/", "/a"),),
            ),
            AppResult(
                APP2,
                "http://h:1/app2/",
                (Page("http://h:1/app2/", 200),),
                (finding("http://h:1/app2/", "/b"),),
            ),
        ),
    )
    text = to_text(report)
    assert text.splitlines()[0] == "fetched through the running sockgate at 127.0.0.1:8080 (pid 42)"
    assert text.count("uvicorn --root-path") == 1
    assert "tell each app its prefix (app1 at /app1, app2 at /app2)" in text
    assert "one setting per framework (shown for app1):" in text
    assert text.splitlines()[-1] == "2 escapes in 2 of 2 apps"
    document = to_json(report)
    assert list(document) == ["schema", "via", "escapes", "errors", "apps"]
    assert list(document["apps"][0]) == [
        "name",
        "prefix",
        "start",
        "host_url",
        "error",
        "pages",
        "unvisited",
        "findings",
        "hints",
    ]
    assert list(document["apps"][0]["findings"][0]) == [
        "page",
        "where",
        "line",
        "value",
        "resolved",
        "reaches",
        "hint",
    ]
    assert document["apps"][1]["hints"][0]["setting"] == "uvicorn --root-path /app2 --proxy-headers"


def test_a_report_where_no_app_answered() -> None:
    report = Report(None, (AppResult(APP1, "", error="/tmp/app1.sock: missing"),))
    assert to_text(report).splitlines() == [
        "no app answered: nothing fetched",
        "",
        "app1 /app1/: could not lint: /tmp/app1.sock: missing",
        "",
        "nothing escapes in 0 apps; 1 could not be linted",
    ]
    assert to_json(report)["via"] is None
    assert to_json(report)["errors"] == ["app1: /tmp/app1.sock: missing"]
