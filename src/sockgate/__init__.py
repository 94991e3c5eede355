"""sockgate: one local HTTP endpoint in front of many apps on Unix domain sockets."""

__version__ = "0.1.0"
