"""Simulating real Pulseq files end to end (GRE, SE, EPI, bSSFP, radial) on a tiny twin."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pulseq_corpus import corpus_path

import mritwin as mt


def _disk(n=24, fov=0.2, radius=0.07, t2=0.1):
    """A uniform disk of point spins on an n x n grid in the z = 0 plane."""
    x = (np.arange(n) - n / 2 + 0.5) * fov / n
    X, Y = np.meshgrid(x, x, indexing="ij")
    m = X**2 + Y**2 < radius**2
    k = int(m.sum())
    pos = np.stack([X[m], Y[m], np.zeros(k)], axis=1)
    return mt.Twin(position=pos, pd=np.ones(k), t1=np.full(k, 1.0), t2=np.full(k, t2))


@pytest.fixture(scope="module")
def twin():
    return _disk()


@pytest.mark.parametrize("name", ["pypulseq_gre.seq", "pypulseq_se.seq", "pypulseq_epi.seq",
                                  "pypulseq_bssfp.seq", "pypulseq_radial_gre.seq",
                                  "koma_epi_v131.seq"])
def test_simulate_corpus_file(twin, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = mt.read_seq(corpus_path(name))
    sig = mt.simulate(twin, seq)
    x = np.asarray(sig.samples)
    assert x.shape == (1, seq.n_adc_samples)
    assert np.all(np.isfinite(x))
    assert np.abs(x).max() > 0
    assert np.asarray(sig.kspace).shape == (seq.n_adc_samples, 3)


def test_cartesian_gre_image_shows_the_disk():
    """pypulseq's 2D GRE (32 x 32, FOV 256 mm): the FFT of the simulated data shows the
    disk (radius 70 mm) bright inside and dark outside.

    T2 = 4 ms: with one isochromat per voxel the spoiler gradients cannot dephase
    within a voxel, so a long T2 leaves coherent echoes from earlier TRs (TR = 15 ms)
    that garble the phase-encode direction; a short T2 removes them."""
    twin = _disk(t2=4e-3)
    seq = mt.read_seq(corpus_path("pypulseq_gre.seq"))
    x = np.asarray(mt.simulate(twin, seq).samples)[0].reshape(32, 32)
    img = np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(x))))
    fov = seq.definitions["FOV"][0]
    c = (np.arange(32) - 16) * fov / 32
    X, Y = np.meshgrid(c, c, indexing="ij")
    r = np.hypot(X, Y)
    inside, outside = img[r < 0.05].mean(), img[r > 0.09].mean()
    assert inside > 5 * outside
