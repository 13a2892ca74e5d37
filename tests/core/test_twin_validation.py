"""`Twin` validates its fields at construction and names the bad one."""

import numpy as np
import pytest

import mritwin as mt


def ok(**kw):
    d = dict(position=np.zeros((3, 3)), pd=np.ones(3), t1=np.ones(3), t2=np.full(3, 0.1))
    d.update(kw)
    return d


def test_valid_twin_and_inf_relaxation():
    t = mt.Twin(**ok(t1=[1.0, np.inf, 2.0], t2=[np.inf, 0.1, 0.2]))
    assert t.n_spins == 3 and t.n_coils == 1
    assert np.isinf(np.asarray(t.t1)[1])


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(position=np.zeros((3, 2))), r"position must have shape \(n_spins, 3\)"),
        (dict(pd=np.ones(4)), r"pd must have shape \(n_spins,\) = \(3,\)"),
        (dict(t1=np.ones((3, 1))), r"t1 must have shape"),
        (dict(t1=[1.0, -1.0, 1.0]), r"t1 must be > 0"),
        (dict(t2=[0.1, 0.0, 0.1]), r"t2 must be > 0"),
        (dict(pd=[1.0, -0.1, 1.0]), r"pd must be >= 0"),
        (dict(pd=[1.0, np.nan, 1.0]), r"pd contains NaN"),
        (dict(t2=[np.nan, 0.1, 0.1]), r"t2 contains NaN"),
        (dict(position=np.full((3, 3), np.inf)), r"position contains inf"),
        (dict(delta_f=np.ones(2)), r"delta_f must have shape"),
        (dict(t2_prime=[0.0, 1.0, 1.0]), r"t2_prime must be > 0"),
        (dict(diffusion=[-1e-9, 0, 0]), r"diffusion must be >= 0"),
        (dict(coil_sensitivity=np.ones((2, 4))), r"coil_sensitivity must have shape"),
    ],
)
def test_bad_fields_raise_value_error_naming_the_field(kw, match):
    with pytest.raises(ValueError, match=match):
        mt.Twin(**ok(**kw))


def test_twin_is_an_immutable_pytree():
    import dataclasses

    import jax

    t = mt.Twin(**ok())
    leaves = jax.tree_util.tree_leaves(t)
    assert len(leaves) == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.pd = np.zeros(3)
    t2 = t.replace(pd=np.full(3, 2.0))
    assert float(t2.pd[0]) == 2.0 and float(t.pd[0]) == 1.0
    with pytest.raises(ValueError, match="pd must be >= 0"):
        t.replace(pd=np.full(3, -1.0))
    sub = t[np.array([True, False, True])]
    assert sub.n_spins == 2


def test_twin_checks_and_simulate_work_inside_jit():
    """A loss that rebuilds the twin (`Twin.replace`, `with_isochromats`) runs under
    `jax.jit`: the value checks on the twin's concrete fields (coil sensitivities, voxel
    size) are NumPy checks, not jnp ones, which a jit trace would stage into tracers
    (TracerBoolConversionError before the fix). The jitted gradient equals the eager one."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    twin = mt.Twin(**ok(coil_sensitivity=np.array([[1.0, 0.5j, 0.2], [0.3, 1.0, -0.4j]]),
                        b1=np.ones(3), label=np.array([0, 1, 1]), label_names=("a", "b")))
    seq = mt.Sequence([mt.Block(rf=mt.make_block_pulse(np.pi / 2, 1e-4)),
                       mt.Block(adc=mt.make_adc(8, dwell=2e-3))])

    def loss(t2):
        t = mt.with_isochromats(twin.replace(t2=t2), 2, voxel_size=(1e-3, 1e-3, 1e-3))
        return jnp.sum(jnp.abs(mt.simulate(t, seq, dtype=jnp.float64).samples) ** 2)

    t2 = jnp.asarray([0.05, 0.08, 0.1])
    eager = jax.grad(loss)(t2)
    jitted = jax.jit(jax.grad(loss))(t2)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-12)
    assert np.all(np.asarray(eager) > 0)  # a longer T2 keeps more signal
