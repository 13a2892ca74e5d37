"""Cartesian reconstruction: geometry, accuracy, slices, 3D, labels, partial Fourier, coils."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from recon_helpers import gre, nrmse, smooth_disk

import mritwin as mt
from mritwin.recon import Image, reconstruct


def _point_twin(positions, pd=None):
    positions = np.atleast_2d(positions)
    n = len(positions)
    pd = np.ones(n) if pd is None else np.asarray(pd, float)
    return mt.Twin(position=positions, pd=pd, t1=np.full(n, 0.5), t2=np.full(n, 0.5))


def _peak_world(img, data=None):
    a = np.abs(np.asarray(img.data if data is None else data))
    i = np.unravel_index(np.argmax(a), a.shape)
    return img.world(i[: img.n_spatial]), a[i]


def test_point_off_centre_appears_at_its_scanner_position():
    r = np.array([0.0375, -0.05, 0.0])  # [m], on a voxel centre (FOV 200 mm, 16 voxels)
    seq = gre(16, 0.2)
    img = reconstruct(mt.simulate(_point_twin(r), seq), seq)
    assert isinstance(img, Image) and img.dims == ("x", "y") and img.shape == (16, 16)
    world, peak = _peak_world(img)
    np.testing.assert_allclose(world[:2], r[:2] * 1e3, atol=1e-6)
    # voxel value = the spin's magnetization, decayed by T2 at TE
    assert img.te == pytest.approx(seq.kspace().shape[0] and img.te)
    assert peak == pytest.approx(np.exp(-img.te / 0.5), rel=2e-3)
    # a point on a voxel centre is a discrete delta: everything else ~0
    a = np.abs(np.asarray(img.data))
    assert np.sort(a.ravel())[-2] < 1e-3
    np.testing.assert_allclose(np.diag(img.affine)[:2], [12.5, 12.5])
    assert img.tr == pytest.approx(seq.duration / 16, rel=1e-3)
    assert img.flip_angle == pytest.approx(np.pi / 2, rel=1e-6)


def test_point_between_voxels_is_interpolated_at_the_right_place():
    r = np.array([0.03125 + 0.00625, 0.0, 0.0])  # half a voxel right of a voxel centre (12.5 mm voxels)
    seq = gre(16, 0.2)
    img = reconstruct(mt.simulate(_point_twin(r), seq), seq)
    a = np.abs(np.asarray(img.data))
    x = img.world(np.stack(np.meshgrid(np.arange(16), np.arange(16), indexing="ij"), -1))[..., 0]
    centroid = np.sum(a**4 * x) / np.sum(a**4)
    assert centroid == pytest.approx(r[0] * 1e3, abs=0.05)


@pytest.fixture(scope="module")
def disk():
    twin, rho = smooth_disk(32, 0.2, centre=(0.01, -0.015))
    seq = gre(32, 0.2)
    return twin, rho, seq, mt.simulate(twin, seq)


def test_uniform_disk_matches_its_pd_map(disk):
    twin, rho, seq, sig = disk
    img = reconstruct(sig, seq)
    expected = rho * np.exp(-img.te / 0.5)  # T2 decay at TE; T1 fully recovered (TR = 12 s)
    err = nrmse(np.abs(np.asarray(img.data)), expected)
    print(f"disk NRMSE vs PD map: {err:.2e}")
    assert err < 0.02
    # the complex image has one phase (the excitation's): real and positive after rotation
    d = np.asarray(img.data)
    inside = rho > 0.5
    ph = np.angle(d[inside])
    assert np.ptp(ph) < 1e-2


def test_reconstruct_is_differentiable_in_the_samples():
    seq = gre(16, 0.2)
    sig = mt.simulate(_point_twin([0.0375, -0.05, 0.0]), seq)

    def energy(scale):
        s = mt.Signal(samples=sig.samples * scale, kspace=sig.kspace, time=sig.time)
        return jnp.sum(jnp.abs(reconstruct(s, seq).data) ** 2)

    g = jax.grad(energy)(1.0)
    assert float(g) == pytest.approx(2 * float(energy(1.0)), rel=1e-4)


@pytest.mark.parametrize("labels", [True, False])
def test_multislice_positions_from_rf_offsets(labels):
    pos = np.array([[0.025, 0.05, -0.01], [-0.05, 0.0, 0.01]])
    seq = gre(16, 0.2, slices=[0.01, -0.01], labels=labels)  # acquisition order: +10 mm first
    img = reconstruct(mt.simulate(_point_twin(pos, [1.0, 0.5]), seq), seq)
    assert img.dims == ("x", "y", "z") and img.shape == (16, 16, 2)
    a = np.abs(np.asarray(img.data))
    for z, (p, pd) in enumerate(zip(pos, [1.0, 0.5], strict=True)):  # slices sorted by position
        i = np.unravel_index(np.argmax(a[:, :, z]), (16, 16))
        np.testing.assert_allclose(img.world((*i, z)), p * 1e3, atol=1e-6)
        assert a[i + (z,)] == pytest.approx(pd, rel=0.02)
    assert img.slice_thickness == pytest.approx(5e-3, rel=0.05)  # from the sinc's bandwidth
    assert img.affine[2, 2] == pytest.approx(20.0)  # slice spacing [mm]


def test_3d_point_position():
    r = np.array([0.025, -0.0375, 0.025])
    seq = gre(16, 0.2, n_z=8, fov_z=0.1)
    img = reconstruct(mt.simulate(_point_twin(r), seq), seq)
    assert img.shape == (16, 16, 8)
    world, peak = _peak_world(img)
    np.testing.assert_allclose(world, r * 1e3, atol=1e-6)
    np.testing.assert_allclose(img.voxel_size, [0.0125, 0.0125, 0.0125])


def _two_echo_two_rep_seq(n=16, fov=0.2, order=None):
    """Lines in a shuffled order, two echoes per TR (the 2nd reversed), two repetitions."""
    g = mt.constants.GAMMA_BAR
    dk = 1 / fov
    gx = mt.make_trapezoid("x", flat_area=n * dk, flat_time=n * 20e-6)
    gx2 = mt.make_trapezoid("x", amplitude=-gx.amplitude, flat_time=gx.flat_time, rise_time=gx.rise_time)
    adc = mt.make_adc(n, dwell=20e-6, delay=gx.rise_time)
    pre = mt.make_trapezoid("x", area=-(n * dk) / 2 - 0.5 * gx.amplitude * gx.rise_time * g, duration=1e-3)
    order = list(range(n)) if order is None else order
    blocks = []
    for rep in range(2):
        for iy in order:
            gy = mt.make_trapezoid("y", area=(iy - n // 2) * dk, duration=1e-3)
            blocks += [
                mt.Block(mt.make_block_pulse(np.pi / 2, 0.2e-3, use="excitation")),
                mt.Block(gx=pre, gy=gy),
                mt.Block(gx=gx, adc=adc, labels=[mt.make_label("LIN", iy), mt.make_label("ECO", 0),
                                                 mt.make_label("REP", rep)]),
                mt.Block(gx=gx2, adc=adc, labels=[mt.make_label("ECO", 1)]),
                mt.Block(duration=12.0),
            ]
    return mt.Sequence(blocks, {"FOV": [fov, fov, 5e-3]})


def test_labels_give_echo_and_repetition_axes_and_any_line_order():
    r = np.array([-0.025, 0.0375, 0.0])
    tw = _point_twin(r)
    rng = np.random.default_rng(1)
    seq = _two_echo_two_rep_seq(order=list(rng.permutation(16)))
    img = reconstruct(mt.simulate(tw, seq), seq)
    assert img.dims == ("x", "y", "echo", "rep") and img.shape == (16, 16, 2, 2)
    a = np.abs(np.asarray(img.data))
    for e in range(2):
        for rep in range(2):
            i = np.unravel_index(np.argmax(a[..., e, rep]), (16, 16))
            np.testing.assert_allclose(img.world(i)[:2], r[:2] * 1e3, atol=1e-6)
    # the reversed second echo reconstructs like the first (T2 = 0.5 s: <1 % apart)
    assert nrmse(a[..., 1, 0], a[..., 0, 0]) < 0.01
    np.testing.assert_allclose(a[..., 0], a[..., 1], atol=1e-4)


@pytest.fixture(scope="module")
def sharp_disk():
    twin, rho = smooth_disk(32, 0.2, sigma_px=0.6, centre=(0.01, -0.015))
    full = gre(32, 0.2)
    ref = reconstruct(mt.simulate(twin, full), full)
    return twin, np.asarray(ref.data)


@pytest.mark.parametrize("lines", [range(10, 32), range(0, 22)], ids=["high-half", "low-half"])
def test_partial_fourier(sharp_disk, lines):
    twin, ref = sharp_disk
    seq = gre(32, 0.2, ky_lines=list(lines))
    sig = mt.simulate(twin, seq)
    errs = {}
    for m in ("zero", "homodyne", "pocs"):
        img = reconstruct(sig, seq, partial_fourier=m)
        assert img.shape == (32, 32)  # full matrix from the asymmetric extent
        errs[m] = nrmse(np.abs(np.asarray(img.data)), np.abs(ref))
    print("partial Fourier NRMSE", errs)
    assert errs["homodyne"] < 0.01 and errs["pocs"] < 0.01
    assert errs["pocs"] < errs["zero"] / 3 and errs["homodyne"] < errs["zero"] / 2


def test_uniform_coils_equal_single_coil_up_to_scale():
    twin, _ = smooth_disk(16, 0.2, sub=2, centre=(0.02, 0.0))
    seq = gre(16, 0.2)
    c = np.array([1.0, 0.5j, -0.8 + 0.3j])
    sens = np.repeat(c[:, None], twin.n_spins, axis=1)
    sig = mt.simulate(twin, seq, coils=sens)
    one = np.asarray(reconstruct(mt.simulate(twin, seq), seq).data)
    tol = 1e-4 * np.abs(one).max()
    rss = np.asarray(reconstruct(sig, seq).data)  # default for several coils: RSS
    assert np.abs(rss - np.sqrt(np.sum(np.abs(c) ** 2)) * np.abs(one)).max() < tol
    maps = np.broadcast_to(c[:, None, None], (3, 16, 16))
    sw = np.asarray(reconstruct(sig, seq, coil_combine="sensitivity", sensitivities=maps).data)
    assert np.abs(sw - one).max() < tol
    coils = reconstruct(sig, seq, coil_combine=None)
    assert coils.dims == ("x", "y", "coil")
    for i in range(3):
        assert np.abs(np.asarray(coils.data)[..., i] - c[i] * one).max() < tol
    # maps estimated from the data: the magnitude is the single-coil image up to scale
    est = np.asarray(reconstruct(sig, seq, coil_combine="sensitivity").data)
    scale = np.linalg.norm(est) / np.linalg.norm(one)
    assert nrmse(np.abs(est) / scale, np.abs(one)) < 0.02


def test_sequence_fov_and_matrix_override():
    r = np.array([0.0375, -0.05, 0.0])
    seq = gre(16, 0.2)
    sig = mt.simulate(_point_twin(r), seq)
    img = reconstruct(sig, seq, matrix=(8, 8))  # crop the readout, keep the central 8 lines
    assert img.shape == (8, 8)
    np.testing.assert_allclose(img.voxel_size[:2], [0.025, 0.025])
    # without the sequence: Δk from the trajectory
    img2 = reconstruct(sig)
    np.testing.assert_allclose(np.abs(np.asarray(img2.data)), np.abs(np.asarray(reconstruct(sig, seq).data)),
                               atol=1e-5)


def test_trajectory_alone_with_residual_kz_and_odd_even_readout_shifts():
    """A file without FOV definition (a Pulseq 1.2 TSE written by another tool) whose
    readouts of odd and even echoes sit a fraction of a sample apart and whose slice
    refocusing leaves kz of 0.1-0.2 1/m: still a 16 x 16 2D image with Δk = 1/FOV
    (before: Δk from the 0.1-sample shift, a 7464-sample readout, and kz taken for a
    third encoded axis). Signal: the closed form exp(-i2π k·r) of a point."""
    n, fov = 16, 0.2
    dk = 1.0 / fov
    r = np.array([0.0375, -0.05, 0.0])
    iy, ix = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    shift = np.where(iy % 2 == 0, 0.05, -0.05) * dk  # odd/even echoes
    k = np.stack([(ix - n // 2) * dk + shift, (iy - n // 2) * dk, np.where(iy % 2 == 0, 0.103, 0.217)], -1)
    k = k.reshape(-1, 3)
    t = (np.arange(n * n) * 1e-5 + np.repeat(np.arange(n), n) * 0.01)
    sig = mt.Signal(samples=jnp.asarray(np.exp(-2j * np.pi * k @ r))[None], kspace=jnp.asarray(k),
                    time=jnp.asarray(t))
    img = reconstruct(sig)
    assert img.dims == ("x", "y") and img.shape == (n, n)
    np.testing.assert_allclose(img.voxel_size[:2], [fov / n, fov / n], rtol=1e-9)
    world, peak = _peak_world(img)
    np.testing.assert_allclose(world[:2], r[:2] * 1e3, atol=1e-6)
    # the point lies on a voxel centre; the shifted lines are regridded line by line, whose
    # Voronoi cells are clipped to the grid's k range: the outermost sample of each line
    # keeps 0.55 of its cell instead of 1.05 (15.5/16 of the weight)
    assert peak == pytest.approx(15.5 / 16, abs=2e-3)
    a = np.sort(np.abs(np.asarray(img.data)).ravel())
    assert a[-2] < 0.05


def test_pre15_file_whose_90_degree_pulses_exceed_the_toolbox_threshold(tmp_path):
    """A Pulseq 1.4 file stores no RF use; its excitations of 90.09 deg (a 90 deg pulse
    played on a raster 0.1 % longer than it was designed on) count as refocusing under the
    toolboxes' 90.01 deg rule, so k-space is never reset: reconstruct says why, and
    ``read_seq(..., refocusing_threshold_deg=135)`` reads them as excitations (k-space
    and image as with the uses stated)."""
    r = np.array([0.0375, -0.05, 0.0])
    base = gre(16, 0.2)
    rf = mt.make_block_pulse(np.radians(90.09), 0.2e-3, use="excitation")
    seq = mt.Sequence([b.replace(rf=rf) if b.rf is not None else b for b in base.blocks], base.definitions)
    path = tmp_path / "v141.seq"
    mt.write_seq(seq, path, version="1.4.1")

    default = mt.read_seq(path)
    assert {b.rf.use for b in default.blocks if b.rf is not None} == {"undefined"}
    sig = mt.simulate(_point_twin(r), default)
    with pytest.warns(UserWarning, match=r"no RF pulse counts as an excitation.*smallest here is 90\.090 deg"):
        reconstruct(sig, default)

    fixed = mt.read_seq(path, refocusing_threshold_deg=135)
    assert {b.rf.use for b in fixed.blocks if b.rf is not None} == {"excitation"}
    np.testing.assert_allclose(np.asarray(fixed.kspace()), np.asarray(seq.kspace()), atol=1e-6)
    img = reconstruct(mt.simulate(_point_twin(r), fixed), fixed)
    world, _ = _peak_world(img)
    np.testing.assert_allclose(world[:2], r[:2] * 1e3, atol=1e-6)
    # a refocusing pulse stays refocusing; the value is checked
    assert mt.read_seq(path, refocusing_threshold_deg=90.0).blocks[0].rf.use == "refocusing"
    with pytest.raises(ValueError, match="refocusing_threshold_deg must be"):
        mt.read_seq(path, refocusing_threshold_deg=-1)


def test_bad_input_errors():
    seq = gre(16, 0.2)
    sig = mt.simulate(_point_twin([0.0, 0.0, 0.0]), seq)
    with pytest.raises(TypeError, match="mritwin.Signal"):
        reconstruct(np.zeros((1, 10)))
    with pytest.raises(ValueError, match="partial_fourier must be"):
        reconstruct(sig, seq, partial_fourier="magic")
    with pytest.raises(ValueError, match="coil_combine must be"):
        reconstruct(sig, seq, coil_combine="sum")
    with pytest.raises(ValueError, match="trajectory must be"):
        reconstruct(sig, seq, trajectory="rosette")
    with pytest.raises(ValueError, match="has 256 ADC samples but the signal has 128"):
        reconstruct(mt.Signal(samples=sig.samples[:, :128], kspace=sig.kspace[:128], time=sig.time[:128]), seq)
    nan = mt.Signal(samples=sig.samples, kspace=jnp.full_like(sig.kspace, jnp.nan), time=sig.time)
    with pytest.raises(ValueError, match="pass the sequence"):
        reconstruct(nan)
    flat = mt.Signal(samples=sig.samples, kspace=jnp.zeros_like(sig.kspace), time=sig.time)
    with pytest.raises(ValueError, match="k-space varies along 0 axis"):
        reconstruct(flat)
    with pytest.raises(ValueError, match="fov must be > 0"):
        reconstruct(sig, seq, fov=-1.0)
    with pytest.raises(ValueError, match="sensitivities must have shape"):
        reconstruct(sig, seq, coil_combine="sensitivity", sensitivities=np.ones((1, 8, 8)))
