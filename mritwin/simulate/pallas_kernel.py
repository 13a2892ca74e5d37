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
factors stay in registers while its ``dt``, gradient and phase repeat (``reuse``), and
each repeated shaped pulse is stepped once, before the steps, into each spin's affine map
(a second kernel, `_prepare_kernel`; the maps in device memory), then applied whole at
every play (`kernel_steps`, ``Bloch(prepare_pulses=True)``). The steps are read as one
row of a packed table per step (`_step_table`).

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


# step kinds: an RF raster step, a free step, a play of a prepared pulse (`kernel_steps`)
RF, FREE, PREPARED = 0, 1, 2


def _step_arrays(dt, kstep, b1dt, kind, slot, spoil, cyc0):
    """The per-step inputs of the kernel: (dt, kx, ky, kz, b1 re, b1 im, c0) float32 and
    (kind, slot, spoil) int32, each (n_steps,). ``kind``: `RF`, `FREE` or `PREPARED` (a
    play of the prepared pulse in row ``dt`` of the pulse table; ``b1dt`` is its phase
    offset ``exp(iα)``)."""
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
    the kernel must compute: a free step's relaxation factors unless the previous free
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


_REAL_FIELDS, _INT_FIELDS = 8, 4  # a step's row in the kernel's table (padded to powers of two)


def _step_table(steps, reuse: bool):
    """The steps as the kernel reads them: a float32 table of rows ``(dt, kx, ky, kz, B1 re,
    B1 im, c0, 0)`` and an int32 table of rows ``(kind, slot, spoil, fresh)`` (`_fresh`'s
    mask, or 7 -- compute every factor -- without ``reuse``), each flattened and padded
    with zero rows to a power of two (Triton's blocks). A step then costs one address
    computation and loads at fixed offsets from it: with ten separate arrays each scalar
    took its own 64-bit address (~60 of the ~160 instructions of a readout step on sm_90)."""
    dt, kx, ky, kz, bre, bim, c0, kind, slot, spoil = steps[:10]
    n = dt.shape[0]
    fresh = _fresh(steps) if reuse else jnp.full((n,), _FREE_RELAX | _FREE_ROT | _RF_RELAX, jnp.int32)
    zero = jnp.zeros((n,), jnp.float32)
    real = jnp.stack([jnp.asarray(a, jnp.float32) for a in (dt, kx, ky, kz, bre, bim, c0)] + [zero], -1)
    ints = jnp.stack([jnp.asarray(a, jnp.int32) for a in (kind, slot, spoil, fresh)], -1)
    rows = _next_pow2(n)
    return tuple(jnp.pad(t, ((0, rows - n), (0, 0))).reshape(-1) for t in (real, ints))


# the kernel's sine and cosine: jnp.sin/cos (CUDA's libdevice), the XLA engine's float32
# polynomial (`kernels.sincos_half_cycle`), or `sincos_reduced` (the default)
SINCOS = ("libdevice", "poly", "reduced")
DEFAULT_SINCOS = "reduced"  # (benchmarks/RESULTS.md: fewer instructions than libdevice, float32 as close)


def _fit_eighth_sincos(n_sin: int = 3, n_cos: int = 4):
    """float32 coefficients of ``sin x = x + x³ P(x²)`` and ``cos x = 1 + x² Q(x²)`` on
    ``|x| <= π/4``, least squares weighted for relative error (on Chebyshev points)."""
    x = 0.25 * np.pi * np.cos(np.pi * (np.arange(4096) + 0.5) / 4096)
    x = x[x > 0]
    a = np.stack([x ** (2 * i) for i in range(n_sin)], 1) * (x ** 3 / np.sin(x))[:, None]
    p = np.linalg.lstsq(a, (np.sin(x) - x) / np.sin(x), rcond=None)[0]
    b = np.stack([x ** (2 * i) for i in range(n_cos)], 1) * (x ** 2 / np.cos(x))[:, None]
    q = np.linalg.lstsq(b, (np.cos(x) - 1) / np.cos(x), rcond=None)[0]
    return tuple(float(np.float32(c)) for c in p), tuple(float(np.float32(c)) for c in q)


_EIGHTH_SINCOS = _fit_eighth_sincos()


def sincos_reduced(y):
    """``(sin(2πy), cos(2πy))`` for ``|y| <= 1/2`` cycles, as libdevice reduces: folded
    to ``|z| <= 1/8`` cycle (both folds exact), then two short polynomials in ``x = 2πz``
    sharing the reduction (in float32 within 9e-8 of float64 over the half cycle, against
    2.1e-7 and 1.8e-7 for ``sin``/``cos`` of the rounded angle ``2πy``): about a fifth of
    the instructions of libdevice's separate ``sinf`` and ``cosf`` (the kernel's
    ``sincos="reduced"``)."""
    p, q = _EIGHTH_SINCOS
    one = jnp.ones_like(y)
    half = jnp.abs(y) > 0.25  # sin(2πy) = sin(2π(±1/2 - y)), cos changes sign
    y = jnp.where(half, jnp.where(y >= 0, 0.5, -0.5) * one - y, y)
    sg = jnp.where(y >= 0, one, -one)
    eighth = jnp.abs(y) > 0.125  # sin(2πy) = ±cos(2πz), cos(2πy) = ±sin(2πz), z = ±1/4 - y
    z = jnp.where(eighth, 0.25 * sg - y, y)
    x = _TWO_PI * z
    x2 = x * x
    sn, cs = x + x * x2 * kernels.horner(x2, p), 1.0 + x2 * kernels.horner(x2, q)
    s, c = jnp.where(eighth, sg * cs, sn), jnp.where(eighth, sg * sn, cs)
    return s, jnp.where(half, -c, c)


class _SpinArithmetic:
    """The per-spin arithmetic of a step, shared by the stepping kernel and the kernel
    that prepares pulses: the block's spin fields (``block``,) and the sine/cosine
    (``sincos``, see `SINCOS`).

    Each step computes the *change* of the magnetization and adds it: a microsecond step
    changes it by a few ulps, and a product form (``M cos θ``, ``M exp(-dt/T)``) rounds
    ``cos θ`` and ``exp(-dt/T)``, both within ulps of 1, the same way at every step of a
    repeated raster. So rotations use ``cos θ - 1 = -2 sin²(θ/2)`` (one sine/cosine of the
    half angle) and relaxation ``e = exp(-dt/T) - 1`` from ``expm1`` (``M e``, ``(Mz -
    M0) e``), as the XLA engine does with ``1 - exp(-dt/T)`` (`kernels.relaxation`,
    `kernels._rf_rotation`; the same numbers: negation is exact).
    """

    def __init__(self, x, y, z, pd, r1, r2, df, b1, sincos):
        self.x, self.y, self.z, self.pd, self.r1, self.r2, self.df, self.b1 = x, y, z, pd, r1, r2, df, b1
        self.sincos = sincos

    def sin_cos(self, ph):  # |ph| <= 1/2 cycles
        if self.sincos == "poly":
            return kernels.sincos_half_cycle(ph)
        if self.sincos == "reduced":
            return sincos_reduced(ph)
        return jnp.sin(_TWO_PI * ph), jnp.cos(_TWO_PI * ph)

    def decays(self, dt):
        """``exp(-dt/T2) - 1``, ``exp(-dt/T1) - 1`` (from ``expm1``; at most 0)."""
        return jnp.expm1(-dt * self.r2), jnp.expm1(-dt * self.r1)

    @staticmethod
    def relax_change(m, e2, e1, p):
        """Relaxation's change of ``m`` towards ``(0, 0, p)``, ``e2``, ``e1`` from `decays`:
        ``(mx e2, my e2, (mz - p) e1)``, equal bit for bit to ``-mx (1 - exp(-dt/T2))``
        and ``(p - mz) (1 - exp(-dt/T1))`` (negation is exact), without the negations a
        GPU spends an instruction on (``0 - x``: the compiler may not assume ``-0 = 0``)."""
        return m[0] * e2, m[1] * e2, (m[2] - p) * e1

    @staticmethod
    def plus(m, d):
        return m[0] + d[0], m[1] + d[1], m[2] + d[2]

    def rf_rotation(self, dt, kx, ky, kz, bre, bim, c0):
        """An RF step's rotation per spin: the effective field ``w`` [cycles], ``sin θ /
        |w|``, ``(1 - cos θ) / |w|²`` and ``cos θ - 1``."""
        wx = self.b1 * bre
        wy = self.b1 * bim
        wz = kx * self.x + ky * self.y + kz * self.z + self.df * dt + c0  # cycles
        n2 = wx * wx + wy * wy + wz * wz
        big = n2 > 1e-6
        inv = jnp.where(big, jax.lax.rsqrt(jnp.where(big, n2, 1.0)), 0.0)
        h = 0.5 * n2 * inv  # θ/2 [cycles]
        h = h - jnp.floor(h + 0.5)
        sh, chh = self.sin_cos(h)
        sh2 = sh * sh
        q = (_TWO_PI * _TWO_PI) * n2  # below |w|² = 1e-6 the ratios' Taylor series
        a = jnp.where(big, 2.0 * sh * chh * inv, _TWO_PI * (1.0 - q / 6.0 * (1.0 - q / 20.0)))  # sin θ / |w|
        b = jnp.where(big, 2.0 * sh2 * (inv * inv),  # (1 - cos θ) / |w|²
                      0.5 * (_TWO_PI * _TWO_PI) * (1.0 - q / 12.0 * (1.0 - q / 30.0)))
        cm1 = jnp.where(big, -2.0 * sh2, -0.5 * q * (1.0 - q / 12.0 * (1.0 - q / 30.0)))  # cos θ - 1
        return wx, wy, wz, a, b, cm1

    def rf_change(self, rot, m, e2, e1, p):
        """An RF step's change of ``m``: relax dt/2 (``e2``, ``e1`` from `decays`, towards
        ``(0, 0, p)``), rotate (``rot`` from `rf_rotation`), relax dt/2 (the engine's
        Strang step)."""
        wx, wy, wz, a, b, cm1 = rot
        ch1 = self.relax_change(m, e2, e1, p)
        mx, my, mz = self.plus(m, ch1)
        wdm = (wx * mx + wy * my + wz * mz) * b
        cx = wy * mz - wz * my
        cy = wz * mx - wx * mz
        cz = wx * my - wy * mx
        ch2 = (mx * cm1 - cx * a + wx * wdm, my * cm1 - cy * a + wy * wdm, mz * cm1 - cz * a + wz * wdm)
        ch3 = self.relax_change(self.plus((mx, my, mz), ch2), e2, e1, p)
        return ch1[0] + ch2[0] + ch3[0], ch1[1] + ch2[1] + ch3[1], ch1[2] + ch2[2] + ch3[2]

    def rotation(self, dt, kx, ky, kz, c0):
        """``sin θ``, ``cos θ - 1`` of a free step's precession (gradients, off-resonance,
        the step's common phase)."""
        ph = kx * self.x + ky * self.y + kz * self.z + self.df * dt + c0  # cycles
        ph = ph - jnp.floor(ph + 0.5)
        sh, chh = self.sin_cos(0.5 * ph)
        return 2.0 * sh * chh, -2.0 * sh * sh

    @staticmethod
    def transverse_factors(s, cm1, e2):
        """A free step's precession (``s``, ``cm1`` from `rotation`) and transverse
        relaxation (``e2`` from `decays`) as one change of ``mx + i my``: ``a = (1 + cm1)
        (1 + e2) - 1`` and ``b = s (1 + e2)``, each computed from the small quantities
        (``cm1 + (cm1 e2 + e2)``), so that no factor near 1 is rounded."""
        return cm1 + (cm1 * e2 + e2), s * e2 + s

    def free_change(self, m, a, b, e1):
        """A free step's change of ``m``: precess and relax the transverse part (``a``,
        ``b`` from `transverse_factors`), relax ``mz`` (``e1`` from `decays`)."""
        mx, my, mz = m
        return mx * a + my * b, my * a - mx * b, (mz - self.pd) * e1

    def pulse_map(self, raster, n):
        """A pulse's affine map ``M -> A M + b``: its columns ``A e_x, A e_y, A e_z, b``,
        each (mx, my, mz), stepped from the unit vectors and the zero state through the
        first ``n`` raster steps ``raster(j) = (dt, kx, ky, kz, B1 re, B1 im, c0)``, each
        step's change added by compensated (Kahan) summation, as
        `prepared_rf.prepare_pulse` does. Returns 12 arrays, column after column."""
        zero, one = jnp.zeros_like(self.pd), jnp.ones_like(self.pd)
        target = (zero, zero, zero, self.pd)  # relaxation's target: none for the linear part

        def step(j, carry):
            vs, errs = carry[:4], carry[4:]
            dt, *rest = raster(j)
            rot = self.rf_rotation(dt, *rest)
            e2, e1 = self.decays(0.5 * dt)
            out_v, out_e = (), ()
            for v, e, p in zip(vs, errs, target):
                u = tuple(c - w for c, w in zip(self.rf_change(rot, v, e2, e1, p), e))
                t = self.plus(v, u)
                out_v += (t,)
                out_e += (tuple((a - b) - c for a, b, c in zip(t, v, u)),)
            return out_v + out_e

        start = ((one, zero, zero), (zero, one, zero), (zero, zero, one), (zero, zero, zero))
        cols = jax.lax.fori_loop(0, n, step, start + ((zero, zero, zero),) * 4)[:4]
        return sum(cols, ())

    @staticmethod
    def pulse_change(c, s, m, cols):
        """A prepared pulse's change of ``m`` at phase offset ``exp(iα) = c + i s``: ``Rz(α)
        (A Rz(-α) M + b) - M``; ``cols`` from `pulse_map`."""
        mx, my, mz = m
        u = (mx * c + my * s, my * c - mx * s, mz)
        v = tuple(cols[i] * u[0] + cols[3 + i] * u[1] + cols[6 + i] * u[2] + cols[9 + i] for i in range(3))
        return v[0] * c - v[1] * s - mx, v[1] * c + v[0] * s - my, v[2] - mz


def _prepare_kernel(*refs, length: int, sincos: str):
    """One program: one prepared pulse's map (the grid's second index: the pulse table's
    row) for one block of spins. ``refs``: the 8 spin fields, the table's 7 raster arrays
    (rows of ``length`` steps, row after row), the rows' lengths to their last step;
    outputs: the 12 columns of `_SpinArithmetic.pulse_map` (``block``,) each."""
    from jax.experimental import pallas as pl

    ops = _SpinArithmetic(*(r[...] for r in refs[:8]), sincos)
    raster_r, len_r, outs = refs[8:15], refs[15], refs[16:]
    row = pl.program_id(1)
    base = row * length
    cols = ops.pulse_map(lambda j: tuple(r[base + j] for r in raster_r), len_r[row])
    for o, c in zip(outs, cols):
        o[...] = c


def _kernel(*refs, n_steps: int, n_coils: int, coils: bool, width: int, sincos: str = DEFAULT_SINCOS,
            compensate: bool = False, reuse: bool = False, prepared: bool = False):
    """One program: ``block`` spins through all steps. ``refs``: the 8 spin fields, the
    2 n_coils coil rows (re, im) when ``coils``, the step table (`_step_table`: float32
    and int32 rows), the 12 columns of the prepared pulses' maps (`_prepare_maps`: this block's
    row, pulse after pulse) when ``prepared``, the loop's length (`_loop_length`, at most
    ``n_steps``); outputs: the block's signal (re, im) of ``n_coils * width`` values, then
    mx, my, mz. ``sincos``: see `SINCOS`.

    The step arithmetic is `_SpinArithmetic`'s. With ``compensate`` the changes are added
    by compensated (Kahan) summation, carrying each component's rounding error (three more
    registers, four more operations per component and step).

    With ``reuse`` the program keeps each spin's last free-step factors (the transverse
    change ``a``, ``b`` of `_SpinArithmetic.transverse_factors`, the relaxation's ``e2``,
    ``e1``) and its last RF half-step factors in registers, and computes them only at the
    steps `_fresh` marks: in a readout of equal samples a free step is then six
    multiply-adds and three additions per spin instead of a sine, a cosine and two
    ``expm1`` (the same for every spin of the launch, so the branch never diverges).

    A step of kind `PREPARED` plays the prepared pulse of row ``dt`` of the pulse table:
    it loads the block's 12 map columns of that pulse from memory (written before the loop
    by `_prepare_kernel`) and applies them with the play's phase offset ``exp(iα)`` (its
    B1 entry): ``Rz(α) (A Rz(-α) M + b)``. No register holds a map between plays.
    """
    from jax.experimental import pallas as pl

    nc = 2 * n_coils if coils else 0
    ops = _SpinArithmetic(*(r[...] for r in refs[:8]), sincos)
    pd = ops.pd
    zero = jnp.zeros_like(pd)
    block = pd.shape[0]
    crefs = refs[8:8 + nc]
    real_r, int_r = refs[8 + nc:10 + nc]  # the step table (`_step_table`)
    at = 10 + nc
    map_r = refs[at:at + 12] if prepared else None
    at += 12 if prepared else 0
    n_run = refs[at][0]
    sre_r, sim_r, mx_o, my_o, mz_o = refs[at + 1:]
    cre = [crefs[2 * c][...] for c in range(n_coils)] if coils else None
    cim = [crefs[2 * c + 1][...] for c in range(n_coils)] if coils else None

    # (the output rows are not initialized: every slot below n_slots is written by exactly
    # one step, and the padding up to ``width`` is cut off afterwards)

    n_state = 6 if compensate else 3

    def spoiled(c):
        return (zero, zero, c[2]) + ((zero, zero, c[5]) if compensate else ())

    def body(i, carry):
        # carry: (mx, my, mz), their rounding errors with ``compensate``, the reused factors
        # (free a, b: `_SpinArithmetic.transverse_factors`, e2, e1; RF e2, e1: `_SpinArithmetic.decays`) with ``reuse``
        # the step's rows: one address each, the fields at fixed offsets from it; the float
        # row's fields are loaded in the branches that use them (a readout step whose factors
        # are all reused reads only the int row; benchmarks/RESULTS.md counts the sm_90 instructions)
        def field(j):  # 0 dt, 1-3 k, 4-5 B1 re/im, 6 c0
            return real_r[i * _REAL_FIELDS + j]

        def precession():  # a free step's (dt, kx, ky, kz, c0)
            return tuple(field(j) for j in (0, 1, 2, 3, 6))

        kind, slot, spoil, fresh = (int_r[i * _INT_FIELDS + j] for j in range(4))
        cache = carry[n_state:]
        # ideal spoiling (rare: a branch, not 4 products): no transverse magnetization, nor
        # its rounding error
        carry = jax.lax.cond(spoil != 0, spoiled, lambda c: c, carry[:n_state])
        m = carry[:3]
        if reuse:
            def update(bit, compute, old):
                return jax.lax.cond((fresh & bit) != 0, compute, lambda: old)

            def updated(cache):
                # (a step with new relaxation factors has a new rotation too: `_fresh`)
                relax = update(_FREE_RELAX, lambda: ops.decays(field(0)), cache[2:4])
                return (update(_FREE_ROT, lambda: ops.transverse_factors(*ops.rotation(*precession()), relax[0]),
                               cache[0:2])
                        + relax + update(_RF_RELAX, lambda: ops.decays(0.5 * field(0)), cache[4:6]))

            # one test for the common case (a repeated step: nothing new)
            cache = jax.lax.cond(fresh != 0, updated, lambda c: c, cache)

            def free_factors():
                return cache[0], cache[1], cache[3]

            def rf_decays():
                return cache[4:]
        else:  # computed in the step's branch
            def free_factors():
                e2, e1 = ops.decays(field(0))
                return ops.transverse_factors(*ops.rotation(*precession()), e2) + (e1,)

            def rf_decays():
                return ops.decays(0.5 * field(0))

        def stepped(m):
            return jax.lax.cond(
                kind == RF,
                lambda m: ops.rf_change(ops.rf_rotation(*(field(j) for j in range(7))), m, *rf_decays(), pd),
                lambda m: ops.free_change(m, *free_factors()), m)

        def play(m):  # the prepared pulse of row ``dt``
            at = field(0).astype(jnp.int32) * block
            return ops.pulse_change(field(4), field(5), m, tuple(r[pl.ds(at, block)] for r in map_r))

        d = jax.lax.cond(kind == PREPARED, play, stepped, m) if prepared else stepped(m)
        if compensate:  # Kahan: the error of the previous additions goes into this change
            d = tuple(u - v for u, v in zip(d, carry[3:]))
            t = ops.plus(m, d)
            carry = t + tuple((u - v) - w for u, v, w in zip(t, m, d))
            m = t
        else:
            carry = m = ops.plus(m, d)

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
        return carry + tuple(cache)

    m0 = (zero, zero, pd) + (zero,) * ((3 if compensate else 0) + (6 if reuse else 0))
    mx, my, mz = jax.lax.fori_loop(0, jnp.minimum(n_run, n_steps), body, m0)[:3]
    mx_o[...] = mx
    my_o[...] = my
    mz_o[...] = mz


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _prepare_maps(spin_in, pulse, *, block: int, interpret: bool, sincos: str):
    """The prepared pulses' maps for every block of spins (`_prepare_kernel`: one program
    per block and pulse, one spin per GPU thread: stepping four vectors with their rounding
    errors takes 72-79 registers per thread on sm_90, 128 with two spins per thread --
    ptxas of CUDA 13.4, `benchmarks/kernel_sass.py`). ``spin_in``: the 8 spin fields (n,) float32; ``pulse``: the 7 raster
    arrays (P, L). Returns 12 arrays (n / block, P' · block), P' = P rounded up to a
    power of two: block ``b``'s column ``c`` of pulse ``p`` is ``maps[c][b, p · block:(p +
    1) · block]`` (the rows past P are not written)."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as pl_triton

    n = spin_in[0].shape[0]
    n_blocks = n // block
    n_rows, length = (int(s) for s in pulse[0].shape)
    rows_pad = _next_pow2(n_rows)
    busy = jnp.asarray(pulse[0]) != 0  # rows are zero padded: each runs to its last step
    lengths = jnp.max(jnp.where(busy, jnp.arange(1, length + 1), 0), axis=1).astype(jnp.int32)
    lengths = jnp.pad(lengths, (0, rows_pad - n_rows))
    raster = [jnp.asarray(a, jnp.float32).reshape(-1) for a in pulse]
    r_pad = _next_pow2(raster[0].shape[0])  # (Triton blocks are powers of two)
    raster = [jnp.pad(a, (0, r_pad - a.shape[0])) for a in raster]
    return pl.pallas_call(
        functools.partial(_prepare_kernel, length=length, sincos=sincos),
        grid=(n_blocks, n_rows),
        in_specs=[pl.BlockSpec((block,), lambda i, p: (i,))] * 8
        + [pl.BlockSpec((r_pad,), lambda i, p: (0,))] * 7
        + [pl.BlockSpec((rows_pad,), lambda i, p: (0,))],
        out_specs=[pl.BlockSpec((None, block), lambda i, p: (i, p))] * 12,
        out_shape=[jax.ShapeDtypeStruct((n_blocks, rows_pad * block), jnp.float32)] * 12,
        interpret=interpret,
        compiler_params=pl_triton.CompilerParams(num_warps=block // 32),
        name="mritwin_prepare_pulses",
    )(*spin_in, *raster, lengths)


def _pallas_forward(spins: Spins, steps: tuple, pulse=None, *, n_slots: int, block: int, interpret: bool,
                    num_warps: int = DEFAULT_WARPS, sincos: str = DEFAULT_SINCOS, compensate: bool = False,
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
    n_run = _loop_length(steps)
    table = _step_table(steps, reuse)
    maps, map_specs = [], []
    if pulse is not None:  # the prepared pulses' maps, for every block (one launch before the steps)
        maps = _prepare_maps(spin_in[:8], pulse, block=block, interpret=interpret, sincos=sincos)
        map_specs = [pl.BlockSpec((None, maps[0].shape[1]), lambda i: (i, 0))] * 12
    row = pl.BlockSpec((None, n_coils * width), lambda i: (i, 0))
    out_shape = (jax.ShapeDtypeStruct((n_blocks, n_coils * width), jnp.float32),) * 2 + \
        (jax.ShapeDtypeStruct((n,), jnp.float32),) * 3
    kern = functools.partial(_kernel, n_steps=n_steps, n_coils=n_coils, coils=coils, width=width, sincos=sincos,
                             compensate=compensate, reuse=reuse, prepared=pulse is not None)
    sre, sim, mx, my, mz = pl.pallas_call(
        kern,
        grid=(n_blocks,),
        in_specs=[per_spin] * len(spin_in) + [pl.BlockSpec(t.shape, lambda i: (0,)) for t in table] + map_specs
        + [pl.BlockSpec((1,), lambda i: (0,))],
        out_specs=[row, row, per_spin, per_spin, per_spin],
        out_shape=out_shape,
        interpret=interpret,
        # the Triton backend (JAX's other GPU backend, Mosaic GPU, targets Hopper TMA
        # pipelines; this kernel is a plain loop over registers)
        compiler_params=pl_triton.CompilerParams(num_warps=num_warps),
        name="mritwin_bloch_steps",
    )(*spin_in, *table, *maps, n_run)
    sig = jax.lax.complex(sre.sum(0), sim.sum(0)).reshape(n_coils, width)[:, :n_slots]
    return sig, jnp.stack([mx, my, mz], -1)


def stepped_xla(spins: Spins, steps: tuple, pulse=None, *, n_slots: int):
    """The XLA reference of the kernel (same inputs and outputs), built from the engine's
    step kernels (a prepared pulse: `prepared_rf.prepare_pulse`, `apply_pulse`); reverse
    mode is segment-checkpointed. Used for the kernel's derivatives and in tests."""
    from .engine import _segmented_scan
    from .prepared_rf import apply_pulse, prepare_pulse

    dt, kx, ky, kz, bre, bim, c0, kind, slot, spoil = steps
    n_coils = 1 if spins.coil_re is None else spins.coil_re.shape[0]
    spins = spins._replace(extent=kernels.spin_extent(spins))  # once, not per RF step (`kernels.rf_step`)
    zero = jnp.zeros_like(spins.pd)

    def prepare(row):  # the map of the pulse in row ``row`` of the table
        p_dt, p_kx, p_ky, p_kz, p_re, p_im, p_c0 = (jnp.asarray(a)[row] for a in pulse)
        return prepare_pulse(spins, p_dt, jnp.stack([p_kx, p_ky, p_kz], -1), jax.lax.complex(p_re, p_im), p_c0)

    # every prepared pulse's map before the steps, as the kernel does (`_prepare_maps`)
    maps = None if pulse is None else jax.vmap(prepare)(jnp.arange(pulse[0].shape[0]))

    def body(m, st):
        dt, slot, spoil, kind, kx, ky, kz, bre, bim, c0 = st
        k = (kx, ky, kz)
        keep = spoil == 0
        m = State(jnp.where(keep, m.mx, 0.0), jnp.where(keep, m.my, 0.0), m.mz)
        branches = [lambda m: kernels.rf_step(spins, m, dt, k, jax.lax.complex(bre, bim), c0),
                    lambda m: kernels.free_step(spins, m, dt, k, c0)]
        if maps is not None:  # a play of the pulse in row ``dt``
            branches.append(lambda m: apply_pulse(m, jax.tree_util.tree_map(lambda a: a[dt.astype(jnp.int32)], maps),
                                                  jax.lax.complex(bre, bim)))
        m = jax.lax.switch(kind, branches, m)
        sig = jnp.where(slot >= 0, kernels.receive(spins, m), jnp.zeros((n_coils,), jnp.complex64))
        return m, sig

    m0 = State(zero, zero, spins.pd)
    # (the kind third: `_segmented_scan` pads with free steps of 0 s)
    m, per_step = _segmented_scan(body, m0, (dt, slot, spoil, kind, kx, ky, kz, bre, bim, c0))
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
                  interpret: bool | None = None, num_warps: int = DEFAULT_WARPS, sincos: str = DEFAULT_SINCOS,
                  compensate: bool = False, reuse: bool = True):
    """Run the fused kernel on one chunk of spins.

    Args:
        spins: one chunk's `Spins` (fields (n,), coils (n_coils, n)); ``n`` a multiple of
            ``block``; float32.
        steps: the 10 per-step arrays of `_step_arrays` (n_steps,).
        pulse: the prepared pulses' raster steps at phase 0, 7 arrays (P, L) (dt [s], k
            [1/m] x, y, z, B1 integral [cycles] re, im, common phase c0 [cycles]; rows
            zero padded), when ``steps`` has steps of kind `PREPARED` (`kernel_steps`);
            else None. Their maps take 48 bytes per spin and pulse of device memory.
        n_slots: number of ADC samples (``slot`` values run over ``0 .. n_slots - 1``, -1
            for steps without a sample).
        block: spins per program (a power of two).
        interpret: run in Pallas's interpreter; default: on the CPU.
        num_warps: GPU warps per program (Triton).
        sincos: the sine and cosine of the rotations: ``"reduced"`` (default,
            `sincos_reduced`: libdevice's reduction to an eighth of a cycle, then two
            short polynomials sharing it; float32 as close to float64 as libdevice and
            about a fifth of its instructions), ``"libdevice"`` (``jnp.sin``/``jnp.cos``,
            CUDA's libdevice on a GPU: what the 2026-12-04 GPU run measured) or ``"poly"``
            (the XLA engine's float32 polynomial: fewest instructions, about twice the
            float32 error). `benchmarks/bench_pallas.py --sincos` times them.
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

_OUT_BYTES = 1 << 28  # at most 256 MB of per-block partial signals and pulse maps per chunk


def pallas_chunk(chunk: int, n_coils: int, n_slots: int, block: int = DEFAULT_BLOCK, n_pulses: int = 0) -> int:
    """Spins per chunk for the kernel: ``chunk`` rounded up to a multiple of ``block``,
    capped so that the per-block partial signals, ``(chunk / block) · n_coils · width ·
    8`` bytes, and the maps of ``n_pulses`` prepared pulses, ``chunk · 48 ·
    n_pulses'`` bytes (``n_pulses'``: rounded up to a power of two), stay under 256 MB."""
    width = _next_pow2(max(n_slots, 1))
    per_block = 8 * n_coils * width + (48 * _next_pow2(n_pulses) * block if n_pulses else 0)
    cap = max(1, _OUT_BYTES // per_block) * block
    return min(-(-chunk // block) * block, cap)


def kernel_steps(dseq, *, spoiling: bool = True, prepare: bool = True):
    """Host side: the kernel's inputs for a stepped `DiscreteSequence` (one step per ADC
    sample).

    With ``prepare``, repeated RF pulses (each played at least `prepared_rf.MIN_REPEATS`
    times with the same raster, durations, gradients and common phases, any phase offset;
    at least two raster steps; up to `prepared_rf.MAX_PULSES` shapes:
    `prepared_rf.plan_prepared_rf`) become one step of kind `PREPARED` per play, its
    ``dt`` the pulse's row in the table. Their maps are computed for every spin before
    the steps (`_prepare_maps`), so plays of different pulses may come in any order
    (interleaved slices, spin echoes, inversions). ``spoiling``: keep the sequence's
    ideal-spoiling marks.

    Returns:
        ``(steps, pulse, slot_of_sample, n_slots)``: the 10 arrays of `_step_arrays`, the
        prepared pulses' 7 raster arrays (dt, kx, ky, kz, B1 re, B1 im, c0 at phase 0;
        float32 (P, L), zero padded) or None, and `step_slots`'s.
    """
    from .prepared_rf import plan_prepared_rf

    short, table = plan_prepared_rf(dseq, PREPARED) if prepare else (dseq, None)
    slot, slot_of_sample, n_slots = step_slots(np.asarray(short.sample), np.asarray(short.out_index))
    spoil = short.spoil if spoiling else np.zeros(np.shape(short.dt), bool)
    dt = np.asarray(short.dt)
    if table is not None:  # a play's dt: its pulse's row
        played = np.asarray(short.kind) == PREPARED
        dt = np.where(played, np.asarray(short.count), dt)
    steps = _step_arrays(dt, short.kstep, short.b1dt, short.kind, slot, spoil, short.cyc0)
    if table is None:
        return steps, None, slot_of_sample, n_slots
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
                interpret: bool, want_mag: bool, mesh=None, num_warps: int = DEFAULT_WARPS,
                sincos: str = DEFAULT_SINCOS, compensate: bool = False, reuse: bool = True):
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
