"""rewrite.py: every row of the rule table, and idempotence over arbitrary values (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sockgate.http.rewrite import REWRITTEN, location, refresh, response_header, set_cookie

MOUNT = b"/app1"
HOST = b"localhost:8080"

LOCATION = {
    # root-relative: under the prefix, query and fragment kept
    "root": (b"/", b"/app1/"),
    "root-relative": (b"/login", b"/app1/login"),
    "query-fragment": (b"/login?next=/x&y=1#top", b"/app1/login?next=/x&y=1#top"),
    "root-query": (b"/?q=1", b"/app1/?q=1"),
    "root-fragment": (b"/#f", b"/app1/#f"),
    "only-looks-like-prefix": (b"/app10/x", b"/app1/app10/x"),
    "prefix-in-query": (b"/x?to=/app1/y", b"/app1/x?to=/app1/y"),
    # already under the prefix: idempotent
    "under-prefix": (b"/app1/login", b"/app1/login"),
    "is-the-mount": (b"/app1", b"/app1"),
    "mount-query": (b"/app1?x=1", b"/app1?x=1"),
    "mount-fragment": (b"/app1#x", b"/app1#x"),
    # own origin: http:// + the request's Host, case-insensitive, :80 the same as no port
    "own-origin": (b"http://localhost:8080/login?a=1#b", b"http://localhost:8080/app1/login?a=1#b"),
    "own-origin-root": (b"http://localhost:8080/", b"http://localhost:8080/app1/"),
    "own-origin-empty-path": (b"http://localhost:8080", b"http://localhost:8080/app1/"),
    "own-origin-empty-path-query": (b"http://localhost:8080?q", b"http://localhost:8080/app1/?q"),
    "own-origin-empty-path-fragment": (
        b"http://localhost:8080#f",
        b"http://localhost:8080/app1/#f",
    ),
    "own-origin-case": (b"HTTP://LocalHost:8080/x", b"HTTP://LocalHost:8080/app1/x"),
    "own-origin-under-prefix": (b"http://localhost:8080/app1/x", b"http://localhost:8080/app1/x"),
    "own-origin-mount": (b"http://localhost:8080/app1", b"http://localhost:8080/app1"),
    "own-origin-app10": (b"http://localhost:8080/app10", b"http://localhost:8080/app1/app10"),
    # relative and other origins: left alone
    "relative": (b"login", b"login"),
    "dot-dot": (b"../x", b"../x"),
    "dot": (b"./x", b"./x"),
    "query-only": (b"?page=2", b"?page=2"),
    "fragment-only": (b"#top", b"#top"),
    "empty": (b"", b""),
    "scheme-relative": (b"//evil.example/x", b"//evil.example/x"),
    "scheme-relative-own-host": (b"//localhost:8080/x", b"//localhost:8080/x"),
    "other-host": (b"http://evil.example/login", b"http://evil.example/login"),
    "other-port": (b"http://localhost:9999/login", b"http://localhost:9999/login"),
    "longer-host": (b"http://localhost:80801/x", b"http://localhost:80801/x"),
    "https": (b"https://localhost:8080/login", b"https://localhost:8080/login"),
    "userinfo": (b"http://user@localhost:8080/x", b"http://user@localhost:8080/x"),
    "other-scheme": (b"mailto:a@b.example", b"mailto:a@b.example"),
}


@pytest.mark.parametrize(("url", "expected"), LOCATION.values(), ids=LOCATION.keys())
def test_location(url: bytes, expected: bytes) -> None:
    assert location(url, MOUNT, HOST) == expected


@pytest.mark.parametrize(
    ("url", "host", "expected"),
    [
        (b"http://example.test/x", b"Example.TEST", b"http://example.test/app1/x"),
        (b"http://example.test:80/x", b"example.test", b"http://example.test:80/app1/x"),
        (b"http://example.test/x", b"example.test:80", b"http://example.test/app1/x"),
        (b"http://[::1]:8080/x", b"[::1]:8080", b"http://[::1]:8080/app1/x"),
        (b"http://localhost/x", None, b"http://localhost/x"),
        (b"/x", None, b"/app1/x"),
    ],
)
def test_own_origin_is_the_request_host(url: bytes, host: bytes | None, expected: bytes) -> None:
    assert location(url, MOUNT, host) == expected


@pytest.mark.parametrize(
    ("url", "host", "expected"),
    [
        (b"https://localhost:8443/x", b"localhost:8443", b"https://localhost:8443/app1/x"),
        (b"HTTPS://app.test/x?q", b"app.test:443", b"HTTPS://app.test/app1/x?q"),
        (b"https://app.test:443/x", b"app.test", b"https://app.test:443/app1/x"),
        # The other scheme is another origin, whatever the host.
        (b"http://localhost:8443/x", b"localhost:8443", b"http://localhost:8443/x"),
        (b"https://app.test:80/x", b"app.test", b"https://app.test:80/x"),
    ],
)
def test_over_https_the_own_origin_is_https(url: bytes, host: bytes, expected: bytes) -> None:
    assert location(url, MOUNT, host, b"https") == expected
    assert refresh(b"0; url=" + url, MOUNT, host, b"https") == b"0; url=" + expected


def test_a_nested_mount() -> None:
    mount = b"/app1/nested"
    assert location(b"/x", mount, HOST) == b"/app1/nested/x"
    assert location(b"/app1/x", mount, HOST) == b"/app1/nested/app1/x"
    assert location(b"/app1/nested/x", mount, HOST) == b"/app1/nested/x"


REFRESH = {
    "seconds-only": (b"5", b"5"),
    "url": (b"5; url=/login", b"5; url=/app1/login"),
    "no-space": (b"0;url=/x?a=1#f", b"0;url=/app1/x?a=1#f"),
    "upper-url": (b"3; URL=/x", b"3; URL=/app1/x"),
    "spaces-around-equals": (b"3 ; url = /x", b"3 ; url = /app1/x"),
    "single-quoted": (b"3; url='/x' ", b"3; url='/app1/x' "),
    "double-quoted": (b'3; url="/x"', b'3; url="/app1/x"'),
    "unclosed-quote": (b"3; url='/x", b"3; url='/app1/x"),
    "comma": (b"3, url=/x", b"3, url=/app1/x"),
    "without-url-equals": (b"3; /x", b"3; /app1/x"),
    "decimal": (b"1.5; url=/x", b"1.5; url=/app1/x"),
    "own-origin": (b"0; url=http://localhost:8080/x", b"0; url=http://localhost:8080/app1/x"),
    "under-prefix": (b"0; url=/app1/x", b"0; url=/app1/x"),
    "relative": (b"0; url=next", b"0; url=next"),
    "other-origin": (b"0; url=http://evil.example/", b"0; url=http://evil.example/"),
    "scheme-relative": (b"0; url=//evil.example/", b"0; url=//evil.example/"),
    "empty-url": (b"0; url=", b"0; url="),
    "not-a-refresh": (b"soon", b"soon"),
}


@pytest.mark.parametrize(("value", "expected"), REFRESH.values(), ids=REFRESH.keys())
def test_refresh(value: bytes, expected: bytes) -> None:
    assert refresh(value, MOUNT, HOST) == expected


COOKIE = {
    "path-root": (b"sid=1; Path=/", b"sid=1; Path=/app1/"),
    "path-x": (b"sid=1; Path=/x", b"sid=1; Path=/app1/x"),
    "other-attributes-untouched": (
        b"sid=abc; Domain=localhost; path=/; HttpOnly; SameSite=Lax; Max-Age=60",
        b"sid=abc; Domain=localhost; path=/app1/; HttpOnly; SameSite=Lax; Max-Age=60",
    ),
    "upper-case-name": (b"a=b; PATH=/x", b"a=b; PATH=/app1/x"),
    "spaces": (b"a=b;  Path = /x ;Secure", b"a=b;  Path = /app1/x ;Secure"),
    "quoted": (b'a=b; Path="/x"', b'a=b; Path="/app1/x"'),
    "path-last": (b"a=b; HttpOnly; Path=/", b"a=b; HttpOnly; Path=/app1/"),
    "two-paths": (b"a=b; Path=/x; Path=/y", b"a=b; Path=/app1/x; Path=/app1/y"),
    "no-path": (b"sid=1; HttpOnly", b"sid=1; HttpOnly"),
    "under-prefix": (b"sid=1; Path=/app1/x", b"sid=1; Path=/app1/x"),
    "the-mount": (b"sid=1; Path=/app1", b"sid=1; Path=/app1"),
    "app10": (b"sid=1; Path=/app10", b"sid=1; Path=/app1/app10"),
    "relative-path": (b"sid=1; Path=x", b"sid=1; Path=x"),
    "empty-path": (b"sid=1; Path=", b"sid=1; Path="),
    "path-in-the-value": (b"path=/; Max-Age=5", b"path=/; Max-Age=5"),
    "value-mentions-path": (b"sid=Path=/; Secure", b"sid=Path=/; Secure"),
    "path-without-equals": (b"sid=1; Path", b"sid=1; Path"),
    "expires-with-comma": (
        b"sid=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/",
        b"sid=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/app1/",
    ),
}


@pytest.mark.parametrize(("value", "expected"), COOKIE.values(), ids=COOKIE.keys())
def test_set_cookie(value: bytes, expected: bytes) -> None:
    assert set_cookie(value, MOUNT) == expected


def test_response_header_dispatches_by_name() -> None:
    assert {b"location", b"refresh", b"set-cookie"} == REWRITTEN
    assert response_header(b"location", b"/x", MOUNT, HOST) == b"/app1/x"
    assert response_header(b"refresh", b"0; url=/x", MOUNT, HOST) == b"0; url=/app1/x"
    assert response_header(b"set-cookie", b"a=1; Path=/", MOUNT, HOST) == b"a=1; Path=/app1/"


# --- idempotence: rewriting a rewritten value changes nothing ---------------------------------

_PIECES = st.sampled_from(
    [b"/", b"//", b"/app1", b"/app10", b"app1", b"http://", b"HTTP://", b"localhost:8080",
     b"LOCALHOST:8080", b"evil", b"?", b"#", b"=", b";", b",", b" ", b"'", b'"', b"url",
     b"path", b"Path=", b"5", b"x", b"..", b":80", b"@"]
)  # fmt: skip
VALUES = st.one_of(
    st.lists(_PIECES, max_size=12).map(b"".join),
    st.binary(max_size=40),
)
MOUNTS = st.sampled_from([b"/app1", b"/a", b"/app1/nested", b"/x.y"])
HOSTS = st.sampled_from([b"localhost:8080", b"LocalHost:8080", b"example.test", None])


@given(VALUES, MOUNTS, HOSTS)
@example(b"http://localhost:8080", b"/app1", b"localhost:8080")
@example(b"http://localhost:8080?q", b"/app1", b"localhost:8080")
@example(b"/app1?", b"/app1", None)
def test_location_is_idempotent(value: bytes, mount: bytes, host: bytes | None) -> None:
    once = location(value, mount, host)
    assert location(once, mount, host) == once


@given(VALUES, MOUNTS, HOSTS)
@example(b"5; url='/x", b"/app1", None)
@example(b"5; url=http://localhost:8080", b"/app1", b"localhost:8080")
def test_refresh_is_idempotent(value: bytes, mount: bytes, host: bytes | None) -> None:
    once = refresh(value, mount, host)
    assert refresh(once, mount, host) == once


@given(VALUES, MOUNTS)
@example(b'a=b; Path="/"', b"/app1")
@example(b'a=b; Path="', b"/app1")
def test_set_cookie_is_idempotent(value: bytes, mount: bytes) -> None:
    once = set_cookie(value, mount)
    assert set_cookie(once, mount) == once


@given(VALUES, MOUNTS, HOSTS)
def test_a_rewritten_location_is_under_the_prefix_or_unchanged(
    value: bytes, mount: bytes, host: bytes | None
) -> None:
    once = location(value, mount, host)
    if once != value:
        path = once.split(b"://", 1)[1].partition(b"/")[2] if b"://" in once[:8] else once[1:]
        assert (b"/" + path).startswith(mount + b"/")
