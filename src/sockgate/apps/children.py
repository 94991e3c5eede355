"""Child processes that never outlive sockgate, and the private folders their sockets live in.

Every child sockgate starts (workers, nginx, the apps it supervises) asks the kernel for SIGTERM
when its parent dies (PR_SET_PDEATHSIG), so even a SIGKILL of sockgate leaves no orphan behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None]:
    """A function to run in a new child (a `preexec_fn`, or first thing after fork): the child
    gets SIGTERM when the process that made it dies. Made in the parent, it knows the parent's
    pid, so a parent that died before the prctl is noticed too."""
    parent = os.getpid()

    def arm() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)  # the parent is already gone: nobody would stop this child

    return arm


def signal_group(pgid: int, signum: int) -> bool:
    """Send `signum` to a process group; False if no process is left in it."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a member changed its uid; the group is still there
    return True


def make_private_dir(path: Path) -> None:
    """Create `path` and missing parents with mode 0700 (folders that exist are left alone)."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
            folder.chmod(0o700)  # whatever the umask says


def accepts(path: Path) -> bool:
    """Whether a process accepts connections on the Unix socket at `path` (without blocking:
    a full listen queue counts as listening)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        try:
            sock.connect(os.fspath(path))
        except BlockingIOError:
            return True
        except OSError:
            return False
        return True
