"""Differentiable losses for sequence optimization and twin calibration (SI units).

Every loss is a pure JAX function of its inputs, so `jax.grad` flows through it to the
twin fields and the sequence values that produced them (see `mritwin.simulate`).
Sequence *timing* (durations, TR, TE) is host-side and concrete: losses that depend on
it (`duration_penalty`, the ``/sqrt(duration)`` of `contrast`) are differentiable with
respect to everything else but not with respect to the timing itself.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..sequence.safety import BodyModel, b1_rms, check_sar
from ..sequence.sequence import Sequence
from ..simulate.engine import simulate
from ..twin.twin import Twin

__all__ = [
    "cnr",
    "contrast",
    "duration_penalty",
    "image_mse",
    "region_mask",
    "region_signals",
    "sar_b1_rms_limit",
    "sar_penalty",
    "signal_magnitude",
    "signal_mse",
]


def _data(x):
    """The array behind a `Signal` (``samples``), an `Image` (``data``) or an array."""
    for name in ("samples", "data"):
        if hasattr(x, name):
            return jnp.asarray(getattr(x, name))
    return jnp.asarray(x)


def region_mask(twin: Twin, region) -> np.ndarray:
    """A boolean (n_spins,) mask of one twin region.

    Args:
        twin: the twin.
        region: a label name from ``twin.label_names`` (e.g. ``"white_matter"``), an
            integer label value, or a boolean / 0-1 array of shape (n_spins,).

    Returns:
        NumPy bool array (n_spins,).

    Raises:
        ValueError: unknown label name, twin without labels, wrong mask shape, empty region.
    """
    if isinstance(region, (str, int, np.integer)) and not isinstance(region, bool):
        if twin.label is None:
            raise ValueError("region given by label, but the twin has no `label` field; pass a mask")
        lab = np.asarray(twin.label)
        if isinstance(region, str):
            if region not in twin.label_names:
                raise ValueError(f"unknown region {region!r}; the twin's labels are {list(twin.label_names)}")
            value = twin.label_names.index(region)  # label_names[label] names a spin
        else:
            value = int(region)
        mask = lab == value
    else:
        mask = np.asarray(region).astype(bool)
        if mask.shape != (twin.n_spins,):
            raise ValueError(f"region mask must have shape (n_spins,) = ({twin.n_spins},), got {mask.shape}")
    if not mask.any():
        raise ValueError(f"region {region if isinstance(region, (str, int)) else 'mask'} has no spins")
    return mask


def region_signals(twin: Twin, seq: Sequence, regions, **simulate_kwargs):
    """Mean signal per spin of each region, from one simulation.

    The regions are passed to `simulate` as receive "coils" (one 0/1 sensitivity per
    region), so all regions cost one simulation. Each row is divided by the number of
    spins in its region: a region of fully relaxed, in-phase spins with ``pd = 1`` gives
    ``|s| = sin(flip)`` after one pulse.

    Args:
        twin: the spins (its own ``coil_sensitivity`` is ignored here).
        seq: the sequence.
        regions: a list of regions as accepted by `region_mask`.
        **simulate_kwargs: passed to `simulate` (``method``, ``scanner``, ``dtype``...).

    Returns:
        Complex (n_regions, n_adc_samples) array [a.u.].
    """
    masks = np.stack([region_mask(twin, r) for r in regions]).astype(np.float64)
    sig = simulate(twin, seq, coils=masks.astype(np.complex128), **simulate_kwargs)
    return sig.samples / jnp.asarray(masks.sum(axis=1))[:, None]


def _duration(seq_or_duration) -> float:
    if isinstance(seq_or_duration, Sequence):
        return float(seq_or_duration.duration)
    d = float(seq_or_duration)
    if not d > 0:
        raise ValueError(f"duration must be > 0 [s], got {d}")
    return d


def contrast(twin: Twin, seq: Sequence, region_a, region_b, *, per_unit_time: bool = True, **simulate_kwargs):
    """Signal contrast between two twin regions, optionally per square root of time.

    ``C = mean_t |s_a(t)| - mean_t |s_b(t)|`` where ``s_r`` is the mean signal per spin of
    region ``r`` (`region_signals`) over the ADC samples; with ``per_unit_time``
    ``C / sqrt(seq.duration)``, the usual efficiency measure (SNR grows as sqrt(time)).
    Positive when region a is brighter; maximize ``C`` (minimize ``-C``) to make a brighter.

    Args:
        twin: the spins with labels (or pass masks).
        seq: the sequence (values may be traced).
        region_a, region_b: regions as accepted by `region_mask`.
        per_unit_time: divide by ``sqrt(seq.duration [s])``.
        **simulate_kwargs: passed to `simulate`.

    Returns:
        Scalar [a.u.] or [a.u./sqrt(s)].
    """
    s = region_signals(twin, seq, [region_a, region_b], **simulate_kwargs)
    c = jnp.mean(jnp.abs(s[0])) - jnp.mean(jnp.abs(s[1]))
    return c / jnp.sqrt(_duration(seq)) if per_unit_time else c


def cnr(
    twin: Twin,
    seq: Sequence,
    region_a,
    region_b,
    *,
    noise_std: float,
    per_unit_time: bool = True,
    **simulate_kwargs,
):
    """Contrast-to-noise ratio between two regions, optionally per square root of time.

    ``CNR = contrast * sqrt(n_adc) / noise_std``: the `contrast` (mean per-spin signal
    difference) against the noise of the mean of ``n_adc`` samples with per-sample
    standard deviation ``noise_std`` (same units as the per-spin signal).

    Args:
        noise_std: per-sample noise standard deviation [a.u.], > 0.
        other arguments: as in `contrast`.

    Returns:
        Scalar [1] or [1/sqrt(s)].

    Raises:
        ValueError: ``noise_std <= 0``.
    """
    if not noise_std > 0:
        raise ValueError(f"noise_std must be > 0, got {noise_std}")
    s = region_signals(twin, seq, [region_a, region_b], **simulate_kwargs)
    c = jnp.mean(jnp.abs(s[0])) - jnp.mean(jnp.abs(s[1]))
    out = c * np.sqrt(s.shape[1]) / noise_std
    return out / jnp.sqrt(_duration(seq)) if per_unit_time else out


def _mse(x, target, mask, normalize):
    x, target = _data(x), _data(target)
    if x.shape != target.shape:
        raise ValueError(f"shape mismatch: got {x.shape}, target has {target.shape}")
    w = jnp.ones(x.shape) if mask is None else jnp.broadcast_to(jnp.asarray(mask, float), x.shape)
    err = jnp.sum(w * jnp.abs(x - target) ** 2) / jnp.sum(w)
    if normalize:
        err = err / (jnp.sum(w * jnp.abs(target) ** 2) / jnp.sum(w))
    return err


def image_mse(image, target, *, mask=None, normalize: bool = True, magnitude: bool = False):
    """Mean squared error of an image to a target image.

    Args:
        image: an `Image` (``.data``) or a (complex) array.
        target: same shape as ``image``.
        mask: optional 0/1 weights broadcastable to the image shape.
        normalize: divide by the mean ``|target|²`` (a relative error, 1 for a zero image).
        magnitude: compare ``|image|`` with ``|target|`` (ignores phase).

    Returns:
        Scalar, [1] when normalized.

    Raises:
        ValueError: shape mismatch.
    """
    x, t = _data(image), _data(target)
    if magnitude:
        x, t = jnp.abs(x), jnp.abs(t)
    return _mse(x, t, mask, normalize)


def signal_mse(signal, target, *, normalize: bool = True):
    """Mean squared error of signal samples to target samples (`Signal` or arrays).

    Args:
        signal: a `Signal` or a complex array, e.g. (n_coils, n_adc).
        target: same shape.
        normalize: divide by the mean ``|target|²``.

    Returns:
        Scalar.

    Raises:
        ValueError: shape mismatch.
    """
    return _mse(signal, target, None, normalize)


def signal_magnitude(signal):
    """Mean ``|s|`` over all samples of a `Signal` or array [a.u.] (maximize it: minimize its negative)."""
    return jnp.mean(jnp.abs(_data(signal)))


def sar_penalty(seq: Sequence, *, max_b1_rms: float, power: int = 2):
    """Hinge penalty on B1+rms above a limit: ``max(0, b1_rms/max_b1_rms - 1) ** power``.

    B1+rms (`mritwin.sequence.safety.b1_rms`) is the quantity scanners limit and SAR
    scales with its square, so a B1+rms limit is a SAR limit
    (``max_b1_rms = b1_rms * sqrt(sar_limit / sar)`` from a `check_sar` report).
    Zero (with zero gradient) inside the limit; differentiable with respect to RF
    amplitudes and shapes.

    Args:
        seq: the sequence (RF values may be traced).
        max_b1_rms: the limit [T], > 0.
        power: exponent of the hinge (2: smooth at the limit).

    Returns:
        Scalar [1].

    Raises:
        ValueError: ``max_b1_rms <= 0``.
    """
    if not max_b1_rms > 0:
        raise ValueError(f"max_b1_rms must be > 0 [T], got {max_b1_rms}")
    return jnp.maximum(0.0, jnp.asarray(b1_rms(seq)) / max_b1_rms - 1.0) ** power


def duration_penalty(seq_or_duration, *, max_duration: float, power: int = 2):
    """Hinge penalty on the scan time: ``max(0, duration/max_duration - 1) ** power``.

    Timing is concrete (host side), so this penalty is a constant for gradient descent;
    use it to rank discrete protocol choices (e.g. a TR/TE grid) or in a grid search.

    Args:
        seq_or_duration: a `Sequence` or a duration [s].
        max_duration: the allowed duration [s], > 0.
        power: exponent of the hinge.

    Returns:
        Scalar [1].

    Raises:
        ValueError: ``max_duration <= 0``.
    """
    if not max_duration > 0:
        raise ValueError(f"max_duration must be > 0 [s], got {max_duration}")
    return jnp.maximum(0.0, _duration(seq_or_duration) / max_duration - 1.0) ** power


def sar_b1_rms_limit(
    seq: Sequence, scanner, *, model: BodyModel | None = None, level: str = "normal"
) -> float:
    """The B1+rms [T] at which ``seq`` (same timing and pulse shapes) reaches the SAR limit.

    SAR is proportional to B1+rms², so the limit is ``b1_rms / sqrt(factor)`` with
    ``factor`` the largest SAR / limit ratio of `check_sar`. Use it as ``max_b1_rms`` of
    `sar_penalty` or `SARLimit` to hold an optimized sequence within the IEC limits.

    Args:
        seq: a concrete sequence with RF (e.g. the initial parameters' sequence).
        scanner: the system (``b0`` sets the Larmor frequency).
        model: patient/coil model (default `BodyModel()`).
        level: ``"normal"`` or ``"first_level"`` operating mode.

    Returns:
        The B1+rms limit [T].

    Raises:
        ValueError: unknown level, or a sequence without RF energy.
    """
    if level not in ("normal", "first_level"):
        raise ValueError(f"level must be 'normal' or 'first_level', got {level!r}")
    rep = check_sar(seq, scanner, model=model)
    factors = rep.factor if level == "normal" else rep.first_level_factor
    f = max(factors.values())
    if not f > 0:
        raise ValueError("the sequence has no RF energy: its SAR cannot set a B1+rms limit")
    return rep.b1_rms / float(np.sqrt(f))
