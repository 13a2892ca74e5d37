"""Run in a subprocess with 4 emulated CPU devices (see test_sharding.py)."""

import json
import pathlib
import sys

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mritwin as mt  # noqa: E402
from mritwin.benchmarking import cartesian_gre  # noqa: E402
from mritwin.simulate.engine import _plan, _shard_devices, last_devices  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # the checkout, for tests.seqkit
from tests.seqkit import random_twin  # noqa: E402

assert jax.device_count() == 4, jax.devices()
rng = np.random.default_rng(0)
twin = random_twin(1001, seed=0, n_coils=2)
seq = cartesian_gre(8, 0.2, tr=8e-3, te=3e-3)
# shard=True: every device, however small the twin (the default, "auto", keeps at least
# 8 192 spins on a CPU device: this twin would run on one)
SHARD = mt.Bloch(shard=True)
sharded = mt.simulate(twin, seq, dtype=jnp.float64, return_magnetization=True, method=SHARD)
# the run's arrays are put on the devices when it is planned: a second call moves nothing
with jax.transfer_guard("disallow"):
    again = mt.simulate(twin, seq, dtype=jnp.float64, method=SHARD)
single = mt.simulate(twin, seq, dtype=jnp.float64, return_magnetization=True, method=mt.Bloch(shard=False))
grad_sharded = jax.grad(lambda t2: jnp.sum(jnp.abs(mt.simulate(twin.replace(t2=t2), seq, dtype=jnp.float64,
                                                                method=SHARD).samples) ** 2))(twin.t2)
grad_single = jax.grad(lambda t2: jnp.sum(jnp.abs(mt.simulate(twin.replace(t2=t2), seq, dtype=jnp.float64,
                                                                method=mt.Bloch(shard=False)).samples) ** 2))(twin.t2)
nufft = mt.Bloch(readout=mt.NUFFTReadout(1e-8), shard=True)
nufft_sharded = mt.simulate(twin, seq, dtype=jnp.float64, method=nufft).samples
nufft_single = mt.simulate(twin, seq, dtype=jnp.float64, method=mt.Bloch(readout=mt.NUFFTReadout(1e-8), shard=False)).samples
# every ADC sample a step: free steps fused 16 at a time, against one device stepping each
stepped_sharded = mt.simulate(twin, seq, dtype=jnp.float64, method=mt.Bloch(windows=False, shard=True)).samples
stepped_single = mt.simulate(twin, seq, dtype=jnp.float64, method=mt.Bloch(windows=False, shard=False, fuse_rf=1)).samples
# a voxel grid: windows evaluated on groups of spins (Bloch.group_spins), sharded
grid = mt.Twin(position=np.c_[np.repeat(np.linspace(-0.1, 0.1, 32), 32), np.tile(np.linspace(-0.1, 0.1, 32), 32),
                              np.zeros(1024)], pd=rng.uniform(0.5, 1, 1024), t1=np.full(1024, 1.0),
               t2=np.where(rng.uniform(size=1024) < 0.5, 0.05, 0.1))
grouped_sharded = mt.simulate(grid, seq, dtype=jnp.float64, method=SHARD).samples
grouped_single = mt.simulate(grid, seq, dtype=jnp.float64, method=mt.Bloch(shard=False, group_spins=False)).samples
# the default, shard="auto": CPU devices of at least 8 192 spins each
auto_devices = [len(_shard_devices(mt.Bloch(), n)) for n in (1001, 16383, 16384, 40000, 10**6)]
big = random_twin(16384, seed=1)
auto_big = mt.simulate(big, seq, dtype=jnp.float64).samples  # on 2 of the 4 devices
auto_used = last_devices()
single_big = mt.simulate(big, seq, dtype=jnp.float64, method=mt.Bloch(shard=False)).samples
run = _plan(twin, seq, mt.Scanner(), None, SHARD, jnp.float64, True, None, ())
placed, steps_dt = run.call.args[0].x, run.call.args[1].dt  # (the spins as the engine placed them; a step array)
print(json.dumps({
    "max_abs_diff": float(np.max(np.abs(np.asarray(sharded.samples) - np.asarray(single.samples)))),
    "nufft_diff": float(np.max(np.abs(np.asarray(nufft_sharded) - np.asarray(nufft_single)))),
    "grouped_diff": float(np.max(np.abs(np.asarray(grouped_sharded) - np.asarray(grouped_single)))
                          / np.max(np.abs(np.asarray(grouped_single)))),
    "stepped_fused_diff": float(np.max(np.abs(np.asarray(stepped_sharded) - np.asarray(stepped_single)))),
    "nufft_vs_exact": float(np.max(np.abs(np.asarray(nufft_single) - np.asarray(single.samples)))),
    "coherent": float(np.max(np.abs(np.asarray(twin.coil_sensitivity)) @ np.asarray(twin.pd))),
    "scale": float(np.max(np.abs(np.asarray(single.samples)))),
    "mag_diff": float(np.max(np.abs(np.asarray(sharded.magnetization) - np.asarray(single.magnetization)))),
    "grad_rel_diff": float(np.max(np.abs(np.asarray(grad_sharded) - np.asarray(grad_single)))
                           / np.max(np.abs(np.asarray(grad_single)))),
    "shard_shapes": sorted({tuple(s.data.shape) for s in placed.addressable_shards}),
    "n_shards": len(placed.addressable_shards),
    "devices": sorted({str(s.device) for s in placed.addressable_shards}),
    "spins_shape": list(placed.shape),
    "steps_replicated": bool(steps_dt.sharding.is_fully_replicated and len(steps_dt.sharding.device_set) == 4),
    "repeat_diff": float(np.max(np.abs(np.asarray(again.samples) - np.asarray(sharded.samples)))),
    "auto_devices": auto_devices,
    "auto_used": auto_used,
    "auto_rel_diff": float(np.max(np.abs(np.asarray(auto_big) - np.asarray(single_big)))
                           / np.max(np.abs(np.asarray(single_big)))),
}))
sys.exit(0)
