"""`simulate`: evolve a twin under a sequence and record the ADC signal."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import warnings
import weakref
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._arrays import to_device
from ..sequence.discretize import DiscreteSequence, _translation_only, discretize
from ..sequence.scanner import Scanner
from ..sequence.sequence import Sequence
from ..sequence.timeline import tables_shared
from ..signal.noise import ReceiverNoise, sample_dwell
from ..signal.signal import Signal
from ..twin.dynamics import AbstractDynamics, combine_effects
from ..twin.motion import AbstractMotion
from ..twin.twin import Twin
from . import kernels, memory_maps
from .adjoint import reversible_scan
from .fused_rf import _FUSED_RF, _FUSED_RF_ROLLED, fused_free_steps
from .held_rf import apply_held_map, held_maps, held_pulse_counts, held_rf_step, prepare_held_pulse
from .interp_rf import interpolated_pulse
from .kernels import Spins, State
from .methods import AbstractSimMethod, Bloch
from .prepared_rf import PulseTable, _runs, apply_pulse, device_b1dt, prepare_pulse, prepare_pulse_grouped
from .seqgroups import expand_magnetization, group_weights, number_codes, plan_sequence_groups, unique_rows

__all__ = ["simulate", "trace_count", "last_devices", "spin_sharding"]

_TRACES = {"core": 0}
_MAPS_CHECKED = {"core": 0}  # the trace count at the last `_guard_memory_maps` check
_LAST = {"n_devices": 1}  # of the last simulate call (`last_devices`)


def trace_count() -> int:
    """How many times the simulation core has been traced (compiled) in this process."""
    return _TRACES["core"]


def last_devices() -> int:
    """How many devices the last `simulate` call in this process split its spins over
    (``Bloch.shard``; after sequence groups folded the twin)."""
    return _LAST["n_devices"]


def _guard_memory_maps(samples) -> None:
    """After a new compile of the core, outside any trace: keep this process below Linux's
    limit on memory mappings (`memory_maps.release_if_near_limit`: XLA crashes there)."""
    if _TRACES["core"] == _MAPS_CHECKED["core"] or isinstance(samples, jax.core.Tracer):
        return
    _MAPS_CHECKED["core"] = _TRACES["core"]
    memory_maps.release_if_near_limit(stacklevel=4)  # (the warning names the caller of simulate)


#: with ``Bloch(shard="auto")``, the fewest spins a CPU device is given: on 2 emulated CPU
#: devices of a 2-core VM, twins of 200-7 845 spins ran 0.6-0.8x as fast as on one device,
#: 16 384-65 536 spins 1.4-2.4x as fast (benchmarks/RESULTS.md, "CPU: two devices")
CPU_SHARD_MIN_SPINS = 8192
#: ... unless the sequence's step loop is at least this long (`_loop_steps`): then from
#: `CPU_SHARD_MIN_SPINS_LONG` spins per device. On 2 CPU devices of the 2-core VM, the MR
#: fingerprinting train (1 000-4 000 steps) with 312-2 097 spins (after sequence groups) ran
#: 1.2-2.8x as fast split as on one device; at 402 steps 0.8-1.4x; 203 spins (one 256-spin
#: chunk either way) 0.3-0.8x (benchmarks/RESULTS.md, "CPU: long sequences on two
#: devices"). Per step XLA's CPU backend splits a chunk's larger fusions over its threads
#: (``outer_dimension_partitions``) from ~300 spins on: for a few hundred spins the threads'
#: hand-over costs more than the arithmetic, while two devices run two loops side by side.
CPU_SHARD_LONG_STEPS = 1000
CPU_SHARD_MIN_SPINS_LONG = 128


def _loop_steps(dseq) -> int:
    """Steps of ``dseq``'s loop with each RF pulse counted once (a lower bound of the
    engine's loop: a stepped shaped pulse takes more; prepared pulses, one), 0 when
    ``dseq`` is not a `DiscreteSequence` with concrete kinds."""
    if not isinstance(dseq, DiscreteSequence) or isinstance(dseq.kind, jax.core.Tracer):
        return 0

    def count():
        kind = np.asarray(dseq.kind)[: dseq.n_real_steps]
        return int(np.count_nonzero(kind != 0)) + len(_runs(kind)[0])

    return _remembered(dseq, ("loop-steps",), count)


def _shard_devices(method: Bloch, n_spins: int, dseq=None) -> list:
    """The devices `simulate` splits ``n_spins`` spins over (``Bloch.shard``; with
    ``"auto"`` on CPU devices also from the discretized sequence ``dseq``, when given: see
    `CPU_SHARD_LONG_STEPS`)."""
    devices = jax.local_devices()
    if not method.shard:
        return devices[:1]
    if method.shard == "auto" and len(devices) > 1 and devices[0].platform == "cpu":
        per_device = CPU_SHARD_MIN_SPINS
        if n_spins // CPU_SHARD_MIN_SPINS < len(devices) and _loop_steps(dseq) >= CPU_SHARD_LONG_STEPS:
            per_device = CPU_SHARD_MIN_SPINS_LONG
        return devices[:max(1, min(len(devices), n_spins // per_device))]
    return devices


def _default_chunk(n_spins: int) -> int:
    """Spins per chunk: capped by platform, bucketed so similar twins share a compiled shape
    (`_bucket_spins`)."""
    cap = 1 << 16 if jax.default_backend() == "cpu" else 1 << 21
    return min(cap, _bucket_spins(n_spins))


def _bucket_spins(n_spins: int) -> int:
    """``n_spins`` rounded up to a compiled shape: a power of two up to 1024 spins (at least
    256), then a multiple of 1/16 of the next power of two below (at most 6.25 % padding:
    padded spins cost as much as real ones)."""
    if n_spins <= 1024:
        return max(256, 1 << (max(n_spins, 1) - 1).bit_length())
    step = 1 << (n_spins.bit_length() - 5)
    return -(-n_spins // step) * step


def _chunk_for(method: Bloch, n_spins: int) -> int:
    """Spins per chunk for ``n_spins`` per device: `_default_chunk`, or ``method.chunk_size``
    as an upper bound (a twin with fewer spins, after sequence groups fold it, runs in one
    chunk of its own bucketed size instead of padding up to ``chunk_size``: a 16 384-spin
    chunk for the MRF train's 2 097 folded spins ran 3.3x slower than 2 176)."""
    if method.chunk_size is None:
        return _default_chunk(n_spins)
    return min(int(method.chunk_size), _bucket_spins(n_spins))


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
    dynamics=None,
) -> Signal:
    """Simulate the ADC signal of ``twin`` under ``seq``.

    A pure function of its inputs: jit-compiled inside (the compiled core is reused while
    shapes stay in the same bucket, so changing twin or sequence *values* does not
    recompile), and differentiable with `jax.grad` / `jax.jvp` with respect to every
    twin field and every event value (RF amplitudes, shapes and phases, gradient
    amplitudes and waveforms, ADC phases).

    Args:
        twin: the spins.
        seq: a `Sequence` (discretized here) or an already discretized `DiscreteSequence`
            (its steps were fixed by `discretize`: ``Bloch``'s ``rf_dt``, ``max_rf_dt`` and ``windows`` do
            not apply to it, and ``Bloch(ideal_spoiling=True)`` needs it discretized with
            ``ideal_spoiling=True``, and conversely: a mismatch is a ValueError).
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
            position at rest. Costs nothing per spin; with a translation ADC windows stay
            windows (a phase common to all spins per sample), with rotations they are stepped.
        dynamics: optional per-spin dynamics (`mritwin.twin.dynamics`): one model or a
            tuple of models among `DisplacementField`, `SpinPaths`, `Flow`, `RandomWalk`,
            `ContrastAgent`. Positions, velocities and relaxation rates are evaluated at
            each step's midpoint; ADC windows are stepped, and free periods are cut into
            steps of at most the models' ``max_step``. Needs a `Sequence`. Without
            dynamics nothing changes (the engine is compiled as before).

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
    models = _dynamics_models(dynamics)
    if method.kernel == "auto":  # the fused kernel for concrete forward runs on one GPU
        method = _resolve_auto(method, twin, seq, coils, motion, dtype, bool(models))
    pallas = method.kernel == "pallas"
    if pallas and models:
        raise NotImplementedError("Bloch(kernel='pallas') does not simulate dynamics=...; use kernel='xla'")
    if pallas and dtype == jnp.float64:
        raise ValueError("Bloch(kernel='pallas') runs in float32; use kernel='xla' for dtype=float64")
    run_key = _run_key(twin, seq, coils, scanner, method, dtype, return_magnetization, motion, models)
    run = _cached_run(run_key, twin, seq, motion)
    if run is None:
        run = _plan(twin, seq, scanner, coils, method, dtype, return_magnetization, motion, models)
        _remember_run(run_key, twin, seq, run, motion)
    if twin.t2_prime is not None and _any_finite(twin.t2_prime):
        warnings.warn(
            "twin.t2_prime is set but each spin is one isochromat, so reversible T2' "
            "dephasing is not simulated; spread spins with mritwin.with_isochromats(twin, n, "
            "voxel_size) to model T2*",
            stacklevel=2,
        )
    samples, mag = run.call()
    _LAST["n_devices"] = run.n_devices
    _guard_memory_maps(samples)
    if mag is not None:
        mag = mag[: run.n_spins]
        if run.perm is not None:  # back to the twin's spin order
            mag = mag[np.argsort(run.perm)]
        if run.seq_groups is not None:
            mag = expand_magnetization(run.seq_groups, mag, run.pd0)
        mag = _scanner_frame(mag, run.dseq.frame_end)
    return _signal_out(samples, mag, run.kspace, run.dseq, run.adc_event, noise, key, seq, dtype)


def _check_spoil_flags(dseq: DiscreteSequence, method: Bloch) -> None:
    """Ideal spoiling needs both the steps marked (`discretize`) and the method's flag: one
    without the other would silently simulate an unspoiled sequence."""
    if isinstance(dseq.spoil, jax.core.Tracer):
        return
    marked = bool(np.asarray(dseq.spoil).any())
    if method.ideal_spoiling and not marked:
        raise ValueError("Bloch(ideal_spoiling=True) with a DiscreteSequence that marks no step to spoil: "
                         "discretize it with discretize(seq, ..., ideal_spoiling=True)")
    if marked and not method.ideal_spoiling:
        raise ValueError("this DiscreteSequence was discretized with ideal_spoiling=True: simulate it with "
                         "Bloch(ideal_spoiling=True), or discretize without it")


def _scanner_frame(mag, frame_end):
    """(n, 3) magnetization from the frame that follows the RF frequency offsets
    (`mritwin.sequence.discretize`) back to the scanner's: ``mx + i my`` times
    ``exp(-i 2π frame_end)``."""
    if frame_end is None or float(frame_end) == 0.0:
        return mag
    c, s = np.cos(2 * np.pi * float(frame_end)), np.sin(2 * np.pi * float(frame_end))
    mx, my = mag[:, 0], mag[:, 1]
    return jnp.stack([c * mx + s * my, c * my - s * mx, mag[:, 2]], axis=-1)


def _resolve_auto(method: Bloch, twin: Twin, seq, coils, motion, dtype, dynamics: bool) -> Bloch:
    """`Bloch.resolve_kernel` for one `simulate` call (on a CPU without looking at the inputs)."""
    if jax.default_backend() == "cpu":  # (through the class: an equinox bound method costs ~25 µs)
        return type(method).resolve_kernel(method, dtype=dtype, traced=False, dynamics=dynamics, n_devices=1,
                                           backend="cpu")
    traced = _holds_tracer(seq) or _has_tracer((twin, coils, motion))
    sens = coils if coils is not None else twin.coil_sensitivity
    n_coils = 1 if sens is None else int(np.shape(sens)[0])
    n_samples = seq.n_adc if isinstance(seq, DiscreteSequence) else seq.n_adc_samples if isinstance(seq, Sequence) else 0
    return method.resolve_kernel(dtype=dtype, traced=traced, dynamics=dynamics,
                                 n_devices=len(_shard_devices(method, twin.n_spins)),
                                 windowed=not traced and _windowed(seq), n_outputs=n_coils * int(n_samples))


def _windowed(seq) -> bool:
    """Whether ``seq`` is a `DiscreteSequence` with steps only the XLA engine runs (ADC
    windows, prepared or fused steps): `Bloch(kernel="pallas")` needs one step per sample."""
    if not isinstance(seq, DiscreteSequence):
        return False
    kind = np.asarray(seq.kind)[: seq.n_real_steps]
    return bool(seq.n_window or seq.n_general or kind.max(initial=0) > 1)


class _Run(NamedTuple):
    """A planned simulation: ``call()`` runs it, returning ``(samples, magnetization)``;
    the rest maps its result back to the twin and the sequence (see `simulate`)."""

    call: Callable[[], tuple]
    n_spins: int  # spins simulated (after grouping)
    perm: np.ndarray | None  # the spins' order in the engine
    seq_groups: object  # the sequence groups (seqgroups) or None
    pd0: jax.Array  # the twin's proton density (to expand the groups' magnetization)
    kspace: np.ndarray | jax.Array
    dseq: DiscreteSequence
    adc_event: np.ndarray | None
    n_devices: int = 1  # devices the spins are split over (`_shard_devices`)


def _plan(twin: Twin, seq, scanner: Scanner, coils, method: Bloch, dtype, return_magnetization: bool, motion,
          models) -> _Run:
    """Everything `simulate` does before it runs the compiled core: discretize, group, pack
    the spins, table the windows and pulses (host work: milliseconds for small twins)."""
    pallas = method.kernel == "pallas"
    if models:
        dseq, kspace, adc_event, k1 = _prepare_dynamics(seq, scanner, method, motion, models)
    elif isinstance(seq, Sequence):
        # the fused kernel steps every ADC sample
        dseq, kspace, adc_event = _prepare(seq, scanner, dataclasses.replace(method, windows=False) if pallas
                                           else method, motion)
    elif isinstance(seq, DiscreteSequence):
        dseq, adc_event = seq, None
        kspace = np.full((seq.n_adc, 3), np.nan)
        _check_spoil_flags(seq, method)
    else:
        raise TypeError(f"seq must be a mritwin.Sequence or DiscreteSequence, got {type(seq).__name__}")
    if dseq.n_adc == 0 and not return_magnetization:
        raise ValueError("the sequence has no ADC samples: nothing to simulate")
    sens = twin.coil_sensitivity if coils is None else jnp.asarray(coils)
    if sens is not None and (sens.ndim != 2 or sens.shape[1] != twin.n_spins):
        raise ValueError(
            f"coil sensitivities must have shape (n_coils, n_spins) = (n_coils, {twin.n_spins}), "
            f"got {tuple(sens.shape)}"
        )
    seq_groups, pd0 = None, twin.pd
    if method.group_spins and not models and (motion is None or _translation_only(motion)):
        # spins that no gradient of the sequence tells apart run once (seqgroups); a
        # translation moves them alike (a phase common to all spins)
        seq_groups = plan_sequence_groups(twin, dseq, diffusion=method.analytic_diffusion, dtype=dtype)
        if seq_groups is not None:
            sens, twin = group_weights(seq_groups, twin.pd, sens), seq_groups.twin
    devices = _shard_devices(method, twin.n_spins, dseq)
    n_dev = len(devices)
    chunk = _chunk_for(method, -(-twin.n_spins // n_dev))
    if pallas:
        call = _plan_pallas(twin, sens, dseq, chunk, devices, return_magnetization, method.ideal_spoiling,
                            method.prepare_pulses)
        return _Run(call, twin.n_spins, None, seq_groups, pd0, kspace, dseq, adc_event, n_dev)
    if method.analytic_diffusion and twin.diffusion is None:
        raise ValueError("Bloch(analytic_diffusion=True) needs twin.diffusion [m^2/s]")
    if dseq.n_general and method.readout is None:
        raise ValueError("the DiscreteSequence has general ADC windows (discretize(..., general_windows=True)), "
                         "which only Bloch(readout=NUFFTReadout(...)) evaluates")
    rftab = rf_kind = ftab = fuse_kind = fftab = free_kind = rf_axes = rfint = htab = held = rf_held = None
    held_traced = False
    fuse_same_dt = False
    rf_rotation = ("auto", "general", "auto")
    if not models:
        kind_id = 2 + int(dseq.n_window > 0) + int(dseq.n_general > 0)  # after the other kinds
        plain = _prepared_pulses(dseq, method, chunk=chunk)
        # RF groups where they let pulses be prepared that would be stepped (played fewer
        # than MIN_REPEATS times), and on the CPU also where they make preparing the
        # repeated pulses cheaper (`RF_GROUP_MIN_STEPS`): the plans are cached per
        # sequence, the groups cost a sort of the twin on the host. Where the plain plan
        # left no RF step, every pulse was played often enough: the grouped plan is the same
        grouped = (_prepared_pulses(dseq, method, grouped=True, chunk=chunk)
                   if (method.group_spins or method.rf_interpolation is not None) and _steps_rf(plain[0])
                   else plain)
        if method.group_spins and (grouped[0].n_real_steps < plain[0].n_real_steps
                                   or _groups_for_preparing(plain[1])):
            rf_axes = _rf_group_axes(twin, dseq, method, chunk, dtype)
        if rf_axes is None and method.rf_interpolation is not None:
            rfint = _interpolation_plan(twin, grouped, rf_kind_id(dseq), method.rf_interpolation, dtype)
        unprepared = dseq
        dseq, rftab = plain if rf_axes is None and rfint is None else grouped
        if rftab is not None:
            # prepared block pulses: the power of their one held step (`held_rf`)
            rf_held = _remembered(dseq, ("held-pulses",), lambda: held_pulse_counts(rftab, dseq)) \
                if rf_per_step(method) >= 2 else None
        # runs of equal RF steps (block pulses) as one step each; the other stepped RF
        # pulses, then stepped free precession (spiral ADC samples), S at a time
        held_dseq, htab = _held_steps(dseq, method, kind_id + int(rftab is not None))
        if htab is not None and rf_held and all(rf_held) and rf_axes is None and rfint is None:
            # block pulses played once are held steps, and every prepared pulse is a block
            # pulse too (a fingerprinting train whose flips recur): all of them held steps,
            # one step kind fewer, so that the periodic step layout stays (mrf-train:
            # compile 3.1 -> 1.2 s, run 80 -> 75 ms)
            rftab = rf_held = None
            held_dseq, htab = _held_steps(unprepared, method, kind_id)
        ext = None if _has_tracer((twin.position, twin.delta_f, twin.b1)) else _twin_extent_host(twin)  # (once)
        prep_rotation = "auto"
        if rftab is not None:
            rf_kind, kind_id = kind_id, kind_id + 1
            prep_rotation = _rf_rotation_mode(twin, dseq, rftab, fused_only=True, ext=ext, mixed="auto")
            rftab = _device_table(dseq, "rf", rftab, dtype)
        dseq = held_dseq
        if htab is not None:
            held_traced = _has_tracer((htab.dt, htab.k, htab.b1dt, htab.c0))
            held = _Held(kind_id, _held_bits(htab), _rf_rotation_mode(twin, dseq, htab, fused_only=True, ext=ext),
                         _rows_share_dt(htab), _premapped_rows(htab))
            kind_id += 1
            htab = _device_table(dseq, "held-rf", htab, dtype)
        dseq, ftab = _fused_steps(dseq, method, kind_id, 0)
        rf_rotation = (_rf_rotation_mode(twin, dseq, None, ext=ext), "general" if ftab is None else
                       _rf_rotation_mode(twin, dseq, ftab, fused_only=True, ext=ext), prep_rotation)
        if ftab is not None:
            fuse_kind, kind_id = kind_id, kind_id + 1
            fuse_same_dt = _rows_share_dt(ftab)
            ftab = _device_table(dseq, "fused-rf", ftab, dtype)
        dseq, fftab = _fused_steps(dseq, method, kind_id, 1)
        if fftab is not None:
            free_kind = kind_id
            fftab = _device_table(dseq, "fused-free", fftab, dtype)
    readout = wtab = perm = None
    if method.readout is not None and not models:
        from .readout import plan_readout, plan_window_cache

        readout = plan_readout(method.readout, twin, dseq, dtype)
        readout, wtab, perm = _window_plan(plan_window_cache, readout, twin, dseq, chunk,
                                           _n_chunks(twin.n_spins, chunk, n_dev), method.readout.tol)
    groups = None
    if (method.group_spins and method.readout is None and dseq.n_window and (motion is None or _translation_only(motion))
            and not method.reversible and not method.analytic_diffusion and not models):
        groups = _group_plan(twin, dseq, chunk, _n_chunks(twin.n_spins, chunk, n_dev), dtype)
        if groups is not None:
            perm = groups[0]
    spins, n_chunks = _pack_spins(twin, sens, chunk, dtype, n_dev,
                                  diffusion=method.analytic_diffusion, perm=perm)
    if groups is not None:
        spins = _with_groups(spins, groups[1], groups[2], members=groups[3])
    if rf_axes is not None:
        spins = _with_groups(spins, *_rf_groups(twin, rf_axes, perm, chunk, n_chunks, dtype),
                             fields=("x", "y", "z", "df", "b1", "r1", "r2"), prefix="rf_")
    rfint_use = None
    if rfint is not None:  # interpolated pulses: each spin's tissue, the tables in the engine's dtype
        spins = spins._replace(tissue=_pack_ids(rfint.tissue, perm, n_chunks, chunk, n_dev))
        rfint_use = tuple(bool(u) for u in rfint.use)
        rfint = jax.tree_util.tree_map(lambda a: to_device(a, dtype), rfint.tables)
    sharding = spin_sharding(devices) if n_dev > 1 else None
    etab, etab_all, defer_k, defer_n, defer_segs, layout = None, False, 0, (), None, None
    width = chunk if groups is None else groups[2].shape[1]
    exact = readout is None and not method.reversible and not models
    if not method.reversible and not models:
        layout = _step_layout(dseq, _exact_window_table(dseq, width, chunk, dtype)[0] if exact else None,
                              rf_kind, method.ideal_spoiling, method.checkpoint,
                              tuple(k for k in (fuse_kind, free_kind) if k is not None))
        if (layout is not None and held_traced and not held.premapped
                and _slot_copies(layout[0], held.kind) > HELD_LAYOUT_COPIES):
            layout = None  # (see HELD_LAYOUT_COPIES)
    if exact:
        n_coils = 1 if sens is None else sens.shape[0]
        etab, etab_all, defer_k, defer_n, defer_segs = _remembered(
            dseq, ("exact-windows-device", width, chunk, jnp.dtype(dtype).name, n_coils, method.checkpoint,
                   None if layout is None else layout[0], _knobs()),
            lambda: _exact_window_device(dseq, width, chunk, dtype, n_coils, method.checkpoint, layout))
    d = _astype(dseq, dtype)
    if wtab is not None:
        wtab = wtab._replace(k=to_device(wtab.k, dtype), dt=to_device(wtab.dt, dtype),
                             count=to_device(wtab.count), step=to_device(wtab.step))
    rev_kw = {}
    if method.reversible:
        if models:
            raise NotImplementedError("Bloch(reversible=True) is not available with dynamics=...; use the "
                                      "default segment checkpointing")
        from .adjoint import restore_points

        restore, slot, n_slots = restore_points(
            np.asarray(dseq.t), np.asarray(dseq.dt), dseq.n_real_steps, _reversible_segment(method, twin, dtype),
            force=np.asarray(dseq.spoil) if method.ideal_spoiling else None)
        rev_kw = {"rev": (to_device(restore), to_device(slot)), "n_slots": n_slots}
    core = functools.partial(_core, readout=readout, wtab=wtab, rftab=rftab, rf_kind=rf_kind, rf_held=rf_held,
                             htab=htab, held=held,
                             ftab=ftab,
                             fuse_kind=fuse_kind, fuse_same_dt=fuse_same_dt, fftab=fftab, free_kind=free_kind, etab=etab,
                             etab_all=etab_all, rfint=rfint, rfint_use=rfint_use, defer_k=defer_k, defer_n=defer_n,
                             defer_segs=defer_segs,
                             layout=None if layout is None else layout[0],
                             step_map=None if layout is None else layout[2], rf_rotation=rf_rotation, **rev_kw)
    if models:  # per-spin dynamics: a separate core (issue 9), see _dynamics_entry
        core = functools.partial(_dynamics_entry, models=models, twin=twin, k1=k1)
    else:
        spins, d, core = _placed(spins, d, core, sharding)
    call = functools.partial(core, spins, d, n_chunks=n_chunks, chunk=chunk, n_window=d.n_window,
                             checkpoint=method.checkpoint, want_mag=return_magnetization,
                             spoiling=method.ideal_spoiling, sharding=sharding,
                             diffusion=method.analytic_diffusion)
    return _Run(call, twin.n_spins, perm, seq_groups, pd0, kspace, dseq, adc_event, n_dev)


def _rf_rotation_mode(twin: Twin, dseq: DiscreteSequence, ftab=None, fused_only: bool = False, ext=None,
                      mixed: str | None = None) -> str:
    """How the engine rotates in its RF steps (`kernels.rf_step`), or with ``fused_only``
    in the steps of the table ``ftab`` (fused steps, `fused_rf.fused_rf_steps`; held
    steps; prepared pulses, `prepared_rf.prepare_pulse`, with ``mixed="auto"``):
    ``"small"`` when the field of every one of them stays within `kernels.SMALL_FIELD`
    for every spin (the bound of `kernels.small_field`, from the twin's largest ``|B1|``,
    ``|x|``, ``|y|``, ``|z|``, ``|Δf|``), ``"general"`` when none does, else (some do,
    or a value is traced) ``"auto"``: decided per step on the device; for fused steps
    ``"general"`` instead of ``"auto"`` (a conditional between two unrolled 16-step
    kernels doubles their compile time), or ``mixed`` when given. A static choice spares
    the per-step `lax.cond`, which on XLA's CPU backend costs what the series saves.
    (Part of the compiled core's key: a twin that crosses the bound recompiles.)
    ``ext``: the twin's `_twin_extent_host` when already known."""
    mixed = mixed or ("general" if fused_only else "auto")
    m = dseq.n_real_steps
    vals = (dseq.kind, dseq.dt, dseq.kstep, dseq.b1dt, dseq.cyc0, twin.position, twin.delta_f, twin.b1)
    if any(isinstance(v, jax.core.Tracer) for v in vals) or (
            ftab is not None and _has_tracer((ftab.dt, ftab.k, ftab.b1dt, ftab.c0, getattr(ftab, "scale", None)))):
        return mixed
    if fused_only:  # (padding rows are zeros: within any bound)
        dt, k = np.asarray(ftab.dt).ravel(), np.asarray(ftab.k).reshape(-1, 3)
        b1dt, c0 = np.asarray(ftab.b1dt).ravel(), np.asarray(ftab.c0).ravel()
    else:
        rf = np.asarray(dseq.kind)[:m] == 0
        dt, k = np.asarray(dseq.dt)[:m][rf], np.asarray(dseq.kstep)[:m][rf]
        b1dt, c0 = np.asarray(dseq.b1dt)[:m][rf], np.asarray(dseq.cyc0)[:m][rf]
    if not dt.size:
        return mixed
    ext = _twin_extent_host(twin) if ext is None else ext
    wz = np.abs(k) @ ext[1:4] + np.abs(dt) * ext[4] + np.abs(c0)
    small = (ext[0] * np.abs(b1dt)) ** 2 + wz ** 2 <= kernels.SMALL_FIELD ** 2
    return "small" if small.all() else "general" if not small.any() else mixed


def _twin_extent_host(twin: Twin) -> np.ndarray:
    """(5,) float64: `_twin_extent` of a concrete twin, from host memory on a CPU."""
    if jax.default_backend() != "cpu":
        return np.asarray(_twin_extent(twin.position, twin.delta_f, twin.b1), np.float64)

    def amax(v, default):  # the arrays are in host memory: no device call
        return default if v is None else float(np.max(np.abs(np.asarray(v)), initial=0.0))

    pos = np.asarray(twin.position)  # (column by column: 9x faster than .max(axis=0) on (n, 3))
    return np.array([amax(twin.b1, 1.0), *(amax(pos[:, i], 0.0) for i in range(3)), amax(twin.delta_f, 0.0)])


@jax.jit
def _twin_extent(position, delta_f, b1):
    """(5,) the twin's largest ``|B1|``, ``|x|``, ``|y|``, ``|z|``, ``|Δf|`` (one call)."""
    amax = jnp.max(jnp.abs(position), axis=0)
    return jnp.stack([1.0 if b1 is None else jnp.max(jnp.abs(b1)), amax[0], amax[1], amax[2],
                      0.0 if delta_f is None else jnp.max(jnp.abs(delta_f))])


RUN_CACHE_SPINS = 1 << 20  # twins up to this size keep their planned run (see _run_key)
_RUNS: dict = {}  # run key -> (twin ref, sequence ref, _Run, motion ref or None); the two most recently used


MAX_STEP_PERIOD = 16  # longest period of steps scanned as macro steps of static kinds (0: never)


def _step_layout(dseq: DiscreteSequence, etab, rf_kind, spoiling: bool, checkpoint: bool, fused_kinds=()):
    """The periodic layout of the steps (`layout.plan_step_layout`): ``(StepLayout,
    StepMap, the map as device arrays)`` or None; remembered with the sequence (keyed by
    what it depends on).

    None for a sequence with fused steps (``fused_kinds``: `fused_rf`, S steps unrolled in
    one): a macro step holds one copy of a kind's kernel per slot, and a few unrolled
    kernels per macro step, head and tail made compilation 3-6x slower (a 1000-step pulse:
    5 s -> 16 s in float32, 38 s in float64, where the run also slowed from 7 ms to 9 s)."""
    if MAX_STEP_PERIOD < 1 or isinstance(dseq.kind, jax.core.Tracer):
        return None
    geo_key = None if etab is None else hashlib.blake2b(np.asarray(etab.step).tobytes()).hexdigest()
    key = ("step-layout", geo_key, rf_kind, spoiling, checkpoint, fused_kinds, MAX_STEP_PERIOD)
    return _remembered(dseq, key, lambda: _step_layout_compute(dseq, etab, rf_kind, spoiling, checkpoint,
                                                               fused_kinds))


# At most this many copies of a held step whose table is traced (and not premapped) in a layout
HELD_LAYOUT_COPIES = 2


def _slot_copies(layout, kind: int) -> int:
    """Copies of step kind ``kind``'s kernel in a layout: its slots in the head, the macro
    step and the tail (`layout.StepLayout`).

    A held step's copies (`held_rf.step_power`: ``bits`` squarings of affine maps,
    unrolled) with a traced table are each differentiated on their own; past
    `HELD_LAYOUT_COPIES` (and when the table's maps are not premapped: more than
    `HELD_PREMAP_ROWS` rows) the engine scans the steps one by one instead (the generic
    scan's `lax.switch`: one copy). Measured on notebook 04's flip gradient with the
    premapping off (16 block pulses as held steps, 8 of them in the layout's head;
    `benchmarks/bench_held_gradient.py`, float64, XLA's defaults, 2-core CPU): compile
    0.48x, run 2.1x (5 -> 11 ms)."""
    return sum(slot.kind == kind for slot in layout.head + layout.slots + layout.tail)


def _step_layout_compute(dseq: DiscreteSequence, etab, rf_kind, spoiling: bool, checkpoint: bool, fused_kinds):
    from .layout import plan_step_layout

    n = dseq.n_real_steps
    kind = np.asarray(dseq.kind)[:n]
    if np.isin(kind, fused_kinds).any():
        return None
    minus = np.full(n, -1, np.int64)
    geo = minus if etab is None else np.where(kind == 2, np.asarray(etab.step)[:n], -1)
    pulse = minus if rf_kind is None else np.where(kind == rf_kind, np.asarray(dseq.count)[:n], -1)
    spoil = np.asarray(dseq.spoil)[:n] if spoiling else np.zeros(n, bool)
    fields = {"kind": kind, "sample": np.asarray(dseq.sample)[:n], "spoil": spoil, "geo": geo, "pulse": pulse}
    dt = None if isinstance(dseq.dt, jax.core.Tracer) else np.asarray(dseq.dt)[:n]  # (Slot.same_dt)
    planned = plan_step_layout(fields, max_period=MAX_STEP_PERIOD, checkpoint=checkpoint, seg_of=_segments, dt=dt)
    if planned is None:
        return None
    layout, steps = planned
    return layout, steps, tuple(to_device(a) for a in steps)


def _knobs() -> tuple:
    """The module's planning limits (tests change them): part of the run key."""
    return (MAX_EXACT_GEOMETRIES, EXACT_TABLE_BYTES, DEFER_BYTES, MAX_STEP_PERIOD, SINGLE_STEP_PULSE_CHUNK,
            HELD_PREMAP_ROWS, HELD_LAYOUT_COPIES, PREPARE_TRACED_AMPLITUDES)


def _run_key(twin: Twin, seq, coils, scanner, method, dtype, want_mag: bool, motion, models):
    """The key under which a call's planned run is remembered, or None.

    Repeated calls with the same twin and sequence objects (both immutable), and the same
    motion object if any, skip the host planning (packing, grouping, window and pulse
    tables: 2-3 ms, as much as a 4k-spin simulation itself; ~8 ms with a motion). Not with
    explicit ``coils`` or dynamics, for twins above `RUN_CACHE_SPINS` spins (the packed copy
    would hold device memory, and the planning is negligible there) or traced values
    (checked when a run is stored)."""
    if coils is not None or models or twin.n_spins > RUN_CACHE_SPINS:
        return None
    key = (id(twin), id(seq), None if motion is None else id(motion), scanner, method, jnp.dtype(dtype).name,
           bool(want_mag), _knobs())
    try:
        hash(key)
    except TypeError:  # a method or scanner with unhashable fields
        return None
    return key


def _cached_run(key, twin: Twin, seq, motion) -> _Run | None:
    hit = None if key is None else _RUNS.get(key)
    if (hit is not None and hit[0]() is twin and hit[1]() is seq
            and (hit[3] is None if motion is None else hit[3]() is motion)):
        _RUNS[key] = _RUNS.pop(key)  # the most recently used goes last: evicted last
        return hit[2]
    return None


def _remember_run(key, twin: Twin, seq, run: _Run, motion=None) -> None:
    # (planned inside a jit trace, the run's arrays are tracers of that trace: not kept)
    parts = (twin, run.call.args, run.call.keywords, run.kspace, run.dseq, run.pd0)
    if key is None or _holds_tracer(seq) or (motion is not None and _holds_tracer(motion)) or _has_tracer(parts):
        return
    while len(_RUNS) >= 2:
        _RUNS.pop(next(iter(_RUNS)))

    def forget(_, key=key):  # the twin, sequence or motion is gone: release the packed spins
        _RUNS.pop(key, None)

    try:
        _RUNS[key] = (weakref.ref(twin, forget), weakref.ref(seq, forget), run,
                      None if motion is None else weakref.ref(motion, forget))
    except TypeError:  # not weakly referenceable
        pass


def _signal_out(samples, mag, kspace, dseq, adc_event, noise, key, seq, dtype) -> Signal:
    """The `Signal` of a simulation, with receiver noise when asked."""
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


def _plan_pallas(twin: Twin, sens, dseq: DiscreteSequence, chunk: int, devices, want_mag: bool, spoiling: bool,
                 prepare: bool):
    """`simulate` with ``Bloch(kernel="pallas")``: the host work (the kernel's steps,
    remembered with the sequence; the packed spins, remembered with the run), then a
    ``call()`` that launches the kernel and returns ``(samples, magnetization)``."""
    from .pallas_kernel import kernel_steps, launch_config, pallas_chunk

    if _windowed(dseq):
        raise ValueError("Bloch(kernel='pallas') needs a stepped sequence (one step per ADC sample); this "
                         "DiscreteSequence has ADC windows: discretize(..., windows=False)")
    if not isinstance(dseq.bstep, jax.core.Tracer) and np.any(np.asarray(dseq.bstep) != 0):
        raise ValueError("Bloch(kernel='pallas') does not simulate analytic diffusion; this DiscreteSequence "
                         "carries diffusion weighting (discretize(..., diffusion=True))")

    def inputs():
        steps, pulse, slot_of_sample, n_slots = kernel_steps(dseq, spoiling=spoiling, prepare=prepare)
        return (tuple(to_device(a) for a in steps), None if pulse is None else tuple(to_device(a) for a in pulse),
                to_device(slot_of_sample), to_device(dseq.demod, jnp.complex64), n_slots)

    steps, pulse, slot_of_sample, demod, n_slots = _remembered(dseq, ("pallas-steps", spoiling, prepare), inputs)
    n_coils = 1 if sens is None else int(sens.shape[0])
    n_dev = len(devices)
    interpret = jax.default_backend() == "cpu"
    block, warps = launch_config(interpret)
    chunk = pallas_chunk(chunk, n_coils, n_slots, block, 0 if pulse is None else len(pulse[0]))
    spins, _ = _pack_spins(twin, sens, chunk, jnp.float32, n_dev)
    mesh = spin_sharding(devices).mesh if n_dev > 1 else None
    return functools.partial(_call_pallas, spins, steps, slot_of_sample, demod, pulse, n_spins=twin.n_spins,
                             n_slots=n_slots, block=block, interpret=interpret, want_mag=want_mag, mesh=mesh,
                             num_warps=warps)


def _placed(spins, d, core, sharding):
    """The run's arrays put on the devices once, as the core program takes them: the spins
    split over the devices by ``sharding`` (None: one device), the steps and tables
    replicated. Left as they were (uncommitted arrays on the default device, NumPy
    arrays), JAX copied all of them to the devices at every call: ~30 arrays, ~5 ms of a
    20-100 ms call of the suite's 26k-spin cases on two CPU devices. Untouched when traced
    (`simulate` inside `jax.jit` or a derivative)."""
    kw = {k: v for k, v in core.keywords.items() if k not in _CORE_STATIC}
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves((spins, d, kw))):
        return spins, d, core
    everywhere = None if sharding is None else jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())

    def put(tree, where):
        return jax.tree_util.tree_map(
            lambda x: jax.device_put(x, where) if isinstance(x, (jax.Array, np.ndarray, np.generic)) else x, tree)

    return put(spins, sharding), put(d, everywhere), functools.partial(core, **put(kw, everywhere))


def _call_pallas(spins, steps, slot_of_sample, demod, pulse, *, n_spins: int, **kw):
    """Launch the planned kernel (`_plan_pallas`): ``(samples, magnetization)``."""
    from .pallas_kernel import pallas_core

    samples, mag = pallas_core(spins, steps, slot_of_sample, demod, pulse, **kw)
    return samples, (None if mag is None else mag[:n_spins])


def _reversible_segment(method: Bloch, twin: Twin, dtype) -> float:
    """Restore-point spacing of the reversible adjoint [s] (see `Bloch`)."""
    if method.reversible_segment is not None:
        return float(method.reversible_segment)
    if isinstance(twin.t2, jax.core.Tracer):
        return 0.1
    t2 = np.asarray(twin.t2, np.float64)
    keep = np.isfinite(t2)
    if not isinstance(twin.pd, jax.core.Tracer):
        keep &= np.asarray(twin.pd) != 0
    t2 = t2[keep]
    if t2.size == 0:
        return 1.0
    budget = 100.0 if jnp.dtype(dtype) == jnp.float32 else 1e6
    return max(float(t2.min()), 1e-5) * float(np.log(budget))


_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_WINDOW_PLANS: dict = {}  # (ids, plan, layout) -> (twin ref, dseq ref, result); a few entries


def _window_plan(plan_window_cache, readout, twin, dseq, chunk, n_chunks, tol):
    """`readout.plan_window_cache`, remembered for the last few (twin, sequence) objects:
    its sort of the spins costs O(n log n) on the host (0.4 s for 10⁶ spins), which
    repeated calls with the same twin need not pay again."""
    key = (id(twin), id(dseq), readout, chunk, n_chunks, tol)
    hit = _WINDOW_PLANS.get(key)
    if hit is not None and hit[0]() is twin and hit[1]() is dseq:
        return hit[2]
    out = plan_window_cache(readout, twin, dseq, chunk, n_chunks, tol)
    if out[1] is not None and not _has_tracer(out):
        while len(_WINDOW_PLANS) >= 4:
            _WINDOW_PLANS.pop(next(iter(_WINDOW_PLANS)))
        _WINDOW_PLANS[key] = (weakref.ref(twin), weakref.ref(dseq), out)
    return out


_GROUP_PLANS: dict = {}  # window groups by content; RF group axes by twin (with a twin ref); a few


GROUP_GATHER_PADDING = 2  # window groups summed by gathers while G * (largest group) <= this * chunk


def _group_plan(twin: Twin, dseq: DiscreteSequence, chunk: int, n_chunks: int, dtype):
    """Window groups (`Bloch.group_spins`): ``(perm, group, first)`` or None.

    Spins are sorted (``perm``, (n_spins,)) by their key: the coordinates along the axes
    that the windows' gradients touch, Δf and T2, as the engine will see them (cast to
    ``dtype``). ``group`` (n_chunks, chunk) int32 is each spin's group within its chunk
    (sorted, padding spins join the chunk's last group) and ``first`` (n_chunks, G) int32
    a member of each group (its values are the group's). None when a value is traced or
    the groups would not quarter the work. Remembered for the last few (twin, sequence)
    objects: the sort costs O(n log n) on the host."""
    fields = (twin.position, twin.delta_f, twin.t2, dseq.kstep, dseq.kind)
    if any(isinstance(f, jax.core.Tracer) for f in fields):
        return None
    npd = np.dtype(jnp.dtype(dtype).name)
    axes = _remembered(dseq, "window-axes", lambda: _window_axes(dseq))
    n = twin.n_spins
    pos = np.asarray(twin.position).astype(npd)
    df = np.zeros(n, npd) if twin.delta_f is None else np.broadcast_to(np.asarray(twin.delta_f), (n,)).astype(npd)
    t2 = np.broadcast_to(np.asarray(twin.t2), (n,)).astype(npd)
    cols = [pos[:, i] for i in range(3) if axes[i]] + [df, t2]
    # remembered by content: a twin with other T1, PD or B1 (a fit, the benchmarks' new
    # values) has the same groups; hashing is O(n), the sort O(n log n)
    digest = hashlib.blake2b(digest_size=16)
    for c in cols:
        digest.update(np.ascontiguousarray(c).view(np.uint8))
    key = ("window-groups", digest.hexdigest(), n, chunk, n_chunks, npd.name, GROUP_GATHER_PADDING)
    hit = _GROUP_PLANS.get(key)
    if hit is not None:
        return hit
    out = _group_plan_compute(cols, n, chunk, n_chunks)
    while len(_GROUP_PLANS) >= 8:
        _GROUP_PLANS.pop(next(iter(_GROUP_PLANS)))
    _GROUP_PLANS[key] = out
    return out


def _window_axes(dseq: DiscreteSequence) -> np.ndarray:
    """(3,) bool: the axes on which any ADC window plays a gradient."""
    n_real = dseq.n_real_steps
    windows = np.asarray(dseq.kind)[:n_real] == 2
    return np.any(np.asarray(dseq.kstep)[:n_real][windows] != 0, axis=0)


def _group_plan_compute(cols, n: int, chunk: int, n_chunks: int):
    perm = np.lexsort(cols[::-1])
    keys = np.stack([c[perm] for c in cols], 1)
    new = np.ones(n, bool)
    new[1:] = np.any(keys[1:] != keys[:-1], axis=1)
    gid = np.cumsum(new) - 1  # sorted global group ids
    total = n_chunks * chunk
    gid = np.concatenate([gid, np.full(total - n, gid[-1] if n else 0)]).reshape(n_chunks, chunk)
    local = gid - gid[:, :1]
    n_groups = int(local[:, -1].max()) + 1
    if n_groups * 4 > chunk:
        return None
    first = np.zeros((n_chunks, n_groups), np.int32)
    sizes = np.zeros((n_chunks, n_groups), np.int64)
    for c in range(n_chunks):
        starts = np.flatnonzero(np.r_[True, local[c, 1:] != local[c, :-1]])
        first[c, : starts.size] = starts
        sizes[c, : starts.size] = np.diff(np.r_[starts, chunk])
    # each group's members padded to the largest group (index ``chunk``: a zero): a group's
    # sum is then a gather and a row sum, several times faster than a scatter (segment_sum)
    # on XLA's CPU backend; only where the padding at most doubles the work
    width = int(sizes.max())
    members = None
    if n_groups * width <= GROUP_GATHER_PADDING * chunk:
        j = np.arange(width)
        members = np.where(j < sizes[..., None], first[..., None] + j, chunk).astype(np.int32)
    return perm, local.astype(np.int32), first, members


class ExactWindowTable(NamedTuple):
    """Repeated exact windows (`_exact_window_table`): one row per geometry, one index per
    step (G for a step that is not one of them)."""

    k: np.ndarray  # (G, 3) moment per interval [1/m]
    dt: np.ndarray  # (G,) interval [s]
    count: np.ndarray  # (G,) intervals per window
    step: np.ndarray  # (n_steps,) int32
    # deferred windows (`_defer_windows`): per step its slot in its segment's buffer (K for
    # none); per geometry its windows' slots in the flattened buffers and their steps
    slot: np.ndarray | None = None  # (n_steps,) int32
    slot_idx: np.ndarray | None = None  # (G, M) int32 (S K: unused)
    slot_step: np.ndarray | None = None  # (G, M) int32 (n_steps: unused)


MAX_EXACT_GEOMETRIES = 8
EXACT_TABLE_BYTES = 256 * 2 ** 20  # per chunk, all geometries together
DEFER_BYTES = 256 * 2 ** 20  # per chunk: the deferred windows' weights and power tables


def _defer_windows(table: ExactWindowTable, n_window: int, n_coils: int, width: int, dtype, layout=None):
    """Plan the deferral of the tabled windows' samples (host side): the scan only keeps
    each window's start weights ``c_j m_j`` (n_coils, width) in a per-segment buffer, and
    after the scan one matrix product per geometry gives all their samples (a GEMM over all
    windows at once runs several times faster than one skinny GEMM per window). Only the
    segments from the first to the last that hold a deferred window keep buffers (an
    EPI's windows all lie in the segments after its excitation): the others run with a
    scratch buffer that is not returned (`_segmented_scan`'s ``buffered``).

    With a step ``layout`` ((StepLayout, StepMap), `layout.plan_step_layout`) the segments
    are those of its macro steps.

    Returns:
        ``(table with slot, slot_idx and slot_step, K, (s0, s1))`` with K the buffer's
        slots per segment and ``s0 <= s < s1`` the segments with buffers (``slot_idx``
        indexes their buffers, flattened, from ``s0``'s), or ``(table, 0, None)`` when the
        buffers and power tables would pass `DEFER_BYTES`.
    """
    step = np.asarray(table.step)
    n_steps = step.shape[0]
    n_geo = table.dt.shape[0]
    deferred = np.flatnonzero(step < n_geo)
    if not deferred.size:
        return table, 0, None
    if layout is None:
        seg_of = deferred // _segments(n_steps)[0]
    else:  # (steps of the head and tail run outside the scan: not deferred)
        lay, smap = layout[0], layout[1]
        head = len(lay.head)
        deferred = deferred[(deferred >= head) & (deferred < head + smap.slot_of.size)]
        if not deferred.size:
            return table, 0, None
        seg_of = smap.slot_of[deferred - head] // (lay.seg * lay.period)
    s0, s1 = int(seg_of.min()), int(seg_of.max()) + 1
    counts = np.bincount(seg_of - s0, minlength=s1 - s0)
    k = int(counts.max())
    csize = 2 * np.dtype(jnp.dtype(dtype).name).itemsize
    if ((s1 - s0) * k * n_coils + n_geo * n_window) * width * csize > DEFER_BYTES:
        return table, 0, None
    first = np.r_[0, np.cumsum(counts)[:-1]]
    pos = np.arange(deferred.size) - first[seg_of - s0]
    slot = np.full(n_steps, k, np.int32)
    slot[deferred] = pos
    flat = (seg_of - s0) * k + pos
    geo = step[deferred]
    per_geo = np.bincount(geo, minlength=n_geo)
    slot_idx = np.full((n_geo, int(per_geo.max())), (s1 - s0) * k, np.int32)
    slot_step = np.full((n_geo, int(per_geo.max())), n_steps, np.int32)
    for g in range(n_geo):
        sel = geo == g
        slot_idx[g, : per_geo[g]] = flat[sel]
        slot_step[g, : per_geo[g]] = deferred[sel]
    return table._replace(slot=slot, slot_idx=slot_idx, slot_step=slot_step), k, (s0, s1)


def _exact_window_device(dseq: DiscreteSequence, width: int, chunk: int, dtype, n_coils: int, checkpoint: bool,
                         layout=None):
    """``(table, all_cached, K, n_use, (s0, s1))``: the exact window table
    (`_exact_window_table`), deferred when checkpointing without a translation
    (`_defer_windows`: K slots per segment in the segments ``s0 <= s < s1``, on the
    segments of the step ``layout`` when there is one, with the samples read per geometry
    `_deferred_sample_counts`), as device arrays."""
    etab, etab_all = _exact_window_table(dseq, width, chunk, dtype)
    defer_k, defer_n, defer_segs = 0, (), None
    if etab is not None and checkpoint and dseq.wcyc is None:
        etab, defer_k, defer_segs = _defer_windows(etab, dseq.n_window, n_coils, width, dtype, layout)
        if defer_k:
            defer_n = _deferred_sample_counts(etab.count, dseq.n_window)
    if etab is not None:
        etab = jax.tree_util.tree_map(to_device, etab)._replace(k=to_device(etab.k, dtype),
                                                                dt=to_device(etab.dt, dtype))
    return etab, etab_all, defer_k, defer_n, defer_segs


def _deferred_sample_counts(count, n_window: int) -> tuple:
    """The samples computed per geometry of deferred windows: a window of ``count``
    intervals has its samples at the ends of intervals 1..count (`kernels.window_step`;
    ``n_window``, the length of the window outputs, is the longest window rounded up to a
    power of two). Rounded up to a multiple of 8 (sequences whose windows differ by a few
    samples share their compiled core), at most ``n_window``."""
    return tuple(min(n_window, -(-int(c) // 8) * 8) for c in np.asarray(count))


def _device_table(dseq: DiscreteSequence, tag: str, table, dtype):
    """A pulse or fused-step table (`prepared_rf.PulseTable`) as device arrays in ``dtype``,
    remembered with the sequence ``dseq`` it belongs to."""
    cdt = jnp.complex128 if dtype == jnp.float64 else jnp.complex64

    def convert():
        scaled = {"scale": None} if isinstance(table, PulseTable) else {}  # (multiplied into b1dt)
        return table._replace(dt=to_device(table.dt, dtype), k=to_device(table.k, dtype),
                              b1dt=None if table.b1dt is None else
                              device_b1dt(table, cdt) if scaled else to_device(table.b1dt, cdt),
                              c0=to_device(table.c0, dtype),
                              **({"n": to_device(table.n)} if hasattr(table, "n") else {}), **scaled)

    return _remembered(dseq, ("device-table", tag, jnp.dtype(dtype).name), convert)


def _exact_window_table(dseq: DiscreteSequence, width: int, chunk: int, dtype):
    """The exact windows that repeat with the same moment, interval and length (every line
    of a Cartesian readout, the two directions of an EPI): their factors are computed once
    per chunk (`kernels.prepare_exact_window`) instead of once per window. At most
    `MAX_EXACT_GEOMETRIES`, the most frequent first, and as many as fit in
    `EXACT_TABLE_BYTES` (``width`` spins or groups per chunk). ``(table, all_cached)``, or
    ``(None, False)`` when the sequence is traced or no window repeats."""
    fields = (dseq.kind, dseq.kstep, dseq.dt, dseq.count)
    if dseq.n_window == 0 or any(isinstance(f, jax.core.Tracer) for f in fields):
        return None, False
    key = ("exact-windows", width, chunk, jnp.dtype(dtype).name, MAX_EXACT_GEOMETRIES, EXACT_TABLE_BYTES)
    return _remembered(dseq, key, lambda: _exact_window_table_compute(dseq, width, chunk, dtype, fields))


def _exact_window_table_compute(dseq: DiscreteSequence, width: int, chunk: int, dtype, fields):
    kind, kstep, dt, count = (np.asarray(f) for f in fields)
    win = np.flatnonzero(kind[: dseq.n_real_steps] == 2)
    npd = np.dtype(jnp.dtype(dtype).name)
    # as the engine sees them: windows equal after the cast to ``dtype`` are the same window
    keys = np.c_[kstep[win].astype(npd), dt[win].astype(npd), count[win]]
    uniq, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    na, nb = kernels._bsgs(dseq.n_window)
    csize = 2 * npd.itemsize
    per_geometry = ((na + nb) * width + 2 * chunk) * csize
    fit = min(MAX_EXACT_GEOMETRIES, EXACT_TABLE_BYTES // per_geometry)
    order = [g for g in np.argsort(-counts, kind="stable") if counts[g] >= 2][:fit]
    if not order:
        return None, False
    remap = np.full(len(uniq), len(order), np.int32)
    remap[order] = np.arange(len(order))
    step = np.full(dseq.dt.shape[0], len(order), np.int32)
    step[win] = remap[inverse.reshape(-1)]
    rows = uniq[order]
    table = ExactWindowTable(rows[:, :3], rows[:, 3], rows[:, 4].astype(np.int32), step)
    return table, bool(np.all(step[win] < len(order)))


def _astype(dseq: DiscreteSequence, dtype) -> DiscreteSequence:
    """``dseq.astype(dtype)``, remembered for the last few sequence objects (the cast is a
    dozen eager conversions, a few milliseconds of dispatch per call)."""
    return _remembered(dseq, ("cast", jnp.dtype(dtype).name), lambda: dseq.astype(dtype))


def _with_groups(spins: Spins, group, first, fields=("x", "y", "z", "df", "r2"), prefix="", members=None) -> Spins:
    """``spins`` (n_dev, chunks per device, chunk) with groups attached: ``group``
    (n_chunks, chunk) as ``<prefix>group`` and the ``fields`` of each group's member
    ``first`` (n_chunks, G) as ``<prefix>group_params`` (len(fields), G) per chunk; the
    window groups' padded member lists ``members`` (n_chunks, G, M) as ``group_members``."""
    group, params, members = _group_params(tuple(getattr(spins, f) for f in fields), to_device(group),
                                           to_device(first), None if members is None else to_device(members))
    out = spins._replace(**{prefix + "group": group, prefix + "group_params": params})
    return out if members is None else out._replace(group_members=members)


@jax.jit
def _group_params(values, group, first, members):
    """`_with_groups` in one jitted call (eager gathers cost milliseconds of dispatch)."""
    shape = values[0].shape
    first = first.reshape(shape[:2] + (first.shape[-1],))
    params = jnp.stack([jnp.take_along_axis(v, first, axis=2) for v in values], axis=2)
    if members is not None:
        members = members.reshape(shape[:2] + members.shape[1:])
    return group.reshape(shape), params, members


def _rf_keys(twin: Twin, axes, npd):
    """(n, k) per-spin values that an RF pulse sees: positions along ``axes``, Δf, B1+, T1,
    T2 (as the engine will, cast to ``npd``)."""
    n = twin.n_spins

    def col(v, default):
        return np.full(n, default, npd) if v is None else np.broadcast_to(np.asarray(v), (n,)).astype(npd)

    pos = np.asarray(twin.position).astype(npd)
    cols = [pos[:, i] for i in range(3) if axes[i]]
    cols += [col(twin.delta_f, 0.0), col(twin.b1, 1.0), col(twin.t1, np.inf), col(twin.t2, np.inf)]
    return np.stack(cols, 1)


# Preparing the repeated pulses per spin steps 4 vectors through every raster step of each
# pulse, once per chunk: 1.0 s of brain3d-gre's 1.8 s per call on the 2-core CPU (1.68M
# spins, a 40-step sinc). On groups of spins that see the pulse alike (1 999 there) it is
# negligible, for a host sort of the twin's RF keys (~0.2 us per spin, 0.35 s there) when
# the twin is new: worth it from about 16 prepared steps in all (each ~15 ns per spin on
# this CPU). On a GPU the preparation takes a few ms, less than the sort: there the
# groups are used only for pulses that would be stepped.
RF_GROUP_MIN_STEPS = 16


def _steps_rf(dseq: DiscreteSequence) -> bool:
    """Whether ``dseq`` has RF steps (kind 0) left."""
    return bool(np.any(np.asarray(dseq.kind)[:dseq.n_real_steps] == 0))


def _groups_for_preparing(table) -> bool:
    """Whether the pulses of ``table`` (the repeated ones, prepared per spin otherwise)
    should be prepared on RF groups: on the CPU, from `RF_GROUP_MIN_STEPS` steps."""
    if table is None or jax.default_backend() != "cpu":
        return False
    return int(np.count_nonzero(np.asarray(table.dt))) >= RF_GROUP_MIN_STEPS


def _rf_group_axes(twin: Twin, dseq: DiscreteSequence, method: Bloch, chunk: int, dtype):
    """The gradient axes of the RF steps when RF pulses should be prepared on groups of
    spins (`Bloch.group_spins`): the twin's values and the RF steps are concrete, and the
    spins form at most ``chunk / 4`` groups; else None."""
    if (not method.group_spins or not method.prepare_pulses or method.reversible
            or method.analytic_diffusion):  # (the NUFFT readout's spin order: `_rf_groups`)
        return None
    fields = (twin.position, twin.delta_f, twin.b1, twin.t1, twin.t2, dseq.kstep, dseq.kind)
    if any(isinstance(f, jax.core.Tracer) for f in fields):
        return None
    n_real = dseq.n_real_steps
    rf = np.asarray(dseq.kind)[:n_real] == 0
    if not rf.any():
        return None
    axes = tuple(bool(a) for a in np.any(np.asarray(dseq.kstep)[:n_real][rf] != 0, axis=0))
    key = ("rf", id(twin), axes, chunk, jnp.dtype(dtype).name)
    hit = _GROUP_PLANS.get(key)
    if hit is not None and hit[0]() is twin:
        return hit[2]
    keys = _rf_keys(twin, axes, np.dtype(jnp.dtype(dtype).name))
    rows = unique_rows(keys.T, limit=min(chunk, twin.n_spins) // 4) if keys.size else None
    out = axes if rows is not None else None
    if _has_tracer(out):
        return out
    while len(_GROUP_PLANS) >= 8:
        _GROUP_PLANS.pop(next(iter(_GROUP_PLANS)))
    _GROUP_PLANS[key] = (weakref.ref(twin), rows, out)  # (the rows again in `_rf_groups`)
    return out


def _rf_groups(twin: Twin, axes, perm, chunk: int, n_chunks: int, dtype):
    """Per chunk (spins in the engine's order ``perm``): each spin's RF group
    (n_chunks, chunk) int32 and a member of each group (n_chunks, G) int32."""
    # the twin's groups once (one code per spin; found by `_rf_group_axes`), then each
    # chunk's own numbering of them; padding spins form a group of their own
    hit = _GROUP_PLANS.get(("rf", id(twin), axes, chunk, jnp.dtype(dtype).name))
    if hit is not None and hit[0]() is twin and hit[1] is not None:
        inverse, groups = hit[1]
    else:
        inverse, groups = unique_rows(_rf_keys(twin, axes, np.dtype(jnp.dtype(dtype).name)).T)
    if perm is not None:
        inverse = inverse[perm]
    total = n_chunks * chunk
    code = np.zeros(total, np.int64)  # 0: padding, 1 + the twin's group id
    code[: inverse.size] = inverse.astype(np.int64) + 1
    code = code.reshape(n_chunks, chunk)
    ids = np.zeros((n_chunks, chunk), np.int32)
    firsts = []
    for c in range(n_chunks):
        inv, first = number_codes(code[c], groups.size + 1)
        ids[c] = inv
        firsts.append(first)
    first = np.zeros((n_chunks, max(f.size for f in firsts)), np.int32)
    for c, f in enumerate(firsts):
        first[c, : f.size] = f
    return ids, first


def rf_kind_id(dseq: DiscreteSequence) -> int:
    """The step kind the engine gives prepared pulses (after RF, free, window, general)."""
    return 2 + int(dseq.n_window > 0) + int(dseq.n_general > 0)


def _interpolation_plan(twin: Twin, grouped, rf_kind: int, tol: float, dtype):
    """The `interp_rf.InterpolationPlan` for the pulses of the plan ``grouped`` = (dseq,
    table) (every pulse prepared), or None when the twin does not allow one or a pulse
    played fewer than `MIN_REPEATS` times could not be interpolated (preparing it exactly
    would cost four times stepping it)."""
    from .interp_rf import plan_pulse_interpolation
    from .prepared_rf import MIN_REPEATS

    gseq, table = grouped
    if table is None or table.scale is not None:  # (interpolated between concrete pulses' maps)
        return None
    m = gseq.n_real_steps
    kind, count = np.asarray(gseq.kind)[:m], np.asarray(gseq.count)[:m]
    repeats = np.bincount(count[kind == rf_kind], minlength=table.dt.shape[0])
    plan = plan_pulse_interpolation(twin, table, tol, dtype, repeats)
    if plan is None or not plan.use.any() or not plan.use[repeats < MIN_REPEATS].all():
        return None
    return plan


def _pack_ids(ids, perm, n_chunks: int, chunk: int, n_dev: int):
    """Per-spin int32 ``ids`` (n,) laid out as the spins: (n_dev, chunks per device, chunk)."""
    ids = np.asarray(ids, np.int32)
    if perm is not None:
        ids = ids[np.asarray(perm)]
    ids = np.concatenate([ids, np.zeros(n_chunks * chunk - ids.size, np.int32)])
    return to_device(ids.reshape(n_dev, n_chunks // n_dev, chunk))


SINGLE_STEP_PULSE_CHUNK = 8192  # the largest chunk whose one-step pulses are prepared (CPU)
# Prepare the plays of a pulse whose amplitude is traced but shared (a builder's flip
# angle under `jax.grad`): its shape is concrete, so its map is computed once per chunk
# with the traced amplitude, as for a concrete pulse, instead of stepping every play
# (`prepared_rf.plan_prepared_rf`, ``scaled``). False: the plays are stepped (benchmarks).
PREPARE_TRACED_AMPLITUDES = True


def _prepared_pulses(dseq: DiscreteSequence, method: Bloch, grouped: bool = False, chunk: int = 0):
    """``(dseq, table)``: the RF pulses that repeat (every pulse when ``grouped``: they
    are prepared on groups of spins) as single steps (`prepared_rf`), or ``(dseq, None)``.
    Cached per sequence object (the grouping loops over the pulses on the host). Rigid
    motion is in the steps already (their k-vectors and common phases ``cyc0``), so a
    pulse of a moving twin is prepared from the same steps it would be stepped with.

    On the CPU, pulses of one RF step (hard pulses) are prepared too when they repeat and
    the chunk has at most `SINGLE_STEP_PULSE_CHUNK` spins: applying a prepared map is 20
    multiply-adds per spin against a rotation's series or square root and sines, but it
    reads 12 per-spin arrays, which must stay in the core's cache (the 64x64 GRE, 4 096
    spins per chunk: 1.13-1.3x faster; 16 384 spins: 0.95x, 65 536: 0.8-0.9x). On a GPU the
    rotation's arithmetic is cheap and the arrays cost memory bandwidth: steps there."""
    if not method.prepare_pulses or method.reversible or method.analytic_diffusion:
        return dseq, None
    from .prepared_rf import MIN_REPEATS, plan_prepared_rf

    rf_kind = rf_kind_id(dseq)
    min_repeats = 1 if grouped else MIN_REPEATS
    single = jax.default_backend() == "cpu" and 0 < chunk <= SINGLE_STEP_PULSE_CHUNK
    scaled = PREPARE_TRACED_AMPLITUDES
    return _remembered(dseq, ("prepared-rf", rf_kind, min_repeats, single, scaled),
                       lambda: plan_prepared_rf(dseq, rf_kind, min_repeats, single_steps=single, scaled=scaled))


# In reverse mode a fused step keeps only its inputs and recomputes its 16 unrolled
# rotations in the backward pass: the residuals of a switch branch are carried by every
# step of the scan, and 16 rotations' worth of them made gradients 3x slower and their
# compilation 5x slower.
_fused_rf_remat = {rotation: jax.checkpoint(f) for rotation, f in _FUSED_RF.items()}  # (see fused_rf_steps)
# True: the fused RF steps' derivative as JAX's derivative of a rolled loop, as before
# 2026-12-07 (`benchmarks/bench_fused_rf_gradient.py`; retrace after changing it)
ROLLED_FUSED_RF_DERIVATIVE = False
_fused_rf_rolled_remat = {rotation: jax.checkpoint(f) for rotation, f in _FUSED_RF_ROLLED.items()}
_fused_free_remat = jax.checkpoint(fused_free_steps)
# (likewise a held step: its squarings are recomputed, not carried)
_held_rf_remat = jax.checkpoint(held_rf_step, static_argnums=(7, 8))


# The scan carry: (mx + i my, mz). XLA's CPU backend fuses elementwise work into each
# output array separately, so a step that returns mx, my and mz as three arrays computes
# the rotation shared by them three times; with mx and my as one complex array it does so
# twice (an RF step) or once (free precession). Each step kind still works on a State:
# it is unpacked at the start of the kind's branch and packed at its end.

def _pack(m: State):
    return jax.lax.complex(m.mx, m.my), m.mz


def _unpack(c) -> State:
    return State(jnp.real(c[0]), jnp.imag(c[0]), c[1])


def _identity(x):
    return x


def _spoiled(m: State) -> State:
    return State(jnp.zeros_like(m.mx), jnp.zeros_like(m.my), m.mz)


def _packed_step(f):
    """A step ``State -> State`` on the packed carry."""
    return lambda c: _pack(f(_unpack(c)))


def _packed_branch(f):
    """A step kind's branch ``State -> (State, out)`` on the packed carry."""
    def g(c):
        m, out = f(_unpack(c))
        return _pack(m), out
    return g


def _rows_share_dt(table) -> bool:
    """Whether the raster steps of every fused RF step last as long as the first row's (to
    1e-9 relative, the tolerance within a row: `discretize.fuse_starts`; padding rows, of
    zero duration, apart): their half-step relaxation fractions are then computed once per
    chunk instead of once per fused step."""
    dt = np.asarray(table.dt)
    dt = dt[:, 0] if dt.ndim > 1 else dt  # (a held-step table: one step per row)
    live = dt[dt > 0]
    return live.size > 0 and bool(np.all(np.abs(live - live[0]) <= 1e-9 * live[0]))


def _fused_steps(dseq: DiscreteSequence, method: Bloch, kind_id: int, step_kind: int):
    """``(dseq, table)``: runs of ``method.fuse_rf`` RF (``step_kind`` 0) or free
    precession steps (1) as single fused steps (`fused_rf`), or ``(dseq, None)``. Cached
    per sequence object and discretization."""
    if rf_per_step(method) < 2:
        return dseq, None
    from .fused_rf import plan_fused_rf

    return _remembered(dseq, ("fused", kind_id, method.fuse_rf, step_kind),
                       lambda: plan_fused_rf(dseq, kind_id, method.fuse_rf, step_kind))


def _held_steps(dseq: DiscreteSequence, method: Bloch, kind_id: int):
    """``(dseq, table)``: runs of equal RF steps (block pulses cut into ``max_rf_dt`` steps)
    as single steps (`held_rf`), or ``(dseq, None)``. Like fused steps, only where
    ``method.fuse_rf`` allows fusing (`rf_per_step`). Cached per sequence object."""
    if rf_per_step(method) < 2:
        return dseq, None
    from .held_rf import plan_held_rf

    return _remembered(dseq, ("held", kind_id), lambda: plan_held_rf(dseq, kind_id))


class _Held(NamedTuple):
    """How the core applies held steps (a static argument): their step kind, the bits of
    the table's largest count, the rotation (`_rf_rotation_mode`), whether every row's
    step lasts as long (half-step relaxation once per chunk), and the rows whose maps are
    computed once per chunk (`_premapped_rows`; 0: a power at each held step)."""

    kind: int
    bits: int
    rotation: str
    same_dt: bool
    premapped: int


# held-step tables of at most this many rows get their maps computed once per chunk
HELD_PREMAP_ROWS = 16


def _premapped_rows(table) -> int:
    """The rows of a held-step table (host side; padding rows apart) when there are at most
    `HELD_PREMAP_ROWS`, else 0: the engine then computes their maps once per chunk
    (`held_rf.held_maps`) and a held step gathers its row's, instead of computing a power
    at every held step (the same arithmetic once per row: each row is one run).

    Why: a periodic step layout holds one copy of the held step per slot and per step of
    its head, and in a gradient each copy's squarings are differentiated on their own.
    `benchmarks/bench_held_gradient.py` (float64, 2-core CPU, against the in-loop powers
    in the same process): notebook 05's gradient with respect to the twin (11 block
    pulses, 5 copies in the layout) compiles in 0.72x the time, runs 0.96x; notebook
    04's flip gradient (16 pulses, 8 copies) 0.46x, runs 1.4x (5 -> 7 ms). The limit:
    in reverse mode the gather inside the time loop adds a cotangent of the whole table
    (12 values per row and spin) at every step: a flip gradient ran 2.9 -> 5.1 ms with 16
    rows, 15 -> 45 ms with 64, and a 1 000-row fingerprinting train 0.45 -> 11 s."""
    rows = int(np.sum(np.asarray(table.n) > 0))
    return rows if rows <= HELD_PREMAP_ROWS else 0


def _held_bits(table) -> int:
    """Bits of the largest step count of a held-step table (the squarings its kernel does)."""
    return max(int(np.asarray(table.n).max()).bit_length(), 1)


def rf_per_step(method: Bloch) -> int:
    """RF raster steps the engine applies per step under ``method`` (its fused RF steps,
    `_fused_steps`; 1 without): `discretize`'s ``rf_per_step``."""
    fused = method.fuse_rf >= 2 and not method.reversible and not method.analytic_diffusion
    return int(method.fuse_rf) if fused else 1


def _prepare(seq: Sequence, scanner: Scanner, method: Bloch, motion=None):
    """Discretize (and compute k-space) once per sequence, scanner and method.

    Sequences are immutable, so the result is cached on the sequence object (weakly) when
    its values are concrete, per motion object (by identity, weakly: motions are immutable
    too); with traced values (differentiating through the sequence or the motion) it is
    recomputed inside the trace.
    """
    general = method.readout is not None
    key = (scanner, method.rf_dt, method.max_rf_dt, method.windows, method.ideal_spoiling,
           method.analytic_diffusion, general, rf_per_step(method))

    def compute():
        with tables_shared():  # (the gradient table: built once for both)
            dseq = discretize(seq, scanner, rf_dt=method.rf_dt, max_rf_dt=method.max_rf_dt, windows=method.windows,
                              ideal_spoiling=method.ideal_spoiling, motion=motion,
                              diffusion=method.analytic_diffusion, general_windows=general,
                              rf_per_step=rf_per_step(method))
            kspace = seq.kspace()
        return dseq, kspace, _adc_events(seq)

    return _per_sequence(_PREPARED, seq, key, motion, compute)


def _adc_events(seq: Sequence) -> np.ndarray:
    """(n_adc,) the ADC event (block with an ADC, in order) of each sample."""
    counts = [b.adc.num_samples for b in seq.blocks if b.adc is not None]
    return np.repeat(np.arange(len(counts)), counts)


def _per_sequence(store: weakref.WeakKeyDictionary, seq: Sequence, key: tuple, motion, compute: Callable[[], tuple]):
    """``compute()``, remembered in ``store`` with the sequence (weakly) under ``key`` and,
    given a motion, with the motion object too (by identity, weakly: motions are immutable,
    and a moving twin's discretization costs as much as a static one's). Not remembered:
    results that hold tracers (a trace's values), or those of a motion that holds any."""
    per_seq = store.get(seq)
    if motion is not None:
        key = key + (id(motion),)
    if per_seq is not None and key in per_seq:
        ref, out = per_seq[key]
        if ref is None or ref() is motion:
            return out
    out = compute()
    if _has_tracer(out) or (motion is not None and _holds_tracer(motion)):
        return out
    per_seq = store.setdefault(seq, {})
    ref = None
    if motion is not None:
        try:
            ref = weakref.ref(motion, lambda _, k=key, d=per_seq: d.pop(k, None))
        except TypeError:  # not weakly referenceable: not remembered
            return out
    per_seq[key] = (ref, out)
    return out


_BY_OBJECT: dict = {}  # (id(obj), key) -> (weak reference to obj, result)
_BY_OBJECT_SIZE = 64


def _remembered(obj, key, compute: Callable[[], object]):
    """``compute()``, remembered with the object ``obj`` (by identity, weakly: the entry
    goes with it) under ``key``. For the host plans of immutable inputs (sequences,
    discretized sequences): they cost milliseconds per call, as much as a small simulation.
    Results that hold tracers (computed inside a jit trace) are not remembered."""
    k = (id(obj), key)
    hit = _BY_OBJECT.get(k)
    if hit is not None and hit[0]() is obj:
        return hit[1]
    out = compute()
    if _holds_tracer(obj) or _has_tracer(out):
        return out
    try:
        # (the dict bound now: at interpreter exit the module's globals are already None)
        ref = weakref.ref(obj, lambda _, k=k, d=_BY_OBJECT: d.pop(k, None))
    except TypeError:  # not weakly referenceable: not remembered
        return out
    while len(_BY_OBJECT) >= _BY_OBJECT_SIZE:
        _BY_OBJECT.pop(next(iter(_BY_OBJECT)))
    _BY_OBJECT[k] = (ref, out)
    return out


_TRACED: dict = {}  # id(obj) -> (weak reference to obj, whether it holds a tracer)


def _holds_tracer(obj) -> bool:
    """`_has_tracer` of an immutable object, remembered with it (walking a sequence of a few
    hundred blocks takes a millisecond: a tenth of a small simulation)."""
    hit = _TRACED.get(id(obj))
    if hit is not None and hit[0]() is obj:
        return hit[1]
    out = _has_tracer(obj)
    try:
        ref = weakref.ref(obj, lambda _, k=id(obj), d=_TRACED: d.pop(k, None))
    except TypeError:  # not weakly referenceable: not remembered
        return out
    while len(_TRACED) >= _BY_OBJECT_SIZE:
        _TRACED.pop(next(iter(_TRACED)))
    _TRACED[id(obj)] = (ref, out)
    return out


def _has_tracer(tree) -> bool:
    """Whether ``tree`` holds a tracer: a plan computed inside a jit trace (even from concrete
    inputs) holds that trace's values and must not be remembered beyond it."""
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


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


def _n_chunks(n_spins: int, chunk: int, n_dev: int) -> int:
    """Chunks of ``chunk`` spins for ``n_spins``, a multiple of the device count."""
    n_chunks = max(1, -(-n_spins // chunk))
    return -(-n_chunks // n_dev) * n_dev


def _pack_spins(twin: Twin, sens, chunk: int, dtype, n_dev: int = 1, diffusion: bool = False, perm=None):
    """Per-spin arrays shaped (n_dev, n_chunks per device, chunk), zero-PD padded; in the
    order ``perm`` (n_spins,) when given (the signal does not depend on the order).

    One jitted call: done op by op, the permutation's gathers and the padding cost
    milliseconds of dispatch per call, as much as a small simulation itself."""
    n_chunks = _n_chunks(twin.n_spins, chunk, n_dev)
    fields = (twin.position, twin.pd, twin.t1, twin.t2, twin.delta_f, twin.b1,
              twin.diffusion if diffusion else None, None if sens is None else jnp.asarray(sens),
              None if perm is None else to_device(perm, jnp.int32))
    return _pack_arrays(*fields, n_chunks=n_chunks, chunk=chunk, dtype=jnp.dtype(dtype), n_dev=n_dev), n_chunks


@functools.partial(jax.jit, static_argnames=("n_chunks", "chunk", "dtype", "n_dev"))
def _pack_arrays(position, pd, t1, t2, delta_f, b1, diffusion, sens, perm, *, n_chunks, chunk, dtype, n_dev):
    n = position.shape[0]
    per_dev = n_chunks // n_dev
    pad = n_chunks * chunk - n

    def prep(v, fill=0.0):
        v = jnp.asarray(v, dtype)
        if perm is not None:
            v = v[perm]
        if pad:
            v = jnp.concatenate([v, jnp.full((pad,) + v.shape[1:], fill, dtype)])
        return v.reshape((n_dev, per_dev, chunk) + v.shape[1:])

    pos = jnp.asarray(position, dtype)
    coil_re = coil_im = None
    if sens is not None:
        cdt = jnp.complex128 if dtype == jnp.float64 else jnp.complex64
        s = sens.astype(cdt)
        if perm is not None:
            s = s[:, perm]
        if pad:
            s = jnp.concatenate([s, jnp.zeros((s.shape[0], pad), cdt)], axis=1)
        s = s.reshape(s.shape[0], n_dev, per_dev, chunk).transpose(1, 2, 0, 3)
        coil_re, coil_im = jnp.real(s), jnp.imag(s)
    return Spins(
        x=prep(pos[:, 0]), y=prep(pos[:, 1]), z=prep(pos[:, 2]),
        pd=prep(pd),
        r1=prep(_rate(jnp.asarray(t1, dtype))),
        r2=prep(_rate(jnp.asarray(t2, dtype))),
        df=prep(jnp.zeros(n, dtype) if delta_f is None else delta_f),
        b1=prep(jnp.ones(n, dtype) if b1 is None else b1, 1.0),
        coil_re=coil_re, coil_im=coil_im,
        diffusion=prep(diffusion) if diffusion is not None else None,
    )


_KIND_FIELD = 3  # position of the step kind in the per-step tuple scanned by `_core`


def _segments(n: int) -> tuple[int, int]:
    """Steps per segment and number of segments of `_segmented_scan` for ``n`` steps."""
    seg = max(1, int(round(n ** 0.5)))
    return seg, -(-n // seg)


def _segmented_scan(body, init, xs, fresh=None, fills=None, seg=None, buffered=None):
    """``lax.scan(body, init, xs)`` with memory-bounded reverse mode.

    The steps are split into ``S ≈ sqrt(n)`` segments of ``L`` steps; each segment is a
    rematerialized (`jax.checkpoint`) inner scan, so reverse mode stores one state per
    segment plus one segment's intermediates: ``O(sqrt(n_steps))`` states instead of
    ``O(n_steps)``, for about one extra forward pass of compute. The forward pass is
    unchanged. Steps past ``n`` are padded with no-op steps (free precession of 0 s; the
    field ``i`` of ``xs`` with ``fills[i]`` instead of 0). ``seg`` overrides the segment
    length (a step layout's, whose macro steps fill whole segments).

    With ``fresh``, the body's carry is ``(state, buffer)``: each segment starts its buffer
    from ``fresh`` and the buffers of all segments are returned, stacked, after the
    outputs: ``state, (ys, buffers)``. (Deferred windows: a buffer in the carry of the
    whole scan would be stored at every segment boundary in reverse mode.) ``buffered``
    ``(s0, s1)``: only segments ``s0 <= s < s1`` return their buffers, (s1 - s0, ...); the
    others carry ``fresh`` as scratch (their bodies write nothing to it that is read), so
    the stacked buffers are neither zeroed nor copied for them.
    """
    n = xs[0].shape[0]
    seg, n_seg = _segments(n) if seg is None else (seg, -(-n // seg))
    pad = n_seg * seg - n
    # padding steps are free precession of 0 s (kind 1): a no-op for any step kind table
    fills = tuple((fills or {}).get(i, 1 if i == _KIND_FIELD else 0) for i in range(len(xs)))
    if pad:
        xs = tuple(jnp.concatenate([x, jnp.full((pad,) + x.shape[1:], f, x.dtype)])
                   for x, f in zip(xs, fills))
    xs = tuple(x.reshape((n_seg, seg) + x.shape[1:]) for x in xs)

    @functools.partial(jax.checkpoint, policy=jax.checkpoint_policies.nothing_saveable)
    def segment(m, seg_xs):
        if fresh is None:
            return jax.lax.scan(body, m, seg_xs)
        (m, buf), ys = jax.lax.scan(body, (m, fresh), seg_xs)
        return m, (ys, buf)

    @functools.partial(jax.checkpoint, policy=jax.checkpoint_policies.nothing_saveable)
    def scratch(m, seg_xs):  # a segment without deferred windows: its buffer is dropped
        (m, _), ys = jax.lax.scan(body, (m, fresh), seg_xs)
        return m, ys

    s0, s1 = (0, n_seg) if fresh is None or buffered is None else buffered
    parts, bufs, m = [], None, init
    for a, b, f in ((0, s0, scratch), (s0, s1, segment), (s1, n_seg, scratch)):
        if b > a:
            m, ys = jax.lax.scan(f, m, tuple(x[a:b] for x in xs))
            if f is segment and fresh is not None:
                ys, bufs = ys
            parts.append(ys)
    ys = parts[0] if len(parts) == 1 else jax.tree_util.tree_map(lambda *p: jnp.concatenate(p), *parts)
    ys = jax.tree_util.tree_map(lambda y: y.reshape((n_seg * seg,) + y.shape[2:])[:n], ys)
    return m, (ys if fresh is None else (ys, bufs))


def _deferred_samples(win, bufs, wpow, etab, n_window: int, fused_free: bool, n_use: tuple = ()):
    """The samples of the deferred windows, added to the per-step window outputs ``win``
    (n_steps, n_coils, n_window) (or ``(win, fused free samples)``): per geometry, the
    weights of its windows (from the segments' buffers ``bufs`` (S, K, n_coils, width)) times
    its power table ``z^s``, one matrix product for all its windows (`_window_products`).
    ``n_use[g]``: the samples of geometry ``g``'s windows that are read (its intervals, see
    `_deferred_sample_counts`; all ``n_window`` when not given): the rest stay zero."""
    w_all = win[0] if fused_free else win
    flat = bufs.reshape((-1,) + bufs.shape[2:])
    for g in range(etab.slot_idx.shape[0]):
        n_s = n_use[g] if n_use else n_window
        table = kernels.window_power_table(jax.tree_util.tree_map(lambda a, g=g: a[g], wpow), n_s)
        # unused slots (index S K, one past the buffers) read as zeros: a gather with fill,
        # not a copy of all the buffers with a zero row appended
        rows = jnp.take(flat, etab.slot_idx[g], axis=0, mode="fill", fill_value=0)
        w_all = w_all.at[etab.slot_step[g], :, :n_s].add(_window_products(rows, table), mode="drop")
    return (w_all, win[1]) if fused_free else w_all


WINDOW_PRODUCT_SAMPLES = 112  # samples per real matrix product in `_window_products`


def _window_products(rows, table):
    """``einsum("kcw,sw->kcs", rows, table)`` for complex ``rows`` (K, n_coils, width) and
    ``table`` (S, width): as real matrix products of the stacked real and imaginary parts,
    ``[Re r; Im r] @ [Re t; Im t]^T`` (2 K n_coils, 2 S), combined into the complex result,
    over blocks of at most `WINDOW_PRODUCT_SAMPLES` samples.

    The same arithmetic (four real products per complex one); on XLA's CPU backend the real
    product of these shapes (K ~ 50 windows, width ~ 26k spins, S ~ 100 samples) runs ~1.5x
    faster than the complex one, and past ~110 samples a real product slows down more than
    two of half the size (measured on 2 cores, `benchmarks/RESULTS.md`). Both operands keep
    the spins on their last axis (a `dot_general` contracting the last axes): written as
    ``r @ t.T``, XLA's CPU backend copied the table into spin-major order first, a strided
    copy that took longer than the product (koma-brain-suscept: 15 + 11 ms per device and
    call for its two products; the whole call 0.79-0.82x, `benchmarks/bench_call_path.py`)."""
    k, c, width = rows.shape
    kc = k * c
    r = jnp.concatenate([jnp.real(rows), jnp.imag(rows)], 0).reshape(2 * kc, width)
    n_s = table.shape[0]
    n_blocks = -(-n_s // WINDOW_PRODUCT_SAMPLES)
    size = -(-n_s // n_blocks)
    out = []
    for i in range(0, n_s, size):
        t = table[i:i + size]
        m = t.shape[0]
        o = jax.lax.dot_general(r, jnp.concatenate([jnp.real(t), jnp.imag(t)], 0),
                                (((1,), (1,)), ((), ())))  # (2 K c, 2 m)
        out.append(jax.lax.complex(o[:kc, :m] - o[kc:, m:], o[:kc, m:] + o[kc:, :m]))
    return (out[0] if len(out) == 1 else jnp.concatenate(out, -1)).reshape(k, c, n_s)


def spin_sharding(devices=None):
    """The `NamedSharding` that splits the spin (device) axis over ``devices``.

    `simulate` lays spins out as (n_devices, chunks per device, chunk) and shards the
    leading axis over the local devices (``Bloch(shard=...)``, `_shard_devices`); each device
    runs its chunks and the signals are summed across devices (an all-reduce). Spins are
    independent, so the result equals a single-device run up to float rounding.
    """
    devices = jax.local_devices() if devices is None else list(devices)
    mesh = jax.sharding.Mesh(np.array(devices), ("spins",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("spins"))


_CORE_STATIC = ("n_chunks", "chunk", "n_window", "checkpoint", "want_mag", "spoiling", "sharding", "diffusion",
                "readout", "n_slots", "rf_kind", "rf_held", "held", "fuse_kind", "fuse_same_dt", "free_kind", "etab_all", "rfint_use", "defer_k",
                "defer_n", "defer_segs", "layout", "rf_rotation")  # (benchmarks/bench_one_fusion.py compiles _core itself)


@functools.partial(jax.jit, static_argnames=_CORE_STATIC)
def _core(spins: Spins, d: DiscreteSequence, *, n_chunks, chunk, n_window, checkpoint, want_mag,
          spoiling=False, sharding=None, diffusion=False, readout=None, rev=None, n_slots=0, wtab=None,
          rftab=None, rf_kind=None, rf_held=None, htab=None, held=None, ftab=None, fuse_kind=None, fuse_same_dt=False, fftab=None, free_kind=None,
          etab=None, etab_all=False, rfint=None, rfint_use=None, defer_k=0, defer_n=(), defer_segs=None, layout=None,
          step_map=None, rf_rotation=("auto", "general", "auto")):
    _TRACES["core"] += 1
    n_coils = 1 if spins.coil_re is None else spins.coil_re.shape[2]
    cdt = d.b1dt.dtype
    general = d.n_general > 0 and readout is not None and readout.general is not None
    translated = d.wcyc is not None  # windows under a translation: a common phase per sample
    wc_pos = 9 + int(general)  # where the step's row of d.wcyc is in the step tuple
    cache = None if readout is None or readout.window is None else readout.window.cache
    wg_pos = wc_pos + int(translated)  # where the step's prepared-window geometry is
    n_steps = d.dt.shape[0]

    def run_chunk(sp: Spins):
        sp = sp._replace(extent=kernels.spin_extent(sp))  # bounds the RF field (`kernels.small_field`)
        m0 = State(jnp.zeros_like(sp.pd), jnp.zeros_like(sp.pd), sp.pd)
        zero_single = jnp.zeros((n_coils,), cdt)
        zero_win = jnp.zeros((n_coils, n_window), cdt)
        # windows that repeat: spreading weights and end-state rotations, once per chunk
        prepared = [] if cache is None else [
            kernels.prepare_window(sp, wtab.dt[g], wtab.k[g], wtab.count[g], readout.window)
            for g in range(cache.n_geometries)]
        # exact windows that repeat: their per-spin factors, once per chunk (G, ...)
        wpow = None if etab is None else jax.vmap(
            lambda dt, k, c: kernels.prepare_exact_window(sp, dt, k, c, n_window))(etab.dt, etab.k, etab.count)
        # RF pulses that repeat: each one's affine map per spin, once per chunk (from its
        # Chebyshev series in the spins' offsets when interpolated)
        pulses = []
        for p in range(0 if rftab is None else rftab.dt.shape[0]):
            if rfint_use is not None and rfint_use[p]:
                pulses.append(interpolated_pulse(sp, rfint.coef[p], rfint.rate[p], rfint.centre[p], rfint.half[p]))
            elif rf_held is not None and rf_held[p]:  # one held sample: the power of its step
                held_p = functools.partial(prepare_held_pulse, n=rf_held[p])
                row = (rftab.dt[p], rftab.k[p], rftab.b1dt[p], rftab.c0[p])
                pulses.append(held_p(sp, *row) if sp.rf_group is None else
                              prepare_pulse_grouped(sp, *row, prepare=held_p))
            else:
                prep = functools.partial(prepare_pulse, rotation=rf_rotation[2])
                if sp.rf_group is not None:
                    prep = functools.partial(prepare_pulse_grouped, prepare=prep)
                pulses.append(prep(sp, rftab.dt[p], rftab.k[p], rftab.b1dt[p], rftab.c0[p]))

        # fused RF steps whose raster steps all last as long: their half-step relaxation once
        fused_relax = kernels.half_relaxation(sp, ftab.dt[0, 0]) if fuse_same_dt else None
        held_relax = kernels.half_relaxation(sp, htab.dt[0]) if held is not None and held.same_dt else None
        # few held rows: their maps once per chunk, (rows, ...) leaves (`_premapped_rows`)
        premapped = None if held is None or not held.premapped else held_maps(
            sp, htab, held.premapped, held.bits, held.rotation, held_relax)

        def body_for(sp, static_kind=None, packed=False, fixed=None, relax=None):
            # packed: the carry is (mx + i my, mz) instead of a State (see _pack)
            # fixed: a `layout.Slot`: the step's kind and flags known when tracing (its last
            # input is then its ``active`` flag, read by the macro step: False on a pad)
            # relax: an RF or free step's relaxation factors, computed before the scan
            # (`kernels.relaxation`, over dt / 2 for an RF step) when its slot's dt repeats
            pack, unpack = (_pack, _unpack) if packed else (_identity, _identity)
            if fixed is not None:
                static_kind = fixed.kind

            def flag(name):
                return None if fixed is None else getattr(fixed, name)

            def body(carry, step):
                dt, k, b1dt, kind, sample, count, spoil, c0, bstep = step[:9]
                if defer_k:
                    carry, buf = carry
                if spoiling and flag("spoil") is None:
                    carry = jax.lax.cond(spoil, lambda c: pack(_spoiled(unpack(c))), lambda c: c, carry)
                elif spoiling and fixed.spoil:
                    carry = pack(_spoiled(unpack(carry)))
                if defer_k and flag("geo") != -1 and not flag("direct"):  # a deferred window: keep its start weights
                    slot = step[wg_pos + 1]

                    def keep(b):
                        row = kernels.window_weights(sp, unpack(carry), b.shape[-1])
                        return jax.lax.dynamic_update_index_in_dim(b, row, slot, 0)

                    if flag("geo") is None:
                        buf = jax.lax.cond(slot < defer_k, keep, lambda b: b, buf)
                    elif fixed.geo < etab.dt.shape[0]:  # (every tabled window is deferred)
                        buf = keep(buf)

                def do_rf(m):
                    return kernels.rf_step(sp, m, dt, k, b1dt, c0, rotation=rf_rotation[0], relax=relax), zero_win

                def do_free(m):
                    return kernels.free_step(sp, m, dt, k, c0, relax=relax), zero_win

                def nufft_window(m):
                    return kernels.window_step_nufft(sp, m, dt, k, count, n_window, readout.window)

                def prepared_window(g):
                    return lambda m: kernels.window_step_cached(sp, m, dt, count, n_window, readout.window,
                                                                prepared[g])

                def exact_window(m):  # (on window groups when sp.group is set)
                    return kernels.window_step(sp, m, dt, k, count, n_window)

                def do_window(m):
                    if prepared:
                        branches = [prepared_window(g) for g in range(len(prepared))]
                        if not cache.all_cached:
                            branches.append(nufft_window)
                        if len(branches) == 1:
                            m, s = branches[0](m)
                        else:
                            m, s = jax.lax.switch(jnp.minimum(step[wg_pos], len(branches) - 1), branches, m)
                    elif readout is not None and readout.window is not None:
                        m, s = nufft_window(m)
                    elif wpow is not None:
                        n_geo = etab.dt.shape[0]
                        g = step[wg_pos] if flag("geo") is None else fixed.geo

                        def repeated(m):
                            # (one geometry or a static one: a static index, no slice copy)
                            gi = 0 if n_geo == 1 else (g if isinstance(g, int) else jnp.minimum(g, n_geo - 1))
                            tab = jax.tree_util.tree_map(lambda a: a[gi], wpow)
                            if defer_k and not flag("direct"):
                                return kernels.window_end_prepared(sp, m, tab), zero_win
                            return kernels.window_step_prepared(sp, m, n_window, tab)

                        if isinstance(g, int):
                            m, s = repeated(m) if g < n_geo else exact_window(m)
                        else:
                            m, s = repeated(m) if etab_all else jax.lax.cond(g < n_geo, repeated, exact_window, m)
                    else:
                        m, s = exact_window(m)
                    if translated:
                        ph = step[wc_pos]
                        sn, cs = kernels.sincos_cycles(ph)
                        s = s * jax.lax.complex(cs, -sn)[None, :].astype(s.dtype)
                        m = kernels.rotate_common(m, ph[count - 1])
                    return m, s

                def do_general(m):  # NUFFT readout only: a window on a time-varying gradient
                    widx = step[9]
                    return kernels.general_window_step(sp, m, dt, k, d.wk[widx], d.wt[widx], n_window,
                                                       readout.general)

                def do_pulse(m):  # a prepared RF pulse: count = which one, b1dt = its phase offset
                    if len(pulses) == 1 or flag("pulse") is not None:
                        return apply_pulse(m, pulses[0 if len(pulses) == 1 else fixed.pulse], b1dt), zero_win
                    fns = [lambda m, p=p: apply_pulse(m, p, b1dt) for p in pulses]
                    return jax.lax.switch(count, fns, m), zero_win

                def do_held(m):  # a run of equal RF steps as one (a power of its map): count = the row
                    if premapped is not None:
                        return apply_held_map(sp, m, *jax.tree_util.tree_map(lambda a: a[count], premapped)), \
                            zero_win
                    return _held_rf_remat(sp, m, htab.dt[count], htab.k[count], htab.b1dt[count], htab.c0[count],
                                          htab.n[count], held.bits, held.rotation, held_relax), zero_win

                def do_fused(m):  # RF raster steps applied S at a time: count = the table row
                    fused = _fused_rf_rolled_remat if ROLLED_FUSED_RF_DERIVATIVE else _fused_rf_remat
                    return fused[rf_rotation[1]](sp, m, ftab.dt[count], ftab.k[count], ftab.b1dt[count],
                                                 ftab.c0[count], fused_relax), zero_win

                branches = [do_rf, do_free] + ([do_window] if n_window else [])
                if general:
                    branches.append(do_general)
                if pulses:
                    assert len(branches) == rf_kind, (len(branches), rf_kind)
                    branches.append(do_pulse)
                if held is not None:
                    assert len(branches) == held.kind, (len(branches), held.kind)
                    branches.append(do_held)
                if ftab is not None:
                    assert len(branches) == fuse_kind, (len(branches), fuse_kind)
                    branches.append(do_fused)
                if fftab is not None:  # a third output: the samples of fused free steps
                    zero_fz = jnp.zeros((n_coils, fftab.dt.shape[1]), cdt)

                    def with_fz(f):
                        def g(m):
                            m, w = f(m)
                            return m, (w, zero_fz)
                        return g

                    def do_free_fused(m):  # free steps with samples S at a time: count = the row
                        m, fz = _fused_free_remat(sp, m, fftab.dt[count], fftab.k[count], fftab.c0[count])
                        return m, (zero_win, fz)

                    branches = [with_fz(f) for f in branches]
                    assert len(branches) == free_kind, (len(branches), free_kind)
                    branches.append(do_free_fused)
                if packed:
                    branches = [_packed_branch(f) for f in branches]
                if static_kind is None:
                    carry, win = jax.lax.switch(kind, branches, carry)
                else:  # (the reversible adjoint's backward pass dispatches on the kind itself)
                    carry, win = branches[static_kind](carry)
                if diffusion:
                    carry = pack(kernels.diffuse(sp, unpack(carry), bstep))
                if flag("sample") is None:
                    single = jax.lax.cond(sample, lambda: kernels.receive(sp, unpack(carry)), lambda: zero_single)
                else:
                    single = kernels.receive(sp, unpack(carry)) if fixed.sample else zero_single
                return ((carry, buf) if defer_k else carry), (single, win)
            return body

        if layout is None:
            body = body_for(sp, packed=True)
        else:  # macro steps: the layout's P steps with their kinds and flags static
            # a slot whose RF or free steps all last the same dt: its relaxation factors
            # once per chunk (two exponentials per spin fewer in each of its steps)
            slot_dt = d.dt[step_map[0][:layout.period]]  # (P,) the first macro step's
            relax = [kernels.relaxation(sp, (0.5 if f.kind == 0 else 1.0) * slot_dt[j])
                     if f.same_dt and f.kind in (0, 1) else None for j, f in enumerate(layout.slots)]
            subs = [body_for(sp, packed=True, fixed=f, relax=r) for f, r in zip(layout.slots, relax)]

            def macro(carry, xs):
                # each step in a conditional on its active flag: it skips a pad, and it
                # keeps XLA from fusing the steps of a macro step into one pass that would
                # evaluate their shared work once per output array (the complex carry
                # simplified away; an optimization barrier does not survive XLA's CPU
                # pipeline): one conditional per step instead of the generic body's three
                outs = []
                for j, sub in enumerate(subs):
                    step = tuple(x[j] for x in xs)
                    zeros = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype),
                                                   jax.eval_shape(sub, carry, step)[1])
                    carry, out = jax.lax.cond(step[-1], sub, lambda c, _, z=zeros: (c, z), carry, step)
                    outs.append(out)
                return carry, jax.tree_util.tree_map(lambda *o: jnp.stack(o), *outs)

            body = macro

        steps = (d.dt, d.kstep, d.b1dt, d.kind, d.sample, d.count, d.spoil, d.cyc0, d.bstep)
        if general:
            steps = steps + (d.widx,)
        if translated:
            # each step's row of phases is a per-step input (not a closed-over table), so
            # that every adjoint, the reversible one included, differentiates through it
            steps = steps + (d.wcyc[d.wcidx],)
        if cache is not None:
            steps = steps + (wtab.step,)
        elif etab is not None:
            steps = steps + (etab.step,)
            if defer_k:
                steps = steps + (etab.slot,)
        seg, init = None, _pack(m0)
        if layout is not None:  # the steps in their slots, P per macro step, then the active flags
            index, active, slot_of = step_map
            p = layout.period
            flat = steps
            steps = tuple(x[index].reshape((layout.n_macro, p) + x.shape[1:]) for x in steps)
            steps = steps + (active.reshape(layout.n_macro, p),)
            seg = layout.seg
            n_tail_first = d.n_real_steps - len(layout.tail)

            def loose(carry, fixed, first):  # the head or tail: static steps outside the scan
                outs = []
                for i, f in enumerate(fixed):
                    c, out = body_for(sp, packed=True, fixed=f)((carry, None) if defer_k else carry,
                                                                tuple(x[first + i] for x in flat))
                    carry = c[0] if defer_k else c
                    outs.append(out)
                return carry, (jax.tree_util.tree_map(lambda *o: jnp.stack(o), *outs) if outs else None)

            init, head_out = loose(init, layout.head, 0)

            def finish(m):  # the tail after the scan, then the state unpacked
                m, tail_out = loose(m, layout.tail, n_tail_first)
                return _unpack(m), tail_out

            def unslot(ys, tail_out):  # per slot -> per step (n_steps, ...), zero past the real steps
                def one(y, *ends):
                    y = y.reshape((layout.n_macro * p,) + y.shape[2:])[slot_of]
                    parts = [ends[0]] if layout.head else []
                    parts += [y] + ([ends[-1]] if layout.tail else [])
                    n = sum(q.shape[0] for q in parts)
                    return jnp.concatenate(parts + [jnp.zeros((n_steps - n,) + y.shape[1:], y.dtype)])
                ends = [e for e in (head_out, tail_out) if e is not None]
                return jax.tree_util.tree_map(one, ys, *ends)
        else:
            def finish(m):
                return _unpack(m), None

            def unslot(ys, _):
                return ys
        if n_slots:
            def inverse(sp_, m, step, static_kind):
                dt, k, b1dt, kind, sample, count, spoil, c0, bstep = step[:9]
                if diffusion:
                    m = kernels.diffuse_inverse(sp_, m, bstep)
                inv = [lambda m: kernels.rf_step_inverse(sp_, m, dt, k, b1dt, c0),
                       lambda m: kernels.free_step_inverse(sp_, m, dt, k, c0)]
                if n_window:
                    def window_inverse(m):
                        if translated:
                            m = kernels.rotate_common(m, -step[wc_pos][count - 1])
                        return kernels.window_step_inverse(sp_, m, dt, k, count)
                    inv.append(window_inverse)
                if general:
                    inv.append(lambda m: kernels.free_step_inverse(sp_, m, dt, k))
                return inv[static_kind](m)

            n_kinds = 2 + (1 if n_window else 0) + (1 if general else 0)
            m, (single, win) = reversible_scan(lambda sp_, m, x, kd: body_for(sp_, kd)(m, x), inverse, sp, m0,
                                               steps, rev[0], rev[1], n_slots, kinds=(_KIND_FIELD, n_kinds),
                                               m0_of=lambda sp_: State(sp_.pd, sp_.pd, sp_.pd),
                                               drift_tol=1e-3 if cdt == jnp.complex64 else 1e-8)
        elif checkpoint and defer_k:
            width = wpow.qm.shape[-1]
            fresh = jnp.zeros((defer_k, n_coils, width), cdt)
            m, ((single, win), bufs) = _segmented_scan(body, init, steps, fresh=fresh,
                                                       fills={wg_pos + 1: defer_k}, seg=seg, buffered=defer_segs)
            m, ends = finish(m)
            single, win = unslot((single, win), ends)
            win = _deferred_samples(win, bufs, wpow, etab, n_window, fftab is not None, defer_n)
        elif checkpoint:
            m, (single, win) = _segmented_scan(body, init, steps, seg=seg)
            m, ends = finish(m)
            single, win = unslot((single, win), ends)
        else:
            m, (single, win) = jax.lax.scan(body, init, steps)
            m, ends = finish(m)
            single, win = unslot((single, win), ends)
        return (single, win), (jnp.stack([m.mx, m.my, m.mz], -1) if want_mag else None)

    # Each chunk is rematerialized in reverse mode: the chunk scan then stores only its
    # inputs, and the segment checkpointing inside the chunk bounds the rest. (Without
    # this, partial evaluation of a scan over chunks keeps per-step residuals alive.)
    if checkpoint and not n_slots:
        chunk_fn = jax.checkpoint(run_chunk, policy=jax.checkpoint_policies.nothing_saveable)
    else:  # (the reversible adjoint stores only its restore points per chunk)
        chunk_fn = run_chunk

    def map_body(carry, sp):
        (single, win), mag = chunk_fn(sp)
        return (carry[0] + single, jax.tree_util.tree_map(jnp.add, carry[1], win)), mag

    init = (jnp.zeros((n_steps, n_coils), cdt), jnp.zeros((n_steps, n_coils, n_window), cdt))
    if fftab is not None:  # (window samples, samples of fused free steps)
        init = (init[0], (init[1], jnp.zeros((n_steps, n_coils, fftab.dt.shape[1]), cdt)))

    def per_device(sp_dev):
        if sp_dev.x.shape[0] == 1:  # one chunk: no chunk-level remat needed
            (single, win), mags = run_chunk(jax.tree_util.tree_map(lambda x: x[0], sp_dev))
            return (single, win), (None if mags is None else mags[None])
        return jax.lax.scan(map_body, init, sp_dev)

    if sharding is not None:
        spins = jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, sharding), spins)
    if spins.x.shape[0] == 1:
        # one device: no vmap (a vmapped scatter, as in the NUFFT readout, is ~4x slower on CPU)
        (single, win), mags = per_device(jax.tree_util.tree_map(lambda x: x[0], spins))
    else:
        (single, win), mags = jax.vmap(per_device)(spins)  # leading axis: devices
        # an all-reduce across devices when sharded
        single, win = single.sum(0), jax.tree_util.tree_map(lambda x: x.sum(0), win)
    blocks = win if isinstance(win, tuple) else (win,)  # per step: (n_steps, n_coils, width)
    flat = jnp.concatenate([single.T] + [w.transpose(1, 0, 2).reshape(n_coils, -1) for w in blocks], axis=1)
    samples = flat[:, d.out_index] * d.demod[None, :]
    mag = mags.reshape(n_chunks * chunk, 3) if want_mag else None
    return samples, mag


# ---- per-spin dynamics (issue 9: mritwin.twin.dynamics) ------------------------------
# A separate core, so that simulations without dynamics compile exactly as before.

_PREPARED_DYN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _dynamics_models(dynamics) -> tuple:
    """``dynamics`` as a tuple of models (``()`` for None), type-checked."""
    if dynamics is None:
        return ()
    models = tuple(dynamics) if isinstance(dynamics, (tuple, list)) else (dynamics,)
    for m in models:
        if not isinstance(m, AbstractDynamics):
            raise TypeError("dynamics must be a mritwin dynamics model (e.g. mritwin.twin.dynamics.Flow) "
                            f"or a tuple of them, got {m!r}")
    return models


def _prepare_dynamics(seq, scanner: Scanner, method: Bloch, motion, models):
    """Discretize for dynamics (stepped ADC windows, free steps of at most the models'
    ``max_step``) and compute each step's first gradient moment ``k1`` [s/m]."""
    if not isinstance(seq, Sequence):
        raise TypeError("simulate(..., dynamics=...) needs a mritwin.Sequence (the per-step first "
                        f"gradient moments are computed from it), got {type(seq).__name__}")
    # (Bloch(readout=NUFFTReadout(...)) falls back to stepping here, as documented: spins that
    # move or change during a window do not evolve linearly with fixed positions.)
    steps = [m.max_step for m in models if m.max_step is not None]
    max_dt = min(steps) if steps else None
    key = (scanner, method.rf_dt, method.max_rf_dt, method.ideal_spoiling, method.analytic_diffusion, max_dt)

    def compute():
        with tables_shared():  # (the gradient table: built once for the three)
            dseq = discretize(seq, scanner, rf_dt=method.rf_dt, max_rf_dt=method.max_rf_dt, windows=False,
                              ideal_spoiling=method.ideal_spoiling, motion=motion,
                              diffusion=method.analytic_diffusion, max_dt=max_dt)
            k1 = _step_first_moments(seq, dseq, scanner, motion)
            kspace = seq.kspace()
        return dseq, kspace, _adc_events(seq), k1

    return _per_sequence(_PREPARED_DYN, seq, key, motion, compute)


def _step_first_moments(seq, dseq, scanner, motion):
    """(n_steps, 3) ``γ̄ ∫G (t - t_mid) dt`` over each step [s/m] (zero on padding steps);
    with rigid motion, rotated into the body frame (``Rᵀ k1`` at the step midpoint)."""
    from ..sequence.timeline import gradient_moments, gradient_table

    m = dseq.n_real_steps
    sa = np.asarray(dseq.t, np.float64)[:m]
    sb = np.append(sa[1:], sa[-1] + float(np.asarray(dseq.dt)[m - 1]))
    _, m1 = gradient_moments(gradient_table(seq), sa, sb, first_moment=True)
    k1 = scanner.gamma_bar * m1
    if motion is not None:
        r = motion.evaluate(0.5 * (sa + sb))[0]
        k1 = jnp.einsum("nij,ni->nj", r, k1)
    pad = dseq.n_steps - m
    if pad:
        k1 = (jnp if isinstance(k1, jax.Array) else np).concatenate([k1, np.zeros((pad, 3))])
    return k1


def _pack_dynamics(arrays: dict, n_chunks: int, chunk: int, n_dev: int, dtype) -> dict:
    """Per-spin arrays (n_spins, ...) -> (n_dev, chunks per device, chunk, ...), zero padded."""
    out = {}
    for name, v in arrays.items():
        v = jnp.asarray(v)
        if jnp.issubdtype(v.dtype, jnp.floating):
            v = v.astype(dtype)
        pad = n_chunks * chunk - v.shape[0]
        if pad:
            v = jnp.concatenate([v, jnp.zeros((pad,) + v.shape[1:], v.dtype)])
        out[name] = v.reshape((n_dev, n_chunks // n_dev, chunk) + v.shape[1:])
    return out


def _dynamics_entry(spins: Spins, d: DiscreteSequence, *, models, twin, k1, n_chunks, chunk, checkpoint,
                    want_mag, spoiling=False, sharding=None, diffusion=False, **_ignored):
    """Pack the models' per-spin arrays like the spins and run `_core_dynamics`."""
    dtype = d.dt.dtype
    n_dev = spins.x.shape[0]
    dyn = tuple(_pack_dynamics(m.spin_arrays(twin), n_chunks, chunk, n_dev, dtype) for m in models)
    kern = tuple(m.kernel() for m in models)
    chunk_ids = jnp.arange(n_chunks, dtype=jnp.int32).reshape(n_dev, n_chunks // n_dev)
    return _core_dynamics(spins, dyn, chunk_ids, kern, d, jnp.asarray(k1, dtype), n_chunks=n_chunks,
                          chunk=chunk, checkpoint=checkpoint, want_mag=want_mag, spoiling=spoiling,
                          sharding=sharding, diffusion=diffusion)


@functools.partial(jax.jit, static_argnames=("n_chunks", "chunk", "checkpoint", "want_mag", "spoiling",
                                              "sharding", "diffusion"))
def _core_dynamics(spins: Spins, dyn, chunk_ids, models, d: DiscreteSequence, k1, *, n_chunks, chunk,
                   checkpoint, want_mag, spoiling=False, sharding=None, diffusion=False):
    """`_core` with per-spin dynamics: at each step the models' effects (displacement,
    velocity, relaxation rates, inflow resets) are evaluated at the step midpoint. ADC
    windows are not supported here (the sequence is stepped)."""
    _TRACES["core"] += 1
    n_coils = 1 if spins.coil_re is None else spins.coil_re.shape[2]
    cdt = d.b1dt.dtype
    fdt = d.dt.dtype
    n_steps = d.dt.shape[0]

    def run_chunk(sp: Spins, dyn_sp, cid):
        m0 = State(jnp.zeros_like(sp.pd), jnp.zeros_like(sp.pd), sp.pd)
        s0 = tuple(mod.init_state(a, fdt) for mod, a in zip(models, dyn_sp))
        zero_single = jnp.zeros((n_coils,), cdt)

        def body(carry, step):  # the carry holds (mx + i my, mz) (see _pack)
            c, st = carry
            dt, k, b1dt, kind, sample, spoil, c0, bstep, t0, k1s, idx = step
            eff, st = combine_effects(models, dyn_sp, st, t0 + 0.5 * dt, dt, idx, cid)
            spm = sp
            if eff.displacement is not None:
                u = eff.displacement
                spm = spm._replace(x=sp.x + u[:, 0], y=sp.y + u[:, 1], z=sp.z + u[:, 2])
            if eff.r1 is not None:
                spm = spm._replace(r1=sp.r1 + eff.r1)
            if eff.r2 is not None:
                spm = spm._replace(r2=sp.r2 + eff.r2)
            cyc = c0 if eff.velocity is None else c0 + eff.velocity @ k1s  # k1·v [cycles]
            if eff.reset is not None:  # inflow: fresh equilibrium magnetization
                r = eff.reset
                c = (jnp.where(r, jnp.zeros_like(c[0]), c[0]), jnp.where(r, sp.pd, c[1]))
            if spoiling:
                c = jax.lax.cond(spoil, lambda c: (jnp.zeros_like(c[0]), c[1]), _identity, c)
            c = jax.lax.cond(kind == 0, _packed_step(lambda m: kernels.rf_step(spm, m, dt, k, b1dt, cyc)),
                             _packed_step(lambda m: kernels.free_step(spm, m, dt, k, cyc)), c)
            if diffusion:
                c = _pack(kernels.diffuse(spm, _unpack(c), bstep))
            single = jax.lax.cond(sample, lambda: kernels.receive(spm, _unpack(c)), lambda: zero_single)
            return (c, st), single

        steps = (d.dt, d.kstep, d.b1dt, d.kind, d.sample, d.spoil, d.cyc0, d.bstep, d.t, k1,
                 jnp.arange(n_steps, dtype=jnp.int32))
        scan = _segmented_scan if checkpoint else jax.lax.scan
        (c, _), single = scan(body, (_pack(m0), s0), steps)
        m = _unpack(c)
        return single, (jnp.stack([m.mx, m.my, m.mz], -1) if want_mag else None)

    chunk_fn = jax.checkpoint(run_chunk, policy=jax.checkpoint_policies.nothing_saveable) if checkpoint else run_chunk

    def map_body(carry, xs):
        single, mag = chunk_fn(*xs)
        return carry + single, mag

    def per_device(sp_dev, dyn_dev, cid_dev):
        if sp_dev.x.shape[0] == 1:
            single, mags = run_chunk(*jax.tree_util.tree_map(lambda x: x[0], (sp_dev, dyn_dev, cid_dev)))
            return single, (None if mags is None else mags[None])
        return jax.lax.scan(map_body, jnp.zeros((n_steps, n_coils), cdt), (sp_dev, dyn_dev, cid_dev))

    if sharding is not None:
        spins, dyn, chunk_ids = jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, sharding),
                                                       (spins, dyn, chunk_ids))
    single, mags = jax.vmap(per_device)(spins, dyn, chunk_ids)
    single = single.sum(0)
    samples = single.T[:, d.out_index] * d.demod[None, :]
    mag = mags.reshape(n_chunks * chunk, 3) if want_mag else None
    return samples, mag
