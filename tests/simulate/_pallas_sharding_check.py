"""Run in a subprocess with 4 emulated CPU devices (see test_pallas.py): the fused
kernel sharded over the spin axis against one device."""

import pathlib
import sys

import jax
import numpy as np

import mritwin as mt
from mritwin.simulate.pallas_kernel import pallas_core

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # the checkout, for tests.seqkit
from tests.seqkit import random_twin  # noqa: E402

assert jax.device_count() == 4, jax.devices()
twin = random_twin(1001, seed=0, n_coils=2)
# a GRE with a shaped pulse at every TR: the kernel prepares it (its map in every program)
seq = mt.sequences.gre(scanner=mt.Scanner(), fov=0.2, matrix=8, flip_angle_deg=30, slice_thickness=5e-3)
sharded = mt.simulate(twin, seq, method=mt.Bloch(kernel="pallas", shard=True), return_magnetization=True)
single = mt.simulate(twin, seq, method=mt.Bloch(kernel="pallas", shard=False), return_magnetization=True)
rel = np.max(np.abs(np.asarray(sharded.samples) - np.asarray(single.samples))) / np.max(np.abs(single.samples))
mag = np.max(np.abs(np.asarray(sharded.magnetization) - np.asarray(single.magnetization)))

# the compiled program: spins split over the 4 devices, the signal all-reduced
seen = {}
orig = pallas_core


def spy(*a, **kw):
    seen["args"], seen["kw"] = a, kw
    return orig(*a, **kw)


pk_mod = sys.modules["mritwin.simulate.pallas_kernel"]
pk_mod.pallas_core = spy
mt.simulate(twin, seq, method=mt.Bloch(kernel="pallas", shard=True))
pk_mod.pallas_core = orig
hlo = orig.lower(*seen["args"], **seen["kw"]).compile().as_text()
assert seen["args"][4] is not None  # the prepared pulse
mesh = seen["kw"]["mesh"]
print(f"rel_diff={rel} mag_diff={mag} all_reduce={'all-reduce' in hlo} n_devices={mesh.size}")
