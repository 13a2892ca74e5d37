"""EPI: ramp-sampled, alternating readouts, navigator-based ghost correction."""

import jax.numpy as jnp
import numpy as np
import pytest
from recon_helpers import epi, nrmse, smooth_disk

import mritwin as mt
from mritwin.recon import reconstruct
from mritwin.sequence.labels import adc_labels, sample_adc_index


@pytest.fixture(scope="module")
def disk():
    # T1 = T2 = inf: one excitation, no decay along the echo train, so the image is ρ
    return smooth_disk(32, 0.2, t1=np.inf, t2=np.inf, centre=(0.01, -0.015))


@pytest.mark.parametrize("n_nav", [3, 0])
def test_ramp_sampled_epi_matches_pd_map(disk, n_nav):
    twin, rho = disk
    seq = epi(32, 0.2, n_nav=n_nav, labels=bool(n_nav))
    # readouts are sampled on the ramps too: k is not on the Δk grid
    k = seq.kspace()[:, 0] * 0.2
    assert np.abs(k - np.round(k - 0.5) - 0.5).max() > 0.1
    img = reconstruct(mt.simulate(twin, seq), seq)
    assert img.shape == (32, 32)
    err = nrmse(np.abs(np.asarray(img.data)), rho)
    print(f"EPI (navs={n_nav}) NRMSE vs PD map: {err:.2e}")
    assert err < 0.02


def test_ghost_correction_from_navigators(disk):
    twin, rho = disk
    nominal = epi(32, 0.2)
    # acquire with a 4 us ADC delay on reversed lines and a 0.4 rad phase error on them,
    # reconstruct with the nominal trajectory: N/2 ghosts
    actual = epi(32, 0.2, adc_shift=4e-6)
    sig = mt.simulate(twin, actual)
    rev = (adc_labels(nominal)["REV"] == 1)[sample_adc_index(nominal)]
    samples = jnp.asarray(sig.samples) * jnp.asarray(np.where(rev, np.exp(0.4j), 1.0))[None]
    bad = mt.Signal(samples=samples, kspace=jnp.asarray(nominal.kspace()), time=sig.time)
    off = nrmse(np.abs(np.asarray(reconstruct(bad, nominal, ghost_correction=False).data)), rho)
    on = nrmse(np.abs(np.asarray(reconstruct(bad, nominal).data)), rho)
    print(f"EPI ghost NRMSE: uncorrected {off:.3f}, corrected {on:.2e}")
    assert off > 0.1
    assert on < 0.01
