"""`simulate` keeps a process below Linux's limit on memory mappings (XLA crashes there)."""

import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mritwin as mt
from mritwin.benchmarking import cartesian_gre, grid_twin
from mritwin.simulate import memory_maps

pytestmark = pytest.mark.skipif(not pathlib.Path("/proc/self/maps").exists(),
                                reason="memory mappings are counted from Linux's /proc/self/maps")


def _maps_in_file() -> int:
    with open("/proc/self/maps") as f:
        return len(f.readlines())


def test_counts_this_process_mappings_and_reads_the_limit():
    before = _maps_in_file()
    n = memory_maps.map_count()
    assert abs(n - before) <= 2  # (the reads themselves may map a page or two)
    assert memory_maps.map_limit() == int(pathlib.Path("/proc/sys/vm/max_map_count").read_text())
    # each kernel of a compiled program is mapped on its own: a new program adds mappings
    f = jax.jit(lambda x: jnp.sin(x) * 2 + jnp.cos(x) ** 2 + jnp.exp(x))
    f(jnp.ones(7, jnp.float32)).block_until_ready()
    assert memory_maps.map_count() > n


def test_simulate_clears_jax_caches_near_the_limit(monkeypatch):
    twin = grid_twin(8, 0.2, t1=0.9, t2=0.07)
    seq = cartesian_gre(8, 0.2, tr=8e-3, te=3e-3)
    first = np.asarray(mt.simulate(twin, seq).samples)
    # the limit just above what this process holds now: the next compile crosses the guard
    limit = memory_maps.map_count() + 50
    real_limit = memory_maps.map_limit
    monkeypatch.setattr(memory_maps, "map_limit", lambda: limit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = np.asarray(mt.simulate(twin, seq).samples)  # compiled already: not checked
    np.testing.assert_array_equal(again, first)
    held = memory_maps.map_count()
    new_seq = cartesian_gre(6, 0.2, tr=8e-3, te=3e-3)  # another structure: a new core
    with pytest.warns(UserWarning, match=r"vm.max_map_count = \d+.*jax.clear_caches"):
        mt.simulate(twin, new_seq)
    # the compiled programs went, and with them their mappings (about 220 per core)
    assert memory_maps.map_count() < held - 100
    # programs compile again when used, and give the same signal
    monkeypatch.setattr(memory_maps, "map_limit", real_limit)
    np.testing.assert_array_equal(np.asarray(mt.simulate(twin, seq).samples), first)


def test_not_inside_a_trace_and_not_when_disabled(monkeypatch):
    twin = grid_twin(8, 0.2, t1=0.9, t2=0.07)
    monkeypatch.setattr(memory_maps, "map_limit", lambda: 1)  # every check would clear
    cleared = []
    monkeypatch.setattr(memory_maps.jax, "clear_caches", lambda: cleared.append(1))

    def loss(t2, n):
        return jnp.sum(jnp.abs(mt.simulate(twin.replace(t2=t2), cartesian_gre(n, 0.2, tr=8e-3, te=3e-3)).samples) ** 2)

    g = jax.grad(loss)(jnp.asarray(twin.t2, jnp.float32), 5)  # traced: never cleared inside a trace
    assert np.all(np.isfinite(np.asarray(g)))
    assert cleared == []
    monkeypatch.setattr(memory_maps, "GUARD_FRACTION", None)
    mt.simulate(twin, cartesian_gre(7, 0.2, tr=8e-3, te=3e-3))  # a new core, guard off
    assert cleared == []
    monkeypatch.setattr(memory_maps, "GUARD_FRACTION", 0.8)
    with pytest.warns(UserWarning, match="max_map_count"):
        mt.simulate(twin, cartesian_gre(9, 0.2, tr=8e-3, te=3e-3))
    assert cleared == [1]
    # (the test suite's quiet variant: clears without a warning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert memory_maps.release_if_near_limit(0.4, warn=False)
    assert cleared == [1, 1]
