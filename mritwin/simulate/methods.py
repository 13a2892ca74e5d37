"""Simulation methods: strategy objects passed to `simulate` (not strings)."""

from __future__ import annotations

import abc

import equinox as eqx
import numpy as np

from ..sequence.discretize import MAX_RF_DT

__all__ = ["AbstractSimMethod", "Bloch", "NUFFTReadout"]


class AbstractSimMethod(eqx.Module):
    """Base of all simulation methods."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line saying what the method does."""


class NUFFTReadout(eqx.Module):
    """Evaluate every ADC window without RF through the signal equation with a NUFFT.

    Between RF pulses the Bloch equations are linear: during an ADC window each spin's
    transverse magnetization only decays and precesses, so the window's signal is

        s(t_n) = Σ_j c_j m_j exp(-t_n/T2_j) exp(-i2π(k_n·r_j + Δf_j t_n))

    (``m_j`` at the window's start), a non-uniform Fourier transform, and the
    magnetization at the window's end follows in closed form. Cost per window:
    ``O(n_spins · w · L + n_samples log n_samples)`` instead of ``O(n_spins · n_samples)``.

    - Constant-gradient windows (Cartesian lines, EPI without ramp sampling, radial spokes):
      a 1D transform in each spin's phase advance per sample ``θ_j = k·r_j + Δf_j dt``, so
      off-resonance is exact; T2 decay is expanded in ``L`` Chebyshev terms about the
      mid-range rate (``L = 1``, exact, when all spins share one T2).
    - Windows on time-varying gradients (ramp sampling, spirals): a type-3 transform in the
      dimensions along which k varies, with decay *and* off-resonance expanded in ``L``
      Chebyshev terms in time.

    The expansion order comes from a rigorous bound, ``2 (|Δλ| T / 4)^L / L! <= tol/2``
    (``Δλ`` the spread of the spins' complex rates ``1/T2 + i2πΔf`` about their centre, ``T``
    the window length), and the spreading kernel's width from FINUFFT's rule for the
    rest of the tolerance. Errors are relative to ``Σ_j |c_j m_j|`` (the coherent signal
    maximum, reached at the echo of a refocused readout). The kernel rule is empirical,
    not a bound (as in FINUFFT): errors can exceed ``tol`` by a small factor; a random
    search over spiral-like windows (2026-12-06) found at most 1.35 ``tol``, on a
    time-varying-gradient window at ``tol = 1e-9``.

    Windows that contain RF are stepped as usual; with motion, dynamics or analytic
    diffusion every window is stepped (their spins do not evolve linearly with fixed
    positions).

    Args:
        tol: requested relative accuracy (``>= 1e-6`` in float32, ``>= 1e-14`` in float64).
        t2_min: lower bound on T2 [s], needed only when the twin's T2 values are traced
            (differentiating with respect to them), when the expansion order cannot be
            read from the values.
        max_off_resonance: bound on ``|Δf|`` [Hz], likewise for traced off-resonance.
    """

    tol: float = eqx.field(default=1e-6, static=True)
    t2_min: float | None = eqx.field(default=None, static=True)
    max_off_resonance: float | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        if not (isinstance(self.tol, (int, float)) and 0 < self.tol < 1):
            raise ValueError(f"NUFFTReadout.tol must be in (0, 1), got {self.tol!r}")
        if self.t2_min is not None and not self.t2_min > 0:
            raise ValueError(f"NUFFTReadout.t2_min must be > 0 [s], got {self.t2_min!r}")
        if self.max_off_resonance is not None and not self.max_off_resonance >= 0:
            raise ValueError(f"NUFFTReadout.max_off_resonance must be >= 0 [Hz], got {self.max_off_resonance!r}")


# the longest signal (ADC samples x coils) for which Bloch(kernel="auto") picks the Pallas
# kernel: each block of spins writes a partial signal this long (a power of two at least),
# and the largest measured on a GPU was the 19,105-sample spiral (rows of 32,768)
PALLAS_AUTO_MAX_OUTPUTS = 1 << 15


class Bloch(AbstractSimMethod):
    """Isochromat Bloch simulation with exact free precession.

    Args:
        rf_dt: group RF raster samples into steps of this duration [s] from the shape
            start, the last possibly shorter (a sample belongs to the step its start
            falls in, and a held sample longer than ``rf_dt`` is cut into equal steps
            of at most ``rf_dt``; B1 averaged in the frame that follows the pulse's frequency
            offset, so an off-centre slice keeps its profile: docs/conventions.md). The
            error is the envelope's variation within a step: for a 2 ms sinc of
            time-bandwidth 4 the slice profile is within 6.5e-4 of its peak at 20 us and
            2.9e-2 at 50 us of the raster-stepped one (`tests/physics/test_rf.py`).
            ``None`` (default): one step per RF raster sample, merging runs of equal
            samples, a run longer than ``max_rf_dt`` cut into equal steps.
        max_rf_dt: with ``rf_dt=None``, the longest RF step [s]: a held sample or run of
            equal samples (a block pulse) longer than this is cut into equal steps of at
            most this (default 10 us, `mritwin.sequence.discretize.MAX_RF_DT`), which
            bounds the splitting error of relaxation during the pulse (see "Accuracy").
            ``None``: a held run is one step (larger error). The extra steps cost little:
            a repeated pulse is prepared once (``prepare_pulses``), and elsewhere a run of
            equal steps is applied as one engine step, the power of one step's affine map
            by repeated squaring (`mritwin.simulate.held_rf`; with ``fuse_rf >= 2``).
        windows: evaluate ADC events on a constant gradient as one window step (exact;
            samples from powers of the per-interval precession factor and one matrix
            product) instead of one step per sample.
        readout: ``None`` (exact window steps as above) or a `NUFFTReadout`, which evaluates
            every ADC window without RF (constant or time-varying gradient) with a
            non-uniform FFT to a requested tolerance: much faster for large twins.
        chunk_size: spins simulated at once, at most (peak memory is proportional to
            it). ``None``: up to 65 536 (CPU) or 2 097 152 (GPU) spins. A twin with
            fewer spins (after spins that the sequence cannot tell apart are folded into
            one) runs in one chunk of about its own size, not padded up to it.
        analytic_diffusion: attenuate each spin's transverse magnetization by
            ``exp(-D b)`` with the diffusion weighting ``b`` accumulated along the k-space
            pathway (``twin.diffusion``; k reset at excitations, negated at refocusing
            pulses). Exact for single-pathway sequences (PGSE, spin and gradient echoes);
            stimulated-echo pathways are not tracked. Off by default: ``twin.diffusion`` is
            then not simulated.
        shard: split the spins over the local JAX devices (``jax.local_devices()``) when
            there is more than one; results equal a single-device run to float rounding.
            ``"auto"`` (default): all of them, except on CPU devices, where a device gets at
            least ``engine.CPU_SHARD_MIN_SPINS`` (8 192) spins (smaller twins run on fewer
            devices: below that, splitting costs more than it gains), or at least
            ``engine.CPU_SHARD_MIN_SPINS_LONG`` (128) when the sequence's step loop is long
            (``engine.CPU_SHARD_LONG_STEPS``: 1 000 steps, each RF pulse counted once, as
            in an MR fingerprinting train); ``True``: all of them;
            ``False``: one. A CPU shows JAX one device unless asked for more: see
            `mritwin.use_cpu_devices`.
        ideal_spoiling: null the transverse magnetization at the start of every
            excitation pulse (the idealization behind the Ernst formula). Use it to model a
            well-spoiled sequence with one isochromat per voxel, which cannot dephase.
        checkpoint: memory-bounded reverse mode: the steps are split into about
            ``sqrt(n_steps)`` segments that are recomputed in the backward pass, so
            `jax.grad` stores ``O(sqrt(n_steps))`` magnetization states instead of every
            step's intermediates (about one extra forward pass of compute).
        reversible: reverse mode by the reversible adjoint (`mritwin.simulate.adjoint`):
            the backward pass recomputes each step's input state by inverting the step, so
            peak memory does not grow with the number of steps; exact states are kept at the
            start of every ``reversible_segment`` seconds (and at ideal-spoiling steps) to
            bound the growth of rounding errors to ``exp(reversible_segment / T2)``.
        reversible_segment: restore-point spacing of the reversible adjoint [s]. ``None``
            (default): ``T2_min · ln(A)`` from the twin's shortest T2, with an error growth
            budget ``A`` of 100 in float32 and 10⁶ in float64; 0.1 s when T2 is traced (you
            differentiate with respect to it): then give it yourself for T2 below ~20 ms.
        prepare_pulses: an RF pulse played at least 4 times with the same shape, timing and
            gradients (any phase offset) is stepped once per chunk of spins into a per-spin
            affine map (`mritwin.simulate.prepared_rf`), then applied in one step wherever
            it plays: the same result to float rounding, far fewer steps for shaped pulses.
            Needs concrete sequence values, except an amplitude that all plays share (a
            builder's ``flip_angle`` under `jax.grad`: the map is computed with the traced
            amplitude); not used with ``reversible=True``, dynamics or
            ``analytic_diffusion``. With rigid motion a pulse is prepared from the steps it
            would be stepped with (their k-vectors and the motion's phase common to all
            spins), so plays at different times of a moving twin are different pulses.
        fuse_rf: steps applied per engine step where a pulse is stepped (a pulse played
            once, or with traced values) and where ADC samples are steps (time-varying
            readout gradients; ``windows=False``): runs of this many RF steps of equal
            duration without ADC samples are applied by one unrolled kernel that computes
            the relaxation factors once and keeps the magnetization in registers, and runs
            of sampled free-precession steps by one loop without dispatch
            (`mritwin.simulate.fused_rf`); runs of at least 4 equal RF steps (a block
            pulse cut into ``max_rf_dt`` steps) are applied as one step whatever their
            length (`mritwin.simulate.held_rf`). The same result to float rounding; about
            twice as fast for shaped pulses and 2.5x for spiral readouts on the CPU. ``1``
            steps every sample on its own; at most 16 (XLA's compile time grows steeply with the
            unrolled length: 32 RF steps take minutes in float64). Not used with
            ``reversible=True``, dynamics or ``analytic_diffusion``.
        group_spins: evaluate exact ADC windows, and RF pulses, on groups of spins that
            evolve identically under them. Windows: spins with the same position along the
            windows' gradient axes, the same Δf and T2 share their per-sample factor
            (voxel-grid twins without a field map: a readout along x sees one group per
            column and tissue), so the samples cost ``O(groups × samples)`` instead of
            ``O(spins × samples)``. RF: spins with the same position along the pulses'
            gradient axes, Δf, B1+, T1 and T2 see the same pulse (a 2D slice: one group per
            tissue), so pulses played once (the excitation of a single-shot EPI or spiral)
            are prepared on the groups (see ``prepare_pulses``) instead of stepped for
            every spin, and on the CPU so are repeated pulses of 16 or more steps in all
            (instead of prepared for every spin). The same result to float rounding.
            Planned on the host when the twin's values and the sequence's gradients are
            concrete, and used when the groups at least quarter the work; never with the
            reversible adjoint or analytic diffusion (windows: nor with motion or a NUFFT
            ``readout``, whose windows are its own). Whole sequence: spins that no
            gradient of the sequence tells apart (a sequence without gradients, or with
            gradients on one or two axes only) run once per group with receive weights
            ``Σ PD_j c_j`` (`mritwin.simulate.seqgroups`), when that at least halves the
            spins; not with motion or dynamics.
        rf_interpolation: ``None`` (default: RF pulses are stepped, or prepared exactly as
            above) or a tolerance such as ``1e-6``: an approximation, opt-in like the NUFFT
            ``readout``. A pulse on a constant gradient acts on a spin only through its
            offset ``v = γ̄G·r + Δf`` and its tissue (B1+, T1, T2), so its affine map is
            stepped (in float64) only at Chebyshev nodes of ``v`` per tissue and
            interpolated for every spin (`mritwin.simulate.interp_rf`), the number of
            terms chosen so that the map's entries (relative to M0) stay within the
            tolerance at check points between the nodes. For twins with a field map, where
            no two spins see a pulse alike. Used when the twin has at most 32 tissues and
            its values are concrete, and per pulse where the gradient is constant during it
            and the series is cheaper than stepping; other pulses are stepped. With a
            rigid translation its phase common to all spins is part of the pulse (a
            rotation changes the gradient in the twin's frame: stepped). Not with
            dynamics, analytic diffusion or the reversible adjoint.
        kernel: ``"auto"`` (default): ``"pallas"`` for a concrete float32 forward
            simulation on one GPU that it covers, else ``"xla"`` (always on a CPU; under
            ``jit``/``grad``/``vmap`` tracing; with dynamics, float64, ``reversible``,
            ``analytic_diffusion``, a NUFFT ``readout``, ``rf_interpolation``, several
            devices, or more than 32,768 ADC samples × coils). On an NVIDIA H200 the
            kernel ran the 26k-spin spiral in 21 ms against 219 ms for the XLA engine,
            results within 1e-4 of it (benchmarks/RESULTS.md). ``"xla"``: the engine as
            XLA programs, every option above. ``"pallas"``: one fused Pallas (Triton) kernel per chunk of spins that
            keeps the magnetization in registers through all steps and reduces each ADC
            sample per block of spins (`mritwin.simulate.pallas_kernel`), the design of
            GPU Bloch simulators. It steps every ADC sample (``windows`` and ``fuse_rf``
            do not apply; with ``prepare_pulses`` repeated shaped pulses, up to 8, are
            prepared into per-spin maps in device memory by a launch before the steps,
            48 bytes per spin and pulse, and played in any order) and runs float32 only; not
            with ``reversible``, ``analytic_diffusion``, a NUFFT ``readout`` or dynamics.
            On the CPU it runs in Pallas's interpreter (slow: for testing). Derivatives
            come from the XLA engine's steps.

    Accuracy: free precession, relaxation between RF pulses and windows are exact for
    static spins and piecewise-linear gradients; RF steps use Strang splitting
    (relax ``dt/2`` – exact rotation – relax ``dt/2``), a second-order method whose
    error per pulse scales as ``(pulse length / T2) · (flip per step)²``. A step is one
    raster sample, or a run of equal samples cut into steps of at most ``max_rf_dt``:
    against the closed form (4x4 matrix exponential) a 1 ms 90° block pulse at
    T2 = 50 ms ends within 5e-7 of M0 with the default 10 us steps. As one step
    (``max_rf_dt=None``) it would end 6.2e-3 of M0 off (3.1e-2 at T2 = 10 ms; 1.1e-2 for
    a 2 ms 180° pulse at 80 ms), mostly in Mz: the transverse part decays while the
    pulse turns it. The same steps are taken with traced values (`jax.grad`,
    `jax.jit`), so a traced run gives the same numbers.
    """

    rf_dt: float | None = eqx.field(default=None, static=True)
    max_rf_dt: float | None = eqx.field(default=MAX_RF_DT, static=True)
    windows: bool = eqx.field(default=True, static=True)
    chunk_size: int | None = eqx.field(default=None, static=True)
    checkpoint: bool = eqx.field(default=True, static=True)
    ideal_spoiling: bool = eqx.field(default=False, static=True)
    shard: bool | str = eqx.field(default="auto", static=True)
    analytic_diffusion: bool = eqx.field(default=False, static=True)
    readout: NUFFTReadout | None = eqx.field(default=None, static=True)
    reversible: bool = eqx.field(default=False, static=True)
    reversible_segment: float | None = eqx.field(default=None, static=True)
    prepare_pulses: bool = eqx.field(default=True, static=True)
    fuse_rf: int = eqx.field(default=16, static=True)
    kernel: str = eqx.field(default="auto", static=True)
    group_spins: bool = eqx.field(default=True, static=True)
    rf_interpolation: float | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        if self.reversible_segment is not None and not self.reversible_segment > 0:
            raise ValueError(f"Bloch.reversible_segment must be > 0 [s], got {self.reversible_segment}")
        if self.readout is not None and not isinstance(self.readout, NUFFTReadout):
            raise TypeError(f"Bloch.readout must be None or a mritwin.NUFFTReadout, got {self.readout!r}")
        if self.readout is not None and not self.windows:
            raise ValueError("Bloch(readout=NUFFTReadout(...)) evaluates ADC windows; it needs windows=True")
        if self.rf_dt is not None and not self.rf_dt > 0:
            raise ValueError(f"Bloch.rf_dt must be > 0 [s], got {self.rf_dt}")
        if self.max_rf_dt is not None and not (isinstance(self.max_rf_dt, (int, float))
                                               and np.isfinite(self.max_rf_dt) and self.max_rf_dt > 0):
            raise ValueError(f"Bloch.max_rf_dt must be None or > 0 [s], got {self.max_rf_dt!r}")
        if isinstance(self.fuse_rf, bool) or not isinstance(self.fuse_rf, (int, np.integer)) or not 1 <= self.fuse_rf <= 16:
            raise ValueError(f"Bloch.fuse_rf must be an integer from 1 to 16 (RF steps per fused step), "
                             f"got {self.fuse_rf!r}")
        if self.kernel not in ("auto", "xla", "pallas"):
            raise ValueError(f"Bloch.kernel must be 'auto', 'xla' or 'pallas', got {self.kernel!r}")
        if self.kernel == "pallas":
            for name, bad in (("reversible", self.reversible), ("analytic_diffusion", self.analytic_diffusion),
                              ("readout", self.readout is not None)):
                if bad:
                    raise ValueError(f"Bloch(kernel='pallas') does not support {name}; use kernel='xla'")
        if self.rf_interpolation is not None and not (isinstance(self.rf_interpolation, (float, int))
                                                      and 0 < self.rf_interpolation < 0.1):
            raise ValueError(f"Bloch.rf_interpolation must be None or a tolerance between 0 and 0.1 (e.g. 1e-6), "
                             f"got {self.rf_interpolation!r}")
        if self.shard not in (True, False, "auto"):
            raise ValueError(f"Bloch.shard must be True, False or 'auto', got {self.shard!r}")
        if self.chunk_size is not None and (int(self.chunk_size) != self.chunk_size or self.chunk_size < 1):
            raise ValueError(f"Bloch.chunk_size must be a positive integer, got {self.chunk_size}")

    def describe(self) -> str:
        if self.rf_dt is not None:
            rf = f"RF steps >= {self.rf_dt * 1e6:g} us"
        elif self.max_rf_dt is None:
            rf = "RF raster"
        else:
            rf = f"RF raster, held samples cut to {self.max_rf_dt * 1e6:g} us"
        spoil = ", ideal spoiling" if self.ideal_spoiling else ""
        ro = "" if self.readout is None else f", NUFFT readout tol={self.readout.tol:g}"
        if self.kernel == "pallas":
            return f"Bloch ({rf}, fused Pallas kernel, stepped ADC{spoil})"
        gpu = ""
        if self.kernel == "auto" and self.pallas_ok():
            import jax

            gpu = ", fused Pallas kernel for forward runs on this GPU" if jax.default_backend() == "gpu" else ""
        return f"Bloch ({rf}, windows={'on' if self.windows else 'off'}{spoil}{ro}{gpu})"

    def pallas_ok(self) -> bool:
        """Whether the options leave ``kernel="auto"`` free to choose the Pallas kernel
        (the inputs and the platform decide the rest: see `resolve_kernel`)."""
        return not (self.reversible or self.analytic_diffusion or self.readout is not None
                    or self.rf_interpolation is not None)

    def resolve_kernel(self, *, dtype, traced: bool, dynamics: bool, n_devices: int, windowed: bool = False,
                       n_outputs: int = 1, backend: str | None = None) -> Bloch:
        """This method with ``kernel="auto"`` replaced by ``"pallas"`` or ``"xla"`` for one
        call of `simulate`: the Pallas kernel for a concrete (``traced=False``) float32
        forward simulation without ``dynamics`` on one (``n_devices == 1``) GPU
        (``backend``, default `jax.default_backend()`), when `pallas_ok`, the input is
        not a `DiscreteSequence` discretized with ADC windows (``windowed``) and the
        signal, ``n_outputs`` = ADC samples × receive coils, is at most
        `PALLAS_AUTO_MAX_OUTPUTS` (each block of spins keeps a partial signal that long);
        else the XLA engine. An explicit ``"xla"`` or ``"pallas"`` is returned unchanged."""
        if self.kernel != "auto":
            return self
        import jax
        import jax.numpy as jnp

        if backend is None:
            backend = jax.default_backend()
            if backend == "gpu" and "rocm" in str(getattr(jax.devices()[0].client, "platform_version", "")).lower():
                backend = "rocm"  # the kernel is written for (and measured on) CUDA's Triton
        use = (backend in ("gpu", "cuda") and jnp.dtype(dtype) == jnp.float32 and not traced
               and not dynamics and n_devices == 1 and not windowed and n_outputs <= PALLAS_AUTO_MAX_OUTPUTS
               and self.pallas_ok())
        return _with_kernel(self, "pallas" if use else "xla")


_WITH_KERNEL: dict = {}  # (method, kernel) -> the method with that kernel: the last few resolved


def _with_kernel(method: Bloch, kernel: str) -> Bloch:
    """``dataclasses.replace(method, kernel=kernel)``, remembered for the last few methods
    (building a module costs ~0.1 ms, a few % of a small simulation's call)."""
    import dataclasses

    for (m, k), hit in reversed(_WITH_KERNEL.items()):  # the same object: no hash of its fields
        if m is method and k == kernel:
            return hit
    try:
        hit = _WITH_KERNEL.get((method, kernel))
    except TypeError:  # a field that cannot be hashed
        return dataclasses.replace(method, kernel=kernel)
    if hit is None:
        while len(_WITH_KERNEL) >= 8:
            _WITH_KERNEL.pop(next(iter(_WITH_KERNEL)))
        hit = _WITH_KERNEL[(method, kernel)] = dataclasses.replace(method, kernel=kernel)
    return hit
