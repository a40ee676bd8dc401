"""The C allocator of the long-running service: large blocks go back to the system when they are freed."""
from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
LARGE_BLOCK_BYTES = 128 * 1024  # glibc's own starting threshold


def return_large_blocks(threshold: int = LARGE_BLOCK_BYTES) -> bool:
    """Serve every block of `threshold` bytes or more from a mapping of its own, unmapped when it is freed.

    glibc starts there but raises the threshold to the size of each such block freed (up to 32 MiB), so once an
    index version has been replaced, the next one's arrays (the office KB's vectors are 20 MB) come from a thread's
    heap, where freed memory mostly stays with the process: `kb serve --watch` grew by about 20 MB a swap in the
    soak (bench/soak.py). A threshold set once is never raised. False where the C library has no mallopt (not glibc):
    nothing is changed there."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, threshold) == 1
