"""Results: raw per-round numbers, medians and ratios; the printed table, results.json and
results.md (chart.png: chart.py; the machine: machine.py)."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baseline import Baseline
from chart import chart
from machine import machine_info, sockgate_build
from proxies import Target
from workloads import Metric, Sample, Settings

BASES = (("reference", "vs ref"), ("tuned", "vs tuned"), ("direct", "vs direct"))
Value = float | None
# `--baseline`: the current build's row against the older commit's.
NEW, OLD = "sg-builtin", "sg-base"
WORSE_LIMIT = 5.0
"""Percent: a figure of the new build worse than the baseline's by more than this is flagged."""


@dataclass
class Results:
    targets: list[Target]
    settings: Settings
    raw: dict[str, dict[str, list[Value]]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    """The figures of the workloads that ran, in table order."""
    baseline: Baseline | None = None
    commit: str = ""
    """`git describe` of the checkout when the bench started (the tree may move on meanwhile)."""

    def add(self, round_no: int, workload: str, target: Target, sample: Sample) -> None:
        for metric, value in sample.metrics.items():
            self.raw.setdefault(metric, {}).setdefault(target.key, []).append(value)
        self.runs.append(
            {"round": round_no, "workload": workload, "proxy": target.key,
             "metrics": sample.metrics, "detail": sample.detail}
        )  # fmt: skip

    def fail(self, round_no: int, workload: str, target: Target, error: str) -> None:
        self.runs.append(
            {"round": round_no, "workload": workload, "proxy": target.key, "error": error}
        )

    def median(self, metric: str, proxy: str) -> Value:
        values = [v for v in self.raw.get(metric, {}).get(proxy, []) if v is not None]
        return statistics.median(values) if values else None

    def spread(self, metric: str, proxy: str) -> tuple[Value, Value]:
        values = [v for v in self.raw.get(metric, {}).get(proxy, []) if v is not None]
        return (min(values), max(values)) if values else (None, None)

    def ratio(self, metric: str, proxy: str, base: str) -> Value:
        value, reference = self.median(metric, proxy), self.median(metric, base)
        if value is None or not reference:
            return None
        return value / reference

    def failures(self, proxy: str) -> list[str]:
        return [
            f"round {r['round']} {r['workload']}: {r['error']}"
            for r in self.runs
            if r["proxy"] == proxy and "error" in r
        ]

    def warnings(self, metric: str, proxy: str) -> list[str]:
        """What went wrong in the runs behind this figure (wrk errors, closed connections)."""
        rounds: dict[str, list[str]] = {}
        for run in self.runs:
            detail = run.get("detail", {})
            if run["proxy"] != proxy or metric not in run.get("metrics", {}):
                continue
            if "warning" in detail and metric in detail.get("warning_for", [metric]):
                rounds.setdefault(detail["warning"], []).append(str(run["round"]))
        return [f"round {', '.join(r)}: {text}" for text, r in rounds.items()]


# the printed table -------------------------------------------------------------------------


def fmt_value(value: Value, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("req/s", "msg/s", "MB/s", "conn/s"):
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.3f}"
    return f"{value:.1f}"


def fmt_ratio(value: Value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def no_figure(metric: Metric, target: Target) -> bool:
    """The row has no such figure: it did not run, or the figure is over TLS and the row has
    no TLS listener."""
    return bool(target.na) or (metric.tls and not target.has_tls)


def _row(results: Results, metric: Metric, target: Target) -> list[str]:
    if no_figure(metric, target):
        return [metric.title, metric.unit, target.label, "n/a", "", "", "", ""]
    median = results.median(metric.key, target.key)
    low, high = results.spread(metric.key, target.key)
    shown = fmt_value(median, metric.unit)
    if median is None and not (metric.proxy_only and target.key == "direct"):
        shown = "err"
    elif results.warnings(metric.key, target.key):
        shown += " !"
    spread = "" if low is None else f"{fmt_value(low, metric.unit)}-{fmt_value(high, metric.unit)}"
    ratios = [fmt_ratio(results.ratio(metric.key, target.key, base)) for base, _ in BASES]
    return [metric.title, metric.unit, target.label, shown, spread, *ratios]


def table(results: Results) -> str:
    header = ["workload", "unit", "proxy", "median", "min-max", *(name for _, name in BASES)]
    rows = [header]
    for metric in results.metrics:
        rows += [_row(results, metric, t) for t in results.targets]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = {3, 4, 5, 6, 7}
    lines = []
    for n, row in enumerate(rows):
        if n > 1 and row[0] != rows[n - 1][0]:
            lines.append("")
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


# sg-builtin against sg-base -----------------------------------------------------------------


@dataclass
class Compared:
    """One figure of the new build (`sg-builtin`) against the baseline's (`sg-base`)."""

    metric: Metric
    base: Value
    new: Value

    @property
    def ratio(self) -> Value:
        """Oriented so that above 1 the new build is better: new/base for throughput,
        base/new for latency, CPU and memory."""
        if self.base is None or self.new is None:
            return None
        num, den = (self.new, self.base) if self.metric.higher_is_better else (self.base, self.new)
        return num / den if den else None

    @property
    def worse_pct(self) -> Value:
        """How much worse the new build's median is, in percent of the baseline's (negative:
        better): 5 means 5 % fewer req/s, or 5 % more ms, µs or MB."""
        if self.base is None or self.new is None or not self.base:
            return None
        change = (self.new - self.base) / self.base * 100
        return -change if self.metric.higher_is_better else change

    @property
    def flagged(self) -> bool:
        worse = self.worse_pct
        return worse is not None and worse > WORSE_LIMIT

    def verdict(self) -> str:
        worse = self.worse_pct
        if worse is None:
            return "-"
        if self.flagged:
            return f"WORSE by {worse:.1f} %"
        return f"ok ({-worse:+.1f} %)"

    def to_json(self) -> dict[str, Any]:
        return {"base": self.base, "new": self.new, "ratio": self.ratio,
                "worse_pct": self.worse_pct, "flagged": self.flagged}  # fmt: skip


def compare(results: Results) -> tuple[list[Compared], str | None]:
    """Every figure of `sg-builtin` against `sg-base`, or why there is no comparison."""
    if results.baseline is None:
        return [], "no --baseline"
    rows = {t.key: t for t in results.targets}
    for key in (OLD, NEW):
        if key not in rows:
            return [], f"no {key} row (see --only)"
        if rows[key].na:
            return [], f"{rows[key].label}: {rows[key].na.removeprefix('n/a: ')}"
    uneven = _uneven_tls(results)
    compared = [
        Compared(m, results.median(m.key, OLD), results.median(m.key, NEW))
        for m in results.metrics
        if not (uneven and (m.tls or m.key == "rss_peak"))
    ]
    return compared, None


def _uneven_tls(results: Results) -> bool:
    """TLS workloads ran and only one of the two builds served them (an older commit without
    `[tls]`): their figures, and the peak RSS they raise, do not compare."""
    rows = {t.key: t for t in results.targets}
    if not any(m.tls for m in results.metrics) or OLD not in rows or NEW not in rows:
        return False
    return rows[OLD].has_tls != rows[NEW].has_tls


def _compare_heading(results: Results, new_commit: str) -> str:
    """What is compared with what and how to read it, one paragraph."""
    base = results.baseline
    assert base is not None
    rounds = results.settings.rounds
    return (
        f"New: sockgate built-in at {new_commit}, {sockgate_build()}. "
        f"Base: sockgate built-in at {base.ref} ({base.short}), {base.build or 'not built'}. "
        f"Medians of {rounds} round{'s' if rounds != 1 else ''} in one interleaved run. "
        "'new vs base' above 1: the new build is better (throughput new/base; latency, CPU and "
        "memory base/new). The verdict's percentage: how much better (+) or worse (-) the new "
        f"build's median is; flagged where it is more than {WORSE_LIMIT:g} % worse."
        + (
            " Left out: the TLS figures and peak RSS (only one build served TLS)."
            if _uneven_tls(results)
            else ""
        )
    )


def _compare_cells(c: Compared, results: Results) -> list[str]:
    marks = ["" if not results.warnings(c.metric.key, k) else " !" for k in (OLD, NEW)]
    return [
        c.metric.title,
        c.metric.unit,
        fmt_value(c.base, c.metric.unit) + marks[0],
        fmt_value(c.new, c.metric.unit) + marks[1],
        fmt_ratio(c.ratio),
        c.verdict(),
    ]


def comparison(results: Results, new_commit: str = "this tree") -> str:
    """The printed comparison of sg-builtin against sg-base; empty without --baseline."""
    if results.baseline is None:
        return ""
    compared, missing = compare(results)
    if missing:
        return f"sg-builtin against sg-base ({results.baseline.ref}): n/a: {missing}"
    header = ["workload", "unit", f"base {results.baseline.ref}", "new", "new vs base", "verdict"]
    rows = [header, *(_compare_cells(c, results) for c in compared)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [textwrap.fill(_compare_heading(results, new_commit), 96), ""]
    for n, row in enumerate(rows):
        cells = [
            cell.rjust(width) if 2 <= i <= 4 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("-" * len(lines[-1]))
    flagged = [c.metric.title for c in compared if c.flagged]
    lines.append("")
    lines.append(
        f"more than {WORSE_LIMIT:g} % worse: {'; '.join(flagged)}"
        if flagged
        else f"no figure more than {WORSE_LIMIT:g} % worse"
    )
    return "\n".join(lines)


def comparison_markdown(results: Results, machine: dict[str, Any]) -> str:
    """The same as a markdown section for results.md, to paste into docs/performance.md."""
    base = results.baseline
    if base is None:
        return ""
    new_commit = machine["sockgate_commit"]
    lines = [f"## sockgate built-in against {base.ref}", ""]
    compared, missing = compare(results)
    if missing:
        return "\n".join([*lines, f"n/a: {missing}", ""])
    s = results.settings
    lines += [
        _compare_heading(results, new_commit),
        f"{s.duration} s per wrk run; {machine['nproc']} cores ({machine['cpu_model']}), "
        f"{machine['date'][:10]}.",
        "",
        f"| workload | unit | {base.ref} | {new_commit} | new vs {base.ref} | verdict |",
        "|---|---|---:|---:|---:|---|",
    ]
    for c in compared:
        title, unit, old, new, ratio, verdict = _compare_cells(c, results)
        if c.flagged:
            verdict = f"**{verdict.lower()}**"
        lines.append(f"| {title} | {unit} | {old} | {new} | {ratio} | {verdict} |")
    return "\n".join(lines) + "\n"


def notes(results: Results) -> str:
    out = []
    tls_ran = any(m.tls for m in results.metrics)
    for target in results.targets:
        if target.na:
            out.append(f"{target.label}: {target.na}")
        elif target.tls_na and tls_ran:
            out.append(f"{target.label}, TLS workloads: {target.tls_na}")
        out += [f"{target.label}: {line}" for line in results.failures(target.key)]
    for metric in results.metrics:
        for target in results.targets:
            out += [
                f"! {target.label}, {metric.title}: {warning}"
                for warning in results.warnings(metric.key, target.key)
            ]
    return "\n".join(out)


def markdown(results: Results) -> str:
    """The issue's layout: a row per figure, a column per proxy, median (ratio vs reference;
    for the figures over TLS, which the reference does not serve, vs tuned nginx)."""
    live = results.targets
    lines = [
        "| workload | " + " | ".join(t.label for t in live) + " |",
        "|---|" + "---|" * len(live),
    ]
    for metric in results.metrics:
        base = "tuned" if metric.tls else "reference"
        cells = []
        for t in live:
            median = results.median(metric.key, t.key)
            ratio = results.ratio(metric.key, t.key, base)
            cell = "n/a" if no_figure(metric, t) else fmt_value(median, metric.unit)
            if cell != "n/a" and median is not None and ratio is not None and t.key != base:
                cell += f" ({ratio:.2f}x{' tuned' if metric.tls else ''})"
            cells.append(cell)
        lines.append(f"| {metric.title} ({metric.unit}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# results.json ------------------------------------------------------------------------------


def _baseline_json(results: Results) -> dict[str, Any] | None:
    if results.baseline is None:
        return None
    compared, missing = compare(results)
    return {
        **results.baseline.to_json(),
        "worse_limit_pct": WORSE_LIMIT,
        "comparison": {c.metric.key: c.to_json() for c in compared} if not missing else None,
        "comparison_missing": missing,
        "flagged": [c.metric.key for c in compared if c.flagged],
    }


def to_json(results: Results, machine: dict[str, Any]) -> dict[str, Any]:
    keys = [t.key for t in results.targets]
    shown = results.metrics
    return {
        "baseline": _baseline_json(results),
        "machine": machine,
        "settings": results.settings.__dict__,
        "proxies": {
            t.key: {"label": t.label, "na": t.na, "tls": t.has_tls, "tls_na": t.tls_na}
            for t in results.targets
        },
        "metrics": {m.key: m.__dict__ for m in shown},
        "medians": {m.key: {k: results.median(m.key, k) for k in keys} for m in shown},
        "ratios": {
            base: {m.key: {k: results.ratio(m.key, k, base) for k in keys} for m in shown}
            for base, _ in BASES
        },
        "raw": results.raw,
        "runs": results.runs,
    }


def write_all(
    results: Results,
    out: Path,
    repo: Path,
    publish: bool,
    extra_md: str = "",
    extra_json: dict[str, Any] | None = None,
) -> list[Path]:
    """results.json, results.md (with `extra_md` after the table) and chart.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info(repo)
    if results.commit:
        machine["sockgate_commit"] = results.commit
    data = {**to_json(results, machine), **(extra_json or {})}
    written = [out / "results.json", out / "results.md", out / "chart.png"]
    written[0].write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    compared = comparison_markdown(results, machine)
    sections = [markdown(results), *filter(None, (extra_md, compared))]
    written[1].write_text("\n".join(sections), "utf-8")
    if importlib.util.find_spec("matplotlib") is None:
        # The tables are written: a missing chart library must not lose a long run's results.
        print("no chart.png: matplotlib is not installed (pip install -e '.[bench]')",
              file=sys.stderr)  # fmt: skip
        return written[:2]
    if not any(m.higher_is_better and not m.tls for m in results.metrics):
        print("no chart.png: it shows the plain-HTTP figures, and none ran (--workloads)",
              file=sys.stderr)  # fmt: skip
        return written[:2]
    chart(results, written[2], machine)
    if publish:
        docs = repo / "docs" / "bench.png"
        docs.write_bytes(written[2].read_bytes())
        written.append(docs)
    return written
