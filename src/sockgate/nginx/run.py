"""Run the rendered config on the system's nginx, in the foreground, under `workdir` (layer 4).

nginx is a child process in our process group: signals sent to sockgate are passed on to it, and
sockgate exits with nginx's status. Nothing is written outside `workdir` but the HTTPS
certificate, which lives beside the local CA.

SIGHUP is a reload: sockgate reads its config again, renders it next to nginx.conf, has
`nginx -t` check it, and only then moves it over nginx.conf and passes SIGHUP on. An invalid
config never reaches nginx, which keeps running the previous one.

With `[tls]` and the local CA, the HTTPS certificate (nginx/certs.py) is issued before each
`nginx -t`: at start, at each reload, and when the one nginx shows is due for renewal, which
sockgate looks at every RENEW_CHECK seconds (SIGALRM) and passes on as a SIGHUP.
"""

from __future__ import annotations

import functools
import grp
import logging
import os
import pwd
import re
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from types import FrameType

from ..apps import children, process
from ..config import Config, Loader, reconfig
from ..config.reconfig import ReloadResult
from ..errors import ConfigError, NginxConfigRejected, SockgateError
from ..proc import logsetup, systemd
from ..proc.pidfile import PidFile
from ..proc.watch import ConfigWatcher, watching
from ..tls import contexts
from . import certs
from .render import TEMP_DIRS, FdLimit, command_line, conf_path, pid_path, render, temp_path

logger = logging.getLogger(__name__)

# Where nginx lives when it is not on PATH: Debian puts it in /usr/sbin, which an ordinary
# user's PATH lacks; source builds default to /usr/local.
FALLBACK_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
TEST_TIMEOUT = 30.0
# How often sockgate looks whether the HTTPS certificate is due for renewal: a leaf lives a
# week and is renewed two days before it ends; an hour also covers a machine that slept.
RENEW_CHECK = 3600
RENEW_SIGNAL = signal.SIGALRM


class NginxNotFound(SockgateError):
    """No nginx to run."""


def find_nginx() -> str:
    """The path of the nginx binary. Raises NginxNotFound, saying how to install it."""
    found = shutil.which("nginx")
    if found:
        return found
    for path in FALLBACK_PATHS:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise NginxNotFound(
        "nginx is not installed (not on PATH, nor in /usr/sbin): install it with "
        "`apt-get install nginx-light`, `dnf install nginx` or `brew install nginx`, "
        "or use the built-in engine"
    )


def render_here(config: Config) -> str:
    """nginx.conf as `run` writes it for the account sockgate runs as, sized for the file
    descriptors it may open (which nginx inherits), spelled for the installed nginx."""
    user = _worker_account()
    version = None
    if config.tls is not None and config.tls.http2:  # the only spelling that differs
        with suppress(NginxNotFound):
            version = nginx_version(find_nginx())
    return render(
        config,
        run_as_root=user is not None,
        user=user,
        fd_limit=own_fd_limit(),
        nginx_version=version,
    )


@functools.cache
def nginx_version(nginx: str) -> tuple[int, ...] | None:
    """The version `nginx -v` reports (`nginx version: nginx/1.22.1`), None if it says none."""
    try:
        done = subprocess.run(
            [nginx, "-v"], capture_output=True, text=True, errors="replace", timeout=TEST_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", done.stderr + done.stdout)
    return tuple(int(part) for part in found.groups()) if found else None


def own_fd_limit() -> FdLimit:
    """This process's RLIMIT_NOFILE: what the built-in engine would run under, and nginx gets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    return FdLimit(None if soft == unlimited else soft, None if hard == unlimited else hard)


def prepare(config: Config, conf: Path | None = None) -> Path:
    """Create the directories under workdir, issue the HTTPS certificate (nginx -t loads it)
    and write conf/nginx.conf (or `conf`); return its path."""
    # Render first: a config nginx cannot take leaves nothing half-written behind.
    text = render_here(config)
    certs.install(config)
    conf = conf or conf_path(config)
    try:
        for directory in (conf.parent, config.logs_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for name in TEMP_DIRS:
            temp_path(config, name).mkdir(parents=True, exist_ok=True)
        # Replace, not overwrite: an nginx reloading now reads the old file or the new one.
        partial = conf.with_name(conf.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(conf)
    except OSError as exc:
        raise ConfigError(
            f"cannot write {exc.filename}: {exc.strerror}",
            source=str(config.source or ""),
            key="workdir",
        ) from None
    return conf


def test_config(config: Config) -> None:
    """Write the config and have nginx check it. Raises NginxConfigRejected with nginx's words."""
    _check(find_nginx(), config, prepare(config))


def run(config: Config, *, loader: Loader | None = None, watch: bool = False) -> int:
    """Run nginx in the foreground until it exits; return its exit status.

    SIGINT, SIGTERM and SIGQUIT are passed on to nginx (stop, stop, graceful stop); SIGHUP
    reloads (`Reloader`), and so does a change to the config file with `watch`. A stop by signal
    exits 0. Call from the main thread: it installs signal handlers.
    """
    nginx = find_nginx()
    conf = prepare(config)
    _check(nginx, config, conf)
    reloader = Reloader(nginx, config, loader or Loader.of(config))
    watcher = watching(config) if watch else None
    if os.geteuid() == 0:
        logger.warning(
            "running as root: nginx workers run as %s too, so they can reach the app sockets "
            "(nginx would otherwise drop them to nobody); run sockgate as an ordinary user "
            "to avoid this",
            _worker_account(),
        )
    args = [*command_line(config, conf, nginx), "-g", "daemon off;"]
    logger.info(
        "starting nginx for http://%s with %s (logs in %s)", config.listen, conf, config.logs_dir
    )
    for app in config.apps:
        logger.info("  %s", config.route_line(app))
    if config.tls is not None:
        logger.info("  %s", contexts.banner(config.tls, config.tls.listen.port))
    forwarder = _SignalForwarder(reloader, reloader.renew)
    # Signals handled before the pid file tells `sockgate reload` where to send them.
    with forwarder.installed(), PidFile(config.pid_file):
        if config.tls is not None and config.tls.local_ca:
            signal.alarm(RENEW_CHECK)
        apps = process.start(config)  # the apps sockgate runs, in a process of their own
        try:
            status = _run_foreground(args, forwarder, watcher, str(config.listen))
        finally:
            signal.alarm(0)
            process.stop(apps)
    if status != 0:
        logger.error("nginx exited with status %d; see %s", status, config.error_log)
    return status


def _worker_account() -> str | None:
    """NAME:GROUP for nginx's workers when we run as root (the `user` directive), else None.

    As root, nginx drops its workers to `nobody`, which cannot connect to sockets that root or
    another user owns. The workers take the account sockgate runs as, root included: it reaches
    exactly the sockets the built-in engine would. (nginx needs names, not numbers.)
    """
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwuid(os.geteuid())
        return f"{account.pw_name}:{grp.getgrgid(account.pw_gid).gr_name}"
    except KeyError:
        # No passwd or group entry (bare containers): nginx -t will say what it misses.
        return "root"


def _check(nginx: str, config: Config, conf: Path) -> None:
    args = [*command_line(config, conf, nginx), "-t"]
    pid = pid_path(config)
    had_pid = pid.exists()
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, errors="replace", timeout=TEST_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise NginxConfigRejected(conf, f"nginx -t did not finish in {TEST_TIMEOUT:g}s") from None
    except OSError as exc:
        raise NginxNotFound(f"cannot run {nginx}: {exc.strerror}") from None
    finally:
        # nginx -t proves it can write the pid file by leaving an empty one behind; a stale pid
        # file would make it look as if nginx were running.
        if not had_pid and pid.exists() and pid.stat().st_size == 0:
            pid.unlink(missing_ok=True)
    message = done.stderr.strip()
    if done.returncode != 0:
        raise NginxConfigRejected(conf, message or f"nginx -t exited with {done.returncode}")
    for line in message.splitlines():
        if "[warn]" in line:
            logger.warning("%s", line)


def _run_foreground(
    args: list[str], forwarder: _SignalForwarder, watcher: ConfigWatcher | None, listen: str
) -> int:
    # nginx listens before it installs its signal handlers, so a signal in between would
    # kill it outright (a reload would become a crash). Started with the signals blocked,
    # nginx holds them until its master loop unblocks them, handlers in place.
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    try:
        # Its own process group: a terminal's Ctrl-C reaches sockgate alone, which turns it
        # into nginx's graceful stop; PR_SET_PDEATHSIG still ends nginx with sockgate.
        child = subprocess.Popen(args, process_group=0, preexec_fn=children.die_with_parent())
    except OSError as exc:
        raise NginxNotFound(f"cannot run {args[0]}: {exc.strerror}") from None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
    forwarder.attach(child)
    # nginx passed `nginx -t` and runs: what systemd can be told (nginx says nothing when it
    # listens; a port it cannot bind ends it, and the unit fails then).
    systemd.ready(listen)
    # The watcher's thread starts after the fork above (preexec_fn is not safe with threads).
    with watcher or nullcontext():
        status = child.wait()
    # Killed by a signal nginx did not handle: report it the way a shell would.
    return status if status >= 0 else 128 - status


# The first SIGINT or SIGTERM asks nginx for its graceful stop (SIGQUIT: requests under way
# finish, up to worker_shutdown_timeout), as the built-in engine does; a second one stops it now.
_GRACEFUL = {signal.SIGINT: signal.SIGQUIT, signal.SIGTERM: signal.SIGQUIT}


class Reloader:
    """SIGHUP for the nginx engine: the config read again (with the same overrides), checked
    like at start, rendered next to nginx.conf, `nginx -t` on that file; only then moved over
    nginx.conf. Returns whether nginx should be told (SIGHUP) to load it."""

    def __init__(self, nginx: str, config: Config, loader: Loader) -> None:
        self.nginx = nginx
        self.config = config
        self.loader = loader
        self.last: ReloadResult | None = None
        self._busy = False
        self._again = False

    def __repr__(self) -> str:
        return f"<Reloader {self.config.source} busy={self._busy}>"

    def __call__(self) -> bool:
        # Called from a signal handler: a SIGHUP during a reload asks for one more round.
        if self._busy:
            self._again = True
            return False
        self._busy = True
        systemd.reloading()
        try:
            changed = False
            self._again = True
            while self._again:
                self._again = False
                self.last = self.reload()
                changed = changed or self.last.ok
            return changed
        finally:
            self._busy = False
            systemd.reloaded(str(self.config.listen))

    def reload(self) -> ReloadResult:
        try:
            new = self.loader.load()
            reconfig.check_fixed(self.config, new)
            self._install(new)
        except SockgateError as exc:  # the config, nginx -t, or the HTTPS certificate
            result = reconfig.refused(exc)
            logger.error("%s", result.message)
            return result
        result = reconfig.applied(reconfig.compare(self.config, new))
        self.config = new
        with suppress(OSError):
            logsetup.reopen()
        logger.info("%s (passed on to nginx)", result.message)
        return result

    def renew(self) -> bool:
        """RENEW_SIGNAL: the HTTPS certificate issued again if it is due, for the running
        config (not read again). Returns whether nginx should load it (SIGHUP); looks again
        in RENEW_CHECK seconds."""
        tls = self.config.tls
        if tls is None or not tls.local_ca:
            return False
        signal.alarm(RENEW_CHECK)
        if self._busy:
            return False  # a reload is under way, which issues a certificate of its own
        try:
            if not certs.due(self.config):
                return False
            certs.install(self.config)
        except SockgateError as exc:
            logger.error("cannot renew the HTTPS certificate, nginx keeps the one it has: %s", exc)
            return False
        logger.info("renewed the HTTPS certificate (passed on to nginx)")
        return True

    def _install(self, config: Config) -> None:
        conf = conf_path(config)
        candidate = conf.with_name(conf.name + ".next")
        try:
            _check(self.nginx, config, prepare(config, candidate))
            candidate.replace(conf)
        finally:
            candidate.unlink(missing_ok=True)


class _SignalForwarder:
    """Passes FORWARDED_SIGNALS on to the child; holds any that arrive before it exists.
    SIGHUP goes on only when `reload` says the new config is in place; RENEW_SIGNAL becomes a
    SIGHUP when `renew` says a new certificate is."""

    def __init__(
        self, reload: Callable[[], bool] | None = None, renew: Callable[[], bool] | None = None
    ) -> None:
        self._reload = reload
        self._renew = renew
        self._child: subprocess.Popen[bytes] | None = None
        self._pending: list[int] = []
        self._stopping = False

    def __repr__(self) -> str:
        pid = self._child.pid if self._child else None
        return f"<_SignalForwarder child={pid} pending={self._pending}>"

    @contextmanager
    def installed(self) -> Iterator[None]:
        handled = (*FORWARDED_SIGNALS, RENEW_SIGNAL)
        previous = {signum: signal.signal(signum, self._handle) for signum in handled}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def attach(self, child: subprocess.Popen[bytes]) -> None:
        self._child = child
        for signum in self._pending:
            self._send(signum)
        self._pending.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._child is None:
            self._pending.append(signum)
        else:
            self._send(signum)

    def _send(self, signum: int) -> None:
        assert self._child is not None
        if signum == RENEW_SIGNAL:
            if self._stopping or self._renew is None or not self._renew():
                return
            signum = signal.SIGHUP  # nginx loads the certificate with its (unchanged) config
        elif signum == signal.SIGHUP and self._reload is not None and not self._reload():
            return
        if signum in _GRACEFUL:
            if not self._stopping:
                systemd.stopping()
            signum = signal.SIGTERM if self._stopping else _GRACEFUL[signal.Signals(signum)]
            self._stopping = True
        logger.debug("passing signal %d on to nginx (pid %d)", signum, self._child.pid)
        self._child.send_signal(signum)
