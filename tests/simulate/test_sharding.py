"""Spins are sharded over devices: 4 emulated CPU devices give the single-device result."""

import json
import os
import pathlib
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_sharded_simulation_equals_single_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    script = pathlib.Path(__file__).with_name("_sharding_check.py")
    root = pathlib.Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                       cwd=root, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["max_abs_diff"] <= 1e-12 * out["scale"]
    assert out["mag_diff"] <= 1e-12
    # the NUFFT readout shards the same way
    assert out["nufft_diff"] <= 1e-12 * out["scale"]
    assert out["stepped_fused_diff"] <= 1e-12 * out["scale"]  # fused free steps, sharded
    assert out["grouped_diff"] <= 1e-12  # window groups, sharded, against per-spin windows on one device
    # NUFFTReadout's tolerance is relative to Σ_j |c_j m_j| <= Σ_j |c_j| pd_j
    assert out["nufft_vs_exact"] <= 1e-8 * out["coherent"]
    assert out["grad_rel_diff"] <= 1e-10
    # the spin axis is really split: 4 shards of 1/4 of the device axis, on 4 devices
    assert out["spins_shape"][0] == 4 and out["n_shards"] == 4 and len(out["devices"]) == 4
    assert out["shard_shapes"] == [[1] + out["spins_shape"][1:]]
