"""A fused Pallas kernel for stepped simulation: the state stays on chip for every step.

`Bloch(kernel="pallas")` runs the sequence as one kernel launch per chunk of spins. Each
program of the launch owns a block of ``block`` spins (256 by default): it loads their
parameters once, keeps ``(mx, my, mz)`` in registers through *all* steps of the sequence
(a loop inside the kernel, reading each step's scalars ``dt, k, B1, phase`` from memory
shared by every program), and at every ADC sample reduces its block's transverse
magnetization to one complex number per coil. Nothing per spin goes back to memory
until the end (the final magnetization), and the launch writes one partial signal per
block, ``(n_blocks, n_coils, n_samples)``, which XLA sums.

This is the design of GPU Bloch simulators (KomaMRI.jl's kernels, MRiLab): arithmetic
bound, about 50 floating-point operations per spin and step. On the CPU the same kernel
runs in Pallas's interpreter, which is slow; it is there so that the kernel is tested
everywhere (`tests/test_pallas.py` compares it with the XLA engine and lowers it for
CUDA).

Less work per step where the sequence repeats itself: a step's rotation and relaxation
factors stay in registers while its ``dt``, gradient and phase repeat (``reuse``), and a
repeated shaped pulse is stepped once per run of its plays into each spin's affine map,
then applied whole at every play (`kernel_steps`, ``Bloch(prepare_pulses=True)``).

What it covers: the stepped discretization (``windows=False``: one free-precession step
per ADC sample, RF raster steps), any B1, gradient and ADC phase, B1+ maps, coil
sensitivities, rigid motion, ideal spoiling, several devices (`jax.shard_map` over the
spin axis). Not covered (`simulate` raises, naming the option): dynamics, analytic
diffusion, the reversible adjoint and the NUFFT readout.

Derivatives: a `jax.custom_jvp` whose tangent rule differentiates the XLA reference
implementation of the same steps (`stepped_xla`, with segment checkpointing in reverse
mode), so `jax.grad` and `jax.jvp` through ``kernel="pallas"`` give the XLA engine's
derivatives while the forward pass uses the kernel.

Precision: float32 only (the GPU kernel's arithmetic); ``dtype=float64`` uses the XLA
engine.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import kernels
from .kernels import Spins, State

__all__ = ["pallas_signal", "pallas_core", "stepped_xla", "kernel_steps", "launch_config", "DEFAULT_BLOCK", "DEFAULT_WARPS",
           "GPU_BLOCK", "GPU_WARPS"]

DEFAULT_BLOCK = 256  # spins per program in Pallas's interpreter (fewer, wider programs run faster there)
DEFAULT_WARPS = 4
# on a GPU: 64 spins per program on one warp, the best of blocks 32-512 x warps 1-8 on an
# NVIDIA H200 (benchmarks/RESULTS.md, 2026-12-04): 24.8 ms for the 1.68M-spin brain3d-gre
# (31 ms at 128 x 4), 11.1 ms for the 26k-spin spiral (10.8 ms at 64 x 2, 12.8 ms at 256 x 4)
GPU_BLOCK = 64
GPU_WARPS = 1


def launch_config(interpret: bool) -> tuple[int, int]:
    """``(block, num_warps)`` of `simulate`'s kernel launches: the GPU's measured best, or
    the interpreter's."""
    return (DEFAULT_BLOCK, DEFAULT_WARPS) if interpret else (GPU_BLOCK, GPU_WARPS)


_TWO_PI = float(2.0 * np.pi)
_SPIN_FIELDS = ("x", "y", "z", "pd", "r1", "r2", "df", "b1")


# step kinds: an RF raster step, a free step, a play of the prepared pulse, the preparation
# of a pulse's map (`kernel_steps`)
RF, FREE, PREPARED, PREPARE = 0, 1, 2, 3


def _step_arrays(dt, kstep, b1dt, kind, slot, spoil, cyc0):
    """The per-step inputs of the kernel: (dt, kx, ky, kz, b1 re, b1 im, c0) float32 and
    (kind, slot, spoil) int32, each (n_steps,). ``kind``: `RF`, `FREE`, `PREPARED` (a play
    of the prepared pulse: ``b1dt`` is its phase offset ``exp(iα)``) or `PREPARE` (the map
    of the pulse in row ``dt`` of the pulse table is computed; no change of the
    magnetization)."""
    f = jnp.float32
    return (jnp.asarray(dt, f), jnp.asarray(kstep[:, 0], f), jnp.asarray(kstep[:, 1], f),
            jnp.asarray(kstep[:, 2], f), jnp.real(b1dt).astype(f), jnp.imag(b1dt).astype(f),
            jnp.asarray(cyc0, f), jnp.asarray(kind, jnp.int32), jnp.asarray(slot, jnp.int32),
            jnp.asarray(spoil, jnp.int32))


# bits of `_fresh`: which of a step's factors the kernel computes (else it reuses the
# factors it computed for the previous step of the same kind)
_FREE_RELAX, _FREE_ROT, _RF_RELAX = 1, 2, 4


def _fresh(steps):
    """Per step, an int32 bit mask (`_FREE_RELAX`, `_FREE_ROT`, `_RF_RELAX`) of the factors
    the kernel must compute: a free step's relaxation fractions unless the previous free
    step had the same ``dt``; its rotation (``sin``, ``cos - 1`` of the phase) unless that
    step also had the same ``k`` and common phase ``c0``; an RF step's half-step relaxation
    unless the previous RF step had the same ``dt`` (plays of a prepared pulse between them
    change nothing). Equal float32 inputs give equal factors, so reusing them changes no
    bit of the result. (n_steps,) from the step arrays of `_step_arrays`; traceable."""
    dt, kx, ky, kz, _, _, c0, kind = steps[:8]
    n = dt.shape[0]
    idx = jnp.arange(n, dtype=jnp.int32)

    def previous(mask):  # index of the previous step with ``mask`` (-1: none)
        last = jax.lax.cummax(jnp.where(mask, idx, -1))
        return jnp.concatenate([jnp.full((1,), -1, jnp.int32), last[:-1]])

    def same(prev, *arrays):
        at = jnp.maximum(prev, 0)
        eq = prev >= 0
        for a in arrays:
            eq &= a[at] == a
        return eq

    free, rf = kind == FREE, kind == RF
    pf, pr = previous(free), previous(rf)
    same_dt = same(pf, dt)
    out = jnp.where(free & ~same_dt, _FREE_RELAX, 0)
    out |= jnp.where(free & ~(same_dt & same(pf, kx, ky, kz, c0)), _FREE_ROT, 0)
    out |= jnp.where(rf & ~same(pr, dt), _RF_RELAX, 0)
    return out.astype(jnp.int32)


def _loop_length(steps):
    """(1,) int32: the steps up to the last one that changes anything. The rest, the
    length bucket's padding (free steps of 0 s without gradient, phase, sample or
    spoiling), would leave the magnetization as it is; the kernel's loop stops before it
    (the compiled kernel is still shared by every sequence of the bucket)."""
    dt, kx, ky, kz, bre, bim, c0, kind, slot, spoil = steps[:10]
    busy = ((dt != 0) | (kind != FREE) | (slot >= 0) | (spoil != 0) | (kx != 0) | (ky != 0) | (kz != 0)
            | (c0 != 0) | (bre != 0) | (bim != 0))
    idx = jnp.arange(1, dt.shape[0] + 1, dtype=jnp.int32)
    return jnp.max(jnp.where(busy, idx, 0), keepdims=True)


# the kernel's sine and cosine: jnp.sin/cos (CUDA's libdevice), or the XLA engine's float32
# polynomial (`kernels.sincos_half_cycle`)
SINCOS = ("libdevice", "poly")


def _kernel(*refs, n_steps: int, n_coils: int, coils: bool, width: int, sincos: str = "libdevice",
            compensate: bool = False, reuse: bool = False, n_pulse: int = 0):
    """One program: ``block`` spins through all steps. ``refs``: the 8 spin fields, the
    2 n_coils coil rows (re, im) when ``coils``, the 10 step arrays, `_fresh`'s when
    ``reuse``, the prepared pulses' 7 raster arrays (dt, kx, ky, kz, B1 re, B1 im, c0 at
    phase 0; one row of ``n_pulse`` steps per pulse, row after row) when ``n_pulse``, the
    loop's length (`_loop_length`, at most ``n_steps``); outputs: the block's signal (re, im) of
    ``n_coils * width`` values, then mx, my, mz. ``sincos``: see `SINCOS`.

    Each step computes the *change* of the magnetization and adds it: a microsecond step
    changes it by a few ulps, and a product form (``M cos θ``, ``M exp(-dt/T)``) rounds
    ``cos θ`` and ``exp(-dt/T)``, both within ulps of 1, the same way at every step of a
    repeated raster. So rotations use ``cos θ - 1 = -2 sin²(θ/2)`` (one sine/cosine of the
    half angle) and relaxation ``d = 1 - exp(-dt/T)`` from ``expm1`` (``-M d``, ``(M0 - Mz)
    d``), as the XLA engine does (`kernels.relaxation`, `kernels._rf_rotation`). With
    ``compensate`` the changes are added by compensated (Kahan) summation, carrying each
    component's rounding error (three more registers, four more operations per component
    and step).

    With ``reuse`` the program keeps each spin's last free-step rotation (``sin θ``,
    ``cos θ - 1``) and relaxation fractions and its last RF half-step fractions in
    registers, and computes them only at the steps `_fresh` marks: in a readout of equal
    samples a free step is then a few multiply-adds instead of a sine, a cosine and two
    ``expm1`` (the same for every spin of the launch, so the branch never diverges).

    With ``n_pulse``, a step of kind `PREPARE` steps a pulse's raster (a row of the table)
    on the unit vectors and the zero state (each step's change added by compensated
    summation, as `prepared_rf.prepare_pulse` does), which gives each spin the pulse's
    affine map ``M -> A M + b`` (12 registers, kept until the next `PREPARE`); a step of
    kind `PREPARED` applies it with the play's phase offset ``exp(iα)`` (its B1 entry):
    ``Rz(α) (A Rz(-α) M + b)``.
    """

    def sin_cos(ph):  # |ph| <= 1/2 cycles
        if sincos == "poly":
            return kernels.sincos_half_cycle(ph)
        return jnp.sin(_TWO_PI * ph), jnp.cos(_TWO_PI * ph)

    nc = 2 * n_coils if coils else 0
    x, y, z, pd, r1, r2, df, b1 = (r[...] for r in refs[:8])
    crefs = refs[8:8 + nc]
    dt_r, kx_r, ky_r, kz_r, bre_r, bim_r, c0_r, kind_r, slot_r, spoil_r = refs[8 + nc:18 + nc]
    at = 18 + nc
    fresh_r = refs[at] if reuse else None
    at += int(reuse)
    pulse_r = refs[at:at + 7] if n_pulse else None
    at += 7 if n_pulse else 0
    n_run = refs[at][0]
    sre_r, sim_r, mx_o, my_o, mz_o = refs[at + 1:]
    cre = [crefs[2 * c][...] for c in range(n_coils)] if coils else None
    cim = [crefs[2 * c + 1][...] for c in range(n_coils)] if coils else None

    # (the output rows are not initialized: every slot below n_slots is written by exactly
    # one step, and the padding up to ``width`` is cut off afterwards)

    def fractions(dt):
        """1 - exp(-dt/T2), 1 - exp(-dt/T1)."""
        return -jnp.expm1(-dt * r2), -jnp.expm1(-dt * r1)

    def relax_change(m, d2, d1, p):
        """Relaxation's change of ``m`` towards ``(0, 0, p)``."""
        return -m[0] * d2, -m[1] * d2, (p - m[2]) * d1

    def plus(m, d):
        return m[0] + d[0], m[1] + d[1], m[2] + d[2]

    def rf_rotation(dt, kx, ky, kz, bre, bim, c0):
        """An RF step's rotation per spin: the effective field ``w`` [cycles], ``sin θ /
        |w|``, ``(1 - cos θ) / |w|²`` and ``cos θ - 1``."""
        wx = b1 * bre
        wy = b1 * bim
        wz = kx * x + ky * y + kz * z + df * dt + c0  # cycles
        n2 = wx * wx + wy * wy + wz * wz
        big = n2 > 1e-6
        inv = jnp.where(big, jax.lax.rsqrt(jnp.where(big, n2, 1.0)), 0.0)
        h = 0.5 * n2 * inv  # θ/2 [cycles]
        h = h - jnp.floor(h + 0.5)
        sh, chh = sin_cos(h)
        sh2 = sh * sh
        q = (_TWO_PI * _TWO_PI) * n2  # below |w|² = 1e-6 the ratios' Taylor series
        a = jnp.where(big, 2.0 * sh * chh * inv, _TWO_PI * (1.0 - q / 6.0 * (1.0 - q / 20.0)))  # sin θ / |w|
        b = jnp.where(big, 2.0 * sh2 * (inv * inv),  # (1 - cos θ) / |w|²
                      0.5 * (_TWO_PI * _TWO_PI) * (1.0 - q / 12.0 * (1.0 - q / 30.0)))
        cm1 = jnp.where(big, -2.0 * sh2, -0.5 * q * (1.0 - q / 12.0 * (1.0 - q / 30.0)))  # cos θ - 1
        return wx, wy, wz, a, b, cm1

    def rf_change(rot, m, d2, d1, p):
        """An RF step's change of ``m``: relax dt/2 (fractions ``d2``, ``d1``, towards
        ``(0, 0, p)``), rotate (``rot`` from `rf_rotation`), relax dt/2 (the engine's
        Strang step)."""
        wx, wy, wz, a, b, cm1 = rot
        ch1 = relax_change(m, d2, d1, p)
        mx, my, mz = plus(m, ch1)
        wdm = (wx * mx + wy * my + wz * mz) * b
        cx = wy * mz - wz * my
        cy = wz * mx - wx * mz
        cz = wx * my - wy * mx
        ch2 = (mx * cm1 - cx * a + wx * wdm, my * cm1 - cy * a + wy * wdm, mz * cm1 - cz * a + wz * wdm)
        ch3 = relax_change(plus((mx, my, mz), ch2), d2, d1, p)
        return ch1[0] + ch2[0] + ch3[0], ch1[1] + ch2[1] + ch3[1], ch1[2] + ch2[2] + ch3[2]

    def rotation(dt, kx, ky, kz, c0):
        """``sin θ``, ``cos θ - 1`` of a free step's precession (gradients, off-resonance,
        the step's common phase)."""
        ph = kx * x + ky * y + kz * z + df * dt + c0  # cycles
        ph = ph - jnp.floor(ph + 0.5)
        sh, chh = sin_cos(0.5 * ph)
        return 2.0 * sh * chh, -2.0 * sh * sh

    def free_change(m, s, cm1, d2, d1):
        """A free step's change of ``m``: precess (``s``, ``cm1`` from `rotation`), relax
        (fractions ``d2``, ``d1``)."""
        mx, my, mz = m
        rx, ry = mx * cm1 + my * s, my * cm1 - mx * s
        ch2 = relax_change((mx + rx, my + ry, mz), d2, d1, pd)
        return rx + ch2[0], ry + ch2[1], ch2[2]

    zero = jnp.zeros_like(pd)
    one = jnp.ones_like(pd)

    def prepare_map(row):
        """The prepared pulse in row ``row`` of the table: its map's columns ``A e_x, A e_y,
        A e_z, b``, each (mx, my, mz), stepped from the unit vectors and the zero state
        with each raster step's change added by compensated summation."""
        target = (zero, zero, zero, pd)  # relaxation's target: none for the linear part
        base = row * n_pulse

        def prepare(j, carry):
            vs, errs = carry[:4], carry[4:]
            dt = pulse_r[0][base + j]
            rot = rf_rotation(dt, *(r[base + j] for r in pulse_r[1:]))
            d2, d1 = fractions(0.5 * dt)
            out_v, out_e = (), ()
            for v, e, p in zip(vs, errs, target):
                u = tuple(c - w for c, w in zip(rf_change(rot, v, d2, d1, p), e))
                t = plus(v, u)
                out_v += (t,)
                out_e += (tuple((a - b) - c for a, b, c in zip(t, v, u)),)
            return out_v + out_e

        start = ((one, zero, zero), (zero, one, zero), (zero, zero, one), (zero, zero, zero))
        cols = jax.lax.fori_loop(0, n_pulse, prepare, start + ((zero, zero, zero),) * 4)[:4]
        return sum(cols, ())  # 12 arrays: column after column

    def pulse_change(c, s, m, cols):
        """A prepared pulse's change of ``m`` at phase offset ``exp(iα) = c + i s``; ``cols``
        from `prepare_map`."""
        mx, my, mz = m
        u = (mx * c + my * s, my * c - mx * s, mz)
        v = tuple(cols[i] * u[0] + cols[3 + i] * u[1] + cols[6 + i] * u[2] + cols[9 + i] for i in range(3))
        return v[0] * c - v[1] * s - mx, v[1] * c + v[0] * s - my, v[2] - mz

    n_state = 6 if compensate else 3
    n_cache = 6 if reuse else 0

    def body(i, carry):
        # carry: (mx, my, mz), their rounding errors with ``compensate``, the reused factors
        # (free s, cm1, d2, d1; RF d2, d1) with ``reuse``, the prepared pulse's map (12)
        # with ``n_pulse``
        dt, kx, ky, kz, c0 = dt_r[i], kx_r[i], ky_r[i], kz_r[i], c0_r[i]
        bre, bim = bre_r[i], bim_r[i]
        kind = kind_r[i]
        keep = 1.0 - spoil_r[i].astype(jnp.float32)  # spoil is 0 or 1
        cache = carry[n_state:n_state + n_cache]
        cols = carry[n_state + n_cache:]
        if n_pulse:  # a PREPARE step: the map of the pulse in the table's row ``dt``
            cols = jax.lax.cond(kind == PREPARE, lambda: prepare_map(dt.astype(jnp.int32)), lambda: cols)
        carry = (carry[0] * keep, carry[1] * keep, carry[2]) + (
            (carry[3] * keep, carry[4] * keep, carry[5]) if compensate else ())
        m = carry[:3]
        if reuse:
            fresh = fresh_r[i]

            def update(bit, compute, old):
                return jax.lax.cond((fresh & bit) != 0, compute, lambda: old)

            cache = (update(_FREE_ROT, lambda: rotation(dt, kx, ky, kz, c0), cache[0:2])
                     + update(_FREE_RELAX, lambda: fractions(dt), cache[2:4])
                     + update(_RF_RELAX, lambda: fractions(0.5 * dt), cache[4:6]))

            def free_factors():
                return cache[:4]

            def rf_fractions():
                return cache[4:]
        else:  # computed in the step's branch
            def free_factors():
                return rotation(dt, kx, ky, kz, c0) + fractions(dt)

            def rf_fractions():
                return fractions(0.5 * dt)

        def stepped(m):
            return jax.lax.cond(
                kind == RF, lambda m: rf_change(rf_rotation(dt, kx, ky, kz, bre, bim, c0), m, *rf_fractions(), pd),
                lambda m: free_change(m, *free_factors()), m)
        if n_pulse:
            d = jax.lax.cond(kind == PREPARED, lambda m: pulse_change(bre, bim, m, cols),
                             lambda m: jax.lax.cond(kind == PREPARE, lambda m: (zero, zero, zero), stepped, m), m)
        else:
            d = stepped(m)
        if compensate:  # Kahan: the error of the previous additions goes into this change
            d = tuple(u - v for u, v in zip(d, carry[3:]))
            t = plus(m, d)
            carry = t + tuple((u - v) - w for u, v, w in zip(t, m, d))
            m = t
        else:
            carry = m = plus(m, d)
        slot = slot_r[i]

        def record(m):
            mx, my, _ = m
            for c in range(n_coils):
                if coils:
                    re = jnp.sum(cre[c] * mx - cim[c] * my)
                    im = jnp.sum(cre[c] * my + cim[c] * mx)
                else:
                    re, im = jnp.sum(mx), jnp.sum(my)
                sre_r[c * width + slot] = re
                sim_r[c * width + slot] = im
            return None

        jax.lax.cond(slot >= 0, record, lambda m: None, m)  # (no outputs: Triton yields no literal)
        return carry + tuple(cache) + tuple(cols)

    m0 = (zero, zero, pd) + (zero,) * ((3 if compensate else 0) + n_cache + (12 if n_pulse else 0))
    mx, my, mz = jax.lax.fori_loop(0, jnp.minimum(n_run, n_steps), body, m0)[:3]
    mx_o[...] = mx
    my_o[...] = my
    mz_o[...] = mz


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _pallas_forward(spins: Spins, steps: tuple, pulse=None, *, n_slots: int, block: int, interpret: bool,
                    num_warps: int = DEFAULT_WARPS, sincos: str = "libdevice", compensate: bool = False,
                    reuse: bool = True):
    """The kernel on one chunk: ``spins`` fields (n,), ``steps`` from `_step_arrays`,
    ``pulse`` the prepared pulses' rasters (`kernel_steps`: 7 arrays (P, L)) or None. Returns ((n_coils,
    n_slots) complex64 signal, (n, 3) final magnetization)."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as pl_triton

    n = spins.x.shape[0]
    if n % block:
        raise ValueError(f"pallas kernel: {n} spins is not a multiple of the block of {block}")
    coils = spins.coil_re is not None
    n_coils = spins.coil_re.shape[0] if coils else 1
    width = _next_pow2(max(n_slots, 1))  # Triton blocks are powers of two
    n_blocks = n // block
    n_steps = steps[0].shape[0]
    spin_in = [getattr(spins, f).astype(jnp.float32) for f in _SPIN_FIELDS]
    if coils:
        for c in range(n_coils):
            spin_in += [spins.coil_re[c].astype(jnp.float32), spins.coil_im[c].astype(jnp.float32)]
    per_spin = pl.BlockSpec((block,), lambda i: (i,))
    # step arrays: padded to a power of two (Triton block shapes), read one scalar at a time
    s_pad = _next_pow2(n_steps)
    n_run = _loop_length(steps)
    steps = tuple(steps) + ((_fresh(steps),) if reuse else ())
    steps = tuple(jnp.pad(s, (0, s_pad - n_steps)) for s in steps)
    whole = pl.BlockSpec((s_pad,), lambda i: (0,))
    n_pulse = 0 if pulse is None else int(pulse[0].shape[1])  # raster steps per row
    pulse_in, pulse_specs = [], []
    if n_pulse:
        flat = [jnp.asarray(a, jnp.float32).reshape(-1) for a in pulse]
        p_pad = _next_pow2(flat[0].shape[0])
        pulse_in = [jnp.pad(a, (0, p_pad - a.shape[0])) for a in flat]
        pulse_specs = [pl.BlockSpec((p_pad,), lambda i: (0,))] * 7
    row = pl.BlockSpec((None, n_coils * width), lambda i: (i, 0))
    out_shape = (jax.ShapeDtypeStruct((n_blocks, n_coils * width), jnp.float32),) * 2 + \
        (jax.ShapeDtypeStruct((n,), jnp.float32),) * 3
    kern = functools.partial(_kernel, n_steps=n_steps, n_coils=n_coils, coils=coils, width=width, sincos=sincos,
                             compensate=compensate, reuse=reuse, n_pulse=n_pulse)
    sre, sim, mx, my, mz = pl.pallas_call(
        kern,
        grid=(n_blocks,),
        in_specs=[per_spin] * len(spin_in) + [whole] * len(steps) + pulse_specs + [pl.BlockSpec((1,), lambda i: (0,))],
        out_specs=[row, row, per_spin, per_spin, per_spin],
        out_shape=out_shape,
        interpret=interpret,
        # the Triton backend (JAX's other GPU backend, Mosaic GPU, targets Hopper TMA
        # pipelines; this kernel is a plain loop over registers)
        compiler_params=pl_triton.CompilerParams(num_warps=num_warps),
        name="mritwin_bloch_steps",
    )(*spin_in, *steps, *pulse_in, n_run)
    sig = jax.lax.complex(sre.sum(0), sim.sum(0)).reshape(n_coils, width)[:, :n_slots]
    return sig, jnp.stack([mx, my, mz], -1)


def stepped_xla(spins: Spins, steps: tuple, pulse=None, *, n_slots: int):
    """The XLA reference of the kernel (same inputs and outputs), built from the engine's
    step kernels (a prepared pulse: `prepared_rf.prepare_pulse`, `apply_pulse`); reverse
    mode is segment-checkpointed. Used for the kernel's derivatives and in tests."""
    from .engine import _segmented_scan
    from .prepared_rf import PreparedPulse, apply_pulse, prepare_pulse

    dt, kx, ky, kz, bre, bim, c0, kind, slot, spoil = steps
    n_coils = 1 if spins.coil_re is None else spins.coil_re.shape[0]
    spins = spins._replace(extent=kernels.spin_extent(spins))  # once, not per RF step (`kernels.rf_step`)
    zero = jnp.zeros_like(spins.pd)
    no_map = () if pulse is None else PreparedPulse(((zero,) * 3,) * 3, (zero,) * 3)

    def prepare(row):  # the map of the pulse in row ``row`` of the table
        p_dt, p_kx, p_ky, p_kz, p_re, p_im, p_c0 = (jnp.asarray(a)[row] for a in pulse)
        return prepare_pulse(spins, p_dt, jnp.stack([p_kx, p_ky, p_kz], -1), jax.lax.complex(p_re, p_im), p_c0)

    def body(carry, st):
        m, mp = carry
        dt, slot, spoil, kind, kx, ky, kz, bre, bim, c0 = st
        k = (kx, ky, kz)
        keep = spoil == 0
        m = State(jnp.where(keep, m.mx, 0.0), jnp.where(keep, m.my, 0.0), m.mz)
        branches = [lambda m, mp: (kernels.rf_step(spins, m, dt, k, jax.lax.complex(bre, bim), c0), mp),
                    lambda m, mp: (kernels.free_step(spins, m, dt, k, c0), mp)]
        if pulse is not None:
            branches += [lambda m, mp: (apply_pulse(m, mp, jax.lax.complex(bre, bim)), mp),
                         lambda m, mp: (m, prepare(dt.astype(jnp.int32)))]
        m, mp = jax.lax.switch(kind, branches, m, mp)
        sig = jnp.where(slot >= 0, kernels.receive(spins, m), jnp.zeros((n_coils,), jnp.complex64))
        return (m, mp), sig

    m0 = (State(zero, zero, spins.pd), no_map)
    # (the kind third: `_segmented_scan` pads with free steps of 0 s)
    (m, _), per_step = _segmented_scan(body, m0, (dt, slot, spoil, kind, kx, ky, kz, bre, bim, c0))
    # per-step signal -> slots (steps without a sample carry zeros and are dropped)
    sig = jnp.zeros((n_slots + 1, n_coils), per_step.dtype).at[jnp.where(slot >= 0, slot, n_slots)].add(per_step)
    return sig[:n_slots].T, jnp.stack([m.mx, m.my, m.mz], -1)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5, 6, 7, 8, 9))
def _signal(spins, steps, pulse, n_slots, block, interpret, num_warps, sincos, compensate, reuse):
    return _pallas_forward(spins, steps, pulse, n_slots=n_slots, block=block, interpret=interpret,
                           num_warps=num_warps, sincos=sincos, compensate=compensate, reuse=reuse)


@_signal.defjvp
def _signal_jvp(n_slots, block, interpret, num_warps, sincos, compensate, reuse, primals, tangents):
    return jax.jvp(functools.partial(stepped_xla, n_slots=n_slots), primals, tangents)


def pallas_signal(spins: Spins, steps: tuple, pulse=None, *, n_slots: int, block: int = DEFAULT_BLOCK,
                  interpret: bool | None = None, num_warps: int = DEFAULT_WARPS, sincos: str = "libdevice",
                  compensate: bool = False, reuse: bool = True):
    """Run the fused kernel on one chunk of spins.

    Args:
        spins: one chunk's `Spins` (fields (n,), coils (n_coils, n)); ``n`` a multiple of
            ``block``; float32.
        steps: the 10 per-step arrays of `_step_arrays` (n_steps,).
        pulse: the prepared pulses' raster steps at phase 0, 7 arrays (P, L) (dt [s], k
            [1/m] x, y, z, B1 integral [cycles] re, im, common phase c0 [cycles]; rows
            zero padded), when ``steps`` has steps of kinds `PREPARE` and `PREPARED`
            (`kernel_steps`); else None.
        n_slots: number of ADC samples (``slot`` values run over ``0 .. n_slots - 1``, -1
            for steps without a sample).
        block: spins per program (a power of two).
        interpret: run in Pallas's interpreter; default: on the CPU.
        num_warps: GPU warps per program (Triton).
        sincos: ``"libdevice"`` (``jnp.sin``/``jnp.cos``, CUDA's libdevice on a GPU: what
            was measured) or ``"poly"`` (the XLA engine's float32 polynomial, fewer
            instructions per step; an experiment for `benchmarks/bench_pallas.py`).
        compensate: add each step's change by compensated (Kahan) summation (three more
            registers per spin; float32 about 2x closer to float64 on long stepped
            sequences of slowly relaxing spins; an experiment for
            `benchmarks/bench_pallas.py --compensate`).
        reuse: keep a step's rotation and relaxation factors in registers and recompute
            them only where its ``dt``, gradient and phase differ from the previous
            step's of the same kind (`_fresh`); the same result bit for bit, a sine, a
            cosine and two ``expm1`` fewer per repeated readout step. ``False`` computes
            them at every step (for `benchmarks/bench_pallas.py --reuse`).

    Returns:
        ``(signal, magnetization)``: (n_coils, n_slots) complex64 and (n, 3).
    """
    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    if block < 32 or block & (block - 1):
        raise ValueError(f"pallas kernel: block must be a power of two >= 32, got {block}")
    if sincos not in SINCOS:
        raise ValueError(f"pallas kernel: sincos must be one of {SINCOS}, got {sincos!r}")
    return _signal(spins, steps, pulse, int(n_slots), int(block), bool(interpret), int(num_warps), sincos,
                   bool(compensate), bool(reuse))


# ---- the engine's entry: chunks, devices ---------------------------------------------

_OUT_BYTES = 1 << 28  # at most 256 MB of per-block partial signals per chunk


def pallas_chunk(chunk: int, n_coils: int, n_slots: int, block: int = DEFAULT_BLOCK) -> int:
    """Spins per chunk for the kernel: ``chunk`` rounded up to a multiple of ``block``,
    capped so that the per-block partial signals, ``(chunk / block) · n_coils ·
    width · 8`` bytes, stay under 256 MB."""
    width = _next_pow2(max(n_slots, 1))
    cap = max(1, _OUT_BYTES // (8 * n_coils * width)) * block
    return min(-(-chunk // block) * block, cap)


def kernel_steps(dseq, *, spoiling: bool = True, prepare: bool = True):
    """Host side: the kernel's inputs for a stepped `DiscreteSequence` (one step per ADC
    sample).

    With ``prepare``, repeated RF pulses (each played at least `prepared_rf.MIN_REPEATS`
    times with the same raster, durations, gradients and common phases, any phase offset;
    at least two raster steps; `prepared_rf.plan_prepared_rf`) become one step of kind
    `PREPARED` per play. The kernel keeps one pulse's map at a time: a `PREPARE` step
    before each run of plays of one pulse (among the prepared plays, in time order)
    computes it, at the cost of stepping the pulse on four vectors. So pulses join in the
    order of the steps they save while every joined pulse's plays still come in runs of
    `prepared_rf.MIN_REPEATS` or more on average (sequential multi-slice: one run per
    slice's pulse; interleaved slices, whose pulses alternate: only the first). ``spoiling``:
    keep the sequence's ideal-spoiling marks.

    Returns:
        ``(steps, pulse, slot_of_sample, n_slots)``: the 10 arrays of `_step_arrays`, the
        prepared pulses' 7 raster arrays (dt, kx, ky, kz, B1 re, B1 im, c0 at phase 0;
        float32 (P, L), zero padded) or None, and `step_slots`'s.
    """
    from .prepared_rf import MIN_REPEATS, plan_prepared_rf

    def arrays(dseq):
        slot, slot_of_sample, n_slots = step_slots(np.asarray(dseq.sample), np.asarray(dseq.out_index))
        spoil = dseq.spoil if spoiling else np.zeros(np.shape(dseq.dt), bool)
        return _step_arrays(dseq.dt, dseq.kstep, dseq.b1dt, dseq.kind, slot, spoil, dseq.cyc0), slot_of_sample, n_slots

    short, table = plan_prepared_rf(dseq, PREPARED) if prepare else (dseq, None)
    if table is None:
        steps, slot_of_sample, n_slots = arrays(dseq)
        return steps, None, slot_of_sample, n_slots
    m = short.n_real_steps
    played = np.asarray(short.count)[:m][np.asarray(short.kind)[:m] == PREPARED]  # pulses, in time order
    keep = [0]
    for p in range(1, table.dt.shape[0]):
        order = played[np.isin(played, keep + [p])]
        starts = np.r_[True, order[1:] != order[:-1]]
        if all(np.sum(order == q) >= MIN_REPEATS * np.sum(starts & (order == q)) for q in keep + [p]):
            keep.append(p)
    if len(keep) < table.dt.shape[0]:
        short, table = plan_prepared_rf(dseq, PREPARED, keep=keep)
        m = short.n_real_steps
    steps, slot_of_sample, n_slots = arrays(short)
    # a PREPARE step (the pulse's row in ``dt``) before each run of plays of one pulse
    kind, count = np.asarray(short.kind)[:m], np.asarray(short.count)[:m]
    at = np.nonzero(kind == PREPARED)[0]
    first = at[np.r_[True, count[at][1:] != count[at][:-1]]]
    steps = [np.asarray(a) for a in steps]
    new = [np.zeros(first.size, a.dtype) for a in steps]
    new[0] = count[first].astype(np.float32)  # dt: the row
    new[7][:] = PREPARE
    new[8][:] = -1  # no sample
    steps = tuple(jnp.asarray(np.insert(a, first, v)) for a, v in zip(steps, new))
    f = np.float32
    pulse = (table.dt.astype(f), table.k[..., 0].astype(f), table.k[..., 1].astype(f), table.k[..., 2].astype(f),
             table.b1dt.real.astype(f), table.b1dt.imag.astype(f), table.c0.astype(f))
    return steps, pulse, slot_of_sample, n_slots


def step_slots(sample: np.ndarray, out_index: np.ndarray):
    """Host side: ``(slot, slot_of_sample, n_slots)``: each step's ADC slot (-1 without a
    sample) and, for each ADC sample of the engine's output, its slot."""
    sample = np.asarray(sample, bool)
    slot = np.where(sample, np.cumsum(sample) - 1, -1).astype(np.int32)
    out_index = np.asarray(out_index)
    if out_index.size and (out_index.max() >= sample.size or np.any(slot[out_index] < 0)):
        raise ValueError("kernel='pallas' needs a stepped sequence (one step per ADC sample); this "
                         "DiscreteSequence has ADC windows: discretize(..., windows=False)")
    return slot, slot[out_index].astype(np.int32), int(sample.sum())


@functools.partial(jax.jit, static_argnames=("n_slots", "block", "interpret", "want_mag", "mesh", "num_warps",
                                             "sincos", "compensate", "reuse"))
def pallas_core(spins: Spins, steps: tuple, slot_of_sample, demod, pulse=None, *, n_slots: int, block: int,
                interpret: bool, want_mag: bool, mesh=None, num_warps: int = DEFAULT_WARPS, sincos: str = "libdevice",
                compensate: bool = False, reuse: bool = True):
    """All chunks on all devices: ``spins`` fields (n_dev, chunks per device, chunk).
    Returns ((n_coils, n_adc) samples, (n_dev · n_chunks · chunk, 3) magnetization or None)."""
    from .engine import _TRACES

    _TRACES["core"] += 1
    n_coils = 1 if spins.coil_re is None else spins.coil_re.shape[2]

    def per_device(sp_dev):  # fields (chunks, chunk)
        def body(acc, sp):
            sig, mag = pallas_signal(sp, steps, pulse, n_slots=n_slots, block=block, interpret=interpret,
                                     num_warps=num_warps, sincos=sincos,
                                     compensate=compensate, reuse=reuse)
            return acc + sig, (mag if want_mag else None)

        return jax.lax.scan(body, jnp.zeros((n_coils, n_slots), jnp.complex64), sp_dev)

    if mesh is None:
        sig, mags = per_device(jax.tree_util.tree_map(lambda v: v[0], spins))
        mags = None if mags is None else mags[None]
    else:  # one program per device, the signal summed across them
        P = jax.sharding.PartitionSpec

        def local(sp):
            sig, mags = per_device(jax.tree_util.tree_map(lambda v: v[0], sp))
            sig = jax.lax.psum(sig, "spins")
            return (sig, mags[None]) if want_mag else sig

        out = jax.shard_map(local, mesh=mesh, in_specs=(P("spins"),), check_vma=False,
                            out_specs=(P(), P("spins")) if want_mag else P())(spins)
        sig, mags = out if want_mag else (out, None)
    samples = sig[:, slot_of_sample] * demod[None, :]
    mag = None if mags is None else mags.reshape(-1, 3)
    return samples, mag
