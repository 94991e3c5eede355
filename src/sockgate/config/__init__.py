"""The config: `load()` reads sockgate.toml into the frozen dataclasses of `model`.

The names most modules need are here, so `from sockgate.config import App, load` reads as it did
when the config was one module.
"""

from .apptable import COMMAND_KEYS
from .loader import (
    DEFAULT_FILE,
    DEFAULT_LISTEN,
    ENGINES,
    Loader,
    bare,
    load,
)
from .model import (
    DEFAULT_DASHBOARD,
    DEFAULT_HOLD,
    DEFAULT_PREFIX_HEADERS,
    LOCAL_SUFFIX,
    MAX_SOCKET_PATH,
    App,
    Command,
    Config,
    Listen,
    Timeouts,
    discovered_app,
    own_host,
)

__all__ = [
    "COMMAND_KEYS",
    "DEFAULT_DASHBOARD",
    "DEFAULT_FILE",
    "DEFAULT_HOLD",
    "DEFAULT_LISTEN",
    "DEFAULT_PREFIX_HEADERS",
    "ENGINES",
    "LOCAL_SUFFIX",
    "MAX_SOCKET_PATH",
    "App",
    "Command",
    "Config",
    "Listen",
    "Loader",
    "Timeouts",
    "bare",
    "discovered_app",
    "load",
    "own_host",
]
