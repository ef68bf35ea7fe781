"""fit: convergence to analytic optima, schedules, resume, divergence, early stopping, bad input."""

import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fit_helpers import interrupted_at

import flowjax_lab as fl
from flowjax_lab.checkpoint import Checkpointer, CheckpointError
from flowjax_lab.objectives import importance_diagnostics

T = fl.transforms
COV = jnp.array([[1.0, 0.8], [0.8, 1.0]])
MEAN = jnp.array([1.0, -1.0])


def _flow(layers=2):
    layer = fl.chain(T.lu_linear(), T.affine(), T.random_permutation())
    flow = fl.make_flow(fl.stack(layer, layers), event_shape=(2,))
    return flow, flow.init(jax.random.key(0))


def _gaussian_data(key, n):
    return jax.random.multivariate_normal(key, MEAN, COV, (n,))


def _gaussian_log_prob(x):
    d = x - MEAN
    return (
        -0.5 * d @ jnp.linalg.solve(COV, d)
        - math.log(2 * math.pi)
        - 0.5 * jnp.log(jnp.linalg.det(COV))
    )


def test_reverse_kl_reaches_log_z_of_correlated_gaussian():
    log_z = 1.3  # pi = Z * N(MEAN, COV)
    target = lambda x: _gaussian_log_prob(x) + log_z  # noqa: E731
    flow, params = _flow()
    result = fl.fit(
        jax.random.key(1),
        flow,
        params,
        objective="reverse_kl_stl",
        target_log_prob=target,
        steps=200,
        batch_size=128,
        optimizer=optax.adam(2e-2),
        progress=False,
    )
    diag = jax.jit(importance_diagnostics, static_argnums=(0, 1, 4))(
        flow, target, result.params, jax.random.key(2), 20_000
    )
    assert abs(float(diag.elbo) - log_z) < 0.02, diag
    assert float(diag.ess) > 0.95, diag


def test_mle_fit_reaches_gaussian_entropy_on_held_out_data():
    data = _gaussian_data(jax.random.key(3), 6000)
    test = _gaussian_data(jax.random.key(4), 20_000)
    flow, params = _flow()
    nll = jax.jit(fl.forward_kl(flow))
    true_nll = float(-jnp.mean(jax.vmap(_gaussian_log_prob)(test)))  # entropy, on these points
    result = fl.fit(
        jax.random.key(5),
        flow,
        params,
        data=data[:5000],
        val_data=data[5000:],
        steps=400,
        batch_size=256,
        optimizer=optax.adam(1e-2),
        progress=False,
    )
    assert float(nll(params, test)) > true_nll + 0.5
    assert float(nll(result.params, test)) < true_nll + 0.02
    assert result.history["loss"].shape == (400,) and result.traces == 1
    assert list(result.history["val_step"]) == [100, 200, 300, 400]


def test_schedule_switches_weights_at_the_given_step_without_recompiling():
    data = _gaussian_data(jax.random.key(6), 1000)
    flow, params = _flow()
    traced = []

    def target(x):
        traced.append(1)  # runs only while tracing
        return _gaussian_log_prob(x)

    schedule = [(0, "mle"), (30, {"mle": 1.0, "reverse_kl": 0.5}), (70, "mle"), (90, "reverse_kl")]
    result = fl.fit(
        jax.random.key(7),
        flow,
        params,
        objective=schedule,
        data=data,
        target_log_prob=target,
        steps=120,
        batch_size=64,
        steps_per_chunk=40,
        progress=False,
    )
    h = result.history
    assert result.traces == 1  # one trace of the chunk for 3 switches and 3 chunks
    assert len(traced) <= 3  # the start-up check, then the chunk's one trace (cond and grad)
    np.testing.assert_array_equal(h["step"], np.arange(120))
    w_rkl = np.select([h["step"] < 30, h["step"] < 70, h["step"] < 90], [0.0, 0.5, 0.0], 1.0)
    np.testing.assert_array_equal(h["weight_reverse_kl"], w_rkl)
    np.testing.assert_array_equal(h["weight_mle"], (h["step"] < 90).astype(float))
    assert np.isnan(h["loss_reverse_kl"][w_rkl == 0]).all()
    assert np.isfinite(h["loss_reverse_kl"][w_rkl > 0]).all()
    np.testing.assert_allclose(
        h["loss"][30:70], h["loss_mle"][30:70] + 0.5 * h["loss_reverse_kl"][30:70], rtol=1e-5
    )


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, monkeypatch):
    data = _gaussian_data(jax.random.key(8), 1000)  # 7 batches per epoch: resume mid-epoch
    flow, params = _flow()
    kwargs = dict(
        objective={"mle": 1.0, "reverse_kl": 0.3},
        data=data,
        target_log_prob=_gaussian_log_prob,
        steps=300,
        batch_size=128,
        checkpoint_every=100,
        steps_per_chunk=50,
        progress=False,
        config={"name": "resume-test", "lr": 1e-3},
    )
    full = fl.fit(jax.random.key(9), flow, params, checkpoint_dir=tmp_path / "a", **kwargs)

    with interrupted_at(monkeypatch, 150):  # between checkpoints
        fl.fit(jax.random.key(9), flow, params, checkpoint_dir=tmp_path / "b", **kwargs)
    assert Checkpointer(tmp_path / "b").all_steps() == [100]
    resumed = fl.fit(
        jax.random.key(9), flow, params, checkpoint_dir=tmp_path / "b", resume=True, **kwargs
    )
    chex.assert_trees_all_close(resumed.params, full.params, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(resumed.history["loss"], full.history["loss"], rtol=1e-5)
    ckpt = Checkpointer(tmp_path / "b")
    assert ckpt.all_steps() == [100, 200, 300]
    assert ckpt.read_meta()[2] == kwargs["config"]


def test_nan_loss_stops_with_the_step_and_keeps_last_good_params(tmp_path):
    # the target is NaN outside |x| < 6: a growing flow reaches that region after a while
    def target(x):
        return jnp.where(jnp.all(jnp.abs(x) < 6.0), -0.5 * jnp.sum(x**2) / 100.0, jnp.nan)

    flow, params = _flow(1)
    with pytest.raises(fl.TrainingDivergedError, match=r"at step \d+") as info:
        fl.fit(
            jax.random.key(10),
            flow,
            params,
            objective="reverse_kl",
            target_log_prob=target,
            steps=500,
            batch_size=256,
            optimizer=optax.adam(5e-2),
            checkpoint_dir=tmp_path,
            checkpoint_every=1000,
            progress=False,
        )
    err = info.value
    assert 0 < err.step < 500 and f"step {err.step}" in str(err)
    assert len(err.history["loss"]) == err.step and np.isfinite(err.history["loss"]).all()
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(err.params))
    # they are the params after step - 1: a run stopped there ends with the same params
    short = fl.fit(
        jax.random.key(10),
        flow,
        params,
        objective="reverse_kl",
        target_log_prob=target,
        steps=err.step,
        batch_size=256,
        optimizer=optax.adam(5e-2),
        progress=False,
    )
    chex.assert_trees_all_close(short.params, err.params, atol=1e-6)
    # and they are in the last checkpoint, written at the bad step
    trees, meta, _ = Checkpointer(tmp_path).restore({"params": params})
    assert meta["step"] == err.step
    chex.assert_trees_all_close(trees["params"], err.params)


def test_fit_leaves_integer_params_alone():
    flow, params = _flow(3)
    data = _gaussian_data(jax.random.key(11), 500)
    result = fl.fit(
        jax.random.key(12),
        flow,
        params,
        data=data,
        steps=50,
        batch_size=100,
        optimizer=optax.adam(1e-2),
        progress=False,
    )
    for got, want in zip(jax.tree.leaves(result.params), jax.tree.leaves(params)):
        assert got.dtype == want.dtype
        if not jnp.issubdtype(want.dtype, jnp.floating):
            np.testing.assert_array_equal(got, want)
    assert not np.allclose(result.params[1]["shift"], params[1]["shift"])


def test_early_stopping_returns_best_params():
    # q starts at N(0, I) = the validation density; training on far data only worsens it
    flow, params = _flow(1)
    data = 0.5 * jax.random.normal(jax.random.key(13), (500, 2)) + 3.0
    val = jax.random.normal(jax.random.key(14), (2000, 2))
    result = fl.fit(
        jax.random.key(15),
        flow,
        params,
        data=data,
        val_data=val,
        val_every=10,
        patience=3,
        steps=1000,
        batch_size=100,
        optimizer=optax.adam(1e-2),
        progress=False,
    )
    h = result.history
    assert result.stopped_early and result.step == 40 and result.best_step == 10
    assert h["val_loss"][0] == result.best_val_loss == h["val_loss"].min()
    np.testing.assert_allclose(
        jax.jit(fl.forward_kl(flow))(result.params, val), result.best_val_loss, rtol=1e-6
    )
    assert not np.allclose(result.last_params[1]["shift"], result.params[1]["shift"])


def test_bad_inputs_raise_before_any_work(tmp_path):
    flow, params = _flow(1)
    data = np.asarray(_gaussian_data(jax.random.key(16), 100))
    fit = lambda **kw: fl.fit(jax.random.key(0), flow, params, steps=5, progress=False, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="unknown objective 'nll'"):
        fit(objective="nll", data=data)
    with pytest.raises(ValueError, match="unknown objective 'rkl'"):
        fit(objective=[(0, "mle"), (3, {"rkl": 1.0})], data=data)
    with pytest.raises(ValueError, match="'mle', which needs data"):
        fit(objective="mle")
    with pytest.raises(ValueError, match="needs target_log_prob"):
        fit(objective={"mle": 1.0, "reverse_kl": 0.5}, data=data)
    bad = data.copy()
    bad[7, 1], bad[42, 0], bad[42, 1] = np.nan, np.inf, np.nan
    with pytest.raises(ValueError, match="3 NaN/inf values in 2 rows; the first is row 7"):
        fit(data=bad)
    with pytest.raises(ValueError, match=r"dimension mismatch.*\(2,\).*\(100, 3\)"):
        fit(data=np.zeros((100, 3), np.float32))
    with pytest.raises(ValueError, match="val_data: dimension mismatch"):
        fit(data=data, val_data=data[:, :1])
    with pytest.raises(ValueError, match="NaN/inf for all 256 samples"):
        fit(objective="reverse_kl", target_log_prob=lambda x: jnp.log(-jnp.sum(x**2)))
    with pytest.raises(ValueError, match="patience"):
        fit(data=data, patience=2)


def test_bad_checkpoints_raise_and_nothing_is_overwritten(tmp_path):
    flow, params = _flow(1)
    data = _gaussian_data(jax.random.key(17), 200)
    kw = dict(data=data, steps=20, batch_size=50, checkpoint_every=10, progress=False)
    fl.fit(jax.random.key(0), flow, params, checkpoint_dir=tmp_path, keep=2, **kw)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match="already holds checkpoints"):
        fl.fit(jax.random.key(0), flow, params, checkpoint_dir=tmp_path, **kw)
    other, other_params = _flow(2)  # different tree: stacked twice
    with pytest.raises(CheckpointError, match="'params' leaf 0 is"):
        fl.fit(jax.random.key(0), other, other_params, checkpoint_dir=tmp_path, resume=True, **kw)
    with pytest.raises(CheckpointError, match="optimizer|opt_state"):
        fl.fit(
            jax.random.key(0),
            flow,
            params,
            checkpoint_dir=tmp_path,
            resume=True,
            optimizer=optax.sgd(1e-3),
            **kw,
        )
    with open(tmp_path / "20" / "params.msgpack", "wb") as fh:  # corrupt the latest checkpoint
        fh.write(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        fl.fit(
            jax.random.key(0),
            flow,
            params,
            checkpoint_dir=tmp_path,
            resume=True,
            steps=40,
            **{k: v for k, v in kw.items() if k != "steps"},
        )
    assert sorted(os.listdir(tmp_path)) == before == ["10", "20"]


def test_checkpointer_keeps_last_k_reads_only_asked_trees_and_ignores_partial_saves(tmp_path):
    trees = {
        "params": {"w": jnp.arange(6.0).reshape(2, 3), "perm": jnp.array([1, 0], jnp.int32)},
        "opt_state": (jnp.zeros(()), {"mu": jnp.ones(3)}),
    }
    ckpt = Checkpointer(tmp_path, keep=2)
    for step in (10, 20, 30):
        ckpt.save(step, trees, {"loss": [1.0, float("nan")]}, {"lr": 1e-3})
    assert ckpt.all_steps() == [20, 30]
    os.makedirs(tmp_path / ".tmp-40-abc")  # an interrupted save is not a step
    (tmp_path / "40").mkdir()  # nor is a folder without its meta.json
    assert ckpt.latest_step() == 30
    os.remove(tmp_path / "30" / "opt_state.msgpack")  # only 'params' is read
    got, meta, config = ckpt.restore({"params": trees["params"]})
    chex.assert_trees_all_equal(got["params"], trees["params"])
    assert meta["step"] == 30 and meta["loss"] == [1.0, None] and config == {"lr": 1e-3}
    assert isinstance(got["params"]["w"], jax.Array)
    with pytest.raises(CheckpointError, match="'opt_state' are corrupt or unreadable"):
        ckpt.restore(trees)
    with pytest.raises(CheckpointError, match="already exists"):
        ckpt.save(30, trees)
    with open(tmp_path / "20" / "params.msgpack", "r+b") as fh:  # truncated file
        fh.truncate(20)
    with pytest.raises(CheckpointError, match="corrupt"):
        ckpt.restore({"params": trees["params"]}, step=20)
    with pytest.raises(CheckpointError, match="no checkpoint for step 5"):
        ckpt.restore({"params": trees["params"]}, step=5)


def test_preprocess_trains_the_model_on_the_mapped_batch():
    """``fit(dequantize=L, preprocess=g)`` trains the flow on g(x) of each step's fresh x: the
    params equal those of the same flow behind a param-free layer computing g (its log-det is
    constant in the params), and differ from training on x itself."""
    dim, levels = 3, 8
    flow = fl.models.maf(dim, 2, (8,))
    params = flow.init(jax.random.key(0))
    pixels = np.asarray(jax.random.randint(jax.random.key(2), (64, dim), 0, levels), np.float32)
    kw = dict(data=pixels, dequantize=levels, steps=20, batch_size=16, progress=False)
    kw["optimizer"] = optax.adam(1e-2)
    logit = T.logit(0.05)
    mapped = fl.fit(
        jax.random.key(1), flow, params, preprocess=lambda x: logit.apply({}, x)[0], **kw
    )
    behind = fl.make_flow(fl.chain(logit, flow.transform), event_shape=(dim,))
    layered = fl.fit(jax.random.key(1), behind, ({}, params), **kw)
    chex.assert_trees_all_close(mapped.params, layered.params[1], atol=1e-5, rtol=1e-5)
    plain = fl.fit(jax.random.key(1), flow, params, **kw)
    assert not np.allclose(jax.tree.leaves(plain.params)[0], jax.tree.leaves(mapped.params)[0])


def test_dequantize_draws_fresh_noise_every_step_and_checks_pixels():
    """x = (p + u) / L with a new u each step: for a frozen identity-like flow on all-zero pixels
    the per-step NLL is 0.5 |x|^2 + const, which must change from step to step and stay inside
    the range u in [0, 1) allows; with the same rows given as floats it never changes."""
    dim, levels = 6, 4
    flow = fl.make_flow(T.affine(), event_shape=(dim,))
    params = flow.init(jax.random.key(0))
    pixels = np.zeros((32, dim), np.float32)
    kw = dict(steps=30, batch_size=32, optimizer=optax.sgd(0.0), progress=False)
    fresh = fl.fit(jax.random.key(1), flow, params, data=pixels, dequantize=levels, **kw)
    losses = np.asarray(fresh.history["loss"])
    const = 0.5 * dim * math.log(2 * math.pi)
    assert len(np.unique(losses)) == len(losses)
    assert np.all(losses >= const) and np.all(losses < const + 0.5 * dim / levels**2)
    # E[u^2] = 1/3: the mean over steps is near const + 0.5 dim / (3 L^2)
    np.testing.assert_allclose(losses.mean() - const, 0.5 * dim / (3 * levels**2), rtol=0.1)
    plain = fl.fit(jax.random.key(1), flow, params, data=pixels + 0.5 / levels, **kw)
    assert np.ptp(np.asarray(plain.history["loss"])) == 0.0

    with pytest.raises(
        ValueError, match=r"integer pixel values in \[0, 4\); got values in \[4.0, 4.0\]"
    ):
        fl.fit(jax.random.key(1), flow, params, data=pixels + 4, dequantize=levels, **kw)
    with pytest.raises(ValueError, match=r"not all integers \(dequantised\?\)"):
        fl.fit(jax.random.key(1), flow, params, data=pixels + 0.3, dequantize=levels, **kw)
    with pytest.raises(ValueError, match="dequantize must be a positive integer, got 0"):
        fl.fit(jax.random.key(1), flow, params, data=pixels, dequantize=0, **kw)
    with pytest.raises(ValueError, match=r"preprocess=.*it needs dequantize=L"):
        fl.fit(jax.random.key(1), flow, params, data=pixels, preprocess=jnp.tanh, **kw)
    with pytest.raises(ValueError, match=r"dequantize=4 is for a flow trained by 'mle'"):
        target = lambda x: -0.5 * jnp.sum(x**2)
        fl.fit(jax.random.key(1), flow, params, objective="reverse_kl",
               target_log_prob=target, dequantize=levels, **kw)  # fmt: skip


def test_dequantize_takes_integer_pixels_as_the_data_loaders_return_them():
    """``fl.data.load_digits_images`` gives uint8 pixels: ``fit(dequantize=17)`` trains on them
    directly, exactly as on the same pixels given as floats."""
    pixels = fl.data.load_digits_images(jax.random.key(0)).train[:64].reshape(64, -1)
    assert pixels.dtype == np.uint8
    flow = fl.make_flow(T.affine(), event_shape=(64,))
    params = flow.init(jax.random.key(0))
    kw = dict(steps=5, batch_size=32, dequantize=17, progress=False)
    as_uint8 = fl.fit(jax.random.key(1), flow, params, data=pixels, **kw)
    as_float = fl.fit(jax.random.key(1), flow, params, data=pixels.astype(np.float32), **kw)
    np.testing.assert_array_equal(as_uint8.history["loss"], as_float.history["loss"])
    assert np.all(np.isfinite(as_uint8.history["loss"]))


def test_train_step_is_a_pure_function_of_named_tuples():
    """``fl.training.train_step``: jitted by the caller, state and info are named tuples, and a
    second call with new values does not retrace."""
    flow, params = _flow(1)
    data = jnp.asarray(_gaussian_data(jax.random.key(3), 64))
    trainable, fixed = fl.partition(params)
    optimizer = optax.adam(1e-2)
    setup = fl.training.StepSetup(
        losses=fl.training.losses.term_losses(
            flow, fl.training.parse_objective("mle"), None, 64, None, None
        ),
        optimizer=optimizer,
        objective=fl.training.parse_objective("mle"),
        fixed=fixed,
    )
    step = chex.assert_max_traces(fl.training.make_step(setup), n=1)
    step = jax.jit(step)
    state = fl.training.TrainState(trainable, optimizer.init(trainable), jnp.zeros((), jnp.int32))
    for i in range(3):
        state, info = step(state, fl.training.Batch(data), jax.random.key(i))
    assert isinstance(info, fl.training.StepInfo) and int(state.step) == 3
    assert info.terms.shape == (1,) and float(info.loss) == float(info.terms[0])
    assert float(info.weights[fl.training.TERMS.index("mle")]) == 1.0
