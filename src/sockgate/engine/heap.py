"""The C library's heap, set for a proxy: bodies arrive as large, short-lived read buffers.

glibc serves a block over its mmap threshold with mmap and, by default, raises that threshold
as such blocks are freed; once the buffers come from the heap, freeing the top of it past the
trim threshold hands the memory back at once. Under many concurrent large responses the heap
then grows and shrinks with every read: a brk call each way, and fresh pages faulted in and
zeroed for the next buffer. That nearly doubled the system time of 1 MiB responses once other
traffic had moved glibc's thresholds. Fixed thresholds keep up to TRIM_THRESHOLD of freed heap
for the next reads, and give blocks of MMAP_THRESHOLD and more their own mappings.
"""

from __future__ import annotations

import ctypes
from typing import Any

# mallopt() parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 8 << 20


def tune() -> bool:
    """Set the thresholds for this process; False where the C library has no mallopt or
    refuses (not glibc)."""
    mallopt = _c_function("mallopt", ctypes.c_int, ctypes.c_int)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def trim() -> bool:
    """Hand the heap's free pages back to the system (after a load has gone: connections come
    and go as many small blocks, which the fixed thresholds above would otherwise keep)."""
    malloc_trim = _c_function("malloc_trim", ctypes.c_size_t)
    return malloc_trim is not None and bool(malloc_trim(0))


def _c_function(name: str, *argtypes: type[ctypes._SimpleCData[Any]]) -> Any:
    """The C library's `name`, or None where it has none."""
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    return function
