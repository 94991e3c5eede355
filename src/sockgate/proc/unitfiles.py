"""The unit files of `sockgate service` on disk, and `systemctl --user` run on them. What the
files hold is `systemd_units`'."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ..errors import SockgateError
from .systemd_units import Units, unit_files


def write(directory: Path, units: Units, *, force: bool) -> tuple[list[Path], list[Path]]:
    """Write every file of `units` into `directory`; refuses to replace one without `force`.
    Returns the files written and those removed: with `force`, a socket unit left by an
    earlier `install --socket` (it would go on starting the service)."""
    there = _existing(directory, units.name)
    if there and not force:
        names = ", ".join(str(path) for path in there)
        raise SockgateError(
            f"{names}: already installed; pass --force to replace it, or --name NAME for "
            "another service"
        )
    written = [directory / file for file, _ in units.files]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path, (_, text) in zip(written, units.files, strict=True):
            partial = path.with_name(path.name + ".partial")
            partial.write_text(text, encoding="utf-8")
            partial.replace(path)
        stale = [path for path in there if path not in written]
        remove(stale)
    except OSError as exc:
        raise SockgateError(f"cannot write {exc.filename}: {exc.strerror}") from None
    return written, stale


def installed(directory: Path, name: str) -> list[Path]:
    """The unit files of NAME in `directory`, the socket unit first."""
    return _existing(directory, name)


def remove(paths: Sequence[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _existing(directory: Path, name: str) -> list[Path]:
    return [directory / file for file in unit_files(name) if (directory / file).exists()]


def find_systemctl() -> str | None:
    return shutil.which("systemctl")


def systemctl(program: str, *args: str, quiet: bool = False) -> int:
    """`systemctl --user ARGS`, its output on ours (or dropped, `quiet`); its exit status."""
    out = subprocess.DEVNULL if quiet else None
    try:
        return subprocess.run(
            [program, "--user", *args], stdin=subprocess.DEVNULL, stdout=out, check=False
        ).returncode
    except OSError as exc:
        raise SockgateError(f"cannot run {program}: {exc.strerror or exc}") from None
