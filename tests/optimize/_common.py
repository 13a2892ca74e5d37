"""Tiny twins and sequences shared by the optimize tests (SI units)."""

import jax.numpy as jnp
import numpy as np

import mritwin as mt
import mritwin.optimize as mo
from tests.seqkit import IDEAL

# WM/GM-like tissue at 3 T (T1, T2 [s], PD)
WM = dict(t1=0.83, t2=0.080, pd=0.69)
GM = dict(t1=1.33, t2=0.110, pd=0.80)
METHOD = mt.Bloch(ideal_spoiling=True)


def two_tissue_twin(n_each=2):
    """n_each spins of WM (label 1) and GM (label 2) at the origin."""
    n = 2 * n_each
    t = [WM] * n_each + [GM] * n_each
    return mt.Twin(
        position=np.zeros((n, 3)),
        pd=[x["pd"] for x in t],
        t1=[x["t1"] for x in t],
        t2=[x["t2"] for x in t],
        label=[1] * n_each + [2] * n_each,
        label_names=("background", "white_matter", "gray_matter"),
    )


def flash_train(flips, *, tr=20e-3, te=2e-3, rf_duration=200e-6, n_adc=2):
    """One hard pulse per TR (flip ``flips[i]`` [rad], may be traced), ADC of n_adc samples at TE."""
    blocks = []
    dwell = 20e-6
    for i in range(flips.shape[0]):
        rf = mt.make_block_pulse(flips[i], rf_duration, delay=0.0, scanner=IDEAL)
        blocks.append(mt.Block(rf=rf))
        pre = te - rf_duration / 2 - n_adc * dwell / 2
        blocks.append(mt.Block(adc=mt.ADC(n_adc, dwell, delay=pre), duration=tr - rf_duration))
    return mt.Sequence(blocks)


def flip_contrast(flips, twin, **kw):
    seq = flash_train(flips)
    return mo.contrast(
        twin, seq, "gray_matter", "white_matter", method=METHOD, scanner=IDEAL, dtype=jnp.float64, **kw
    )
