"""The optimize driver: projections, history, progress, and bad input (never silent NaN)."""

import io

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mritwin as mt
import mritwin.optimize as mo
from mritwin.sequence import safety
from mritwin.sequence.safety import b1_rms
from tests.optimize._common import flash_train, flip_contrast, two_tissue_twin


def quad(p):
    return jnp.sum((p - 3.0) ** 2)


def test_box_projection_history_and_progress():
    buf = io.StringIO()
    seen = []
    res = mo.optimize(
        quad,
        jnp.array([-5.0, 0.0]),
        steps=150,
        optimizer=optax.adam(0.1),
        constraints=mo.Box(0.0, 2.0),
        progress=50,
        progress_file=buf,
        callback=lambda k, loss, p: seen.append(k),
    )
    np.testing.assert_allclose(res.params, [2.0, 2.0], atol=1e-6)
    assert res.history.shape == (151,) and res.n_steps == 150 and res.status == "max_steps"
    # the initial parameters are projected: history starts at the clipped point (0, 0)
    np.testing.assert_allclose(res.params_history[0], [0.0, 0.0])
    assert res.history[0] == 18.0 and res.loss == res.history[-1]
    assert seen == list(range(151))
    assert buf.getvalue().count("optimize step") == 4
    silent = io.StringIO()
    mo.optimize(quad, jnp.zeros(2), steps=3, progress=False, progress_file=silent)
    assert silent.getvalue() == ""


def test_box_on_subtree_and_converged():
    p = {"flip": jnp.array([-0.2, 3.0]), "t1": jnp.array([1.0])}
    out = mo.Box(0.0, np.pi / 2, where=lambda q: q["flip"])(p)
    np.testing.assert_allclose(out["flip"], [0.0, np.pi / 2])
    assert out["t1"] is p["t1"]
    res = mo.optimize(quad, jnp.zeros(2), steps=1000, optimizer=optax.sgd(0.4), rtol=1e-12)
    assert res.status == "converged" and res.n_steps < 1000
    with pytest.raises(ValueError, match="lower bound above upper bound"):
        mo.Box(1.0, 0.0)


def test_bad_flip_angles_are_projected_back_not_nan():
    # negative flips and flips above 90° (the hardware/design maximum here) plus an RF
    # train far over the SAR limit: projected back before the simulator sees them
    twin = two_tissue_twin(1)
    limit = float(b1_rms(flash_train(jnp.full(4, 0.3))))
    start = jnp.array([-0.5, 3.0, jnp.pi, 0.2])
    cons = [mo.Box(0.0, np.pi / 2), mo.SARLimit(flash_train, limit)]
    res = mo.optimize(
        lambda f: -flip_contrast(f, twin), start, steps=5, optimizer=optax.adam(0.5), constraints=cons
    )
    for p in res.params_history:
        assert np.all(np.asarray(p) >= 0) and np.all(np.asarray(p) <= np.pi / 2)
        assert float(b1_rms(flash_train(p))) <= limit * (1 + 1e-9)
    assert np.all(np.isfinite(res.history))


def test_nonfinite_loss_is_reported_not_silent():
    def loss(p):  # log of a negative T1-like parameter: NaN outside the valid domain
        return jnp.sum(jnp.log(p) ** 2)

    with pytest.raises(mo.NonFiniteError, match="step 0: loss is nan"):
        mo.optimize(loss, jnp.array([-1.0, 2.0]), steps=5)
    # large steps leave the domain; "stop" returns the last finite iterate
    res = mo.optimize(loss, jnp.array([0.5, 2.0]), steps=50, optimizer=optax.sgd(5.0), on_nonfinite="stop")
    assert res.status == "nonfinite" and "loss is nan" in res.message
    assert np.isfinite(res.loss) and np.all(np.isfinite(np.asarray(res.params)))
    # ... and a Box projection keeps the same run in the domain
    res = mo.optimize(
        loss, jnp.array([0.5, 2.0]), steps=50, optimizer=optax.sgd(5.0), constraints=mo.Box(1e-3, None)
    )
    assert res.status == "max_steps" and np.all(np.isfinite(res.history))
    with pytest.raises(mo.NonFiniteError, match="initial parameters"):
        mo.optimize(loss, jnp.array([jnp.nan]), steps=1)
    with pytest.raises(ValueError, match="on_nonfinite"):
        mo.optimize(loss, jnp.ones(1), steps=1, on_nonfinite="ignore")
    with pytest.raises(ValueError, match="steps must be"):
        mo.optimize(loss, jnp.ones(1), steps=-1)


def test_sar_limit_projection_on_subtree_and_sar_b1_rms_limit():
    sc = mt.Scanner(b0=3.0)
    flips = jnp.array([1.2, 1.5, 1.4, 1.0])
    lim = mo.sar_b1_rms_limit(flash_train(flips), sc)
    p = {"flips": flips, "other": jnp.array([5.0])}
    proj = mo.SARLimit(lambda q: flash_train(q["flips"]), lim, where=lambda q: q["flips"])
    # scale the train up until it exceeds the SAR limit, then project
    big = {
        "flips": flips * 3 * np.sqrt(max(safety.check_sar(flash_train(flips), sc).factor.values())),
        "other": p["other"],
    }
    out = proj(big)
    assert out["other"] is big["other"]
    np.testing.assert_allclose(out["flips"] / big["flips"], out["flips"][0] / big["flips"][0])
    rep = safety.check_sar(flash_train(out["flips"]), sc)
    assert np.isclose(max(rep.factor.values()), 1.0, rtol=1e-5) and rep.mode == "normal"
    half = {"flips": flips * 0.5 * lim / float(b1_rms(flash_train(flips))), "other": p["other"]}
    assert proj(half) is half  # inside the limit: unchanged
    with pytest.raises(ValueError, match="max_b1_rms must be > 0"):
        mo.SARLimit(flash_train, 0.0)
    with pytest.raises(ValueError, match="level must be"):
        mo.sar_b1_rms_limit(flash_train(flips), sc, level="high")


def _gre_loss(te, tr):
    """Contrast of a clinical GRE builder (flip traced; TE/TR concrete host timing)."""
    twin = two_tissue_twin(1)

    def loss(flip):
        seq = mt.sequences.gre(
            scanner=mt.Scanner(), fov=0.2, matrix=8, slice_thickness=5e-3, te=te, tr=tr, flip_angle=flip
        )
        return -mo.contrast(twin, seq, "gray_matter", "white_matter", method=mt.Bloch(ideal_spoiling=True))

    return loss


@pytest.mark.slow
def test_invalid_timing_is_reported_and_bad_flip_projected_in_builder_losses():
    # TE or TR below the minimum: the builder's ValueError (naming the field, the value and
    # the minimum) leaves `optimize` unchanged, before any NaN could appear
    with pytest.raises(ValueError, match=r"te = 0\.100 ms is impossible: the minimum te .* is 3\.\d+ ms"):
        mo.optimize(_gre_loss(0.1e-3, 20e-3), jnp.asarray(0.3), steps=2)
    with pytest.raises(ValueError, match=r"tr = 1\.000 ms is impossible: the minimum tr .* is \d+\.\d+ ms"):
        mo.optimize(_gre_loss(5e-3, 1e-3), jnp.asarray(0.3), steps=2)
    # a traced flip cannot be range-checked by the builder: a Box keeps it valid from the start
    res = mo.optimize(
        _gre_loss(5e-3, 20e-3),
        jnp.asarray(-0.3),
        steps=3,
        optimizer=optax.adam(0.05),
        constraints=mo.Box(np.radians(1.0), np.pi / 2),
    )
    flips = np.asarray(res.params_history)
    assert flips[0] == pytest.approx(np.radians(1.0)) and np.all(flips >= np.radians(1.0))
    assert np.all(flips <= np.pi / 2) and np.all(np.isfinite(res.history))
    assert res.history[-1] < res.history[0]  # the contrast grows from the projected 1° start


def test_compiled_step_gives_the_eager_iterates_and_traces_the_loss_once():
    twin = two_tissue_twin(1)
    limit = float(b1_rms(flash_train(jnp.full(4, 0.3))))
    traces = []

    def loss(f):
        traces.append(1)  # once per evaluation eagerly, once per trace under jit
        return -flip_contrast(f, twin)

    start = jnp.full(4, 0.25)  # weakly typed, as jnp.full(n, 0.25) is: no second trace
    kw = dict(steps=6, optimizer=optax.adam(0.05), constraints=[mo.Box(0.0, np.pi / 2), mo.SARLimit(flash_train, limit)])
    eager = mo.optimize(loss, start, **kw)
    n_eager = len(traces)
    compiled = mo.optimize(loss, start, jit=True, **kw)
    assert n_eager == 7 and len(traces) - n_eager == 1
    np.testing.assert_allclose(compiled.history, eager.history, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(compiled.params), np.asarray(eager.params), rtol=1e-10, atol=1e-14)
    assert float(b1_rms(flash_train(compiled.params))) <= limit * (1 + 1e-9)  # projected as eagerly
