"""The C allocator's settings for a process that allocates and frees batch-sized tensors many times a second.

glibc's malloc serves a block above its *mmap threshold* with a fresh ``mmap`` and gives it back on ``free``, and
it returns the top of its heap to the system once more than the *trim threshold* is free there. A training or
embedding step allocates and frees activations of a few MiB each, so with the defaults every step maps, faults
in page by page, and unmaps the same memory again: on the default model at 96 px, 8.7 million minor page faults
and a third of the run's time in the kernel (``python -m bench.allocator``). :func:`tune_malloc` raises both
thresholds (blocks up to 32 MiB, glibc's largest mmap threshold, come from the heap; up to 1 GiB of free heap top
is kept for reuse), so the pages stay mapped and are reused.

It changes speed only, never a result; peak memory stays the same (the pages are the ones the run needed anyway),
though a process may give memory back to the system later. Every stage and the ``whaleid`` command call it
first; ``WHALEID_MALLOC=default`` leaves glibc as it is, and glibc's own ``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_`` variables, when set, are left to rule. Not glibc (macOS, musl): nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

ENV = "WHALEID_MALLOC"
M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # the ceiling of glibc's own dynamic threshold on 64-bit
TRIM_THRESHOLD = 1024 * 1024 * 1024
GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


@functools.cache
def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds as the module doc says, once per process; True when they were set."""
    if os.environ.get(ENV, "").strip().lower() == "default" or any(v in os.environ for v in GLIBC_VARIABLES):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    # mallopt returns 1 on success; set the mmap threshold first (it also fixes the trim threshold's dynamic rule).
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
