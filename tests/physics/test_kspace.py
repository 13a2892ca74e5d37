"""k-space: the signal of an object is the Fourier transform of its density (PHYSICS.md 12),
and a tiny 2D Cartesian GRE image shows a disk at the right place and size."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from tests.seqkit import IDEAL, cartesian_gre, fft_recon, grid_twin, hard


def test_signal_is_fourier_transform_of_density():
    # after a 90, a readout with ramps (stepped) and a flat top (window): s(k) = i sum rho e^{-i2pi k.r}
    rng = np.random.default_rng(1)
    n = 50
    pos = rng.uniform(-0.05, 0.05, (n, 3))
    rho = rng.uniform(0.2, 1.0, n)
    twin = mt.Twin(position=pos, pd=rho, t1=np.full(n, np.inf), t2=np.full(n, np.inf))
    gx = mt.TrapGrad("x", 10e-3, 200e-6, 1e-3, 200e-6)
    gy = mt.TrapGrad("y", -4e-3, 100e-6, 1e-3, 300e-6)
    seq = mt.Sequence([mt.Block(rf=hard(np.pi / 2, 2e-6)),
                       mt.Block(gx=gx, gy=gy, adc=mt.ADC(140, 10e-6, delay=0.0))])
    sig = mt.simulate(twin, seq, dtype=jnp.float64, scanner=IDEAL)
    k = np.asarray(sig.kspace)
    expected = 1j * (rho[None, :] * np.exp(-2j * np.pi * k @ pos.T)).sum(1)
    # pulse of 2 us: the spins' k at the pulse centre is 0 by definition; gradients are off
    np.testing.assert_allclose(np.asarray(sig.samples[0]), expected, rtol=1e-6, atol=1e-9)
    # k is gamma_bar times the exact gradient integral (ramp and flat top)
    t = np.asarray(sig.time) - seq.block_starts()[1]
    kx_flat = mt.GAMMA_BAR * 10e-3 * (t - 200e-6 + 100e-6)
    flat = (t > 200e-6) & (t < 1.2e-3)
    np.testing.assert_allclose(k[flat, 0], kx_flat[flat], rtol=1e-9)


def test_gre_image_shows_disk_at_right_place_and_size():
    n, fov = 32, 0.2
    x0, y0, r = 0.03, -0.02, 0.04
    # one spin per pixel cannot be RF/gradient spoiled, so transverse coherence is removed
    # physically: T2 = 10 ms << TR = 100 ms
    twin = grid_twin(n, fov, mask=lambda x, y: (x - x0) ** 2 + (y - y0) ** 2 < r ** 2, t2=0.01)
    seq = cartesian_gre(n, fov, tr=0.1, te=3e-3, rf_spoil=False)
    sig = mt.simulate(twin, seq)
    np.testing.assert_allclose(np.asarray(sig.kspace)[:, 0].reshape(n, n)[0],
                               (np.arange(n) - n / 2) / fov, rtol=1e-5, atol=1e-6)
    img = np.abs(fft_recon(sig.samples[0], n))
    c = (np.arange(n) - n / 2) * fov / n
    xg, yg = np.meshgrid(c, c, indexing="ij")
    mask = img > img.max() / 2
    np.testing.assert_allclose(xg[mask].mean(), x0, atol=fov / n / 2)
    np.testing.assert_allclose(yg[mask].mean(), y0, atol=fov / n / 2)
    true_area = ((xg - x0) ** 2 + (yg - y0) ** 2 < r ** 2).sum()
    np.testing.assert_allclose(mask.sum(), true_area, rtol=0.05)


def _k_after(pulse, area=2e-6):
    """kx [1/m] of an ADC sample after: excitation, an x gradient of ``area`` [T s/m],
    then ``pulse`` (no gradient after it)."""
    g = mt.TrapGrad("x", area / 1.1e-3, 100e-6, 1e-3, 100e-6)  # area = amp * (flat + rise)
    seq = mt.Sequence([mt.Block(rf=hard(np.pi / 2, 20e-6, use="excitation")), mt.Block(gx=g),
                       mt.Block(rf=pulse), mt.Block(adc=mt.ADC(1, 10e-6, delay=0.0))])
    return float(np.asarray(seq.kspace())[0, 0])


def test_rf_use_decides_what_a_pulse_does_to_kspace():
    """The toolboxes' k-space rules: excitation resets, refocusing negates, inversion,
    saturation, preparation and "other" pulses leave k alone; a pulse of undefined use
    (all of a pre-1.5 file's) is an excitation below 90.01 degrees, else refocusing."""
    k0 = mt.GAMMA_BAR * 2e-6
    assert _k_after(hard(np.pi / 2, 20e-6, use="excitation")) == 0.0
    for use in ("inversion", "saturation", "preparation", "other"):
        np.testing.assert_allclose(_k_after(hard(np.pi / 2, 20e-6, use=use)), k0, rtol=1e-12, err_msg=use)
    for deg, want in ((60.0, 0.0), (90.0, 0.0), (90.02, -k0), (120.0, -k0), (180.0, -k0)):
        np.testing.assert_allclose(_k_after(hard(np.radians(deg), 20e-6, use="undefined")), want,
                                   rtol=1e-12, atol=1e-9, err_msg=str(deg))
    np.testing.assert_allclose(_k_after(hard(np.radians(120.0), 20e-6, use="refocusing")), -k0, rtol=1e-12)


def test_pre15_file_rf_use_matches_pypulseq_detection(tmp_path):
    """A 1.4.1 file stores no RF use: a spin echo with a 120 degree refocusing pulse read
    back by mritwin has pypulseq's k-space (its detectRFuse: 90.01 degrees)."""
    pp = pytest.importorskip("pypulseq")

    sys_ = pp.Opts(max_grad=30, grad_unit="mT/m", max_slew=120, slew_unit="T/m/s")
    seq = pp.Sequence(sys_)
    exc = pp.make_block_pulse(np.pi / 2, duration=200e-6, system=sys_, use="excitation")
    ref = pp.make_block_pulse(np.radians(120), duration=400e-6, system=sys_, use="refocusing")
    pre = pp.make_trapezoid("x", area=500, duration=1e-3, system=sys_)
    gx = pp.make_trapezoid("x", flat_area=1000, flat_time=2e-3, system=sys_)
    adc = pp.make_adc(8, duration=gx.flat_time, delay=gx.rise_time, system=sys_)
    for b in ([exc], [pre], [ref], [gx, adc]):
        seq.add_block(*b)
    path = str(tmp_path / "se_v141.seq")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq.write(path, v141_compat=True)
        back = pp.Sequence(sys_)
        back.read(path, detect_rf_use=True)
        k_pp = np.asarray(back.calculate_kspace()[0])[0]
    m = mt.read_seq(path)
    assert [b.rf.use for b in m.blocks if b.rf is not None] == ["undefined", "undefined"]
    k_mt = np.asarray(m.kspace())[:, 0]
    np.testing.assert_allclose(k_mt, k_pp, rtol=1e-5, atol=1e-3)
    assert k_mt[0] < 0  # the prewinder's +500 1/m negated (kept as +500 before 2026-12-06)


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy-samples", "jax-samples"])
def test_kspace_stays_exact_over_long_sequences_with_arbitrary_gradients(xp):
    """k-space is integrated in float64 over the whole sequence even when an event holds
    JAX values: 3 000 TRs, each an excitation, an arbitrary y lobe of known area, one ADC
    sample and an unbalanced z spoiler (k_z without resets reaches 1.2e7 1/m, where
    float32 would be off by ~1 1/m, a quarter of a 25 cm FOV's pixel). Run with JAX's
    default float32 (x64 off), as users do: the suite's x64 would hide it."""
    jax.config.update("jax_enable_x64", False)
    try:
        lobe = xp.sin(xp.linspace(0.0, np.pi, 20)) * 1e-3  # [T/m] on a 10 us raster
        gy = mt.make_arbitrary_grad("y", lobe, first=0.0, last=0.0, scanner=IDEAL)
        spoil = mt.TrapGrad("z", 40e-3, 100e-6, 0.9e-3, 100e-6)
        tr = [mt.Block(rf=hard(np.radians(10), 20e-6)), mt.Block(gz=spoil), mt.Block(gy=gy),
              mt.Block(adc=mt.ADC(1, 10e-6, delay=0.0))]
        k = np.asarray(mt.Sequence(tr * 3000).kspace())
    finally:
        jax.config.update("jax_enable_x64", True)
    t = np.concatenate([[0.0], (np.arange(20) + 0.5) * 10e-6, [200e-6]])
    w = np.concatenate([[0.0], np.sin(np.linspace(0.0, np.pi, 20)) * 1e-3, [0.0]])
    ky = mt.GAMMA_BAR * np.sum(0.5 * (w[1:] + w[:-1]) * np.diff(t))  # trapezoidal rule: exact
    assert k.dtype == np.float64 and k.shape == (3000, 3)
    np.testing.assert_allclose(k[:, 1], ky, rtol=1e-6)  # (JAX samples: float32 lobe values)
    np.testing.assert_allclose(k[:, 0], 0.0, atol=1e-9)
    np.testing.assert_allclose(k[:, 2], mt.GAMMA_BAR * 40e-3 * 1e-3, rtol=1e-9)  # the spoiler's area


def test_traced_gradients_give_the_concrete_kspace_and_its_exact_derivative():
    """A TSE (an excitation, then refocusing pulses that negate k) and an IR spin echo (an
    inversion that leaves k alone) with every x gradient scaled by a traced factor ``s``:
    k-space under `jax.jit` equals the NumPy path's at ``s = 1`` (a recurrence over the RF
    events, a `lax.scan` when traced), and since k_x is linear in ``s`` (k_y, k_z do not
    depend on it), ``d k_x / d s = k_x(1)`` and ``d k_y / d s = 0`` exactly."""
    import equinox as eqx

    sc = mt.Scanner(b0=3.0)
    for base in (mt.sequences.tse(scanner=sc, fov=0.2, matrix=8, etl=4, te=40e-3, tr=0.5, slice_thickness=5e-3),
                 mt.sequences.inversion_recovery(scanner=sc, fov=0.2, matrix=8, ti=0.3, te=20e-3, tr=1.0,
                                                 slice_thickness=5e-3)):
        def kspace(s, base=base):
            blocks = [eqx.tree_at(lambda q: q.gx.amplitude, b, b.gx.amplitude * s) if b.gx is not None else b
                      for b in base.blocks]
            return mt.Sequence(blocks, base.definitions).kspace()

        ref = np.asarray(base.kspace())
        roles = [b.rf.use for b in base.blocks if b.rf is not None]
        assert "refocusing" in roles and np.any(ref[:, 0] < 0) and np.any(ref[:, 0] > 0)
        np.testing.assert_allclose(np.asarray(jax.jit(kspace)(1.0)), ref, rtol=1e-12, atol=1e-9)
        jac = np.asarray(jax.jacfwd(kspace)(1.0))
        np.testing.assert_allclose(jac[:, 0], ref[:, 0], rtol=1e-12, atol=1e-9)
        np.testing.assert_array_equal(jac[:, 1:], 0.0)
        eager = np.asarray(jax.grad(lambda s: kspace(s)[:, 0].sum())(1.0))
        np.testing.assert_allclose(eager, ref[:, 0].sum(), rtol=1e-9)
