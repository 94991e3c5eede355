"""Routing: longest prefix, strip or keep byte-exact, redirects, dot-segment rejection."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from sockgate.config import App
from sockgate.http import routing
from sockgate.http.routing import Forward, NotFound, Redirect, Rejected, Router, has_dot_segment

APP1 = App("app1", Path("/s/app1.sock"), "/app1/")
NESTED = App("nested", Path("/s/nested.sock"), "/app1/nested/")
KEEP = App("keep", Path("/s/keep.sock"), "/keep/", strip_prefix=False)
DEEP = App("deep", Path("/s/deep.sock"), "/a/b/c/")
ROOT = App("root", Path("/s/root.sock"), "/")

APPS = (APP1, NESTED, KEEP, DEEP)


def forward(router: Router, target: bytes) -> Forward:
    decision = router.route(target)
    assert isinstance(decision, Forward), decision
    return decision


@pytest.mark.parametrize("order", list(itertools.permutations([APP1, NESTED, ROOT])))
def test_longest_prefix_wins_whatever_the_order(order: tuple[App, ...]) -> None:
    router = Router(order)
    assert forward(router, b"/app1/nested/x").app is NESTED
    assert forward(router, b"/app1/nested/").app is NESTED
    assert forward(router, b"/app1/nestedx").app is APP1
    assert forward(router, b"/app1/x").app is APP1
    assert forward(router, b"/other").app is ROOT


def test_router_lists_apps_longest_prefix_first() -> None:
    assert Router([APP1, ROOT, NESTED]).apps == [NESTED, APP1, ROOT]


@pytest.mark.parametrize(
    ("target", "app", "forwarded"),
    [
        (b"/app1/foo?x=1", APP1, b"/foo?x=1"),
        (b"/app1/", APP1, b"/"),
        (b"/app1/?q", APP1, b"/?q"),
        (b"/app1//x", APP1, b"//x"),  # the client's own double slash is kept, none is added
        (b"/app1/a/b/", APP1, b"/a/b/"),
        (b"/app1/nested/x", NESTED, b"/x"),
        (b"/app1/nested/", NESTED, b"/"),
        (b"/a/b/c/d?e=f/g", DEEP, b"/d?e=f/g"),
        (b"/keep/x?y", KEEP, b"/keep/x?y"),  # strip_prefix = false: unchanged
        (b"/keep/", KEEP, b"/keep/"),
    ],
)
def test_strip_and_keep(target: bytes, app: App, forwarded: bytes) -> None:
    decision = forward(Router(APPS), target)
    assert decision.app is app
    assert decision.target == forwarded


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        (b"/app1/a%20b%2Fc", b"/a%20b%2Fc"),
        (b"/app1/%41%42?%3F=%26", b"/%41%42?%3F=%26"),
        (b"/app1/caf%C3%A9", b"/caf%C3%A9"),
        (b"/app1/a;b=c,d", b"/a;b=c,d"),
        (b"/app1/a+b", b"/a+b"),
        (b"/app1/%252e%252e/", b"/%252e%252e/"),  # double-encoded: a name, not a dot segment
    ],
)
def test_percent_encoding_is_never_decoded(target: bytes, forwarded: bytes) -> None:
    assert forward(Router(APPS), target).target == forwarded


def test_percent_encoded_prefix_does_not_match() -> None:
    # "/%61pp1/" is "/app1/" decoded; we never decode, so it is not app1's.
    assert Router(APPS).route(b"/%61pp1/x") == NotFound()


@pytest.mark.parametrize(
    ("target", "location"),
    [
        (b"/app1", b"/app1/"),
        (b"/app1?q=1", b"/app1/?q=1"),
        (b"/app1?", b"/app1/?"),
        (b"/keep", b"/keep/"),  # also when the prefix is kept
        (b"/a/b/c", b"/a/b/c/"),
        (b"/app1/nested", b"/app1/nested/"),  # the nested app's mount, not app1's /nested
        (b"/app1/nested?x=/y", b"/app1/nested/?x=/y"),
    ],
)
def test_redirect_to_the_prefix(target: bytes, location: bytes) -> None:
    assert Router(APPS).route(target) == Redirect(location)


def test_nested_mount_redirects_even_when_listed_first_or_last() -> None:
    for order in ([APP1, NESTED], [NESTED, APP1]):
        assert Router(order).route(b"/app1/nested") == Redirect(b"/app1/nested/")


def test_catch_all_app() -> None:
    router = Router([ROOT, APP1])
    assert forward(router, b"/").target == b"/"
    assert forward(router, b"/x/y?z").app is ROOT
    assert forward(router, b"/x/y?z").target == b"/x/y?z"
    assert forward(router, b"/app1/y").app is APP1
    assert router.route(b"/app1") == Redirect(b"/app1/")
    assert forward(router, b"/app1x").app is ROOT


def test_catch_all_app_without_strip() -> None:
    root = App("root", Path("/r.sock"), "/", strip_prefix=False)
    assert forward(Router([root]), b"/x?y").target == b"/x?y"


@pytest.mark.parametrize("target", [b"/", b"/nope", b"/app", b"/app1x/", b"/APP1/", b"/a/b/"])
def test_not_found(target: bytes) -> None:
    assert Router(APPS).route(target) == NotFound()


def test_no_apps_is_not_found() -> None:
    assert Router([]).route(b"/") == NotFound()


@pytest.mark.parametrize(
    "target",
    [
        b"/./",
        b"/../",
        b"/a/..",
        b"/a/.",
        b"/.",
        b"/..",
        b"/%2e%2e/",
        b"/%2E/",
        b"/%2e",
        b"/.%2e/",
        b"/%2e./",
        b"/app1/../keep/x",
        b"/app1/./x",
        b"/app1/x/..",
        b"/app1/%2e%2e%2fetc",
        b"/app1/%2e%2e%2Fetc/passwd",
        b"/app1/..%2f",
        b"/app1/x%2f..%2fy",
        b"/app1/x%2F.",
        b"/app1/..?q",
        b"/app1/%2E%2E?x=1",
    ],
)
def test_dot_segments_are_rejected(target: bytes) -> None:
    decision = Router([*APPS, ROOT]).route(target)
    assert isinstance(decision, Rejected), decision
    assert decision.reason
    assert has_dot_segment(target.partition(b"?")[0])


@pytest.mark.parametrize(
    "target",
    [
        b"/app1/a.b/",
        b"/app1/..a/",
        b"/app1/a..",
        b"/app1/.well-known/x",
        b"/app1/...",
        b"/app1/x.%2e",
        b"/app1/%2e%2e%2e/",
        b"/app1/x?a=/../b",
        b"/app1/x?a=/./",
        b"/app1/x?..",
    ],
)
def test_dots_that_are_not_segments_are_routed(target: bytes) -> None:
    decision = Router(APPS).route(target)
    assert isinstance(decision, Forward), decision
    assert decision.target == target[len(b"/app1") :]


@pytest.mark.parametrize(
    ("path", "dot"),
    [
        (b"/a.b/", False),
        (b"/..a/", False),
        (b"/a..", False),
        (b"/", False),
        (b"", False),
        (b"/./", True),
        (b"/..", True),
        (b"/%2e%2E", True),
    ],
)
def test_has_dot_segment(path: bytes, dot: bool) -> None:
    assert has_dot_segment(path) is dot


# --- the decision cache ------------------------------------------------------------------------


def test_cached_decisions_are_the_same_as_fresh_ones() -> None:
    router = Router(APPS)
    targets = [b"/app1/x?q=1", b"/app1", b"/nope", b"/app1/../etc", b"/app1/x?q=1"]
    first = [router.route(t) for t in targets]
    assert first == [router.route(t) for t in targets]
    assert first == [Router(APPS).route(t) for t in targets]


def test_the_cache_is_bounded_in_entries_and_target_size() -> None:
    router = Router(APPS)
    for i in range(routing.CACHE_SIZE * 3):
        router.route(b"/app1/%d" % i)
    assert router._cache is not None
    assert len(router._cache) <= routing.CACHE_SIZE
    router._cache.clear()
    long = b"/app1/" + b"x" * routing.CACHED_TARGET
    assert router.route(long) == Forward(APPS[0], long[len(b"/app1") :])
    assert long not in router._cache


def test_with_discovery_a_name_that_appears_later_is_routed() -> None:
    """Discovered apps come and go with the folder: those decisions are never remembered."""
    found: dict[bytes, App] = {}
    router = Router(APPS, discover=found.get)
    assert router.route(b"/late/x") == NotFound()
    late = App("late", Path("/s/late.sock"), "/late/")
    found[b"late"] = late
    assert router.route(b"/late/x") == Forward(late, b"/x")
