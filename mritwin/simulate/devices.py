"""Several JAX devices on one CPU, so that `simulate` uses every core."""

from __future__ import annotations

import os

import jax

__all__ = ["use_cpu_devices", "cpu_cores", "cpu_devices_set_elsewhere", "use_cpu_devices_by_default"]


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def use_cpu_devices(n: int | None = None) -> int:
    """Show JAX ``n`` CPU devices (default: one per core, `cpu_cores`), so that `simulate`
    splits the spins of large twins over the cores.

    XLA runs a simulation's step loop one step after another; it splits a step's larger
    operations over its threads, which for a few hundred to a few thousand spins costs
    more than it saves. With a device per core, `simulate` lays the spins out over the
    devices (``Bloch(shard="auto")``: at least 8 192 spins per CPU device, or 128 for step
    loops of 1 000 steps or more) and each device runs its share in its own loop. On a 2-core VM this ran the
    25 609-spin MRiLab spiral 2.4x, the MR-fingerprinting train 2.2x and a 128² GRE 1.7x
    as fast as one device (benchmarks/RESULTS.md, "CPU: two devices"); small twins stay on
    one device. The `mritwin` commands do this themselves.

    Call it right after ``import mritwin``, before any JAX computation: JAX fixes its CPU
    devices when it first runs something. It sets JAX's ``jax_num_cpu_devices`` option;
    with ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS`` that flag decides.

    Args:
        n: the number of CPU devices (>= 1); None: one per core.

    Returns:
        ``n``.

    Raises:
        ValueError: ``n`` is not a positive integer.
        RuntimeError: JAX has already run a computation (its devices are fixed); the
            message says so.
    """
    n = cpu_cores() if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"use_cpu_devices: n must be a positive integer, got {n!r}")
    if jax.config.jax_num_cpu_devices == n:
        return n
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError as e:
        raise RuntimeError(
            f"use_cpu_devices({n}): JAX has already run a computation in this process, and its CPU "
            "devices are fixed then; call mritwin.use_cpu_devices() right after `import mritwin`, "
            "before anything else uses JAX") from e
    return n


def cpu_devices_set_elsewhere() -> bool:
    """Whether the environment already sets JAX's CPU devices (``JAX_NUM_CPU_DEVICES``, or
    ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``)."""
    return ("JAX_NUM_CPU_DEVICES" in os.environ
            or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""))


def use_cpu_devices_by_default() -> None:
    """What the `mritwin` commands and the benchmark suite do first: `use_cpu_devices` with
    one device per core, unless the environment sets the CPU devices itself
    (``JAX_NUM_CPU_DEVICES=1`` keeps one) or JAX has already run a computation."""
    if cpu_devices_set_elsewhere():
        return
    try:
        use_cpu_devices()
    except RuntimeError:
        pass
