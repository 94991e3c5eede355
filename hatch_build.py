"""Wheel build hook: compile the modules every request runs through with mypyc.

The same typed source runs as a C extension about twice as fast (the proxy's CPU per request in
`bench/`). Pure Python stays the fallback: without a C compiler and Python's headers the wheel is
built from the plain sources, with a warning. Environment:

- SOCKGATE_COMPILE=0: do not compile (a pure wheel).
- SOCKGATE_COMPILE=require: a failed compile fails the build (CI, the benchmark).

Editable installs are never compiled: a compiled module would hide edits to its source.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# The request path; the rest (config loading, the CLI, the dashboard) runs once or rarely.
# The rule for these modules: no await inside an except block, nor inside a finally block that
# can be entered without an exception. Compiled, a coroutine that awaits while handling an
# exception leaves it visible to every other task, and a compiled finally with an await re-raises
# it (mypy 2.4's mypyc). Not engine.serve: its serve() ends in such a finally (a with and a try
# whose finally awaits the apps' stop), where it re-raised an exception the hold loop had handled
# in another task, and sockgate exited with status 1 (the tests of holds and retries show it).
COMPILED = (
    "addresses",
    "engine.accesslog",
    "engine.deadline",
    "engine.shared",
    "http.headers",
    "http.hosts",
    "http.events",
    "http.parse",
    "http.llhttp",
    "http.fields",
    "http.serialise",
    "http.watch",
    "engine.client",
    "engine.callbacks",
    "engine.clientstate",
    "exchange.phase",
    "exchange.forward",
    "exchange.relay",
    "http.respond",
    "http.rewrite",
    "http.routing",
    "status.stats",
    "engine.stream",
    "engine.tunnel",
    "engine.upstream",
)


class CompileHook(BuildHookInterface):  # type: ignore[misc]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        self._out: Path | None = None
        mode = os.environ.get("SOCKGATE_COMPILE", "1").strip().lower()
        if version == "editable" or mode in ("0", "no", "false"):
            return
        self._out = Path(tempfile.mkdtemp(prefix="sockgate-mypyc-"))
        try:
            built = _compile(Path(self.root), self._out)
        except (Exception, SystemExit):  # mypyc exits on a type error
            if mode == "require":
                raise
            traceback.print_exc()
            print(
                "sockgate: compiling with mypyc failed (above); building pure Python, which "
                "works the same, only slower. SOCKGATE_COMPILE=0 skips the attempt.",
                file=sys.stderr,
            )
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        for wheel_path, file in built.items():
            build_data["force_include"][str(file)] = wheel_path

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if self._out is not None:  # the wheel holds the extensions by now
            shutil.rmtree(self._out, ignore_errors=True)


def _compile(root: Path, out: Path) -> dict[str, Path]:
    """The extension modules, built in `out`, not the source tree: {path in the wheel: file}."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    sources = [f"src/sockgate/{name.replace('.', '/')}.py" for name in COMPILED]
    cwd, cache = os.getcwd(), os.environ.get("MYPY_CACHE_DIR")
    os.chdir(root)  # mypy names modules by their paths from here
    os.environ["MYPY_CACHE_DIR"] = str(out / "mypy-cache")  # not the project's own cache
    try:
        extensions = mypycify(
            # The build environment has no third-party packages: they type as Any here.
            ["--ignore-missing-imports", *sources],
            opt_level="3",
            group_name="sockgate",
            target_dir=str(out / "c"),
        )
        dist = Distribution({"name": "sockgate", "ext_modules": extensions})
        command = dist.get_command_obj("build_ext")
        command.build_lib = str(out / "lib")  # type: ignore[attr-defined]
        command.build_temp = str(out / "tmp")  # type: ignore[attr-defined]
        dist.run_command("build_ext")
    finally:
        os.chdir(cwd)
        if cache is None:
            os.environ.pop("MYPY_CACHE_DIR", None)
        else:
            os.environ["MYPY_CACHE_DIR"] = cache
    lib = out / "lib"
    built = {str(file.relative_to(lib)): file for file in lib.rglob("*.so")}
    if len(built) != len(COMPILED) + 1:  # a module each, and the group's shared library
        raise RuntimeError(f"mypyc built {sorted(built)}, not the {len(COMPILED)} modules")
    return built
