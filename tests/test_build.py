"""The build under test is the one asked for: scripts/compiled runs the suite against the wheel
compiled with mypyc, and must not pass by testing the pure sources twice."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import sockgate
from sockgate import buildinfo
from sockgate.engine import client
from tests.support.proc import Proxy, write_config

ROOT = Path(__file__).resolve().parents[1]


def test_the_build_under_test_is_the_one_asked_for() -> None:
    expected = os.environ.get("SOCKGATE_EXPECT_COMPILED") == "1"
    assert buildinfo.compiled() is expected, client.__file__


def test_the_version_says_which_build_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sockgate", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout.strip() == f"sockgate {sockgate.__version__}, {buildinfo.build()}"
    assert ("compiled" in done.stdout) is buildinfo.compiled()


def test_the_startup_log_says_which_build_serves(tmp: Path) -> None:
    config = write_config(
        tmp / "sockgate.toml",
        f'listen = "127.0.0.1:0"\nworkdir = "work"\n[apps.app1]\nsocket = "{tmp}/a.sock"\n',
    )
    with Proxy(config) as proxy:
        text = proxy.wait_for_output(r"built-in engine: ")
    line = next(line for line in text.splitlines() if "built-in engine: " in line)
    assert line.split("built-in engine: ", 1)[1].startswith(buildinfo.build())


def build_wheel(tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`pip wheel` of this checkout with the build hook, offline (no build isolation: hatchling,
    setuptools and mypy come from the test environment)."""
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v"]
    return subprocess.run(
        [*pip, "--wheel-dir", str(tmp / "wheel"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **env},
    )


def test_without_a_working_compiler_the_wheel_is_plain_python(tmp: Path) -> None:
    done = build_wheel(tmp, CC="/bin/false", SOCKGATE_COMPILE="1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [w.name for w in (tmp / "wheel").iterdir()] == ["sockgate-0.1.0-py3-none-any.whl"]
    assert "building pure Python" in done.stdout + done.stderr
    # The docs go with it: `sockgate --help` points to them wherever it is installed.
    with zipfile.ZipFile(tmp / "wheel" / "sockgate-0.1.0-py3-none-any.whl") as wheel:
        names = set(wheel.namelist())
    assert {"sockgate/docs/config.md", "sockgate/docs/README.md"} <= names


def test_a_required_compile_that_fails_fails_the_build(tmp: Path) -> None:
    done = build_wheel(tmp, CC="/bin/false", SOCKGATE_COMPILE="require")
    assert done.returncode != 0
    assert not (tmp / "wheel").exists() or not list((tmp / "wheel").iterdir())


def compiled_modules() -> tuple[str, ...]:
    """hatch_build.COMPILED, read without importing hatchling."""
    tree = ast.parse((ROOT / "hatch_build.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "COMPILED":
            names = ast.literal_eval(node.value)
            assert isinstance(names, tuple)
            return names
    raise AssertionError("no COMPILED in hatch_build.py")


def module_path(name: str) -> Path:
    """The source file of a compiled module named as hatch_build.COMPILED names it."""
    return ROOT / "src" / "sockgate" / (name.replace(".", "/") + ".py")


def awaits_in(statements: list[ast.stmt]) -> list[int]:
    found = ast.walk(ast.Module(body=statements, type_ignores=[]))
    return [n.lineno for n in found if isinstance(n, ast.Await | ast.AsyncWith | ast.AsyncFor)]


def test_compiled_modules_never_await_in_except_or_finally() -> None:
    """Compiled with mypyc, a coroutine that awaits while it handles an exception leaves that
    exception visible to every other task, and a finally with an await re-raises it: an app
    restart's retry once ended sockgate at shutdown with the hold loop's handled error."""
    offences = []
    for name in compiled_modules():
        path = module_path(name)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Try | ast.TryStar):
                blocks = [h.body for h in node.handlers] + [node.finalbody]
                offences += [f"{path.name}:{line}" for body in blocks for line in awaits_in(body)]
    assert not offences, offences


def class_defaults(cls: ast.ClassDef) -> set[str]:
    """Names a class body gives a value (attribute defaults, to mypyc)."""
    names = set()
    for statement in cls.body:
        if isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets = [statement.target]
        elif isinstance(statement, ast.Assign):
            targets = statement.targets
        else:
            continue
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def test_compiled_classes_never_override_a_base_class_default() -> None:
    """mypyc sets a compiled class's attribute defaults base first and did not free the one a
    subclass overrides: the request parser kept a tuple per connection that way (about 2 MB
    per 30,000 connections; tests/test_heap.py catches such leaks at run time). Pass such a
    value to the base's __init__ instead."""
    classes: dict[str, ast.ClassDef] = {}
    for name in compiled_modules():
        path = module_path(name)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        classes |= {node.name: node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    offences = []
    for cls in classes.values():
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id in classes:
                shared = class_defaults(cls) & class_defaults(classes[base.id])
                offences += [f"{cls.name}.{attr} (from {base.id})" for attr in sorted(shared)]
    assert not offences, offences


def test_compiled_modules_keep_their_constants_final() -> None:
    """A module constant read by compiled code is a dict lookup of the module's globals at each
    use, unless it is Final: then mypyc keeps it in a C static (and a Final literal it inlines).
    Sixteen such lookups per request were 3 % of the instructions of a keep-alive request."""
    offences = []
    for name in compiled_modules():
        path = module_path(name)
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign):
                targets, annotation = node.targets, None
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, annotation = [node.target], node.annotation
            else:
                continue
            constants = [t.id for t in targets if isinstance(t, ast.Name) and is_constant(t.id)]
            final = annotation is not None and ast.unparse(annotation).startswith("Final")
            offences += [f"{path.name}:{node.lineno} {c}" for c in constants if not final]
    assert not offences, offences


def is_constant(name: str) -> bool:
    letters = name.lstrip("_")
    return bool(letters) and letters[0].isalpha() and letters.upper() == letters
