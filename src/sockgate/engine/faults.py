"""What a failed connect to an app's socket means, named so a user can act on it: a missing
file (and, for a typo, the sockets close to it), not a socket, nothing listening, permission."""

from __future__ import annotations

import difflib
import errno
import itertools
import os
import pwd
import stat
import time
from pathlib import Path
from typing import Final

from .. import errors
from ..config import MAX_SOCKET_PATH, App

# A typo's suggestions: at most this many names of the socket's folder are looked at (a /tmp may
# hold thousands), and a name must be this close (difflib's ratio) to be suggested.
NEAR_SCAN_MAX: Final = 2000
NEAR_CUTOFF: Final = 0.6
# The suggestions, per socket path and folder state (its mtime): no request to a mistyped app,
# and no status-page probe of it, compares the folder's names again until the folder changes.
_near: Final[dict[tuple[str, int], list[str]]] = {}
NEAR_KEPT: Final = 256
# A folder changed this recently may change again within its mtime's granularity (a clock
# tick) unseen: not kept until it has been still for this long (git's "racy" files, likewise).
NEAR_SETTLED_NS: Final = 2_000_000_000


def diagnose(app: App, exc: OSError) -> errors.UpstreamError:
    """Turn a failed connect into the fault a user can act on."""
    path = str(app.socket)
    name = app.name
    if len(os.fsencode(path)) > MAX_SOCKET_PATH or "too long" in str(exc):
        return errors.SocketPathTooLong(name, path, f"the kernel limit is {MAX_SOCKET_PATH} bytes")
    if isinstance(exc, FileNotFoundError):
        return _missing(app)
    if isinstance(exc, PermissionError):
        return errors.SocketPermissionDenied(name, path, permission_detail(app))
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError):
        return errors.ConnectReset(name, path, "the app is stopping or restarting")
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ENOTSOCK:
        kind = file_kind(path)
        if kind == "missing file":
            # Gone between the connect and the look: an app that stopped listening, then
            # removed its socket file on the way out. A restart, like a missing file.
            return _missing(app)
        if kind != "socket":
            return errors.NotASocket(name, path, f"it is a {kind}")
        return errors.NothingListening(name, path, "the app is not running or is restarting")
    return errors.ConnectFailed(name, path, exc.strerror or str(exc))


def _missing(app: App) -> errors.UpstreamError:
    return errors.SocketMissing(app.name, str(app.socket), missing_detail(app.socket))


def missing_detail(path: Path) -> str:
    """Why a socket file may be missing, for a user who may have mistyped it: whether its
    folder exists, and the sockets there whose names are close to the one configured."""
    parent = path.parent
    if not parent.is_dir():
        return f"its folder {parent} does not exist"
    near = near_sockets(path)
    if near:
        return "its folder exists; did you mean " + " or ".join(map(str, near)) + "?"
    return "its folder exists; is the app running?"


def near_sockets(path: Path, most: int = 3) -> list[Path]:
    """Sockets beside `path` with names close to its name (a typo's likely targets)."""
    try:
        key = (str(path), os.stat(path.parent).st_mtime_ns)
    except OSError:
        return []
    names = _near.get(key)
    if names is None:
        names = _close_sockets(path, most)
        if time.time_ns() - key[1] > NEAR_SETTLED_NS:
            if len(_near) >= NEAR_KEPT:
                _near.clear()
            _near[key] = names
    return [path.parent / name for name in names]


def _close_sockets(path: Path, most: int) -> list[str]:
    names: list[str] = []
    try:
        with os.scandir(path.parent) as entries:
            for entry in itertools.islice(entries, NEAR_SCAN_MAX):
                names.append(entry.name)
    except OSError:
        return []
    close = difflib.get_close_matches(path.name, names, n=most * 2, cutoff=NEAR_CUTOFF)
    return [name for name in close if file_kind(str(path.parent / name)) == "socket"][:most]


def file_kind(path: str) -> str:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "missing file"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "regular file"
    return "special file"


def permission_detail(app: App) -> str:
    me = f"sockgate runs as uid {os.geteuid()}"
    blocked = _unsearchable_parent(app.socket)
    if blocked is not None:
        return f"cannot enter {blocked}: {_mode_owner(blocked)}; {me}"
    return f"{_mode_owner(app.socket)}; {me}"


def _unsearchable_parent(path: Path) -> Path | None:
    """The first directory on the way to `path` that we may not enter, if any."""
    for parent in reversed(path.parents):
        if not os.access(parent, os.X_OK, effective_ids=os.access in os.supports_effective_ids):
            return parent
    return None


def _mode_owner(path: Path) -> str:
    try:
        st = os.stat(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    return f"mode {stat.filemode(st.st_mode)}, owner {_user(st.st_uid)}"


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
