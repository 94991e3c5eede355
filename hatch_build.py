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
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# The request path; the rest (config loading, the CLI, the dashboard) runs once or rarely.
# Not server: compiled, its serve() re-raised an exception that proxy had caught and handled in
# another task (a reused app connection's retry) from its with/finally at shutdown, so sockgate
# exited with status 1 (mypyc's async exception state; the tests of retries and holds show it).
COMPILED = (
    "addresses",
    "accesslog",
    "deadline",
    "engine",
    "headers",
    "hosts",
    "http1",
    "proxy",
    "rewrite",
    "routing",
    "stats",
    "stream",
    "tunnel",
    "upstream",
)


class CompileHook(BuildHookInterface):  # type: ignore[misc]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        mode = os.environ.get("SOCKGATE_COMPILE", "1").strip().lower()
        if version == "editable" or mode in ("0", "no", "false"):
            return
        try:
            built = _compile(Path(self.root))
        except Exception:
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


def _compile(root: Path) -> dict[str, Path]:
    """The extension modules, built outside the source tree: {path in the wheel: file}."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    out = Path(tempfile.mkdtemp(prefix="sockgate-mypyc-"))
    sources = [f"src/sockgate/{name}.py" for name in COMPILED]
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
