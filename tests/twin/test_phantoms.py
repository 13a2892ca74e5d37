"""Built-in phantoms; spin-echo contrast of the 2D brain measured in tissue ROIs."""

import sys
from pathlib import Path

import numpy as np
import pytest

import mritwin as mt
from mritwin.twin import phantoms

sys.path.insert(0, str(Path(__file__).parent))
from _se import reconstruct, spin_echo_2d  # noqa: E402


def test_brain_has_the_required_tissues():
    for dims in (2, 3):
        twin = phantoms.brain(dims=dims, matrix=48 if dims == 2 else 24)
        for t in ("csf", "gray_matter", "white_matter", "fat", "skull", "skin", "ms_lesion"):
            assert t in twin.label_names
        pos = np.asarray(twin.position)
        if dims == 2:
            assert np.all(pos[:, 2] == 0)
        else:
            assert np.ptp(pos[:, 2]) > 0.1
    lab, aff = phantoms.brain_labels(2, matrix=64)
    assert lab.shape == (64, 64, 1) and lab.dtype == np.int32
    assert set(np.unique(lab)) <= set(phantoms.BRAIN_MAPPING)
    # the default 2D brain is small: ~10^4 spins
    assert phantoms.brain().n_spins < 20_000


def test_brain_partial_volume_and_fields():
    crisp = phantoms.brain(dims=2, matrix=32)
    pv = phantoms.brain(dims=2, matrix=32, supersample=4)
    assert pv.n_spins > crisp.n_spins  # edge voxels hold several compartments
    assert np.asarray(pv.pd).sum() == pytest.approx(np.asarray(crisp.pd).sum(), rel=0.05)
    t7 = phantoms.brain(dims=2, matrix=32, b0=7.0)
    wm = np.asarray(t7.label) == t7.label_names.index("white_matter")
    assert np.allclose(np.asarray(t7.t1)[wm], mt.tissue_parameters("white_matter", 7.0)["t1"])
    with pytest.raises(ValueError, match="b0 = 9.4 T"):
        phantoms.brain(b0=9.4)


def test_shepp_logan_and_system_phantom():
    sl = phantoms.shepp_logan(64)
    assert {"csf", "gray_matter", "white_matter"} <= set(sl.label_names)
    assert phantoms.shepp_logan(16, dims=3).n_spins > 0
    sp = phantoms.system_phantom(matrix=64)
    assert len(sp.label_names) == 14
    t1 = np.asarray(sp.t1)
    lab = np.asarray(sp.label)
    for k in range(14):
        np.testing.assert_allclose(t1[lab == k], phantoms.SYSTEM_T1[k], rtol=1e-6)
    sp3 = phantoms.system_phantom(dims=3, matrix=32, t1=[1.0, 0.5], t2=[0.1, 0.05])
    assert sp3.label_names == ("sphere_01", "sphere_02")


def _roi_masks(twin, n, fov):
    """Tissue masks on the image grid (pixel n//2 at 0), eroded by one pixel."""
    pos = np.asarray(twin.position)
    ij = np.round(pos[:, :2] / (fov / n)).astype(int) + n // 2
    order = np.argsort(np.asarray(twin.pd))  # dominant compartment last
    labimg = np.full((n, n), -1)
    labimg[ij[order, 0], ij[order, 1]] = np.asarray(twin.label)[order]
    out = {}
    for name in ("csf", "gray_matter", "white_matter"):
        m = labimg == twin.label_names.index(name)
        e = np.zeros_like(m)
        e[1:-1, 1:-1] = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        out[name] = e
    return out


def _se_signal(p, te, tr):
    # steady-state spin echo with spoiled transverse magnetization (PHYSICS.md item 3)
    return p["pd"] * np.exp(-te / p["t2"]) * (1 - 2 * np.exp(-(tr - te / 2) / p["t1"]) + np.exp(-tr / p["t1"]))


@pytest.mark.slow
def test_spin_echo_contrast_of_the_brain():
    n, fov = 40, 0.22
    twin = phantoms.brain(dims=2, matrix=n, fov=fov, t2_prime=False)  # one spin per pixel
    rois = _roi_masks(twin, n, fov)
    assert all(m.sum() >= 8 for m in rois.values())
    means = {}
    for weighting, (te, tr) in {"T2": (0.100, 4.0), "T1": (0.012, 0.5)}.items():
        sig = mt.simulate(twin, spin_echo_2d(n, fov, te, tr))
        img = reconstruct(np.asarray(sig.samples[0]), n)
        means[weighting] = {k: float(img[m].mean()) for k, m in rois.items()}
        for k in ("gray_matter", "white_matter"):  # large ROIs: close to the closed form
            expected = _se_signal(mt.tissue_parameters(k, 3.0), te, tr)
            assert means[weighting][k] == pytest.approx(expected, rel=0.1), (weighting, k)
    t2w, t1w = means["T2"], means["T1"]
    assert t2w["csf"] > t2w["gray_matter"] > t2w["white_matter"], t2w
    assert t1w["white_matter"] > t1w["gray_matter"] > t1w["csf"], t1w
