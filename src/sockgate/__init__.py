"""sockgate: one local HTTP endpoint in front of many apps on Unix domain sockets."""

__version__ = "0.1.0"


def compiled() -> bool:
    """Whether the request path runs as mypyc-compiled C extensions (a wheel built with a C
    compiler at hand, see hatch_build.py) or as plain Python (an editable install, or no
    compiler), which works the same at about half the speed."""
    from . import proxy

    return not proxy.__file__.endswith((".py", ".pyc"))


def build() -> str:
    return "compiled (mypyc)" if compiled() else "pure Python"
