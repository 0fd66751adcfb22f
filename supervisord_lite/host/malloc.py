"""glibc's allocator, told to give large blocks back to the system when they are freed.

glibc serves a request of 128 KiB or more with an mmap of its own and unmaps it when it
is freed. But the first time such a block is freed, glibc raises that threshold to the
block's size (up to 32 MiB), and from then on large requests come from the heap, which
keeps what they free. The daemon builds large texts again and again (a scrape of
/metrics is ~3 MB at 1000 services, its state file ~0.5 MB): with the threshold moving,
the first scrape left ~8 MB resident for good at 1000 services, ~1.5 MB at 200. Setting
the threshold (mallopt(3)) turns the moving off. Elsewhere (musl, macOS) nothing is done.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["MMAP_THRESHOLD", "keep_large_blocks_mapped", "malloc_trim"]

#: glibc's own default: blocks this large or larger are mapped, and unmapped when freed
MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


def _libc_function(name: str) -> Callable[[int, int], int] | Callable[[int], int] | None:
    """``name`` from the C library, or None (no ctypes in this Python, or not glibc)."""
    try:
        import ctypes

        return getattr(ctypes.CDLL(None), name)  # type: ignore[no-any-return]
    except (ImportError, OSError, AttributeError):
        return None


def keep_large_blocks_mapped(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold``; False where there is no ``mallopt``."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))  # type: ignore[call-arg]


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, which hands the heap's free pages back (None elsewhere)."""
    return _libc_function("malloc_trim")  # type: ignore[return-value]
