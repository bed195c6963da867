"""A process-wide glibc allocator setting for dedicated inference processes (opt-in)."""

from __future__ import annotations

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4                           # glibc mallopt parameters


def reuse_freed_memory() -> bool:
    """Make glibc malloc keep freed memory for reuse instead of returning it to the OS.

    PyTorch's CPU allocator takes each large tensor straight from glibc, which maps tensors above
    32 MB with mmap and unmaps them when freed, so every frame page-faults (and zero-fills)
    every big activation again: about a third of the reference forward at 384x1248, a fifth of
    the fast one. With mmap disabled and trimming off, freed blocks stay in the heap and the next
    frame reuses them. Costs: the process keeps its peak memory mapped between frames, and the
    peak can grow by fragmentation (~+250 MB for fast mode at 384x1248). Process-wide and not
    undoable; call it once at start-up in a dedicated inference process (the bench's
    `--malloc reuse`). Returns False when this is not glibc.
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 30))
