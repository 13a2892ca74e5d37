"""Keep a long session below Linux's limit on memory mappings per process.

XLA's CPU backend loads each kernel of a compiled program into memory of its own: three
mappings per kernel (code, constants, data). One compiled simulation core of a 2D GRE
has 73 kernels, about 220 mappings, and they stay until the program is dropped from
JAX's caches. Linux allows a process ``vm.max_map_count`` mappings (65 530 by default);
a session that compiles about 300 distinct cores (new sequence structures, shapes,
options) reaches it, and then XLA's JIT fails (``INTERNAL: Failed to materialize
symbols``) and the process dies with a segmentation fault while raising that error, so
that a notebook kernel is lost without a Python traceback.

`simulate` therefore checks the process's mapping count after each new compile of its
core (reading ``/proc/self/maps``: 10 ms at 50 000 mappings, beside a compile of a
second or more; never on a call that reuses a compiled core) and, above `GUARD_FRACTION` of the limit, warns and calls
`jax.clear_caches`: every program compiles again when next used, which costs seconds
instead of the process. Elsewhere than Linux nothing is checked.
"""

from __future__ import annotations

import warnings

import jax

__all__ = ["map_count", "map_limit", "release_if_near_limit", "GUARD_FRACTION"]

#: the fraction of ``vm.max_map_count`` above which `release_if_near_limit` clears JAX's
#: caches (None: never)
GUARD_FRACTION: float | None = 0.8

_MAPS = "/proc/self/maps"
_LIMIT = "/proc/sys/vm/max_map_count"


def map_count() -> int | None:
    """The number of memory mappings of this process (None where ``/proc`` is absent)."""
    try:
        with open(_MAPS, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return None


def map_limit() -> int | None:
    """The kernel's limit on memory mappings per process, ``vm.max_map_count`` (None where
    unknown)."""
    try:
        with open(_LIMIT) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def release_if_near_limit(fraction: float | None = None, *, warn: bool = True, stacklevel: int = 2) -> bool:
    """Clear JAX's compilation caches (`jax.clear_caches`) when this process holds more than
    ``fraction`` (default `GUARD_FRACTION`) of the memory mappings Linux allows it.

    Args:
        fraction: of ``vm.max_map_count``; None: `GUARD_FRACTION`.
        warn: say so with a `UserWarning` when clearing.
        stacklevel: of the warning (2: the caller's line).

    Returns:
        True when the caches were cleared, False otherwise.
    """
    fraction = GUARD_FRACTION if fraction is None else fraction
    if fraction is None:
        return False
    limit = map_limit()
    if limit is None:
        return False
    count = map_count()
    if count is None or count <= fraction * limit:
        return False
    if warn:
        warnings.warn(
            f"this process holds {count} memory mappings, {count / limit:.0%} of Linux's limit "
            f"(vm.max_map_count = {limit}); XLA's compiled programs hold most of them (about 220 per "
            "simulation core) and XLA crashes when the limit is reached, so mritwin cleared JAX's "
            "compilation caches (jax.clear_caches()): programs compile again when next used. To avoid "
            "this, keep sequence structures and shapes few, or raise the limit "
            "(sysctl -w vm.max_map_count=262144)",
            stacklevel=stacklevel,
        )
    jax.clear_caches()
    return True
