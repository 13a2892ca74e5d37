"""Pure Bloch step kernels, vectorized over a chunk of spins.

State: ``(mx, my, mz)``, each (n,) — magnetization in units of proton density (the
equilibrium of spin ``j`` is ``(0, 0, pd_j)``). Frame: left-handed rotating frame,
``dM/dt = γ M × B`` with ``B = (Re B1, Im B1, G·r + Δf/γ̄)``, so free precession is
``Mxy(t) = Mxy(0) exp(-i 2π Δf t) exp(-t/T2)``.

All angles are carried in *cycles* and multiplied by 2π once (``kstep`` in 1/m,
``b1dt`` in cycles): ``φ = 2π (k·r + Δf dt)``.

Accuracy
--------
- Free precession and window steps are exact (rotation about z and relaxation commute).
- RF steps use Strang splitting: relaxation for ``dt/2``, the exact rotation about the
  step's constant effective field, relaxation for ``dt/2``. The splitting error is
  ``O(dt³ |ω| / T)`` per step, so second order in the RF step length (tests show the
  order against a matrix-exponential reference). The B1 and gradient of a step are
  their exact averages over the step.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

TWO_PI = 2.0 * jnp.pi


class Spins(NamedTuple):
    """Per-spin parameters of one chunk, each (n,) unless stated."""

    x: jax.Array
    y: jax.Array
    z: jax.Array
    pd: jax.Array
    r1: jax.Array  # 1/T1 [1/s], 0 for T1 = inf
    r2: jax.Array  # 1/T2 [1/s]
    df: jax.Array  # off-resonance [Hz]
    b1: jax.Array  # B1+ scale [1]
    coil_re: jax.Array | None  # (n_coils, n) or None for a single uniform coil
    coil_im: jax.Array | None
    diffusion: jax.Array | None = None  # D [m^2/s] when the analytic diffusion option is on
    # window groups (`window_step`): each spin's group (n,) int32, and the groups'
    # (x, y, z, Δf, R2) (5, G)
    group: jax.Array | None = None
    group_params: jax.Array | None = None
    # (G, M) int32: each window group's members, padded with the index n (a zero); the
    # groups' sums are then gathers (`window_weights`), else a segment sum over ``group``
    group_members: jax.Array | None = None
    # RF groups (`prepared_rf.prepare_pulse_grouped`): each spin's group (n,) int32, and the
    # groups' (x, y, z, Δf, B1, R1, R2) (7, G)
    rf_group: jax.Array | None = None
    rf_group_params: jax.Array | None = None
    # interpolated RF pulses (`interp_rf.interpolated_pulse`): each spin's tissue (n,) int32
    tissue: jax.Array | None = None
    # (5,) `spin_extent` of the chunk (the engine sets it once per chunk; None: computed
    # where needed)
    extent: jax.Array | None = None


class State(NamedTuple):
    mx: jax.Array
    my: jax.Array
    mz: jax.Array


def _fit_sincos(n_sin: int, n_cos: int):
    """Coefficients of ``sin(2πy) ≈ y P(y²)`` and ``cos(2πy) ≈ Q(y²)`` on ``|y| <= 1/4``
    (least squares on Chebyshev points; max error about 1e-8 for (6, 7) terms, 1e-15 for
    (11, 12))."""
    y = 0.25 * np.cos(np.pi * (np.arange(512) + 0.5) / 512)
    a = np.stack([y ** (2 * i + 1) for i in range(n_sin)], 1)
    b = np.stack([y ** (2 * i) for i in range(n_cos)], 1)
    ps = np.linalg.lstsq(a, np.sin(2 * np.pi * y), rcond=None)[0]
    pc = np.linalg.lstsq(b, np.cos(2 * np.pi * y), rcond=None)[0]
    return tuple(ps.tolist()), tuple(pc.tolist())


_SINCOS = {np.dtype(np.float32): _fit_sincos(6, 7), np.dtype(np.float64): _fit_sincos(11, 12)}


@jax.custom_jvp
def sincos_cycles(x):
    """``(sin(2πx), cos(2πx))`` for phases ``x`` in cycles.

    A polynomial after reduction to a quarter period: about 10x faster than ``jnp.sin`` and
    ``jnp.cos`` on XLA's CPU backend, as accurate (≤ 3e-8 in float32, ≤ 1e-14 in float64).
    """
    return _sincos_reduced(x)


@jax.jit
def _sincos_reduced(x):
    """`sincos_cycles`' primal: reduced to ``[-1/2, 1/2]``, then `sincos_half_cycle`.

    Jitted so that a trace records it once per shape and dtype: the engine's programs play
    it at every kind of step (27 times in a small GRE's program) and tracing its 23-term
    polynomial anew each time took up to half of their trace (a 12 x 12 GRE's program:
    0.21 -> 0.15 s with deferred windows, 0.24 -> 0.13 s stepped; a gradient through it:
    1.28 -> 1.02 s; ``benchmarks/bench_trace.py``). XLA inlines the call when it compiles;
    its fusions differ a little, its samples do not (bit for bit) nor its run time (0.97-1.0x
    on six of the suite's scenarios, float32; koma-epi read 1.10 over 11 calls, 1.00 over
    41: noise; ``bench_trace.py --run``)."""
    return sincos_half_cycle(x - jnp.round(x))


def horner(z, coeffs):
    """``coeffs[0] + coeffs[1] z + coeffs[2] z² + ...`` by Horner's rule (``z``'s shape
    and dtype)."""
    out = jnp.full_like(z, coeffs[-1])
    for c in coeffs[-2::-1]:
        out = out * z + c
    return out


def sincos_half_cycle(x):
    """``(sin(2πx), cos(2πx))`` for ``|x| <= 1/2`` cycles: the polynomial of
    `sincos_cycles` after its reduction (also the Pallas kernel's ``sincos="poly"``)."""
    ps, pc = _SINCOS[np.dtype(x.dtype)] if np.dtype(x.dtype) in _SINCOS else _SINCOS[np.dtype(np.float64)]
    far = jnp.abs(x) > 0.25
    y = jnp.where(far, jnp.where(x >= 0, 0.5, -0.5).astype(x.dtype) - x, x)  # |y| <= 1/4
    y2 = y * y
    cs = horner(y2, pc)
    return horner(y2, ps) * y, jnp.where(far, -cs, cs)


@sincos_cycles.defjvp
def _sincos_cycles_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    sn, cs = sincos_cycles(x)
    return (sn, cs), (TWO_PI * cs * dx, -TWO_PI * sn * dx)


def _cycles(spins: Spins, k, dt, c0=0.0):
    return k[0] * spins.x + k[1] * spins.y + k[2] * spins.z + spins.df * dt + c0


def relaxation(spins: Spins, dt) -> tuple[jax.Array, jax.Array]:
    """``(1 - exp(-R1 dt), 1 - exp(-R2 dt))`` per spin over ``dt`` [s]: the fractions a
    step relaxes by (the engine computes them once per chunk for steps whose duration
    repeats), from ``expm1``. A step applies them as ``M - M d`` (towards ``M0`` for Mz):
    ``exp(-R dt)`` itself is within a few ulps of 1 in float32 for a 1 us raster step and
    T1 ~ 1 s, and multiplying by its rounding biased every such step the same way."""
    return -jnp.expm1(-spins.r1 * dt), -jnp.expm1(-spins.r2 * dt)


def half_relaxation(spins: Spins, dt, relax=None) -> tuple[jax.Array, jax.Array]:
    """An RF step's half-step fractions ``relaxation(spins, dt / 2)``, or ``relax`` when
    they were computed already."""
    return relaxation(spins, 0.5 * dt) if relax is None else relax


def free_step(spins: Spins, m: State, dt, k, c0=0.0, relax=None) -> State:
    """Free precession and relaxation over ``dt`` with gradient moment ``k`` [1/m] and an
    extra phase ``c0`` [cycles] common to all spins: exact. ``relax``: ``relaxation(spins,
    dt)`` when computed already."""
    s, c = sincos_cycles(_cycles(spins, k, dt, c0))
    d1, d2 = relaxation(spins, dt) if relax is None else relax
    return _relax(spins, State(m.mx * c + m.my * s, m.my * c - m.mx * s, m.mz), d1, d2)


def rotate_common(m: State, cyc) -> State:
    """Free precession by a phase ``cyc`` [cycles] common to all spins: ``Mxy e^{-i2π cyc}``."""
    s, c = sincos_cycles(jnp.asarray(cyc, m.mx.dtype))
    return State(m.mx * c + m.my * s, m.my * c - m.mx * s, m.mz)


def one_fusion(*arrays):
    """The arrays (same shape and dtype) unchanged, as the outputs of one multi-output
    reduction, a variadic max over a broadcast axis of 2 (exact: ``max(x, x) = x``).

    XLA's CPU backend fuses elementwise work into each output array separately: arrays
    that share an expensive chain (the magnetization after 16 unrolled RF rotations: every
    component depends on all three of the step before) each recompute all of it. The
    operands of a variadic reduction are computed in one fusion, per element, with their
    shared work once. Only on the CPU backend (elsewhere the arrays are returned as they
    are: XLA's GPU backend fuses sibling outputs itself)."""
    if jax.default_backend() != "cpu":
        return arrays
    init = tuple(jnp.array(-jnp.inf, a.dtype) for a in arrays)
    ops = tuple(jnp.broadcast_to(a, (2,) + a.shape) for a in arrays)
    return jax.lax.reduce(ops, init, lambda x, y: tuple(jnp.maximum(p, q) for p, q in zip(x, y)), (0,))


def _relax_change(spins: Spins, m: State, d1, d2) -> State:
    """The change that relaxing by the fractions ``d1``, ``d2`` (`relaxation`) makes."""
    return State(-m.mx * d2, -m.my * d2, (spins.pd - m.mz) * d1)


def _plus(m: State, d: State) -> State:
    return State(m.mx + d.mx, m.my + d.my, m.mz + d.mz)


def _relax(spins: Spins, m: State, d1, d2) -> State:
    """Relax by the fractions ``d1``, ``d2`` (`relaxation`)."""
    return _plus(m, _relax_change(spins, m, d1, d2))


def _rf_rotation(spins: Spins, dt, k, b1dt, c0):
    """An RF step's rotation about its constant effective field
    ``w = (b1 Re B1dt, b1 Im B1dt, k·r + Δf dt)`` [cycles]: ``(w, a, b, cos θ - 1)`` with
    ``θ = 2π|w|``, ``a = sin θ / |w|`` and ``b = (1 - cos θ) / |w|²`` (see `_rotate`);
    ``cos θ - 1 = -2 sin²(θ/2)`` without cancellation (``cos θ`` itself, within ulps of 1
    for a raster step, would round alike at every step).

    One reciprocal square root instead of a square root and three divisions (a quarter of
    the step on XLA's CPU backend); below ``|w|² = 1e-6`` the ratios are their Taylor
    series, so values and derivatives stay exact and finite down to a zero field.
    """
    wx, wy, wz = w = rf_field(spins, dt, k, b1dt, c0)
    return (w, *_rotation_n2(wx * wx + wy * wy + wz * wz))


def rf_field(spins: Spins, dt, k, b1dt, c0):
    """An RF step's effective field ``(b1 Re B1dt, b1 Im B1dt, k·r + Δf dt + c0)`` [cycles]."""
    return spins.b1 * jnp.real(b1dt), spins.b1 * jnp.imag(b1dt), _cycles(spins, k, dt, c0)


def _rotation_n2(n2):
    """`_rf_rotation`'s ``(a, b, cos θ - 1)`` for a field of ``|w|² = n2`` [cycles²] (any shape)."""
    big = n2 > 1e-6
    inv = jnp.where(big, jax.lax.rsqrt(jnp.where(big, n2, 1.0)), 0.0)
    sh, ch = sincos_cycles(0.5 * n2 * inv)  # of θ/2: 1 - cos θ = 2 sin²(θ/2) without cancellation
    sh2 = sh * sh
    q = (TWO_PI * TWO_PI) * n2  # θ² < 4e-5 in the series (`_taylor`): truncation below 1e-17
    t2 = _taylor(q, 2, 3)  # (1 - cos θ) / θ²
    a = jnp.where(big, 2.0 * sh * ch * inv, TWO_PI * _taylor(q, 1, 3))
    b = jnp.where(big, 2.0 * sh2 * (inv * inv), (TWO_PI * TWO_PI) * t2)
    cm1 = jnp.where(big, -2.0 * sh2, -q * t2)
    return a, b, cm1


SMALL_FIELD = 0.08  # [cycles] per RF step: up to it `_rf_rotation_small` applies (θ <= 0.503 rad, 29°)
# Taylor terms of sin θ/θ, (1 - cos θ)/θ² and cos θ in q = θ²: 5 in float32 (the first
# left out is below 3e-10 at SMALL_FIELD), 9 in float64 (below 1e-21)
_SMALL_TERMS = {np.dtype(np.float32): 5, np.dtype(np.float64): 9}


def _taylor(q, first: int, n_terms: int):
    """``Σ_j (-q)^j / (2j + first)!`` for ``j < n_terms`` (Horner)."""
    out = jnp.full_like(q, (-1) ** (n_terms - 1) / math.factorial(2 * (n_terms - 1) + first))
    for j in range(n_terms - 2, -1, -1):
        out = out * q + (-1) ** j / math.factorial(2 * j + first)
    return out


def _rf_rotation_small(spins: Spins, dt, k, b1dt, c0):
    """`_rf_rotation` for fields of at most `SMALL_FIELD` cycles per step (see
    `small_field`): ``a``, ``b`` and ``cos θ - 1`` as their Taylor series in ``θ²``, without a
    square root, a range reduction or a branch. The terms left out are below float
    rounding (3e-10 in float32, 1e-21 in float64), so the result is that of `_rf_rotation`
    to float rounding, with less arithmetic per spin and step.

    A shaped pulse on a 1 µs raster turns a spin by milliradians per step (a 90° 2 ms
    sinc: ~6e-3 rad plus the off-resonance and slice-gradient phase), a hard pulse of up
    to ~29° in its one step: both inside the series' range."""
    wx, wy, wz = w = rf_field(spins, dt, k, b1dt, c0)
    return (w, *_rotation_small_n2(wx * wx + wy * wy + wz * wz))


def _rotation_small_n2(n2):
    """`_rf_rotation_small`'s ``(a, b, cos θ - 1)`` for a field of ``|w|² = n2`` [cycles²]."""
    q = (TWO_PI * TWO_PI) * n2
    n = _SMALL_TERMS.get(np.dtype(q.dtype), _SMALL_TERMS[np.dtype(np.float64)])
    t2 = _taylor(q, 2, n)  # (1 - cos θ) / θ²
    return TWO_PI * _taylor(q, 1, n), (TWO_PI * TWO_PI) * t2, -q * t2


def spin_extent(spins: Spins):
    """(5,) the chunk's largest ``|B1|``, ``|x|``, ``|y|``, ``|z|`` and ``|Δf|``: what
    `small_field` bounds the field with (the engine computes it once per chunk)."""
    return jnp.stack([jnp.max(jnp.abs(v)) for v in (spins.b1, spins.x, spins.y, spins.z, spins.df)])


def small_field(spins: Spins, dt, k, b1dt, c0):
    """Whether the effective field of every RF step (``dt`` () or (S,) [s], ``k`` (3,) or
    (S, 3) [1/m] or a tuple of its three components, ``b1dt`` and ``c0`` () or (S,)
    [cycles]) stays within `SMALL_FIELD` for every spin of the chunk: a scalar boolean,
    from a bound by `spin_extent`
    (``spins.extent`` when set, else computed here: five reductions over the chunk), not
    the field of each spin and step. False when any value is not finite."""
    e = spin_extent(spins) if spins.extent is None else spins.extent
    k = jnp.stack(k, -1) if isinstance(k, (tuple, list)) else jnp.asarray(k)  # (kx, ky, kz) or an array
    wz = jnp.abs(k) @ e[1:4] + jnp.abs(dt) * e[4] + jnp.abs(c0)
    wxy = e[0] * jnp.abs(b1dt)
    return jnp.max(wxy * wxy + wz * wz) <= SMALL_FIELD * SMALL_FIELD


def _rotate_change(m: State, w, a, b, cm1) -> State:
    """The change of ``M`` in a left-handed rotation about the field ``w``, ``M cos θ -
    (w × M) a + w (w·M) b``, with ``a = sin θ / |w|``, ``b = (1 - cos θ) / |w|²``, ``cm1 =
    cos θ - 1`` (`_rf_rotation`; ``-a`` rotates back): ``M cm1 - (w × M) a + w (w·M) b``.
    A raster step's rotation changes ``M`` by ulps; multiplying by ``cos θ``, rounded
    within ulps of 1 alike at every step of a pulse, biased stepped pulses in float32."""
    wx, wy, wz = w
    wdm = (wx * m.mx + wy * m.my + wz * m.mz) * b
    cx = wy * m.mz - wz * m.my
    cy = wz * m.mx - wx * m.mz
    cz = wx * m.my - wy * m.mx
    return State(m.mx * cm1 - cx * a + wx * wdm, m.my * cm1 - cy * a + wy * wdm, m.mz * cm1 - cz * a + wz * wdm)


def _rotate(m: State, w, a, b, cm1) -> State:
    """``M`` rotated (`_rotate_change`)."""
    return _plus(m, _rotate_change(m, w, a, b, cm1))


def rf_step(spins: Spins, m: State, dt, k, b1dt, c0=0.0, rotation: str = "auto", relax=None) -> State:
    """RF step: relax dt/2, rotate about the constant effective field, relax dt/2
    (``relax``: ``relaxation(spins, dt / 2)`` when computed already).

    ``rotation``: ``"small"`` uses `_rf_rotation_small` (the caller knows that the field
    stays within `SMALL_FIELD`: a hard pulse up to ~29°, a raster step of a shaped pulse),
    ``"general"`` `_rf_rotation`, ``"auto"`` decides per step with `small_field` (a
    `lax.cond` over the whole step: on XLA's CPU backend it costs about what the series
    saves, hence the engine's choice on the host, `engine._rf_rotation_mode`). All three
    agree to float rounding."""
    if rotation == "small":
        return _rf_step_with(_rf_rotation_small, spins, m, dt, k, b1dt, c0, relax)
    if rotation == "general":
        return _rf_step_with(_rf_rotation, spins, m, dt, k, b1dt, c0, relax)
    return jax.lax.cond(small_field(spins, dt, k, b1dt, c0), functools.partial(_rf_step_with, _rf_rotation_small),
                        functools.partial(_rf_step_with, _rf_rotation), spins, m, dt, k, b1dt, c0, relax)


def _rf_step_with(rotation, spins: Spins, m: State, dt, k, b1dt, c0, relax=None) -> State:
    w, a, b, cm1 = rotation(spins, dt, k, b1dt, c0)
    d1, d2 = half_relaxation(spins, dt, relax)
    # the three changes summed, then added once: one rounding of the state per step
    ch = _relax_change(spins, m, d1, d2)
    ch = _plus(ch, _rotate_change(_plus(m, ch), w, a, b, cm1))
    ch = _plus(ch, _relax_change(spins, _plus(m, ch), d1, d2))
    return _plus(m, ch)


def diffuse(spins: Spins, m: State, bstep) -> State:
    """Analytic diffusion attenuation of the transverse magnetization: ``exp(-D b)``."""
    f = jnp.exp(-spins.diffusion * bstep)
    return State(m.mx * f, m.my * f, m.mz)


def receive(spins: Spins, m: State) -> jax.Array:
    """(n_coils,) complex signal ``Σ_j c_j (mx_j + i my_j)``."""
    if spins.coil_re is None:
        return (jnp.sum(m.mx) + 1j * jnp.sum(m.my))[None]
    re = spins.coil_re @ m.mx - spins.coil_im @ m.my
    im = spins.coil_re @ m.my + spins.coil_im @ m.mx
    return re + 1j * im


def _powers(start, factor, count: int):
    """(count, *start.shape) array of start * factor**i, i = 0..count-1."""

    def body(c, _):
        return c * factor, c

    return jax.lax.scan(body, start, None, length=count)[1]


def window_step(spins: Spins, m: State, dt, k, count, n_window: int):
    """An ADC window: ``count`` identical free intervals of ``dt`` with moment ``k`` each.

    Returns the state after the last interval and the (n_coils, n_window) samples at the
    end of intervals 1..n_window (entries past ``count`` are padding). Sample ``n`` is
    ``Σ_j c_j m_j z_j^n`` with the per-interval factor ``z_j = exp(-dt/T2 - i 2π(k·r + Δf dt))``,
    evaluated as a matrix product ``P @ Q`` with ``Q[j, b] = z_j^b`` and
    ``P[a, j] = c_j m_j z_j^(aB)`` (baby-step giant-step powers): exact, and
    ``O(n_spins (A + B))`` transcendental-free work plus one complex GEMM; the end state in
    closed form. With window groups (``spins.group``, ``spins.group_params``: spins with the
    same position along the window's gradients, Δf and T2 share ``z``) each group's
    ``Σ c_j m_j`` is summed first and the powers run over the G groups instead of the n spins:
    the same arithmetic on equal values, summed in another order. (`prepare_exact_window`
    then `window_step_prepared`; the engine prepares windows that repeat once per chunk.)
    """
    return window_step_prepared(spins, m, n_window, prepare_exact_window(spins, dt, k, count, n_window))


def _bsgs(n_window: int) -> tuple[int, int]:
    """Giant and baby steps ``(na, nb)`` of the power sums over samples 0..n_window."""
    nb = max(1, int(round((n_window + 1) ** 0.5)))
    return -(-(n_window + 1) // nb), nb


class WindowPowers(NamedTuple):
    """A repeated exact window's per-spin factors, computed once per chunk
    (`prepare_exact_window`): ``qm`` (nb, G) ``z^b``, ``zbp`` (na, G) ``z^(a nb)`` over the
    spins, or over the window groups (``G`` groups) when ``spins.group`` is set; ``rot`` (n,)
    the transverse rotation and decay over the whole window and ``e1`` (n,) its longitudinal
    relaxation, per spin."""

    qm: jax.Array
    zbp: jax.Array
    rot: jax.Array
    e1: jax.Array


def prepare_exact_window(spins: Spins, dt, k, count, n_window: int) -> WindowPowers:
    """The factors of a window of ``count`` intervals of ``dt`` with moment ``k`` each, for
    `window_step_prepared`: the per-spin (or per-group) factors of `window_step`,
    done once for all the windows that share this geometry."""
    if spins.group is not None:
        x, y, z_, df, r2 = (spins.group_params[i] for i in range(5))
    else:
        x, y, z_, df, r2 = spins.x, spins.y, spins.z, spins.df, spins.r2
    cyc = k[0] * x + k[1] * y + k[2] * z_ + df * dt
    sn1, cs1 = sincos_cycles(cyc)
    e2 = jnp.exp(-r2 * dt)
    z = jax.lax.complex(e2 * cs1, -e2 * sn1)
    na, nb = _bsgs(n_window)
    qm = _powers(jnp.ones_like(z), z, nb)
    zbp = _powers(jnp.ones_like(z), qm[-1] * z, na)
    sn, c = sincos_cycles(count * cyc)
    t_tot = count * dt
    e2t = jnp.exp(-r2 * t_tot)
    rot = jax.lax.complex(e2t * c, -e2t * sn)
    if spins.group is not None:
        rot = rot[spins.group]
    return WindowPowers(qm, zbp, rot, jnp.exp(-spins.r1 * t_tot))


def window_weights(spins: Spins, m: State, width: int) -> jax.Array:
    """(n_coils, width) complex ``c_j m_j`` at a window's start, summed over each window
    group when ``spins.group`` is set (``width`` groups), else per spin: a window's samples
    are ``Σ_j weights_j z_j^s``."""
    m0 = jax.lax.complex(m.mx, m.my)
    w = m0[None, :] if spins.coil_re is None else jax.lax.complex(spins.coil_re, spins.coil_im) * m0[None, :]
    if spins.group_members is not None:
        wz = jnp.concatenate([w, jnp.zeros((w.shape[0], 1), w.dtype)], axis=1)
        w = wz[:, spins.group_members].sum(-1)
    elif spins.group is not None:
        w = jax.vmap(lambda v: segment_sum_complex(v, spins.group, width, indices_are_sorted=True))(w)
    return w


def segment_sum_complex(v, ids, num_segments: int, *, indices_are_sorted: bool = False):
    """`jax.ops.segment_sum` of a complex (n,) array, summed as float real and imaginary
    parts (one scatter of (n, 2) rows). XLA's GPU compiler (jaxlib 0.11.2, CUDA 13) crashes
    with a segmentation fault on a complex scatter-add with sorted indices inside a loop
    (``ScatterWithDistributedIndices::InitializeAccumulator``, seen on an H200 2026-12-04);
    the float scatter is the same arithmetic."""
    parts = jnp.stack([jnp.real(v), jnp.imag(v)], axis=-1)
    out = jax.ops.segment_sum(parts, ids, num_segments, indices_are_sorted=indices_are_sorted)
    return jax.lax.complex(out[..., 0], out[..., 1])


def window_end_prepared(spins: Spins, m: State, tab: WindowPowers) -> State:
    """The state at the end of a prepared window (its samples are taken elsewhere)."""
    mxy = jax.lax.complex(m.mx, m.my) * tab.rot
    return State(jnp.real(mxy), jnp.imag(mxy), m.mz * tab.e1 + spins.pd * (1.0 - tab.e1))


def window_power_table(tab: WindowPowers, n_window: int) -> jax.Array:
    """(n_window, G) ``z^s`` for s = 1..n_window from the baby and giant steps."""
    full = (tab.zbp[:, None, :] * tab.qm[None, :, :]).reshape(-1, tab.qm.shape[1])
    return full[1:n_window + 1]


def window_step_prepared(spins: Spins, m: State, n_window: int, tab: WindowPowers):
    """`window_step` with the window's factors from `prepare_exact_window`: the end state
    and the (n_coils, n_window) samples, without transcendentals or power loops."""
    w = window_weights(spins, m, tab.qm.shape[1])
    pm = w[:, None, :] * tab.zbp[None]  # (n_coils, na, G)
    s = jnp.einsum("can,bn->cab", pm, tab.qm)
    s = s.reshape(s.shape[0], -1)[:, 1:n_window + 1]
    return window_end_prepared(spins, m, tab), s


# ---- NUFFT readout (see `mritwin.simulate.methods.NUFFTReadout`) ----------------------


def _weights(spins: Spins, m: State, extra):
    """(n_coils, L, n) complex strengths ``c_j m_j extra[l, j]``."""
    m0 = jax.lax.complex(m.mx, m.my)
    base = m0[None, :] * extra  # (L, n)
    if spins.coil_re is None:
        return base[None]
    coil = jax.lax.complex(spins.coil_re, spins.coil_im)  # (n_coils, n)
    return coil[:, None, :] * base[None]


def _end_state(spins: Spins, m: State, cyc_total, t_tot) -> State:
    sn, c = sincos_cycles(cyc_total)
    return _end_state_rotated(spins, m, sn, c, t_tot)


def _end_state_rotated(spins: Spins, m: State, sn, c, t_tot) -> State:
    """Free precession by the phase with sine ``sn`` and cosine ``c``, relaxation over ``t_tot``."""
    e2t = jnp.exp(-spins.r2 * t_tot)
    e1t = jnp.exp(-spins.r1 * t_tot)
    return State(e2t * (m.mx * c + m.my * sn), e2t * (m.my * c - m.mx * sn),
                 m.mz * e1t + spins.pd * (1.0 - e1t))


def _decay_terms(spins: Spins, dt, plan, cdt):
    """(L, n) factors ``exp(-τ_l (a_j - a_c))`` of the window decay expansion (see below)."""
    if len(plan.nodes) == 1:  # one T2: the decay is exactly exp(-n a_c)
        return jnp.ones((1, 1), cdt)
    nodes = jnp.asarray(plan.nodes, spins.x.dtype)  # (L,)
    return jnp.exp(-nodes[:, None] * ((spins.r2 - plan.r2c) * dt)[None, :]).astype(cdt)


def _window_samples(s, dt, n_window: int, plan):
    """Samples (n_coils, n_window) from the modes ``s`` (n_coils, L, n_window + 1) of each
    decay term: the Lagrange basis of the expansion and the centre decay ``exp(-n a_c)``."""
    dtype = jnp.finfo(s.dtype).dtype
    basis = jnp.asarray(plan.basis, dtype)  # (L, n_window): ℓ_l(n), n = 1..n_window
    decay = jnp.exp(-jnp.arange(1, n_window + 1, dtype=dtype) * plan.r2c * dt)
    return jnp.einsum("cln,ln->cn", s[:, :, 1:], basis.astype(s.dtype)) * decay[None, :].astype(s.dtype)


def window_step_nufft(spins: Spins, m: State, dt, k, count, n_window: int, plan):
    """`window_step` through a 1D periodic NUFFT (same outputs, to ``plan``'s tolerance).

    Sample ``n`` is ``Σ_j c_j m_j exp(-n a_j) exp(-i2π n θ_j)`` with ``θ_j = k·r_j + Δf_j dt``
    [cycles] and ``a_j = dt/T2_j``. Off-resonance is exact (part of ``θ``); the decay is
    ``exp(-n a_c) Σ_l ℓ_l(n) exp(-τ_l (a_j - a_c))`` with Chebyshev nodes ``τ_l`` on
    ``[0, n_window]`` (exact when every spin has the rate ``a_c``).
    """
    from .nufft import nufft_periodic

    theta = _cycles(spins, k, dt)
    cdt = jnp.result_type(spins.x.dtype, jnp.complex64)
    v = _weights(spins, m, _decay_terms(spins, dt, plan, cdt))
    nc, L, n = v.shape
    s = nufft_periodic(theta, v.reshape(nc * L, n), n_window + 1, plan.spec).reshape(nc, L, n_window + 1)
    return _end_state(spins, m, count * theta, count * dt), _window_samples(s, dt, n_window, plan)


class WindowCache(NamedTuple):
    """Per-chunk preparation of the windows of one geometry (see `prepare_window`)."""

    weights: jax.Array  # (n / block, span, block) spreading weights
    lo: jax.Array  # (n / block,) first grid index of each block (as floats: see below)
    sin: jax.Array  # (n,) sin and cos of the phase 2π count θ_j over the whole window
    cos: jax.Array


def prepare_window(spins: Spins, dt, k, count, plan) -> WindowCache:
    """Everything of a window that depends only on the spins' positions and off-resonance
    and on the window's gradient, dwell time and length: computed once per chunk and
    reused by every window of that geometry (`window_step_cached`)."""
    from .nufft import block_weights

    cache = plan.cache
    theta = _cycles(spins, k, dt)
    weights, lo = block_weights(theta, cache.size, cache.block, cache.span, plan.spec)
    sn, c = sincos_cycles(count * theta)
    # (stored as floats, exact below 2^24: the reversible adjoint hoists the closed-over
    # floating-point values of the step, and integer ones would not be hoisted)
    return WindowCache(weights, lo.astype(theta.dtype), sn, c)


def window_step_cached(spins: Spins, m: State, dt, count, n_window: int, plan, cache: WindowCache):
    """`window_step_nufft` with the spreading and the end-state rotation prepared by
    `prepare_window` (the same result, without per-window kernel evaluations or scatter)."""
    from .nufft import periodic_modes, spread_blocks

    cdt = jnp.result_type(spins.x.dtype, jnp.complex64)
    v = _weights(spins, m, _decay_terms(spins, dt, plan, cdt))
    nc, L, n = v.shape
    grid = spread_blocks(cache.weights, cache.lo.astype(jnp.int32), v.reshape(nc * L, n), plan.cache.size)
    s = periodic_modes(grid, n_window + 1, plan.spec).reshape(nc, L, n_window + 1)
    end = _end_state_rotated(spins, m, cache.sin, cache.cos, count * dt)
    return end, _window_samples(s, dt, n_window, plan)


def _lagrange(nodes, t):
    """(L, N) Lagrange basis of ``nodes`` (L,) at ``t`` (N,), in JAX."""
    L = nodes.shape[0]
    rows = []
    for i in range(L):
        p = jnp.ones_like(t)
        for j in range(L):
            if i != j:
                p = p * (t - nodes[j]) / (nodes[i] - nodes[j])
        rows.append(p)
    return jnp.stack(rows)


def general_window_step(spins: Spins, m: State, dt, k, wk, wt, n_window: int, plan):
    """An ADC window on a time-varying gradient, through a type-3 NUFFT.

    Sample ``n`` (offsets ``κ_n = wk[n]`` [1/m] and ``t_n = wt[n]`` [s] from the first
    sample) is ``Σ_j c_j m_j exp(-λ_j t_n) exp(-i2π κ_n·r_j)`` with ``λ_j = 1/T2_j + i2πΔf_j``;
    ``exp(-(λ_j - λ_c) t)`` is interpolated at Chebyshev times ``τ_l`` and each term is one
    type-3 transform over the dimensions in which k varies. The state after the window
    is the exact free precession over ``dt`` with moment ``k`` (the whole window).
    """
    from .nufft import nufft_type3

    dtype = spins.x.dtype
    cdt = jnp.result_type(dtype, jnp.complex64)
    pos = (spins.x, spins.y, spins.z)
    dims = plan.dims
    xc = jnp.asarray(plan.x_center, dtype)
    sc = jnp.asarray(plan.s_center, dtype)
    xi = jnp.stack([pos[d] for d in dims]) - xc[:, None]  # (D, n)
    zeta = jnp.stack([wk[:, d] for d in dims]) - sc[:, None]  # (D, N)
    nodes = jnp.asarray(plan.nodes, dtype)  # (L,) [s]
    dr2 = spins.r2 - plan.r2c
    ddf = spins.df - plan.dfc
    # exp(-(Δλ_j) τ_l) * exp(-i2π sc·ξ_j)
    ph_s, ph_c = sincos_cycles(nodes[:, None] * ddf[None, :] + jnp.sum(sc[:, None] * xi, 0)[None, :])
    extra = jnp.exp(-nodes[:, None] * dr2[None, :]) * jax.lax.complex(ph_c, -ph_s)
    v = _weights(spins, m, extra.astype(cdt))
    nc, L, n = v.shape
    f = nufft_type3(xi, zeta, v.reshape(nc * L, n), plan.grid, plan.spec).reshape(nc, L, -1)
    basis = _lagrange(nodes, wt)  # (L, N)
    # exp(-λ_c t_n) exp(-i2π κ_n·x_c)
    pn_s, pn_c = sincos_cycles(plan.dfc * wt + jnp.sum(xc[:, None] * jnp.stack([wk[:, d] for d in dims]), 0))
    post = jnp.exp(-plan.r2c * wt) * jax.lax.complex(pn_c, -pn_s)
    out = jnp.einsum("cln,ln->cn", f, basis.astype(cdt)) * post[None, :].astype(cdt)
    return free_step(spins, m, dt, k), out[:, :n_window]


# ---- inverse steps (reversible adjoint: states recomputed backwards) --------------------


def _unrelax_change(spins: Spins, m: State, g1, g2) -> State:
    """The change that undoes relaxation by the fractions ``d``: with ``g = expm1(R t) =
    d / (1 - d)``, ``Mxy g2`` and ``(Mz - pd) g1``."""
    return State(m.mx * g2, m.my * g2, (m.mz - spins.pd) * g1)


def precess_inverse(spins: Spins, m: State, cyc, t) -> State:
    """Undo free precession by ``cyc`` [cycles, per spin] and relaxation over ``t`` [s].

    Relaxation is undone as a change, ``exp(t/T) - 1`` from ``expm1`` (`_unrelax_change`):
    the backward recomputation of the reversible adjoint repeats this for every step, and
    factors within ulps of 1 (``exp(t/T2)``, ``1 - exp(-t/T1)`` divided out), rounded alike
    each time, made its states drift (float32, T1 4 s: 2e-3 of M0 over a stepped GRE, past
    the adjoint's tolerance; now within it, gradients 1e-4 from float64). The rotation
    stays a product, as in `free_step` (the change form, ``cos φ - 1`` from the half
    angle, gained nothing there and cost a few % more)."""
    s, c = sincos_cycles(cyc)
    r = State(m.mx * c - m.my * s, m.my * c + m.mx * s, m.mz)
    g1, g2 = jnp.expm1(spins.r1 * t), jnp.expm1(spins.r2 * t)
    return _plus(r, _unrelax_change(spins, r, g1, g2))


def free_step_inverse(spins: Spins, m: State, dt, k, c0=0.0) -> State:
    """The state before `free_step` from the state after it."""
    return precess_inverse(spins, m, _cycles(spins, k, dt, c0), dt)


def window_step_inverse(spins: Spins, m: State, dt, k, count) -> State:
    """The state before a constant-gradient window of ``count`` intervals."""
    return precess_inverse(spins, m, count * _cycles(spins, k, dt), count * dt)


def rf_step_inverse(spins: Spins, m: State, dt, k, b1dt, c0=0.0) -> State:
    """The state before `rf_step`: un-relax dt/2, rotate back, un-relax dt/2 (the three
    changes summed and added once, as `rf_step` does forwards)."""
    w, a, b, cm1 = _rf_rotation(spins, dt, k, b1dt, c0)
    g1, g2 = jnp.expm1(0.5 * spins.r1 * dt), jnp.expm1(0.5 * spins.r2 * dt)
    ch = _unrelax_change(spins, m, g1, g2)
    ch = _plus(ch, _rotate_change(_plus(m, ch), w, -a, b, cm1))
    ch = _plus(ch, _unrelax_change(spins, _plus(m, ch), g1, g2))
    return _plus(m, ch)


def diffuse_inverse(spins: Spins, m: State, bstep) -> State:
    f = jnp.exp(spins.diffusion * bstep)
    return State(m.mx * f, m.my * f, m.mz)
