"""Shared test configuration: float64 JAX for validation against closed forms, a cheaper
XLA CPU compile, an opt-in persistent JAX compilation cache, the slow tests scheduled
first, compiled programs released before a worker runs out of memory mappings, and a test
whose xdist worker crashed run once more."""

import os
import pathlib


def _compilation_cache() -> None:
    """With ``MRITWIN_TEST_JAX_CACHE=1``: share compiled programs between tests and between
    the xdist workers.

    A rerun loads what the last run compiled (one timing each: test_gradients.py and
    test_nufft.py in 141 s instead of 286 s); a first run gains nothing, as few programs
    repeat within one run (a cold full run: 1359 s vs 1322 s without). Off by default:
    jaxlib 0.10.2 crashed (a segmentation fault inside `compilation_cache`, reading once
    and writing once, in two of about twenty full runs under pytest-xdist), and a fresh
    clone, CI included, would not gain from it. The cache lives in
    ``.pytest_cache/jax-compilation-cache`` (git-ignored, at most 2 GB, least recently
    used entries evicted under a file lock, so that two workers never read a half-written
    entry). Entries are keyed by the program, the JAX version and the devices, so a
    stale entry is never loaded. An existing ``JAX_COMPILATION_CACHE_DIR`` is left alone.
    """
    if os.environ.get("MRITWIN_TEST_JAX_CACHE", "0") != "1" or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    try:
        import filelock  # noqa: F401  (the cache's eviction lock; in the `test` extra)
    except ImportError:
        return
    root = pathlib.Path(__file__).resolve().parents[1]
    # set in the environment: the CLI's, the notebooks' and the sharding check's
    # subprocesses share the cache too
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(root / ".pytest_cache" / "jax-compilation-cache")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 << 30))


def _cheap_compile() -> None:
    """Compile without LLVM optimization: the suite is mostly XLA compile time.

    In one profiled run (cache off), 1322 s of the suite's ~2200 CPU-s were XLA backend
    compiles, 975 s of them the engine's 396 `_core` programs, which then run for
    milliseconds. XLA's CPU backend with its older loop emitters compiles the engine about
    2x faster (gre-64: 2.1 -> 1.2 s) and runs it about 1.3-1.5x slower; LLVM at ``-O0``
    instead of ``-O1`` compiles faster still. Measured (2-core VM, ``-n 2``): with ``-O1``
    test_gradients.py + test_window_table.py + two notebooks took 146 and 169 s against
    185 and 265 s with XLA's defaults, and the full suite 916 s against 1089 and 1422 s;
    on 2026-12-07 (a VM about twice as slow, the full suite at ``-O1`` in 1981 s)
    test_held_rf.py + test_rf_train.py took 74 s at ``-O0`` against 129 s at ``-O1``, and
    test_window_table.py + tests/physics + test_held_rf.py 161 s against 244 s. Neither
    flag enables fast-math, so results differ from the defaults' at most by rounding (a
    16 x 16 GRE of the brain twin: 1.4e-7 of the peak in float32, 9.5e-16 in float64; the
    tolerances the tests check are far above it); benchmarks, the CLI and users' programs
    keep XLA's defaults.
    ``MRITWIN_TEST_XLA_DEFAULTS=1`` runs the suite with the defaults; flags already in
    ``XLA_FLAGS`` are kept.
    """
    if os.environ.get("MRITWIN_TEST_XLA_DEFAULTS", "0") == "1":
        return
    flags = os.environ.get("XLA_FLAGS", "")
    extra = [f for f in ("--xla_cpu_use_fusion_emitters=false", "--xla_backend_optimization_level=0")
             if f.split("=")[0] not in flags]
    # (in the environment: the notebooks', the CLI's and the sharding check's subprocesses too)
    os.environ["XLA_FLAGS"] = " ".join([flags] + extra).strip()


_compilation_cache()
_cheap_compile()

import jax  # noqa: E402  (after the cache's and XLA's environment)
import matplotlib  # noqa: E402
import pytest  # noqa: E402

matplotlib.use("Agg")
jax.config.update("jax_enable_x64", True)
for _name, _env, _type in [("jax_compilation_cache_dir", "JAX_COMPILATION_CACHE_DIR", str),
                           ("jax_persistent_cache_min_compile_time_secs",
                            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", float),
                           ("jax_compilation_cache_max_size", "JAX_COMPILATION_CACHE_MAX_SIZE", int)]:
    if _env in os.environ:  # in case jax was imported before this file (by a plugin)
        jax.config.update(_name, _type(os.environ[_env]))

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
SEQ_DIR = SHARED / "data" / "seq"


@pytest.fixture
def seq_dir():
    """The Pulseq corpus beside the checkout (skips when absent, e.g. a user's fresh clone)."""
    if not SEQ_DIR.is_dir():
        pytest.skip(f"Pulseq corpus not found at {SEQ_DIR} (it lives in ../shared beside the checkout)")
    return SEQ_DIR


os.environ.setdefault("MRITWIN_TEST", "1")


def pytest_collection_modifyitems(config, items):
    """Run the tests marked ``slow`` first (stable order otherwise).

    With ``-n 2`` and ``--maxschedchunk=2`` (pyproject's addopts) the workers take tests
    one small chunk at a time, so the long ones start early and no worker is left with
    one at the end while the other idles.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


_CRASH_RERUNS: dict[str, int] = {}


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem, report, sched):
    """pytest-xdist: a worker process died (a signal, not a test failure) while running
    ``crashitem``: run that test once more on a fresh worker, and let that run decide.

    The crashes this was written for (about one full run in two: a segmentation fault or
    an abort inside XLA's `backend_compile_and_load`, each time in another test) were a
    worker reaching Linux's limit on memory mappings (``vm.max_map_count``, 65 530) with
    the programs XLA had compiled for it (a core dump held 65 370 mappings; XLA's JIT
    failed with "Failed to materialize symbols", or LLVM with "Unable to allocate section
    memory"). `_release_compiled_programs` now keeps the workers below it; this stays as
    the safety net for whatever else kills a worker. The crash is reported as a skip with
    its reason and printed; a test that crashes its worker twice fails."""
    if _CRASH_RERUNS.get(crashitem, 0) >= 1:
        return
    _CRASH_RERUNS[crashitem] = 1
    try:
        sched.mark_test_pending(crashitem)
    except NotImplementedError:  # (a scheduler that cannot: the crash stays a failure)
        return
    msg = f"{report.longrepr}: rerun once on a fresh worker (its result follows)"
    report.outcome = "skipped"
    report.longrepr = (crashitem.split("::")[0], 0, msg)
    reporter = sched.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\n{msg}", yellow=True)


@pytest.fixture(autouse=True)
def _release_compiled_programs():
    """After a test, clear JAX's caches when this worker holds more than 40 % of the memory
    mappings Linux allows a process.

    Every kernel of a compiled program takes three mappings (about 220 for one simulation
    core), and a worker compiles a few hundred programs in a run: near
    ``vm.max_map_count`` XLA crashes (see `pytest_handlecrashitem`). `mritwin.simulate`
    guards users' sessions at 80 % (`mritwin.simulate.memory_maps`); the suite clears
    earlier and silently, between tests, so that no test sees the library's warning or a
    recompile in the middle. Reading the count takes a few milliseconds per test."""
    yield
    from mritwin.simulate import memory_maps

    memory_maps.release_if_near_limit(0.4, warn=False)
