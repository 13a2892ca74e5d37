"""RF safety (SAR, B1+rms) and gradient stimulation (dB/dt) checks of a sequence.

SAR model (documented in ``docs/sequences.md``; an estimate for planning, not a
certified scanner SAR monitor):

- Energy: every RF pulse's ``∫|B1(t)|² dt`` [T²·s] from its samples (amplitude × shape,
  held over each sample interval). ``B1+rms = sqrt(Σ ∫|B1|² dt / T_seq)`` [T], the sequence
  assumed to repeat (Pulseq ``B1rms`` convention).
- Absorbed power of a homogeneous conductor (conductivity σ, density ρ) in a uniform,
  circularly polarized B1 at the Larmor frequency ω = 2π γ̄ B0 (quasi-static Faraday
  induction; no standing waves or coil losses):

  * body: a cylinder of radius R along B0 in a transverse rotating field,
    ``SAR = σ ω² R² ⟨|B1|²⟩ / (4 ρ)``; the patient is a cylinder of height
    ``patient_height`` and mass ``patient_mass``, so ``R = sqrt(m / (ρ π h))``; the
    transmit coil covers ``coil_length`` of it (the exposed mass); the whole-body SAR is
    the absorbed power divided by the patient mass, the partial-body SAR the power
    divided by the exposed mass.
  * head (``coil="head"``): a sphere of radius ``a``, ``SAR = σ ω² a² ⟨|B1|²⟩ / (10 ρ)``.

  With σ = 0.5 S/m, ρ = 1000 kg/m³, a 75 kg, 1.75 m patient (R = 0.117 m) at 3 T this is
  about 1.1 W/kg per µT² of B1+rms² (body) and 0.26 W/kg per µT² (head, a = 0.09 m),
  the order of magnitude scanners report.
- Limits, IEC 60601-2-33 (averaged over 6 minutes; here over the sequence, assumed to
  repeat): whole body 2 W/kg (normal operating mode) and 4 W/kg (first level); head
  3.2 W/kg (both modes); partial body ``10 − 8 r`` (normal) and ``10 − 6 r`` (first level)
  W/kg with ``r`` = exposed / patient mass.

Gradient stimulation (PNS) check, IEC 60601-2-33 hyperbolic model: for each axis the
gradient waveform is cut into monotonic ramps; a ramp with slew ``S`` lasting
``t_s`` (the effective stimulus duration) gives ``dB/dt = S · r_eval`` at the edge of the
compliance volume (``r_eval`` = 0.2 m from the isocentre) against the mean stimulation
threshold ``rb (1 + 0.36 ms / t_s)`` with rheobase ``rb`` = 20 T/s. The normal mode allows
80 % of the threshold, the first level 100 %. The three axes are also combined
conservatively (vector sum of each axis' worst fraction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from .scanner import Scanner
from .sequence import Sequence
from .timeline import gradient_table

__all__ = [
    "BodyModel",
    "SARReport",
    "PNSReport",
    "rf_energy",
    "b1_rms",
    "check_sar",
    "check_pns",
    "check_gradients",
    "IEC_LIMITS",
]

#: IEC 60601-2-33 SAR limits [W/kg]: (normal mode, first level controlled mode).
IEC_LIMITS = {"whole_body": (2.0, 4.0), "head": (3.2, 3.2)}


@dataclass(frozen=True)
class BodyModel:
    """Patient and coil geometry for the SAR estimate (SI).

    Args:
        patient_mass: [kg]. patient_height: [m].
        conductivity: tissue conductivity σ [S/m]. density: tissue density ρ [kg/m³].
        coil: ``"body"`` (transmit body coil) or ``"head"`` (transmit head coil).
        coil_length: length of the body exposed to the body coil [m].
        head_radius: radius of the spherical head model [m].
    """

    patient_mass: float = 75.0
    patient_height: float = 1.75
    conductivity: float = 0.5
    density: float = 1000.0
    coil: str = "body"
    coil_length: float = 0.7
    head_radius: float = 0.09

    def __post_init__(self):
        for n in ("patient_mass", "patient_height", "conductivity", "density", "coil_length", "head_radius"):
            v = getattr(self, n)
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise ValueError(f"BodyModel.{n} must be a positive number, got {v!r}")
        if self.coil not in ("body", "head"):
            raise ValueError(f"BodyModel.coil must be 'body' or 'head', got {self.coil!r}")

    @property
    def radius(self) -> float:
        """Radius of the body cylinder [m]."""
        return math.sqrt(self.patient_mass / (self.density * math.pi * self.patient_height))

    @property
    def exposed_fraction(self) -> float:
        return min(1.0, self.coil_length / self.patient_height)


def rf_energy(seq: Sequence):
    """(n_rf,) ``∫|B1(t)|² dt`` [T²·s] of every RF pulse in block order.

    NumPy, or JAX when an RF amplitude or shape is traced (so an SAR or B1+rms penalty
    can be differentiated with respect to flip angles).
    """
    out = []
    traced = False
    # plays of a traced pulse train (`RF.play`), or pulses sharing one traced scalar amplitude
    # (a builder's flip angle), with a concrete shape: one gather each
    runs = {}
    for b in seq.blocks:
        rf = b.rf
        if rf is None:
            continue
        w = np.diff(rf.sample_edges())
        amp = rf.train[0] if rf.train is not None else rf.amplitude if jnp.ndim(rf.amplitude) == 0 else None
        if amp is not None and isinstance(amp, jax.core.Tracer) and not isinstance(rf.shape, jax.core.Tracer):
            traced = True
            run = runs.setdefault((id(amp), id(rf.shape)), (amp, float(np.sum(np.abs(np.asarray(rf.shape)) ** 2 * w)),
                                                           [], []))
            run[2].append(len(out))
            run[3].append(rf.play_index)
            out.append(0.0)
        elif isinstance(rf.amplitude, jax.core.Tracer) or isinstance(rf.shape, jax.core.Tracer):
            traced = True
            out.append(jnp.sum(jnp.abs(rf.amplitude * rf.shape) ** 2 * w))
        else:
            s = np.abs(np.asarray(rf.amplitude) * np.asarray(rf.shape)) ** 2
            out.append(float(np.sum(s * w)))
    if not traced:
        return np.asarray(out)
    if not runs:
        return jnp.stack([jnp.asarray(e) for e in out])
    pos = np.ones(len(out), bool)
    for _, _, where, _ in runs.values():
        pos[where] = False
    rest = np.nonzero(pos)[0]
    e = jnp.zeros(len(out), jnp.result_type(*[a for a, *_ in runs.values()], float))
    if rest.size:
        e = e.at[rest].set(jnp.stack([jnp.asarray(out[i]) for i in rest]))
    for amp, energy, where, ks in runs.values():
        a = amp[np.asarray(ks)] if jnp.ndim(amp) == 1 else jnp.broadcast_to(amp, (len(ks),))
        e = e.at[np.asarray(where)].set(jnp.abs(a) ** 2 * energy)
    return e


def b1_rms(seq: Sequence):
    """B1+rms [T] over the sequence: ``sqrt(Σ ∫|B1|² dt / duration)`` (JAX when traced)."""
    if seq.duration <= 0:
        return 0.0
    e = rf_energy(seq)
    if isinstance(e, jax.Array):
        return jnp.sqrt(jnp.sum(e) / seq.duration)
    return math.sqrt(float(e.sum()) / seq.duration)


@dataclass(frozen=True)
class SARReport:
    """SAR estimate of a sequence and its comparison with the IEC limits (data + table).

    Attributes:
        b1_rms: B1+rms [T]. energy: total ∫|B1|² dt [T²·s]. duration: [s].
        whole_body_sar, partial_body_sar, head_sar: [W/kg] (head only with a head coil,
            else None; body values None with a head coil).
        limits: {quantity: (normal, first level)} [W/kg].
        mode: ``"normal"``, ``"first_level"`` or ``"exceeds"`` (worst quantity).
        factor: {quantity: SAR / normal-mode limit}; > 1 means over the normal limit.
        exceeds_by: the largest factor over the applicable first-level limit (> 1 when
            ``mode == "exceeds"``), else the largest factor over the normal limit.
    """

    b1_rms: float
    energy: float
    duration: float
    whole_body_sar: float | None
    partial_body_sar: float | None
    head_sar: float | None
    limits: dict = field(default_factory=dict)
    factor: dict = field(default_factory=dict)
    first_level_factor: dict = field(default_factory=dict)
    mode: str = "normal"
    model: BodyModel = field(default_factory=BodyModel)

    @property
    def ok(self) -> bool:
        """Within the normal operating mode."""
        return self.mode == "normal"

    @property
    def exceeds_by(self) -> float:
        if self.mode == "exceeds":
            return max(self.first_level_factor.values())
        return max(self.factor.values())

    def __str__(self) -> str:
        rows = [("quantity", "value", "normal", "1st level", "x normal", "status")]
        vals = {"whole_body": self.whole_body_sar, "partial_body": self.partial_body_sar, "head": self.head_sar}
        for q, v in vals.items():
            if v is None:
                continue
            lo, hi = self.limits[q]
            f = self.factor[q]
            st = "ok" if v <= lo else ("first level" if v <= hi else f"EXCEEDS x{v / hi:.2f}")
            rows.append((f"{q} SAR [W/kg]", f"{v:.3g}", f"{lo:.3g}", f"{hi:.3g}", f"{f:.2f}", st))
        rows.append(("B1+rms [uT]", f"{self.b1_rms * 1e6:.3g}", "", "", "", ""))
        w = [max(len(r[i]) for r in rows) for i in range(6)]
        lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in rows]
        lines.insert(1, "  ".join("-" * x for x in w))
        head = (f"SAR estimate ({self.model.coil} coil, {self.model.patient_mass:g} kg, sequence "
                f"{self.duration:.4g} s): mode {self.mode}")
        return head + "\n" + "\n".join(lines)


def check_sar(seq: Sequence, scanner: Scanner, *, model: BodyModel | None = None) -> SARReport:
    """Estimate the SAR of ``seq`` on ``scanner`` and compare it with the IEC limits.

    Args:
        seq: the sequence (assumed to repeat; SAR is its time average).
        scanner: the system (``b0`` sets the Larmor frequency).
        model: patient and coil model (default: 75 kg, 1.75 m, body coil).

    Returns:
        A `SARReport` (``print(report)`` shows a table).

    Example:
        >>> import mritwin as mt
        >>> from mritwin.sequence import builders, safety
        >>> sc = mt.Scanner(b0=3.0)
        >>> seq = builders.gre(scanner=sc, fov=0.2, matrix=16, flip_angle_deg=15, slice_thickness=5e-3)
        >>> safety.check_sar(seq, sc).mode
        'normal'
    """
    model = BodyModel() if model is None else model
    if not isinstance(scanner, Scanner):
        raise TypeError(f"scanner must be a mritwin.Scanner, got {type(scanner).__name__}")
    energy = float(rf_energy(seq).sum())
    dur = seq.duration
    b1sq = energy / dur if dur > 0 else 0.0
    omega = 2 * math.pi * scanner.gamma_bar * scanner.b0
    s, rho = model.conductivity, model.density
    limits, factor, f1 = {}, {}, {}
    wb = pb = hd = None
    if model.coil == "body":
        sar_exposed = s * omega ** 2 * model.radius ** 2 * b1sq / (4 * rho)
        r = model.exposed_fraction
        pb = sar_exposed
        wb = sar_exposed * r
        limits["whole_body"] = IEC_LIMITS["whole_body"]
        limits["partial_body"] = (10.0 - 8.0 * r, 10.0 - 6.0 * r)
        vals = {"whole_body": wb, "partial_body": pb}
    else:
        hd = s * omega ** 2 * model.head_radius ** 2 * b1sq / (10 * rho)
        limits["head"] = IEC_LIMITS["head"]
        vals = {"head": hd}
    for q, v in vals.items():
        factor[q] = v / limits[q][0]
        f1[q] = v / limits[q][1]
    if all(f <= 1 for f in factor.values()):
        mode = "normal"
    elif all(f <= 1 for f in f1.values()):
        mode = "first_level"
    else:
        mode = "exceeds"
    return SARReport(b1_rms=math.sqrt(b1sq), energy=energy, duration=dur, whole_body_sar=wb,
                     partial_body_sar=pb, head_sar=hd, limits=limits, factor=factor, first_level_factor=f1,
                     mode=mode, model=model)


@dataclass(frozen=True)
class PNSReport:
    """Gradient stimulation estimate (IEC hyperbolic dB/dt model; see the module docstring).

    Attributes:
        max_slew: {axis: largest |dG/dt| [T/m/s]}.
        max_dbdt: {axis: largest dB/dt at ``r_eval`` [T/s]}.
        fraction: {axis: largest dB/dt / stimulation threshold}, and ``"combined"``
            (vector sum of the axes' fractions, conservative).
        mode: ``"normal"`` (≤ 80 %), ``"first_level"`` (≤ 100 %) or ``"exceeds"``.
    """

    max_slew: dict
    max_dbdt: dict
    fraction: dict
    mode: str
    r_eval: float
    rheobase: float
    chronaxie: float

    @property
    def exceeds_by(self) -> float:
        """Combined fraction over the normal-mode limit (80 % of the threshold), or over the
        first-level limit (100 %) when ``mode == "exceeds"``; > 1 means over that limit."""
        f = self.fraction["combined"]
        return f / 0.8 if self.mode != "exceeds" else f

    def __str__(self) -> str:
        lines = [f"PNS estimate (IEC hyperbolic, rb {self.rheobase:g} T/s, chronaxie "
                 f"{self.chronaxie * 1e3:g} ms, r {self.r_eval:g} m): mode {self.mode}",
                 "axis      max slew [T/m/s]  max dB/dt [T/s]  fraction of threshold"]
        for a in ("x", "y", "z"):
            lines.append(f"{a:<9} {self.max_slew[a]:<17.4g} {self.max_dbdt[a]:<16.4g} {self.fraction[a]:.3f}")
        lines.append(f"{'combined':<9} {'':<17} {'':<16} {self.fraction['combined']:.3f}")
        return "\n".join(lines)


def check_pns(seq: Sequence, *, r_eval: float = 0.2, rheobase: float = 20.0,
              chronaxie: float = 0.36e-3) -> PNSReport:
    """dB/dt stimulation check of the gradient waveforms (see the module docstring).

    Args:
        seq: the sequence.
        r_eval: distance from the isocentre where dB/dt is evaluated [m].
        rheobase: rheobase of the dB/dt threshold [T/s] (IEC: 20 T/s).
        chronaxie: chronaxie [s] (IEC: 0.36 ms).

    Returns:
        A `PNSReport`.
    """
    gt = gradient_table(seq)
    vals = np.asarray(gt.values) if gt.t0.size else np.zeros(0)
    max_slew, max_dbdt, frac = {}, {}, {}
    for ax_i, ax in enumerate("xyz"):
        sel = np.nonzero(np.abs(gt.direction[:, ax_i]) > 0)[0] if gt.t0.size else np.zeros(0, int)
        if sel.size == 0:
            max_slew[ax], max_dbdt[ax], frac[ax] = 0.0, 0.0, 0.0
            continue
        t0, t1 = gt.t0[sel], gt.t1[sel]
        dv = (vals[gt.i1[sel]] - vals[gt.i0[sel]]) * gt.direction[sel, ax_i]
        dur = t1 - t0
        order = np.argsort(t0, kind="stable")
        t0, t1, dv, dur = t0[order], t1[order], dv[order], dur[order]
        slope = np.where(dur > 0, dv / np.where(dur > 0, dur, 1.0), 0.0)
        # merge contiguous segments with slopes of the same sign into one ramp (stimulus)
        best_s, best_f = 0.0, 0.0
        i = 0
        n = slope.size
        while i < n:
            sg = np.sign(slope[i])
            if sg == 0:
                i += 1
                continue
            j = i
            dg = 0.0
            smax = 0.0
            while j < n and np.sign(slope[j]) == sg and (j == i or abs(t0[j] - t1[j - 1]) < 1e-9):
                dg += dv[j]
                smax = max(smax, abs(slope[j]))
                j += 1
            ts = abs(dg) / smax if smax > 0 else 0.0
            if ts > 0:
                thr = rheobase * (1 + chronaxie / ts)
                best_f = max(best_f, smax * r_eval / thr)
            best_s = max(best_s, smax)
            i = j
        max_slew[ax], max_dbdt[ax], frac[ax] = best_s, best_s * r_eval, best_f
    frac["combined"] = math.sqrt(sum(frac[a] ** 2 for a in "xyz"))
    f = frac["combined"]
    mode = "normal" if f <= 0.8 else ("first_level" if f <= 1.0 else "exceeds")
    return PNSReport(max_slew=max_slew, max_dbdt=max_dbdt, fraction=frac, mode=mode, r_eval=r_eval,
                     rheobase=rheobase, chronaxie=chronaxie)


def check_gradients(seq: Sequence, scanner: Scanner, *, rtol: float = 1e-6) -> dict:
    """Check gradient amplitudes and slew rates against the scanner's limits.

    Returns:
        ``{"max_grad": {axis: [T/m]}, "max_slew": {axis: [T/m/s]}}``.

    Raises:
        ValueError: an axis exceeds ``scanner.max_grad`` or ``scanner.max_slew``
            (the message names the axis, the value and the limit).
    """
    gt = gradient_table(seq)
    out = {"max_grad": {}, "max_slew": {}}
    vals = np.asarray(gt.values) if gt.t0.size else np.zeros(0)
    for ax_i, ax in enumerate("xyz"):
        if gt.t0.size == 0:
            out["max_grad"][ax] = out["max_slew"][ax] = 0.0
            continue
        d = gt.direction[:, ax_i]
        v0, v1 = vals[gt.i0] * d, vals[gt.i1] * d
        dur = gt.t1 - gt.t0
        g = float(np.max(np.abs(np.concatenate([v0, v1])))) if v0.size else 0.0
        s = float(np.max(np.where(dur > 1e-12, np.abs(v1 - v0) / np.where(dur > 1e-12, dur, 1.0), 0.0)))
        out["max_grad"][ax], out["max_slew"][ax] = g, s
        if g > scanner.max_grad * (1 + rtol):
            raise ValueError(f"gradient {ax} reaches {g * 1e3:.2f} mT/m > max_grad {scanner.max_grad * 1e3:.2f} mT/m")
        if s > scanner.max_slew * (1 + rtol):
            raise ValueError(f"gradient {ax} slews at {s:.1f} T/m/s > max_slew {scanner.max_slew:.1f} T/m/s")
    return out
