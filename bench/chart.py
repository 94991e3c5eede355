"""chart.png: each proxy's median over the reference nginx's, per plain-HTTP figure."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxies import Target
    from report import Results
    from workloads import Metric


def chart(results: Results, path: Path, machine: dict[str, Any]) -> None:
    """Bars of each proxy's median over the reference nginx's, per figure: throughput (higher
    is better) above, costs (lower is better) below. Not the figures over TLS: the reference
    does not serve it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [t for t in results.targets if not t.na]
    plain = [m for m in results.metrics if not m.tls]
    groups = [
        ("throughput vs reference nginx (higher is better)", [m for m in plain if m.higher_is_better]),  # noqa: E501
        ("latency, CPU and memory vs reference nginx (lower is better)", [m for m in plain if not m.higher_is_better]),  # noqa: E501
    ]  # fmt: skip
    fig, axes = plt.subplots(2, 1, figsize=(13, 9.5))
    for ax, (title, metrics) in zip(axes, groups, strict=True):
        _bars(ax, results, shown, metrics)
        ax.set_title(title, fontsize=11)
    axes[0].legend(ncol=4, fontsize=8, loc="upper left")
    fig.suptitle(
        f"sockgate bench: medians of {results.settings.rounds} round(s), "
        f"{machine['nproc']} cores ({machine['cpu_model']}), {machine['date'][:10]}",
        fontsize=12,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _bars(ax: Any, results: Results, shown: list[Target], metrics: list[Metric]) -> None:
    width = 0.8 / max(len(shown), 1)
    for n, target in enumerate(shown):
        ratios = [results.ratio(m.key, target.key, "reference") for m in metrics]
        xs = [i + (n - (len(shown) - 1) / 2) * width for i in range(len(metrics))]
        ax.bar(xs, [r or 0.0 for r in ratios], width, label=target.label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([_wrap(m.title) for m in metrics], fontsize=8)
    ax.set_ylabel("x reference nginx")
    ax.grid(axis="y", alpha=0.3)


def _wrap(text: str, width: int = 22) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
