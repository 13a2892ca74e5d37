"""Engine properties: exact windows, chunking, precision, multi-coil, recompilation,
T2* from isochromats, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.simulate import trace_count
from tests.seqkit import IDEAL, cartesian_gre, grid_twin, hard

F64 = dict(dtype=jnp.float64, scanner=IDEAL)


def random_twin(n, seed=0, coils=0):
    rng = np.random.default_rng(seed)
    cs = None
    if coils:
        cs = rng.normal(size=(coils, n)) + 1j * rng.normal(size=(coils, n))
    return mt.Twin(position=rng.uniform(-0.1, 0.1, (n, 3)) * [1, 1, 0.02], pd=rng.uniform(0.5, 1, n),
                   t1=rng.uniform(0.3, 2, n), t2=rng.uniform(0.02, 0.2, n), delta_f=rng.normal(0, 30, n),
                   b1=rng.uniform(0.8, 1.2, n), coil_sensitivity=cs)


def small_gre(n=8):
    return cartesian_gre(n, 0.2, tr=8e-3, te=3e-3, scanner=IDEAL)


def test_windows_equal_stepping_exactly():
    twin = random_twin(300, coils=2)
    seq = small_gre()
    d = mt.discretize(seq, IDEAL)
    assert d.n_window > 0 and int((np.asarray(d.kind) == 2).sum()) == 8
    a = mt.simulate(twin, seq, **F64).samples
    b = mt.simulate(twin, seq, method=mt.Bloch(windows=False), **F64).samples
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


def test_chunking_does_not_change_the_result():
    twin = random_twin(301)
    seq = small_gre()
    a = mt.simulate(twin, seq, **F64, return_magnetization=True)
    b = mt.simulate(twin, seq, method=mt.Bloch(chunk_size=37), **F64, return_magnetization=True)
    np.testing.assert_allclose(np.asarray(a.samples), np.asarray(b.samples), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(a.magnetization), np.asarray(b.magnetization), atol=1e-12)
    assert a.magnetization.shape == (301, 3)


def test_float32_agrees_with_float64():
    twin = random_twin(200)
    seq = small_gre()
    a = np.asarray(mt.simulate(twin, seq, **F64).samples)
    b = mt.simulate(twin, seq, scanner=IDEAL).samples
    assert b.dtype == jnp.complex64
    assert np.max(np.abs(a - np.asarray(b))) < 1e-4 * np.max(np.abs(a))


@pytest.mark.slow
def test_multi_coil_is_sensitivity_weighted_sum():
    twin = random_twin(50)
    seq = small_gre()
    single = np.asarray(mt.simulate(twin, seq, **F64).samples[0])
    cs = np.stack([np.ones(50), 2j * np.ones(50)])
    multi = np.asarray(mt.simulate(twin, seq, coils=cs, **F64).samples)
    np.testing.assert_allclose(multi[0], single, rtol=1e-12)
    np.testing.assert_allclose(multi[1], 2j * single, rtol=1e-12)
    # non-uniform: the sum over spins of c_j M_j, checked spin by spin
    rng = np.random.default_rng(3)
    c = rng.normal(size=(1, 50)) + 1j * rng.normal(size=(1, 50))
    per_spin = np.stack([np.asarray(mt.simulate(twin[i:i + 1], seq, **F64).samples[0]) for i in range(50)])
    np.testing.assert_allclose(np.asarray(mt.simulate(twin, seq, coils=c, **F64).samples[0]),
                               (c[0][:, None] * per_spin).sum(0), rtol=1e-9, atol=1e-12)


def test_no_recompile_when_only_twin_values_change():
    seq = small_gre()
    mt.simulate(random_twin(100, seed=1), seq, scanner=IDEAL)
    n0 = trace_count()
    mt.simulate(random_twin(100, seed=2), seq, scanner=IDEAL)
    mt.simulate(random_twin(120, seed=3), seq, scanner=IDEAL)  # same spin bucket
    # a sequence with other values but the same timing shares the compiled core too
    mt.simulate(random_twin(100, seed=4), cartesian_gre(8, 0.25, tr=8e-3, te=3e-3, scanner=IDEAL),
                scanner=IDEAL)
    assert trace_count() == n0


@pytest.mark.parametrize("method", [mt.Bloch(), mt.Bloch(windows=False), mt.Bloch(readout=mt.NUFFTReadout(1e-6)),
                                    mt.Bloch(kernel="pallas")], ids=["windows", "stepped", "nufft", "pallas"])
def test_a_repeated_call_moves_no_arrays_between_host_and_device(method):
    # the planned run keeps its arrays on the device (engine._placed; the fused kernel's
    # plan, here interpreted, likewise): calling it again copies nothing (before, its NumPy
    # step arrays went to the device at every call; test_sharding.py checks several devices)
    twin = random_twin(300, coils=2)
    seq = mt.sequences.gre(scanner=mt.Scanner(), fov=0.2, matrix=8, flip_angle_deg=30, slice_thickness=5e-3)
    first = mt.simulate(twin, seq, method=method).samples
    with jax.transfer_guard("disallow"):
        again = mt.simulate(twin, seq, method=method).samples
    np.testing.assert_array_equal(np.asarray(again), np.asarray(first))


def test_t2_star_from_lorentzian_isochromats():
    # n isochromats with Lorentzian off-resonance of half width 1/(2 pi T2'): the FID decays as
    # exp(-t/T2) exp(-t/T2') = exp(-t/T2*) (deterministic quantiles; accurate for t << n T2'/4)
    t2, t2p = 0.1, 0.02
    base = mt.Twin(position=np.zeros((1, 3)), pd=[1.0], t1=[1.0], t2=[t2], t2_prime=[t2p])
    twin = mt.with_isochromats(base, 1000, (0, 0, 0))
    assert twin.n_spins == 1000 and twin.t2_prime is None
    seq = mt.Sequence([mt.Block(rf=hard(np.pi / 2, 2e-6)), mt.Block(adc=mt.ADC(60, 1e-3))])
    sig = mt.simulate(twin, seq, **F64)
    t = np.asarray(sig.time) - 2e-6
    t2s = 1 / (1 / t2 + 1 / t2p)
    np.testing.assert_allclose(np.abs(np.asarray(sig.samples[0])), np.exp(-t / t2s), atol=0.01)
    # the same twin as a single isochromat warns that T2' is not simulated
    with pytest.warns(UserWarning, match="with_isochromats"):
        mt.simulate(base, seq, **F64)


def test_isochromats_spread_over_voxel_deterministically():
    base = mt.Twin(position=[[0.01, 0.02, 0.0]], pd=[2.0], t1=[1.0], t2=[0.1])
    a = mt.with_isochromats(base, 50, (1e-3, 2e-3, 0.0))
    b = mt.with_isochromats(base, 50, (1e-3, 2e-3, 0.0))
    np.testing.assert_array_equal(np.asarray(a.position), np.asarray(b.position))
    p = np.asarray(a.position)
    assert np.all(np.abs(p[:, 0] - 0.01) <= 0.5e-3) and np.all(np.abs(p[:, 1] - 0.02) <= 1e-3)
    np.testing.assert_allclose(p.mean(0), [0.01, 0.02, 0.0], atol=1e-4)
    np.testing.assert_allclose(float(a.pd.sum()), 2.0)
    c = mt.with_isochromats(base, 50, (1e-3, 2e-3, 0.0), key=jax.random.PRNGKey(0))
    assert not np.allclose(np.asarray(c.position), p)


def test_errors_are_clear():
    twin = random_twin(4)
    no_adc = mt.Sequence([mt.Block(rf=hard(0.1))])
    with pytest.raises(ValueError, match="no ADC"):
        mt.simulate(twin, no_adc)
    with pytest.raises(TypeError, match="Twin"):
        mt.simulate({"pd": 1}, no_adc)
    with pytest.raises(ValueError, match="float32 or float64"):
        mt.simulate(twin, small_gre(), dtype=jnp.int32)
    with pytest.raises(ValueError, match="coil sensitivities"):
        mt.simulate(twin, small_gre(), coils=np.ones((2, 5)))
    with pytest.raises(TypeError, match="ReceiverNoise"):
        mt.simulate(twin, small_gre(), noise=0.1)
    with pytest.raises(ValueError, match="random key"):
        mt.simulate(twin, small_gre(), noise=mt.ReceiverNoise(sigma=0.1))
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="jax_enable_x64"):
            mt.simulate(twin, small_gre(), dtype="float64")
    finally:
        jax.config.update("jax_enable_x64", True)


def test_uniform_grid_gre_runs_in_float32_by_default():
    n, fov = 16, 0.2
    sig = mt.simulate(grid_twin(n, fov), cartesian_gre(n, fov))
    assert sig.samples.shape == (1, n * n) and sig.samples.dtype == jnp.complex64
    assert sig.kspace.shape == (n * n, 3) and sig.time.shape == (n * n,)
    assert np.all(np.isfinite(np.asarray(sig.samples)))


def test_receiver_noise_through_simulate():
    # the noise added by simulate has the configured standard deviation (E|n|^2 = sigma^2),
    # is reproducible from the key, and leaves the noiseless signal as its mean
    twin = random_twin(20)
    seq = small_gre(16)
    clean = np.asarray(mt.simulate(twin, seq, **F64).samples)
    noisy = [np.asarray(mt.simulate(twin, seq, noise=mt.ReceiverNoise(sigma=0.05),
                                    key=jax.random.PRNGKey(i), **F64).samples) for i in range(2)]
    again = np.asarray(mt.simulate(twin, seq, noise=mt.ReceiverNoise(sigma=0.05),
                                   key=jax.random.PRNGKey(0), **F64).samples)
    np.testing.assert_array_equal(noisy[0], again)
    n = noisy[0] - clean
    assert abs(np.sqrt(np.mean(np.abs(n) ** 2)) - 0.05) < 0.05 * 0.1  # 256 samples: ~6 % scatter
    assert not np.allclose(noisy[0], noisy[1])


def test_signal_metadata():
    seq = small_gre(8)
    sig = mt.simulate(random_twin(5), seq, scanner=IDEAL)
    assert sig.time.dtype == np.float64
    np.testing.assert_array_equal(sig.time, seq.adc_times())
    np.testing.assert_array_equal(sig.adc_event, np.repeat(np.arange(8), 8))
    np.testing.assert_allclose(sig.kspace, seq.kspace())


def test_discrete_sequence_and_method_must_agree_on_ideal_spoiling():
    """A DiscreteSequence's spoil marks come from discretize: Bloch(ideal_spoiling=True)
    without them, or them without it, would silently simulate an unspoiled sequence."""
    twin = random_twin(5)
    plain = mt.discretize(small_gre(), IDEAL)
    spoiled = mt.discretize(small_gre(), IDEAL, ideal_spoiling=True)
    with pytest.raises(ValueError, match="discretize\\(seq, ..., ideal_spoiling=True\\)"):
        mt.simulate(twin, plain, method=mt.Bloch(ideal_spoiling=True), scanner=IDEAL)
    with pytest.raises(ValueError, match="simulate it with Bloch\\(ideal_spoiling=True\\)"):
        mt.simulate(twin, spoiled, scanner=IDEAL)
    want = mt.simulate(twin, small_gre(), method=mt.Bloch(ideal_spoiling=True), scanner=IDEAL, dtype=jnp.float64)
    got = mt.simulate(twin, spoiled, method=mt.Bloch(ideal_spoiling=True), scanner=IDEAL, dtype=jnp.float64)
    np.testing.assert_allclose(np.asarray(got.samples), np.asarray(want.samples), atol=1e-12)


@pytest.mark.parametrize("use", ["excitation", "undefined"])
def test_sequence_built_inside_jit_with_undefined_rf(use):
    """A sequence built inside a jitted function: the k-space role of an "undefined" pulse
    (every pulse of a pre-1.5 Pulseq file) comes from its flip angle, computed on the
    concrete values (jnp there staged a tracer and crashed the trace)."""
    def loss(pd):
        twin = mt.Twin(position=np.zeros((2, 3)), pd=pd, t1=np.ones(2), t2=np.full(2, 0.1))
        seq = mt.Sequence([mt.Block(rf=mt.make_block_pulse(0.5, 100e-6, use=use, scanner=IDEAL)),
                           mt.Block(adc=mt.ADC(4, 10e-6))])
        return jnp.sum(jnp.abs(mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64).samples) ** 2)

    pd = jnp.ones(2)
    np.testing.assert_allclose(jax.jit(loss)(pd), loss(pd), rtol=1e-12)
    np.testing.assert_allclose(jax.jit(jax.grad(loss))(pd), jax.grad(loss)(pd), rtol=1e-12)


def test_traced_amplitude_merges_equal_rf_samples_as_the_concrete_path():
    """A composite pulse of three constant runs (90x-180y-90x, 50 raster samples each) is
    three RF steps when its values are concrete. With its amplitude or phase traced
    (`jax.grad` with respect to them) the shape stays concrete, so the same runs merge:
    the traced forward value equals the eager one to rounding (before: 150 steps against
    3, and at T2 = 5 ms the two splittings gave signals 3 % apart: jax.jit changed the
    answer), and the gradient is the derivative of the function the forward pass
    evaluates (central differences of the eager function)."""
    shape = np.concatenate([np.ones(50), 2j * np.ones(50), np.ones(50)])
    twin = mt.Twin(position=np.zeros((3, 3)), pd=np.ones(3), t1=np.full(3, 0.02), t2=np.full(3, 0.005),
                   delta_f=np.array([-300.0, 0.0, 450.0]))

    def signal(amp, phase):
        rf = mt.RF(amp, shape, phase_offset=phase, raster=10e-6, use="excitation")
        seq = mt.Sequence([mt.Block(rf=rf), mt.Block(adc=mt.ADC(8, 50e-6))])
        return mt.simulate(twin, seq, scanner=IDEAL, dtype=jnp.float64).samples

    amp = 0.5 / (2 * np.pi * mt.GAMMA_BAR * 50 * 10e-6)  # 90 degrees per run of 50 samples
    eager = np.asarray(signal(amp, 0.3))
    traced = np.asarray(jax.jit(signal)(amp, 0.3))
    np.testing.assert_allclose(traced, eager, rtol=0, atol=1e-13 * np.abs(eager).max())

    def loss(amp, phase):
        return jnp.sum(jnp.abs(signal(amp, phase)) ** 2) + jnp.sum(jnp.real(signal(amp, phase)))

    g_amp, g_phase = jax.grad(loss, argnums=(0, 1))(amp, 0.3)
    h = 1e-6
    fd_amp = (float(loss(amp * (1 + h), 0.3)) - float(loss(amp * (1 - h), 0.3))) / (2 * h * amp)
    fd_phase = (float(loss(amp, 0.3 + h)) - float(loss(amp, 0.3 - h))) / (2 * h)
    assert float(g_amp) == pytest.approx(fd_amp, rel=1e-7)
    assert float(g_phase) == pytest.approx(fd_phase, rel=1e-6, abs=1e-9)
