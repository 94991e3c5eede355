"""`--baseline REF`: sockgate as it was at a git commit, built the way `scripts/compiled` builds
the current tree (a wheel with the request path compiled by mypyc, unpacked into a folder of its
own), for the `sg-base` row beside `sg-builtin` in the same interleaved run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

GIT_TIMEOUT = 120.0
BUILD_TIMEOUT = 1800.0
"""A compiled wheel takes a few minutes here; a build still going after half an hour is stuck."""


@dataclass
class Baseline:
    """A build of sockgate at `ref`: `site` goes first on PYTHONPATH for its `sockgate run`.
    `error` says why there is none (the row is then n/a)."""

    ref: str
    commit: str = ""
    site: Path | None = None
    build: str = ""
    seconds: float = 0.0
    error: str | None = None

    @property
    def short(self) -> str:
        return self.commit[:7] or self.ref

    def env(self) -> dict[str, str]:
        """The environment its `sockgate` runs with: its own site first, so `import sockgate`
        finds it and not the build (or the sources) the bench itself runs with; the rest of
        PYTHONPATH stays, as for the other rows."""
        assert self.site is not None
        rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        return {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.site), *rest])}

    def to_json(self) -> dict[str, object]:
        return {
            "ref": self.ref,
            "commit": self.commit,
            "build": self.build,
            "build_seconds": round(self.seconds, 1),
            "error": self.error,
        }


class BuildFailed(Exception):
    """A step of the baseline build failed; the message says which and what it printed."""


def _last_lines(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    kept = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith("WARNING: Running pip as the 'root' user")
    ]
    return " | ".join(kept[-lines:])


def _step(
    what: str, args: list[str], log: Path, timeout: float, env: dict[str, str] | None = None
) -> None:
    """Run one build step in its own process group with its output appended to `log`; on a
    timeout, an interrupt or SIGTERM the whole group (pip's build backend, the C compiler) is
    killed, not only pip."""
    with log.open("ab") as out:
        out.write(f"$ {' '.join(args)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            status = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BuildFailed(f"{what}: still running after {timeout:g}s") from None
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if status != 0:
        raise BuildFailed(f"{what} exited with {status}: {_last_lines(log)} (log: {log})")


def _resolve(repo: Path, ref: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise BuildFailed(f"git: {ref!r} is not a commit of {repo}")
    return done.stdout.strip()


def _describe_site(site: Path, env: dict[str, str]) -> str:
    """Which sockgate the site's Python imports and whether its request path is compiled (a
    mypyc build leaves extension modules in the package). Both the flat layout of older commits
    and the subpackages of newer ones keep `sockgate/__init__.py`, so only that is imported."""
    done = subprocess.run(
        [sys.executable, "-c", "import sockgate; print(sockgate.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        timeout=GIT_TIMEOUT,
        check=False,
    )
    package = site / "sockgate"
    imported = Path(done.stdout.strip() or ".").resolve().parent
    if done.returncode != 0 or imported != package.resolve():
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise BuildFailed(f"import sockgate with the baseline first did not load {package}: "
                          f"{said[-1] if said else done.returncode}")  # fmt: skip
    extensions = sorted(package.rglob("*.so"))
    return f"compiled (mypyc, {len(extensions)} extension modules)" if extensions else "pure Python"


def build_baseline(ref: str, repo: Path, tmp: Path, logs: Path) -> Baseline:
    """Export `ref` of `repo` into `tmp`/baseline (git archive: a clean tree, none of the
    worktree's edits), build its wheel compiled (`SOCKGATE_COMPILE=require`, exactly as
    scripts/compiled does) and install it into a folder of its own. Never raises for a failed
    build: the result's `error` says what failed."""
    started = time.monotonic()
    base = Baseline(ref)
    root = tmp / "baseline"
    source, wheels, site = root / "src", root / "wheel", root / "site"
    log = logs / "baseline-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        base.commit = _resolve(repo, ref)
        source.mkdir(parents=True)
        archive = root / "src.tar"
        git = ["git", "-C", str(repo), "archive", "--format=tar", "-o", str(archive)]
        _step("git archive", [*git, base.commit], log, GIT_TIMEOUT)
        _step("tar -x", ["tar", "-x", "-f", str(archive), "-C", str(source)], log, GIT_TIMEOUT)
        env = {**os.environ, "SOCKGATE_COMPILE": "require"}
        pip = [sys.executable, "-m", "pip"]
        wheel = [*pip, "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), str(source)]
        _step("pip wheel (compiled)", wheel, log, BUILD_TIMEOUT, env)
        built = sorted(wheels.glob("*.whl"))
        if len(built) != 1:
            raise BuildFailed(f"pip wheel left {len(built)} wheels in {wheels}")
        install = [*pip, "install", "--no-deps", "--quiet", "--target", str(site), str(built[0])]
        _step("pip install --target", install, log, BUILD_TIMEOUT)
        base.site = site
        base.build = _describe_site(site, base.env())
    except (BuildFailed, OSError, subprocess.SubprocessError) as exc:
        base.site = None
        base.error = str(exc)
    base.seconds = time.monotonic() - started
    return base
