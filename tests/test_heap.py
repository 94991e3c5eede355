"""heap.tune (issue 4): freed read buffers stay in the heap for the next reads instead of going
back to the system and being faulted in again (which nearly doubled the system time of 1 MiB
responses). Checked by the page faults of a pattern like a proxy's: 16 buffers of 300 kB live
at once, then freed, over and over; each case in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sockgate import heap

PATTERN = """
import resource, sys
from sockgate import heap
if sys.argv[1] == "tuned":
    assert heap.tune()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):  # the heap grows to what the pattern needs
    buffers = [bytes(300_000) for _ in range(16)]
    del buffers
before = faults()
for _ in range(20):
    buffers = [bytes(300_000) for _ in range(16)]
    del buffers
print(faults() - before)
"""


def faults_of(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PATTERN, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_heap_keeps_freed_buffers_for_the_next_reads() -> None:
    untuned = faults_of("default")
    tuned = faults_of("tuned")
    # Untuned: every round faults megabytes in again (about 500 pages here); tuned: none.
    assert untuned > 20 * 200, untuned
    assert tuned < 100, tuned


def test_tune_says_whether_it_applied() -> None:
    assert heap.tune() is sys.platform.startswith("linux")
