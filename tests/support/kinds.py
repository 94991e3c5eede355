"""What kind of test each one is, for the markers conftest gives at collection (see
pyproject.toml's markers), and the check at run time that a unit test starts no process.

A test is an integration test when it starts a process (the proxy, an app, nginx, Chromium, a
wheel build, the CLI) or uses a fixture that does; else it is a unit test, which runs in this
process alone. That is read from the code, without running it: the names the test function and
its fixtures use, followed through the test suite's own functions and classes (tests.*) down to
what starts processes: the subprocess module, os.fork and kin, asyncio's subprocesses,
playwright. sockgate's own code is not followed: what starts a process only inside it (`nginx
-t` from `sockgate check --engine nginx`) is listed in conftest; a unit test that starts one all
the same fails (ChildProcessGuard), so that a miss shows at once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

SUITE = "tests"

# Module attributes that start a process. The subprocess module counts whole: any use of it.
_STARTERS: set[int] = {
    id(getattr(module, name))
    for module, names in (
        (os, ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "popen")),
        (os, ("execv", "execve", "execvp", "execvpe", "spawnv", "spawnve")),
        (asyncio, ("create_subprocess_exec", "create_subprocess_shell")),
    )
    for name in names
    if hasattr(module, name)
} | {id(subprocess)}

# The audit events of a new process (PEP 578): a unit test that raises one fails.
PROCESS_EVENTS = frozenset(
    {"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.system"}
)


def _module_of(obj: object) -> str:
    """The module an object was defined in (a module's own name), "" when it does not say."""
    try:
        name = obj.__name__ if isinstance(obj, types.ModuleType) else type(obj).__module__
        if isinstance(obj, type | types.FunctionType):
            name = obj.__module__
    except Exception:  # whatever a third-party object does on attribute access
        return ""
    return name if isinstance(name, str) else ""


def _in_suite(obj: object) -> bool:
    name = _module_of(obj)
    return name == SUITE or name.startswith(SUITE + ".")


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    """A code object and those nested in it (lambdas, inner functions, comprehensions)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _functions_of(obj: object) -> Iterator[Callable[..., Any]]:
    """The Python functions behind a function, a method, a class (its own methods and those of
    its bases in the suite), a fixture or a partial."""
    obj = getattr(obj, "__wrapped__", obj)
    if isinstance(obj, types.MethodType):
        obj = obj.__func__
    if isinstance(obj, types.FunctionType):
        yield obj
    elif isinstance(obj, type):
        for klass in obj.__mro__:
            if not _in_suite(klass):
                continue
            for member in vars(klass).values():
                if isinstance(member, staticmethod | classmethod):
                    member = member.__func__
                elif isinstance(member, property):
                    member = member.fget
                if isinstance(member, types.FunctionType):
                    yield member
    elif _in_suite(type(obj)):  # an instance of one of the suite's classes
        yield from _functions_of(type(obj))


class References:
    """The objects that functions of the suite use, followed through the suite's own code.
    One instance per collection: what a helper reaches is worked out once."""

    def __init__(self) -> None:
        self._reached: dict[int, frozenset[int]] = {}
        self._objects: dict[int, object] = {}
        self._traits: dict[int, tuple[bool, bool]] = {}

    def reached(self, functions: Iterable[object]) -> list[object]:
        ids: set[int] = set()
        for obj in functions:
            for function in _functions_of(obj):
                ids |= self._reach(function)
        return [self._objects[i] for i in ids]

    def traits(self, functions: Iterable[object]) -> tuple[bool, bool]:
        """Whether what the functions reach starts processes, and drives a browser."""
        starts = browser = False
        for obj in functions:
            for function in _functions_of(obj):
                key = id(function)
                if key not in self._traits:
                    reached = [self._objects[i] for i in self._reach(function)]
                    self._traits[key] = (starts_processes(reached), uses_browser(reached))
                one_starts, one_browses = self._traits[key]
                starts, browser = starts or one_starts, browser or one_browses
        return starts, browser

    def _reach(self, function: types.FunctionType) -> frozenset[int]:
        key = id(function)
        if key in self._reached:
            return self._reached[key]
        self._reached[key] = frozenset()  # a cycle of helpers ends here
        found: set[int] = set()
        names = function.__globals__
        for code in _codes(function.__code__):
            for used in self._named(code, names):
                self._objects[id(used)] = used
                found.add(id(used))
                if _in_suite(used):
                    for inner in _functions_of(used):
                        found |= self._reach(inner)
        self._reached[key] = frozenset(found)
        return self._reached[key]

    @staticmethod
    def _named(code: types.CodeType, names: dict[str, Any]) -> Iterator[object]:
        """What the names of a code object are in its module: globals, and for a module among
        them the attributes the same code names (`subprocess.run`, `nginx_run.test_config`)."""
        modules = []
        for name in code.co_names:
            if name in names:
                value = names[name]
                yield value
                if isinstance(value, types.ModuleType):
                    modules.append(value)
        for module in modules:
            for name in code.co_names:
                member = vars(module).get(name)
                if member is not None and not isinstance(member, types.ModuleType | str):
                    yield member


def starts_processes(objects: Iterable[object]) -> bool:
    """Whether among the objects reached is one that starts a process."""
    return any(id(obj) in _STARTERS or _is_playwright(obj) for obj in objects)


def uses_browser(objects: Iterable[object]) -> bool:
    return any(_is_playwright(obj) for obj in objects)


def _is_playwright(obj: object) -> bool:
    return _module_of(obj).split(".")[0] == "playwright"


class ChildProcessGuard:
    """An audit hook (they cannot be removed: one per process) that, while a unit test runs,
    notes every process started; `take()` hands the notes over."""

    def __init__(self) -> None:
        self.watching = False
        self._started: list[str] = []
        sys.addaudithook(self._audit)

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if self.watching and event in PROCESS_EVENTS:
            self._started.append(f"{event} {_describe(args)}")

    def take(self) -> list[str]:
        started, self._started = self._started, []
        return started


def _describe(args: tuple[Any, ...]) -> str:
    try:
        shown = [os.fsdecode(a) if isinstance(a, bytes | str) else a for a in args[:2]]
        return repr(shown)[:200]
    except Exception:  # what an audit hook sees must never fail the audited call
        return "?"
