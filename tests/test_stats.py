"""The status counters: O(1) records into bounded structures; percentiles, errors, streams,
the last error and the ring of recent requests."""

from __future__ import annotations

import pytest

from sockgate.status import stats
from sockgate.status.stats import AppStats, Stats, percentile


def test_a_fresh_app_has_nothing_to_show() -> None:
    snap = AppStats().snapshot()
    assert (snap.requests, snap.errors, snap.p50, snap.p99) == (0, 0, None, None)
    assert snap.last_error is None
    assert snap.recent == ()


@pytest.mark.parametrize(
    ("values", "pct", "expected"),
    [([], 50, None), ([3.0], 99, 3.0), ([1, 2, 3, 4], 50, 2), ([1, 2, 3, 4], 99, 4)],
)
def test_percentile_is_nearest_rank(values: list[float], pct: float, expected: float) -> None:
    assert percentile(sorted(values), pct) == expected


def test_percentiles_of_the_recorded_durations() -> None:
    app = AppStats()
    for ms in range(1, 101):  # 1 ms .. 100 ms
        app.record(0.0, b"GET", b"/x", 200, ms / 1000)
    snap = app.snapshot()
    assert snap.requests == 100
    assert snap.p50 == pytest.approx(0.050)
    assert snap.p99 == pytest.approx(0.099)


def test_latency_covers_only_the_latest_window() -> None:
    app = AppStats()
    for _ in range(stats.LATENCY_WINDOW):
        app.record(0.0, b"GET", b"/", 200, 10.0)  # slow, long ago
    for _ in range(stats.LATENCY_WINDOW):
        app.record(0.0, b"GET", b"/", 200, 0.001)  # fast, now: the slow ones are gone
    snap = app.snapshot()
    assert snap.requests == 2 * stats.LATENCY_WINDOW
    assert snap.p99 == pytest.approx(0.001)
    assert len(app._durations) == stats.LATENCY_WINDOW  # bounded


def test_streams_count_as_requests_but_stay_out_of_latency() -> None:
    app = AppStats()
    app.record(0.0, b"GET", b"/fast", 200, 0.002)
    app.record(0.0, b"GET", b"/ws", 101, 3600.0, stream=True)
    snap = app.snapshot()
    assert snap.requests == 2
    assert snap.p99 == pytest.approx(0.002)


def test_errors_are_5xx_and_faults_with_the_last_one_named() -> None:
    app = AppStats()
    app.record(1.0, b"GET", b"/a", 404, 0.0)
    app.record(2.0, b"GET", b"/b", 500, 0.0)
    assert app.errors == 1
    assert app.last_error == stats.LastError(2.0, "500 for GET /b")
    # A response cut short after its head went out: 200 on the wire, an error all the same.
    app.record(3.0, b"GET", b"/c", 200, 0.0, fault="app cut the response short")
    assert app.errors == 2
    assert app.last_error == stats.LastError(3.0, "app cut the response short (GET /c)")
    app.record(4.0, b"GET", b"/d", 499, 0.0)  # the client left: not the app's error
    assert app.errors == 2


def test_recent_requests_are_a_bounded_ring_newest_first() -> None:
    app = AppStats()
    for i in range(stats.RECENT + 5):
        app.record(float(i), b"GET", b"/%d" % i, 200, 0.0)
    recent = app.snapshot().recent
    assert len(recent) == stats.RECENT
    assert recent[0].target == f"/{stats.RECENT + 4}"
    assert recent[-1].target == "/5"


def test_long_targets_are_cut_in_the_ring() -> None:
    app = AppStats()
    app.record(0.0, b"GET", b"/" + b"a" * 5000, 200, 0.0)
    assert len(app.snapshot().recent[0].target) == stats.TARGET_MAX


def test_stats_make_counters_for_apps_added_later() -> None:
    counts = Stats(["app1"])
    assert set(counts.apps) == {"app1"}
    counts.app("new").record(0.0, b"GET", b"/", 200, 0.0)
    assert counts.app("new").requests == 1
