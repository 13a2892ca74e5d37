"""`simulate`: evolve a twin under a sequence and record the ADC signal."""

from __future__ import annotations

import functools
import warnings
import weakref

import jax
import jax.numpy as jnp
import numpy as np

from ..sequence.discretize import DiscreteSequence, discretize
from ..sequence.scanner import Scanner
from ..sequence.sequence import Sequence
from ..signal.noise import ReceiverNoise, sample_dwell
from ..signal.signal import Signal
from ..twin.motion import AbstractMotion
from ..twin.twin import Twin
from . import kernels
from .kernels import Spins, State
from .methods import AbstractSimMethod, Bloch

__all__ = ["simulate", "trace_count", "spin_sharding"]

_TRACES = {"core": 0}


def trace_count() -> int:
    """How many times the simulation core has been traced (compiled) in this process."""
    return _TRACES["core"]


def _default_chunk(n_spins: int) -> int:
    """Spins per chunk: capped by platform, bucketed so similar twins share a compiled shape."""
    cap = 1 << 16 if jax.default_backend() == "cpu" else 1 << 21
    if n_spins >= cap:
        return cap
    if n_spins <= 4096:
        return max(256, 1 << (max(n_spins, 1) - 1).bit_length())
    return -(-n_spins // 4096) * 4096


def simulate(
    twin: Twin,
    seq: Sequence | DiscreteSequence,
    *,
    scanner: Scanner | None = None,
    coils=None,
    noise=None,
    method: AbstractSimMethod | None = None,
    key: jax.Array | None = None,
    dtype=None,
    return_magnetization: bool = False,
    motion=None,
) -> Signal:
    """Simulate the ADC signal of ``twin`` under ``seq``.

    A pure function of its inputs: jit-compiled inside (the compiled core is reused while
    shapes stay in the same bucket, so changing twin or sequence *values* does not
    recompile), and differentiable with `jax.grad` / `jax.jvp` with respect to every
    twin field and every event value (RF amplitudes, shapes and phases, gradient
    amplitudes and waveforms, ADC phases).

    Args:
        twin: the spins.
        seq: a `Sequence` (discretized here) or an already discretized `DiscreteSequence`.
        scanner: the system (B0 for ppm offsets, γ̄); default `Scanner()`.
        coils: optional (n_coils, n_spins) complex receive sensitivities, overriding
            ``twin.coil_sensitivity``.
        noise: optional `mritwin.ReceiverNoise` (thermal receiver noise whose standard
            deviation follows the ADC dwell time); needs ``key``.
        method: the simulation method; default `Bloch()`.
        key: `jax.random` key for the noise (required with ``noise``).
        dtype: ``jnp.float32`` (default) or ``jnp.float64`` (needs
            ``jax.config.update("jax_enable_x64", True)`` in your program).
        return_magnetization: also return the final (n_spins, 3) magnetization (at the
            spins' rest positions' frame, i.e. the magnetization vectors).
        motion: optional rigid motion of the whole twin (`mritwin.Translation`,
            `mritwin.PeriodicTranslation`, `mritwin.RigidPath`); ``twin.position`` is the
            position at rest. Costs nothing per spin; ADC windows are stepped.

    Returns:
        A `Signal` with ``samples`` (n_coils, n_adc_samples), ``kspace`` and ``time``.

    Raises:
        TypeError / ValueError: wrong argument types, float64 without x64, coil
            sensitivities of the wrong shape.
    """
    if not isinstance(twin, Twin):
        raise TypeError(f"twin must be a mritwin.Twin, got {type(twin).__name__}")
    method = Bloch() if method is None else method
    if not isinstance(method, Bloch):
        raise TypeError(f"method must be a simulation method such as mritwin.Bloch(), got {method!r}")
    if noise is not None:
        if not isinstance(noise, ReceiverNoise):
            raise TypeError(f"noise must be a mritwin.ReceiverNoise, got {type(noise).__name__}")
        if key is None:
            raise ValueError("noise needs an explicit random key: simulate(..., noise=..., key=jax.random.key(0))")
    dtype = _resolve_dtype(dtype)
    scanner = Scanner() if scanner is None else scanner
    if motion is not None and not isinstance(motion, AbstractMotion):
        raise TypeError(f"motion must be a mritwin motion model (e.g. mritwin.Translation), got {motion!r}")
    if isinstance(seq, Sequence):
        dseq, kspace, adc_event = _prepare(seq, scanner, method, motion)
    elif isinstance(seq, DiscreteSequence):
        dseq, adc_event = seq, None
        kspace = np.full((seq.n_adc, 3), np.nan)
    else:
        raise TypeError(f"seq must be a mritwin.Sequence or DiscreteSequence, got {type(seq).__name__}")
    if dseq.n_adc == 0 and not return_magnetization:
        raise ValueError("the sequence has no ADC samples: nothing to simulate")
    if twin.t2_prime is not None and _any_finite(twin.t2_prime):
        warnings.warn(
            "twin.t2_prime is set but each spin is one isochromat, so reversible T2' "
            "dephasing is not simulated; spread spins with mritwin.with_isochromats(twin, n, "
            "voxel_size) to model T2*",
            stacklevel=2,
        )
    sens = twin.coil_sensitivity if coils is None else jnp.asarray(coils)
    if sens is not None and (sens.ndim != 2 or sens.shape[1] != twin.n_spins):
        raise ValueError(
            f"coil sensitivities must have shape (n_coils, n_spins) = (n_coils, {twin.n_spins}), "
            f"got {tuple(sens.shape)}"
        )
    devices = jax.local_devices() if method.shard else jax.local_devices()[:1]
    n_dev = len(devices)
    chunk = method.chunk_size or _default_chunk(-(-twin.n_spins // n_dev))
    if method.analytic_diffusion and twin.diffusion is None:
        raise ValueError("Bloch(analytic_diffusion=True) needs twin.diffusion [m^2/s]")
    spins, n_chunks = _pack_spins(twin, sens, chunk, dtype, n_dev,
                                  diffusion=method.analytic_diffusion)
    sharding = spin_sharding(devices) if n_dev > 1 else None
    d = dseq.astype(dtype)
    samples, mag = _core(spins, d, n_chunks=n_chunks, chunk=chunk, n_window=d.n_window,
                         checkpoint=method.checkpoint, want_mag=return_magnetization,
                         spoiling=method.ideal_spoiling, sharding=sharding,
                         diffusion=method.analytic_diffusion)
    if mag is not None:
        mag = mag[: twin.n_spins]
    sig = Signal(
        samples=samples,
        kspace=kspace if isinstance(kspace, np.ndarray) else jnp.asarray(kspace, dtype),
        time=np.asarray(dseq.adc_time, np.float64),
        adc_event=None if adc_event is None else np.asarray(adc_event),
        magnetization=mag,
    )
    if noise is not None:
        dwell = sample_dwell(seq) if isinstance(seq, Sequence) else None
        sig = noise(sig, key=key, dwell=dwell)
    return sig


_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _prepare(seq: Sequence, scanner: Scanner, method: Bloch, motion=None):
    """Discretize (and compute k-space) once per sequence, scanner and method.

    Sequences are immutable, so the result is cached on the sequence object (weakly) when
    its values are concrete; with traced values (differentiating through the sequence)
    it is recomputed inside the trace.
    """
    key = (scanner, method.rf_dt, method.windows, method.ideal_spoiling, method.analytic_diffusion)
    per_seq = _PREPARED.get(seq)
    if motion is None and per_seq is not None and key in per_seq:
        return per_seq[key]
    dseq = discretize(seq, scanner, rf_dt=method.rf_dt, windows=method.windows,
                      ideal_spoiling=method.ideal_spoiling, motion=motion,
                      diffusion=method.analytic_diffusion)
    kspace = seq.kspace()
    counts = [b.adc.num_samples for b in seq.blocks if b.adc is not None]
    adc_event = np.repeat(np.arange(len(counts)), counts)
    traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves((dseq, kspace)))
    out = (dseq, kspace, adc_event)
    if not traced and motion is None:
        _PREPARED.setdefault(seq, {})[key] = out
    return out


def _any_finite(x) -> bool:
    if isinstance(x, jax.core.Tracer):
        return True
    return bool(np.isfinite(np.asarray(x)).any())


def _resolve_dtype(dtype):
    if dtype is None:
        return jnp.float32
    dt = jnp.dtype(dtype)
    if dt == jnp.float64:
        if not jax.config.jax_enable_x64:
            raise ValueError(
                "dtype=float64 needs 64-bit JAX: call jax.config.update('jax_enable_x64', True) "
                "at the start of your program"
            )
        return jnp.float64
    if dt == jnp.float32:
        return jnp.float32
    raise ValueError(f"dtype must be float32 or float64, got {dt}")


def _rate(t):
    return jnp.where(jnp.isinf(t), 0.0, 1.0 / t)


def _pack_spins(twin: Twin, sens, chunk: int, dtype, n_dev: int = 1, diffusion: bool = False):
    """Per-spin arrays shaped (n_dev, n_chunks per device, chunk), zero-PD padded."""
    n = twin.n_spins
    n_chunks = max(1, -(-n // chunk))
    n_chunks = -(-n_chunks // n_dev) * n_dev
    per_dev = n_chunks // n_dev
    total = n_chunks * chunk
    pad = total - n

    def prep(v, fill=0.0):
        v = jnp.asarray(v, dtype)
        if pad:
            v = jnp.concatenate([v, jnp.full((pad,) + v.shape[1:], fill, dtype)])
        return v.reshape((n_dev, per_dev, chunk) + v.shape[1:])

    pos = jnp.asarray(twin.position, dtype)
    zeros = jnp.zeros(n, dtype)
    coil_re = coil_im = None
    if sens is not None:
        s = jnp.asarray(sens)
        cdt = jnp.complex128 if dtype == jnp.float64 else jnp.complex64
        s = s.astype(cdt)
        if pad:
            s = jnp.concatenate([s, jnp.zeros((s.shape[0], pad), cdt)], axis=1)
        s = s.reshape(s.shape[0], n_dev, per_dev, chunk).transpose(1, 2, 0, 3)
        coil_re, coil_im = jnp.real(s), jnp.imag(s)
    spins = Spins(
        x=prep(pos[:, 0]), y=prep(pos[:, 1]), z=prep(pos[:, 2]),
        pd=prep(twin.pd),
        r1=prep(_rate(jnp.asarray(twin.t1, dtype))),
        r2=prep(_rate(jnp.asarray(twin.t2, dtype))),
        df=prep(zeros if twin.delta_f is None else twin.delta_f),
        b1=prep(jnp.ones(n, dtype) if twin.b1 is None else twin.b1, 1.0),
        coil_re=coil_re, coil_im=coil_im,
        diffusion=prep(twin.diffusion) if diffusion else None,
    )
    return spins, n_chunks


def _segmented_scan(body, init, xs):
    """``lax.scan(body, init, xs)`` with memory-bounded reverse mode.

    The steps are split into ``S ≈ sqrt(n)`` segments of ``L`` steps; each segment is a
    rematerialized (`jax.checkpoint`) inner scan, so reverse mode stores one state per
    segment plus one segment's intermediates: ``O(sqrt(n_steps))`` states instead of
    ``O(n_steps)``, for about one extra forward pass of compute. The forward pass is
    unchanged. Steps past ``n`` are padded with no-op steps (free precession of 0 s).
    """
    n = xs[0].shape[0]
    seg = max(1, int(round(n ** 0.5)))
    n_seg = -(-n // seg)
    pad = n_seg * seg - n
    dt, k, b1, kind, sample, count, spoil, c0, bs = xs
    if pad:
        dt = jnp.concatenate([dt, jnp.zeros((pad,), dt.dtype)])
        k = jnp.concatenate([k, jnp.zeros((pad, 3), k.dtype)])
        b1 = jnp.concatenate([b1, jnp.zeros((pad,), b1.dtype)])
        kind = jnp.concatenate([kind, jnp.ones((pad,), kind.dtype)])
        sample = jnp.concatenate([sample, jnp.zeros((pad,), sample.dtype)])
        count = jnp.concatenate([count, jnp.zeros((pad,), count.dtype)])
        spoil = jnp.concatenate([spoil, jnp.zeros((pad,), spoil.dtype)])
        c0 = jnp.concatenate([c0, jnp.zeros((pad,), c0.dtype)])
        bs = jnp.concatenate([bs, jnp.zeros((pad,), bs.dtype)])
    xs = tuple(x.reshape((n_seg, seg) + x.shape[1:])
               for x in (dt, k, b1, kind, sample, count, spoil, c0, bs))

    @functools.partial(jax.checkpoint, policy=jax.checkpoint_policies.nothing_saveable)
    def segment(m, seg_xs):
        return jax.lax.scan(body, m, seg_xs)

    m, ys = jax.lax.scan(segment, init, xs)
    ys = jax.tree_util.tree_map(lambda y: y.reshape((n_seg * seg,) + y.shape[2:])[:n], ys)
    return m, ys


def spin_sharding(devices=None):
    """The `NamedSharding` that splits the spin (device) axis over ``devices``.

    `simulate` lays spins out as (n_devices, chunks per device, chunk) and shards the
    leading axis over all local devices (``Bloch(shard=True)``, the default); each device
    runs its chunks and the signals are summed across devices (an all-reduce). Spins are
    independent, so the result equals a single-device run up to float rounding.
    """
    devices = jax.local_devices() if devices is None else list(devices)
    mesh = jax.sharding.Mesh(np.array(devices), ("spins",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("spins"))


@functools.partial(jax.jit, static_argnames=("n_chunks", "chunk", "n_window", "checkpoint", "want_mag",
                                              "spoiling", "sharding", "diffusion"))
def _core(spins: Spins, d: DiscreteSequence, *, n_chunks, chunk, n_window, checkpoint, want_mag,
          spoiling=False, sharding=None, diffusion=False):
    _TRACES["core"] += 1
    n_coils = 1 if spins.coil_re is None else spins.coil_re.shape[2]
    cdt = d.b1dt.dtype

    def run_chunk(sp: Spins):
        m0 = State(jnp.zeros_like(sp.pd), jnp.zeros_like(sp.pd), sp.pd)
        zero_single = jnp.zeros((n_coils,), cdt)
        zero_win = jnp.zeros((n_coils, n_window), cdt)

        def body(m, step):
            dt, k, b1dt, kind, sample, count, spoil, c0, bstep = step
            if spoiling:
                m = jax.lax.cond(spoil, lambda m: State(jnp.zeros_like(m.mx), jnp.zeros_like(m.my), m.mz),
                                 lambda m: m, m)

            def do_rf(m):
                return kernels.rf_step(sp, m, dt, k, b1dt, c0), zero_win

            def do_free(m):
                return kernels.free_step(sp, m, dt, k, c0), zero_win

            def do_window(m):
                return kernels.window_step(sp, m, dt, k, count, n_window)

            branches = [do_rf, do_free] + ([do_window] if n_window else [])
            m, win = jax.lax.switch(kind, branches, m)
            if diffusion:
                m = kernels.diffuse(sp, m, bstep)
            single = jax.lax.cond(sample, lambda: kernels.receive(sp, m), lambda: zero_single)
            return m, (single, win)

        steps = (d.dt, d.kstep, d.b1dt, d.kind, d.sample, d.count, d.spoil, d.cyc0, d.bstep)
        if checkpoint:
            m, (single, win) = _segmented_scan(body, m0, steps)
        else:
            m, (single, win) = jax.lax.scan(body, m0, steps)
        return (single, win), (jnp.stack([m.mx, m.my, m.mz], -1) if want_mag else None)

    # Each chunk is rematerialized in reverse mode: the chunk scan then stores only its
    # inputs, and the segment checkpointing inside the chunk bounds the rest. (Without
    # this, partial evaluation of a scan over chunks keeps per-step residuals alive.)
    chunk_fn = jax.checkpoint(run_chunk, policy=jax.checkpoint_policies.nothing_saveable) if checkpoint else run_chunk

    def map_body(carry, sp):
        (single, win), mag = chunk_fn(sp)
        return (carry[0] + single, carry[1] + win), mag

    n_steps = d.dt.shape[0]
    init = (jnp.zeros((n_steps, n_coils), cdt), jnp.zeros((n_steps, n_coils, n_window), cdt))

    def per_device(sp_dev):
        if sp_dev.x.shape[0] == 1:  # one chunk: no chunk-level remat needed
            (single, win), mags = run_chunk(jax.tree_util.tree_map(lambda x: x[0], sp_dev))
            return (single, win), (None if mags is None else mags[None])
        return jax.lax.scan(map_body, init, sp_dev)

    if sharding is not None:
        spins = jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, sharding), spins)
    (single, win), mags = jax.vmap(per_device)(spins)  # leading axis: devices
    single, win = single.sum(0), win.sum(0)  # an all-reduce across devices when sharded
    flat = jnp.concatenate([single.T, win.transpose(1, 0, 2).reshape(n_coils, -1)], axis=1)
    samples = flat[:, d.out_index] * d.demod[None, :]
    mag = mags.reshape(n_chunks * chunk, 3) if want_mag else None
    return samples, mag
