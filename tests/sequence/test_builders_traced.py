"""Builders under JAX transformations: flip angles may be traced, timing and geometry not.

A traced FOV, TE, TR, ... (`jax.grad` / `jax.jit` / `jax.vmap` with respect to it) would
need the sequence's block durations to be traced, which a Pulseq sequence cannot be: the
builder raises a ``TypeError`` naming the argument instead of JAX's concretization error
from deep inside it. A traced flip angle flows into the RF amplitudes (values checked
against concrete flips in tests/simulate/test_prepared_rf.py and the gradient tests).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _builder_cases import CASES, SC, build

from mritwin.sequence import builders as B


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_traced_fov_is_named_in_a_type_error(name):
    fov = jnp.asarray(CASES[name][1]["fov"])
    builder = CASES[name][0].__name__
    with pytest.raises(TypeError, match=rf"^{builder}: fov is traced .* must be concrete numbers; "):
        jax.jit(lambda f: build(name, fov=f).duration)(fov)
    with pytest.raises(TypeError, match=rf"^{builder}: fov is traced"):
        jax.grad(lambda f: build(name, fov=f).duration)(0.2)


@pytest.mark.parametrize("name", ["gre", "tse", "flair"])
def test_a_traced_timing_argument_is_named(name):
    arg = {"gre": "te", "tse": "etl", "flair": "tr"}[name]
    value = CASES[name][1].get(arg, 5e-3)
    allowed = {"gre": "only flip_angle, flip_angle_deg may be traced",
               "tse": "only flip_angle, flip_angle_deg, refocusing_angle, refocusing_angle_deg may be traced",
               "flair": "none of its arguments can be traced"}[name]
    with pytest.raises(TypeError, match=f"{arg} is traced.*; {allowed}"):
        jax.jit(lambda v: build(name, **{arg: v}).duration)(jnp.asarray(value))


@pytest.mark.parametrize("name", [n for n in sorted(CASES) if "flip_angle_deg" in CASES[n][1]]
                         + ["spin_echo-refocusing"])
def test_traced_flip_angles_build_the_same_sequence(name):
    case, arg = (name, "flip_angle") if not name.endswith("-refocusing") else ("spin_echo", "refocusing_angle")
    builder, kwargs = CASES[case]
    kwargs = {k: v for k, v in kwargs.items() if k != "flip_angle_deg"}
    concrete = builder(scanner=SC, **kwargs, **{arg: 0.3})

    def amplitudes(seq):
        return [b.rf.amplitude for b in seq.blocks if b.rf is not None]

    def traced(a):
        seq = builder(scanner=SC, **kwargs, **{arg: a})
        assert seq.duration == concrete.duration and len(seq.blocks) == len(concrete.blocks)
        return jnp.stack([jnp.asarray(x) for x in amplitudes(seq)])

    np.testing.assert_allclose(np.asarray(jax.jit(traced)(0.3)), np.asarray(amplitudes(concrete)), rtol=1e-12)


def test_every_public_builder_checks_its_arguments():
    builders = [getattr(B, n) for n in B.__all__ if n not in ("b_values", "stejskal_tanner_b", "spiral_waveform",
                                                              "minimum_timing", "flair_null_ti")]
    assert all(hasattr(b, "__wrapped__") for b in builders), [b.__name__ for b in builders
                                                              if not hasattr(b, "__wrapped__")]
