"""How the worker's processes keep the memory of large buffers they free.

A job with a large argument makes several buffers of its size on its way
through the worker: msgpack's copy of the bytes in the node, the pickle the
pool's task handler writes to the pool processes' pipe, and in the pool
process the chunks `multiprocessing` reads, the buffer it joins them in and
unpickling's copy. glibc's malloc hands each buffer back to the kernel soon
after it is freed (a large one is its own mapping, and the free space at
the top of a heap is returned past a threshold that follows the largest
buffer seen), so the next job's buffer faults in fresh zeroed pages again.
perf showed those page faults (fault, zeroing, memory-cgroup charge) at
about as much CPU as the copies themselves.

`keep_freed_buffers` tells malloc to serve buffers of up to
MMAP_THRESHOLD_BYTES from its heaps and to keep up to TRIM_THRESHOLD_BYTES
free at the top of each before giving memory back, so the next job reuses
pages already mapped. The cost is memory the process keeps after a burst
of large jobs: at most TRIM_THRESHOLD_BYTES per malloc arena (a few per
process), not a growth with the number of jobs. Measured in bench/README.md
("Large values"): worker CPU per MiB of arguments about halved.

Only glibc has `mallopt`; elsewhere, or when the user set glibc's own
MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ (their choice wins), it
does nothing. The broker and the client do not call it: the broker's peak
memory is a figure of its own, and the client is the user's process.
"""

from __future__ import annotations

import os

# glibc's largest allowed value on 64-bit (half its 64 MiB heap size), and
# the largest its own sliding threshold ever reaches.
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 32 << 20
# mallopt's parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def keep_freed_buffers() -> bool:
    """Tune this process's malloc as the module docstring says; whether it did.
    Never raises: an allocator it cannot tune is left as it is."""
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):  # not glibc (musl, macOS), or no ctypes
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # The mmap threshold first: setting either turns off glibc's sliding
    # thresholds, and a trim threshold alone would leave every buffer over
    # 128 KiB a mapping of its own.
    if not mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
