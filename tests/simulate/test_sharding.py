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
    # ... as planned by the engine, with the steps on every device: a repeated call ran
    # under jax.transfer_guard("disallow") (no copies per call) and gave the same samples
    assert out["steps_replicated"] and out["repeat_diff"] == 0.0
    # the default (shard="auto") gives a CPU device at least 8 192 spins, and equals one device
    assert out["auto_devices"] == [1, 1, 2, 4, 4]
    assert out["auto_used"] == 2  # (what simulate reports it used)
    assert out["auto_rel_diff"] <= 1e-12


def _python(code: str, **env_extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES",)}
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "xla_force_host_platform_device_count" not in f)
    env.update(JAX_PLATFORMS="cpu", **env_extra)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_use_cpu_devices_gives_jax_a_device_per_core():
    r = _python("import mritwin as mt, jax; n = mt.use_cpu_devices(3); print(n, jax.device_count())")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["3", "3"]
    r = _python("import mritwin as mt, jax\nfrom mritwin.simulate.devices import cpu_cores\n"
                "print(mt.use_cpu_devices(), cpu_cores(), jax.device_count())")
    assert r.returncode == 0, r.stderr[-2000:]
    n, cores, count = r.stdout.split()
    assert n == cores == count
    # too late: JAX has run something, its devices are fixed; a clear error says what to do
    r = _python("import mritwin as mt, jax.numpy as jnp\njnp.ones(2).block_until_ready()\n"
                "try:\n    mt.use_cpu_devices(2)\nexcept RuntimeError as e:\n    print('RuntimeError', e)")
    assert "RuntimeError" in r.stdout and "right after `import mritwin`" in r.stdout
    # the commands' default leaves a device count set in the environment alone
    r = _python("from mritwin.simulate.devices import use_cpu_devices_by_default\nimport jax\n"
                "use_cpu_devices_by_default(); print(jax.device_count())", JAX_NUM_CPU_DEVICES="1")
    assert r.returncode == 0 and r.stdout.split() == ["1"], r.stderr[-2000:]


def test_bad_device_options_are_refused():
    import mritwin as mt

    with pytest.raises(ValueError, match="positive integer"):
        mt.use_cpu_devices(0)
    with pytest.raises(ValueError, match="shard must be True, False or 'auto'"):
        mt.Bloch(shard="all")


def test_auto_shard_rule_on_cpu_devices(monkeypatch):
    """``Bloch(shard="auto")`` on CPU devices: at least 8 192 spins per device, or 128 when
    the sequence's loop has at least 1 000 steps with each RF pulse counted once (a shaped
    pulse's raster steps do not make a sequence long)."""
    import types

    import jax
    import numpy as np

    import mritwin as mt
    from mritwin.simulate import engine

    ideal = mt.Scanner(rf_dead_time=0.0, rf_ringdown_time=0.0, adc_dead_time=0.0)

    def train(n_tr, shaped):
        rf = (mt.make_sinc_pulse(np.radians(30), 1e-3, delay=0.0, scanner=ideal) if shaped
              else mt.make_block_pulse(np.radians(30), 20e-6, delay=0.0, scanner=ideal))
        blocks = [b for _ in range(n_tr) for b in (mt.Block(rf=rf), mt.Block(duration=1e-3),
                                                    mt.Block(adc=mt.ADC(8, 10e-6)), mt.Block(duration=1e-3))]
        return mt.discretize(mt.Sequence(blocks), ideal)

    long, shaped, short = train(300, False), train(30, True), train(30, False)
    n_rf = int(np.count_nonzero(np.asarray(shaped.kind)[: shaped.n_real_steps] == 0))
    assert n_rf >= 30 * 100  # the sinc is stepped on its raster: many steps per play
    # each TR: the pulse once, then free, window, free steps (no step is split here)
    assert engine._loop_steps(long) == 300 * 4 and engine._loop_steps(shaped) == 30 * 4
    assert shaped.n_real_steps == n_rf + 30 * 3 > engine.CPU_SHARD_LONG_STEPS

    fake = [types.SimpleNamespace(platform="cpu", id=i) for i in range(4)]
    monkeypatch.setattr(jax, "local_devices", lambda: fake)
    auto = mt.Bloch()

    def counts(dseq):
        return [len(engine._shard_devices(auto, n, dseq)) for n in (200, 300, 1001, 16384, 40000)]

    assert counts(None) == counts(short) == counts(shaped) == [1, 1, 1, 2, 4]
    assert counts(long) == [1, 2, 4, 4, 4]
    assert len(engine._shard_devices(mt.Bloch(shard=False), 10**6, long)) == 1
    assert len(engine._shard_devices(mt.Bloch(shard=True), 200, short)) == 4
