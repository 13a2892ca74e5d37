"""Tiny three-tissue twins for the sequence-builder tests (not a test module).

Each tissue is a row of isochromats spread uniformly over one voxel along the readout
axis (so gradient spoilers dephase them), at the isocentre otherwise. The tissue of
each spin is encoded as its own receive "coil" (coil c sees only tissue c), so one
simulation returns the three tissues' signals separately.
"""

from __future__ import annotations

import numpy as np

import mritwin as mt

#: 3 T values: T1 [s], T2 [s], proton density [a.u.] (as in the issue's brief)
TISSUES = {"wm": (0.83, 0.08, 0.7), "gm": (1.33, 0.11, 0.8), "csf": (4.0, 2.0, 1.0)}


def three_tissue_twin(n_per_tissue: int = 8, voxel: float = 0.2 / 16, axis: int = 0, equal_pd=False):
    """(twin, coils): ``coils[c]`` selects tissue ``c`` (order: wm, gm, csf)."""
    pos, t1, t2, pd, lab = [], [], [], [], []
    for i, (a, b, p) in enumerate(TISSUES.values()):
        x = ((np.arange(n_per_tissue) + 0.5) / n_per_tissue - 0.5) * voxel
        r = np.zeros((n_per_tissue, 3))
        r[:, axis] = x
        pos.append(r)
        t1 += [a] * n_per_tissue
        t2 += [b] * n_per_tissue
        pd += [(1.0 if equal_pd else p) / n_per_tissue] * n_per_tissue
        lab += [i] * n_per_tissue
    lab = np.asarray(lab)
    coils = np.stack([(lab == i).astype(complex) for i in range(len(TISSUES))])
    twin = mt.Twin(position=np.concatenate(pos), pd=pd, t1=t1, t2=t2)
    return twin, coils


def centre_signal(seq, twin, coils, **kw):
    """|signal| of each tissue at the first ADC sample at the k-space centre."""
    sig = mt.simulate(twin, seq, coils=coils, method=mt.Bloch(rf_dt=kw.pop("rf_dt", 20e-6)), **kw)
    k = seq.kspace()
    i = int(np.argmin(np.linalg.norm(k, axis=1)))
    return np.abs(np.asarray(sig.samples[:, i]))
