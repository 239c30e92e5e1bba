"""How the C allocator hands out large blocks, in the processes that run the network or the registration.

glibc's malloc serves a block above its mmap threshold (dynamic, at most 32 MiB by default) with a fresh ``mmap`` and
returns it with ``munmap`` when it is freed. A forward pass of SSLLN over one 192x192x80 volume allocates and frees
many such blocks (its landmark logits alone, 80 slices x 7 classes x 192 x 192 float32, are 83 MB), so every pass
maps fresh memory and the kernel faults in each 4 KiB page of it again: about 100,000 page faults a volume, which on
the 2-core machines here were about half the CPU time of a forward pass, and more than that of a training step
(``bench/cpu_allocator.py``). With the threshold above the largest block and the heap never trimmed, each pass
reuses the pages of the one before.

The policy is set once per process, only where the C library is glibc, and not where the user has set one
(``SSLL_ALLOCATOR=system``, a ``MALLOC_*_`` variable or ``GLIBC_TUNABLES`` naming malloc). No torch here: the CLI
calls it before a command imports anything heavy.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger("ssll.allocator")

__all__ = ["MMAP_THRESHOLD_BYTES", "reuse_large_blocks", "user_policy", "without_policy"]

#: blocks up to this size come from malloc's heap (bytes): above every block of a batch-1 forward pass or a
#: training step at the 128-pixel crop
MMAP_THRESHOLD_BYTES = 256 * 2**20
#: what older glibc accepts at most (HEAP_MAX_SIZE / 2 on 64-bit), tried where the larger value is refused
_CAPPED_BYTES = 32 * 2**20
#: freed memory at the top of the heap is kept up to this (bytes; mallopt takes an int)
_TRIM_BYTES = 2**31 - 1
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3

_applied: int | None = None


def user_policy(environ: dict[str, str] | None = None) -> str | None:
    """The environment variable by which the user chose the allocator's policy, or None where they did not."""
    env = os.environ if environ is None else environ
    if env.get("SSLL_ALLOCATOR", "").lower() == "system":
        return "SSLL_ALLOCATOR"
    for name in sorted(env):
        if name.startswith("MALLOC_") and name.endswith("_"):
            return name
    if "malloc" in env.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return None


def without_policy(environ: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment with every variable that sets malloc's policy taken out (``SSLL_ALLOCATOR``, each
    ``MALLOC_*`` and ``GLIBC_TUNABLES``), for a child process whose policy the caller chooses (a benchmark, a test)."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items()
            if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "SSLL_ALLOCATOR")}


def reuse_large_blocks(threshold: int = MMAP_THRESHOLD_BYTES) -> int:
    """Serve blocks up to ``threshold`` bytes from malloc's heap and keep freed memory for the next ones.

    Returns:
        The mmap threshold now in force (bytes): ``threshold``, or 32 MiB where an older glibc refuses more; 0
        where nothing was changed (not glibc, or the user's own policy: :func:`user_policy`). Calling it again
        returns the first call's answer.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = 0
    chosen = user_policy()
    if chosen:
        log.debug("allocator left as %s sets it", chosen)
        return 0
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return 0
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return 0
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    for value in (threshold, min(threshold, _CAPPED_BYTES)):
        if mallopt(_M_MMAP_THRESHOLD, int(value)) == 1:
            mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES)
            _applied = int(value)
            log.debug("allocator: blocks up to %d MiB from the heap, freed memory kept", value // 2**20)
            break
    return _applied
