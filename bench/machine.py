"""What results.json records about the machine and the software the bench ran: CPU, kernel,
tool and package versions, sockgate's build and commit."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any


def _first_line(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable: {exc}"
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def sockgate_build() -> str:
    """What the `sg-*` targets but `sg-pure` run: the installed sockgate's build."""
    from sockgate import buildinfo

    return buildinfo.build()


def sockgate_commit(repo: Path) -> str:
    """The checkout the `sg-*` rows but `sg-base` run, `-dirty` with uncommitted edits."""
    return _first_line(["git", "-C", str(repo), "describe", "--always", "--dirty"])


def machine_info(repo: Path) -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "nginx": _first_line(["nginx", "-v"]),
        "haproxy": _first_line(["haproxy", "-v"]),
        "wrk": _first_line(["wrk", "--version"]),
        "curl": _first_line(["curl", "--version"]),
        "sockgate": _package("sockgate"),
        "sockgate_build": sockgate_build(),
        "sockgate_commit": sockgate_commit(repo),
        "uvicorn": _package("uvicorn"),
        "websockets": _package("websockets"),
        "uvloop": _package("uvloop"),
        "httptools": _package("httptools"),
    }
