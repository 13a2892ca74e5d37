"""Diffusion by Brownian random walks of the isochromats (mritwin.twin.dynamics.RandomWalk;
PHYSICS.md 10, Stejskal–Tanner)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.twin import dynamics as dyn
from tests.seqkit import IDEAL, hard

RF = 10e-6  # hard pulse duration [s]: centres at block start + 5 us


def pgse_on_raster(g, delta, big_delta, ramp, te, t_lobe=2e-3):
    """90x - lobe - 180y - lobe - one ADC sample at the echo, on the Pulseq rasters
    (gradient/block 10 us). Lobes: trapezoids of ramp ``ramp`` and flat ``delta - ramp``,
    starting ``big_delta`` apart. Pulse centres at 5 us and 5 us + TE/2, echo at 5 us + TE."""
    lobe = mt.TrapGrad("x", g, ramp, delta - ramp, ramp)
    b90 = mt.Block(rf=hard(np.pi / 2, RF))
    b180 = mt.Block(rf=hard(np.pi, RF, phase=np.pi / 2, use="refocusing"))
    items = [(0.0, b90), (t_lobe, mt.Block(gx=lobe)), (te / 2, b180), (t_lobe + big_delta, mt.Block(gx=lobe)),
             (te, mt.Block(adc=mt.ADC(1, RF)))]  # the ADC sample at te + 5 us
    blocks, t = [], 0.0
    for start, blk in items:
        if start - t > 1e-12:
            blocks.append(mt.Block(duration=round(start - t, 9)))
        blocks.append(blk)
        t = start + blk.duration
    return mt.Sequence(blocks)


def test_random_walk_pgse_from_pulseq_file_is_exp_minus_bD(tmp_path):
    # Brownian walkers (white matter and CSF, ADC from the tissue library) through a PGSE
    # written as a Pulseq file and read back: the mean echo of each tissue equals exp(-b D),
    # b = (2 pi gamma_bar G)^2 [delta^2 (Delta - delta/3) + eps^3/30 - delta eps^2/6]
    g, delta, big_delta, ramp, te = 30e-3, 15e-3, 25e-3, 0.5e-3, 44e-3
    path = tmp_path / "pgse.seq"
    mt.write_seq(pgse_on_raster(g, delta, big_delta, ramp, te), path)
    seq = mt.read_seq(path)
    b = (2 * np.pi * mt.GAMMA_BAR * g) ** 2 * (delta ** 2 * (big_delta - delta / 3) + ramp ** 3 / 30
                                               - delta * ramp ** 2 / 6)
    # walkers per tissue: the Monte Carlo standard error of the mean is about
    # 0.24 / 0.82 / sqrt(16384) = 0.23 % (WM) and 0.58 / 0.42 / sqrt(49152) = 0.62 % (CSF)
    counts = {"white_matter": 16384, "csf": 49152}
    d = np.concatenate([np.full(n, mt.tissue_parameters(name, b0=3.0)["adc"]) for name, n in counts.items()])
    n = d.size
    twin = mt.Twin(position=np.zeros((n, 3)), pd=np.ones(n), t1=np.full(n, np.inf), t2=np.full(n, np.inf),
                   diffusion=d)
    walk = dyn.RandomWalk(jax.random.key(7), max_step=200e-6)  # b of the stepped walk: 7e-7 rel. error
    sig = mt.simulate(twin, seq, scanner=IDEAL, dynamics=walk, return_magnetization=True,
                      method=mt.Bloch(checkpoint=False))
    m = np.asarray(sig.magnetization, np.float64)
    mxy = m[:, 0] + 1j * m[:, 1]
    start = 0
    for name, count in counts.items():
        dd = mt.tissue_parameters(name, b0=3.0)["adc"]
        att = abs(mxy[start:start + count].mean())
        start += count
        assert 0.3 < np.exp(-b * dd) < 0.9  # a meaningful attenuation (b = 290 s/mm^2)
        assert att == pytest.approx(np.exp(-b * dd), rel=0.02), name
    # the echo sample itself is the sum over all walkers
    np.testing.assert_allclose(abs(complex(sig.samples[0, 0])), abs(mxy.sum()), rtol=1e-3)


def test_random_walk_statistics_and_reproducibility():
    # free walkers (no gradients): after time t the displacement along each axis has
    # variance 2 D t; the same key gives the same walk, another key a different one
    n, d, dur = 4096, 2e-9, 10e-3
    twin = mt.Twin(position=np.zeros((n, 3)), pd=np.ones(n), t1=np.ones(n), t2=np.full(n, 0.1), diffusion=np.full(n, d))
    # the walk as the engine steps it (per-step effect, 10 steps of 1 ms)
    walk = dyn.RandomWalk(jax.random.key(3), max_step=1e-3)
    spin = walk.spin_arrays(twin)
    state = walk.init_state(spin, jnp.float64)
    t, dt = 0.0, 1e-3
    for i in range(int(round(dur / dt))):
        eff, state = walk.kernel().effect(spin, state, jnp.asarray(t + dt / 2), jnp.asarray(dt), i, 0)
        t += dt
    x = np.asarray(eff.displacement)
    # the last midpoint is at dur - dt/2
    np.testing.assert_allclose(x.var(axis=0), 2 * d * (dur - dt / 2), rtol=0.08)  # 3.5 sigma for n = 4096
    # through the engine (a gradient lobe makes the walk visible in the phase): the same key
    # reproduces the signal exactly, another key changes it
    lobe = mt.TrapGrad("y", 20e-3, 1e-4, 4e-3, 1e-4)
    seq = mt.Sequence([mt.Block(rf=hard(np.pi / 2, RF)), mt.Block(gy=lobe), mt.Block(gy=mt.TrapGrad("y", -20e-3, 1e-4, 4e-3, 1e-4)),
                       mt.Block(adc=mt.ADC(1, RF))])
    small = twin[:256]

    def echo(key):
        return complex(mt.simulate(small, seq, scanner=IDEAL, dynamics=dyn.RandomWalk(key, max_step=1e-3),
                                   method=mt.Bloch(checkpoint=False)).samples[0, 0])

    first = echo(jax.random.key(3))
    assert echo(jax.random.key(3)) == first
    assert abs(echo(jax.random.key(4)) - first) > 1e-6 * abs(first)


def test_random_walk_errors():
    twin = mt.Twin(position=np.zeros((2, 3)), pd=[1.0, 1.0], t1=[1.0, 1.0], t2=[0.1, 0.1])
    seq = mt.Sequence([mt.Block(rf=hard(np.pi / 2, RF)), mt.Block(adc=mt.ADC(1, RF))])
    with pytest.raises(ValueError, match="RandomWalk needs diffusion coefficients: set twin.diffusion"):
        mt.simulate(twin, seq, scanner=IDEAL, dynamics=dyn.RandomWalk(jax.random.key(0)))
    with pytest.raises(ValueError, match="RandomWalk.diffusion must be >= 0"):
        dyn.RandomWalk(jax.random.key(0), diffusion=[-1e-9, 1e-9])
    with pytest.raises(ValueError, match="RandomWalk.diffusion contains NaN"):
        dyn.RandomWalk(jax.random.key(0), diffusion=[np.nan, 1e-9])
    with pytest.raises(ValueError, match=r"RandomWalk.diffusion must have shape \(n_spins,\) = \(2,\), got \(3,\)"):
        mt.simulate(twin, seq, scanner=IDEAL, dynamics=dyn.RandomWalk(jax.random.key(0), diffusion=np.ones(3) * 1e-9))
    with pytest.raises(ValueError, match="RandomWalk.key must be a jax.random key"):
        dyn.RandomWalk(0)
    with pytest.raises(ValueError, match="max_step must be > 0"):
        dyn.RandomWalk(jax.random.key(0), max_step=0.0)
