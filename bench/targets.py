"""Issue 20's targets for the built-in engine over TLS, each a ratio to tuned nginx serving the
same certificate, measured in the same run: a line per target for stdout and results.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from report import Results, no_figure

BASE = "tuned"
TARGET_ROW = "sg-builtin"
"""The row a target is for (the built-in engine, one process); the other sockgate rows with TLS
are shown beside it."""


@dataclass(frozen=True)
class Goal:
    metric: str
    at_least: float
    what: str


GOALS = (
    Goal("h2_tiny", 0.5, "HTTP/2 small requests"),
    Goal("tls_handshakes", 0.7, "TLS handshakes (full)"),
    Goal("tls_dl64m_h1", 0.7, "64 MiB over TLS, HTTP/1.1"),
    Goal("tls_dl64m_h2", 0.7, "64 MiB over TLS, HTTP/2"),
)


def assess(results: Results) -> list[dict[str, Any]]:
    """Per goal whose figure was measured: each sockgate row's ratio to tuned nginx and, for
    sg-builtin, whether it is met (None: no figure)."""
    shown = {m.key: m for m in results.metrics}
    rows = [t for t in results.targets if t.key.startswith("sg-")]
    base = next((t for t in results.targets if t.key == BASE), None)
    out = []
    for goal in GOALS:
        metric = shown.get(goal.metric)
        if metric is None:
            continue
        ratios: dict[str, float | None] = {}
        for target in rows:
            if base is None or no_figure(metric, target) or no_figure(metric, base):
                continue
            ratios[target.key] = results.ratio(goal.metric, target.key, BASE)
        ratio = ratios.get(TARGET_ROW)
        out.append(
            {"metric": goal.metric, "what": goal.what, "at_least": goal.at_least,
             "ratios": ratios, "met": None if ratio is None else ratio >= goal.at_least}
        )  # fmt: skip
    return out


def lines(results: Results) -> list[str]:
    labels = {t.key: t.label for t in results.targets}
    out = []
    for goal in assess(results):
        if goal["met"] is None:
            verdict = f"n/a (no figure for both {BASE} and {TARGET_ROW})"
        else:
            verdict = "met" if goal["met"] else "NOT met"
        shown = ", ".join(
            f"{labels[key]} {'-' if r is None else f'{r:.2f}x'}"
            for key, r in goal["ratios"].items()
        )
        out.append(
            f"{goal['what']}: at least {goal['at_least']:g}x tuned nginx: {verdict}"
            + (f" ({shown})" if shown else "")
        )
    return out


def markdown(results: Results) -> str:
    found = lines(results)
    if not found:
        return ""
    head = [
        "## Issue 20's targets over TLS (built-in engine vs tuned nginx, same certificate)",
        "",
    ]
    return "\n".join([*head, *(f"- {line}" for line in found)]) + "\n"
