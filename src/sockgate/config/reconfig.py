"""What a reload may change, and what it changed: pure comparisons of two configs (layer 1).

A reload reads the same file with the same command-line overrides (`config.Loader`). Settings
that shape the process itself (the listening socket, the working directory, the engine, the
number of workers) cannot change while it runs: such a reload is refused whole, naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..errors import ConfigError, SockgateError
from . import App, Config, Timeouts

# What only a restart can change.
FIXED = ("listen", "workdir", "engine", "workers", "tls")
# Settings a reload applies, besides the apps (timeouts are compared one by one).
LIVE = ("max_body_size", "allowed_hosts", "allow_remote", "host_routes")


def check_fixed(old: Config, new: Config) -> None:
    """Raise ConfigError naming the first setting `new` changes that only a restart can."""
    for key in FIXED:
        was, now = getattr(old, key), getattr(new, key)
        if was != now:
            raise ConfigError(
                f"cannot change on reload ({_show(was)} -> {_show(now)}); restart sockgate "
                "to apply it (the running config stays)",
                source=str(new.source or "command line"),
                key=key,
            )
    # The apps sockgate runs are started once, at `run`: a reload changes routes, not processes.
    was_run = {app.name: (app.command, app.socket) for app in old.supervised}
    now_run = {app.name: (app.command, app.socket) for app in new.supervised}
    for name in sorted(was_run.keys() | now_run.keys()):
        if was_run.get(name) != now_run.get(name):
            raise ConfigError(
                "an app sockgate runs (with `command`) cannot be added, removed or changed on "
                "reload yet; restart sockgate to apply it (the running config stays)",
                source=str(new.source or "command line"),
                key=f"apps.{name}",
            )


@dataclass(frozen=True, slots=True)
class Changes:
    """What a reload changes: apps added, removed and changed (with the fields that changed),
    and the other settings that changed."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[tuple[str, tuple[str, ...]], ...] = ()
    settings: tuple[str, ...] = ()

    @property
    def moved(self) -> tuple[str, ...]:
        """Apps whose socket changed: their connections are drained like a removed app's."""
        return tuple(name for name, what in self.changed if "socket" in what)

    def summary(self) -> str:
        """`+app3, -app1, ~app2 (socket changed), timeouts.read`, or `no changes`."""
        parts = [f"+{name}" for name in self.added]
        parts += [f"-{name}" for name in self.removed]
        parts += [f"~{name} ({', '.join(what)} changed)" for name, what in self.changed]
        parts += list(self.settings)
        return ", ".join(parts) or "no changes"

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": {name: list(what) for name, what in self.changed},
            "settings": list(self.settings),
        }


def compare(old: Config, new: Config) -> Changes:
    before = {app.name: app for app in old.apps}
    after = {app.name: app for app in new.apps}
    changed = tuple(
        (name, what)
        for name, app in after.items()
        if name in before and (what := _app_fields(before[name], app))
    )
    settings = tuple(key for key in LIVE if getattr(old, key) != getattr(new, key))
    timeouts = tuple(
        f"timeouts.{f.name}"
        for f in fields(Timeouts)
        if getattr(old.timeouts, f.name) != getattr(new.timeouts, f.name)
    )
    return Changes(
        added=tuple(name for name in after if name not in before),
        removed=tuple(name for name in before if name not in after),
        changed=changed,
        settings=settings + timeouts,
    )


def _app_fields(old: App, new: App) -> tuple[str, ...]:
    """The settings that differ (not what App works out from them, which is not compared)."""
    return tuple(
        f.name for f in fields(App) if f.compare and getattr(old, f.name) != getattr(new, f.name)
    )


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """The outcome of one reload: applied (with what changed) or refused (with the error that
    names the file and key; the running config stays)."""

    ok: bool
    message: str
    changes: Changes | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "message": self.message,
            "changes": self.changes.as_dict() if self.changes else None,
        }


def applied(changes: Changes) -> ReloadResult:
    return ReloadResult(True, f"reloaded: {changes.summary()}", changes)


def refused(error: SockgateError) -> ReloadResult:
    return ReloadResult(False, f"reload refused, the running config stays: {error}")


def _show(value: object) -> str:
    return str(value)
