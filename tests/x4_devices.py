"""Data parallelism on 4 forced host devices; run in its own process (see test_sharding.py)."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from common_multidevice import fit_kwargs, problem

import flowjax_lab as fl
from flowjax_lab import experiment
from flowjax_lab.checkpoint import Checkpointer
from flowjax_lab.experiment import vaes
from flowjax_lab.experiment.config import load_config
from flowjax_lab.training import fitting as train_mod


@pytest.fixture(scope="module", autouse=True)
def four_devices():
    assert jax.device_count() == 4, "run with XLA_FLAGS=--xla_force_host_platform_device_count=4"


def test_sharded_fit_equals_one_device_fit_and_resumes_exactly(tmp_path, monkeypatch):
    flow, params, data = problem()
    kw = fit_kwargs(data)
    one = fl.fit(jax.random.key(2), flow, params, checkpoint_dir=tmp_path / "one", **kw)
    mesh = fl.sharding.make_mesh()
    assert mesh.shape == {"data": 4, "model": 1}
    kw["mesh"] = mesh
    four = fl.fit(jax.random.key(2), flow, params, checkpoint_dir=tmp_path / "a", **kw)
    chex.assert_trees_all_close(four.params, one.params, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(four.history["loss"], one.history["loss"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(four.history["val_loss"], one.history["val_loss"], rtol=1e-5)
    assert four.history["loss"][-1] < four.history["loss"][0] - 0.2  # it trained
    assert four.traces == 1 and four.best_step == one.best_step

    class Interrupting(train_mod.tqdm):  # stops the run after the checkpoint at step 20
        def update(self, n=1):
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "tqdm", Interrupting)
    with pytest.raises(KeyboardInterrupt):
        fl.fit(jax.random.key(2), flow, params, checkpoint_dir=tmp_path / "b", **kw)
    monkeypatch.undo()
    assert Checkpointer(tmp_path / "b").all_steps() == [20]
    resumed = fl.fit(
        jax.random.key(2), flow, params, checkpoint_dir=tmp_path / "b", resume=True, **kw
    )
    chex.assert_trees_all_equal(resumed.params, four.params)
    chex.assert_trees_all_equal(resumed.last_params, four.last_params)
    np.testing.assert_array_equal(resumed.history["loss"], four.history["loss"])
    np.testing.assert_array_equal(resumed.history["val_loss"], four.history["val_loss"])
    assert Checkpointer(tmp_path / "b").all_steps() == [20, 40]


def test_batch_not_divisible_by_devices_is_an_error():
    flow, params, data = problem()
    with pytest.raises(ValueError, match="batch_size=126 is not divisible by the 4 devices"):
        fl.fit(jax.random.key(0), flow, params, data=data, batch_size=126, steps=5, mesh=4)
    with pytest.raises(ValueError, match=r"batch \(data rows\)=10 is not divisible by the 4"):
        fl.fit(jax.random.key(0), flow, params, data=data[:10], steps=5, mesh=4)


def test_sharded_log_prob_sample_and_batch_eval_equal_unsharded():
    flow, params, data = problem()
    mesh = fl.sharding.make_mesh(4)
    x = data[:1001]  # not a multiple of 4: padded and trimmed
    np.testing.assert_allclose(
        fl.sharding.sharded_log_prob(flow, params, x, mesh),
        jax.jit(flow.log_prob)(params, x),
        rtol=1e-5,
    )
    key = jax.random.key(4)
    np.testing.assert_allclose(
        fl.sharding.sharded_sample(flow, params, key, 1001, mesh),
        jax.jit(flow.sample, static_argnums=2)(params, key, 1001),
        rtol=1e-5,
        atol=1e-6,
    )

    def bound(p, x, key):  # an IWAE-style per-row bound over K = 8 noisy copies of each row
        eps = 0.1 * jax.random.normal(key, (x.shape[0], 8, x.shape[1]))
        lp = flow.log_prob(p, x[:, None] + eps)  # (n, 8)
        return jax.nn.logsumexp(lp, axis=-1) - jnp.log(8.0)

    sharded = fl.sharding.sharded_batch_eval(bound, mesh)(params, x, key)
    np.testing.assert_allclose(sharded, jax.jit(bound)(params, x, key), rtol=1e-5, atol=1e-5)


def test_vae_run_on_four_devices_equals_one_device(tmp_path):
    """A VAE config trained and evaluated with ``train.devices: 4`` (fit on the mesh, IWAE test
    images split over the devices) gives the one-device run's params and metrics."""
    config_path = os.path.join(os.path.dirname(__file__), "..", "configs", "vae_digits.yaml")
    runs = {}
    for devices in (1, 4):
        sets = [
            "train.steps=60",
            "train.lr=1e-3",  # at 3e-3 Adam grows float-rounding differences past 1e-4
            "train.val_every=20",
            "train.checkpoint_every=60",
            "eval.iwae_k=40",
            "eval.iwae_chunk=20",
            "output.plots=false",
            f"output.root={tmp_path / str(devices)}",
            f"train.devices={devices}",
        ]
        runs[devices] = experiment.run(load_config(config_path, sets), progress=False)
    one, four = runs[1], runs[4]
    chex.assert_trees_all_close(four.params, one.params, atol=1e-4, rtol=1e-4)
    for name in ("test_elbo", "val_elbo", "val_elbo_init"):
        np.testing.assert_allclose(four.metrics[name], one.metrics[name], rtol=1e-4)
    assert four.metrics["val_elbo"] > four.metrics["val_elbo_init"] + 1.0  # it trained
    # IWAE on 4 devices: 4 images per device and call, as 16 per call on one device
    config = load_config(config_path, ["eval.iwae_k=40", "eval.iwae_chunk=20"])
    _, problem, model, params = experiment.load_run(four.run_dir)
    k_test = jax.random.split(experiment.run_keys(config).eval, 3)[0]
    ref = vaes.iwae_test_log_px(model, one.params, problem.test, k_test, 40, 20, 16)
    np.testing.assert_allclose(four.metrics["test_log_px"], ref.mean(), rtol=1e-5)
    # the saved run re-evaluates on its devices to the same figures
    again = experiment.evaluate(four.run_dir)
    np.testing.assert_allclose(again["test_log_px"], four.metrics["test_log_px"], rtol=1e-5)

    # sharded IWAE: 1 image per device on 4 devices is 4 images per call on one
    x, key = problem.test[:10], jax.random.key(3)
    ref = vaes.iwae_test_log_px(model, params, x, key, k=30, chunk=10, batch=4)
    mesh = fl.sharding.make_mesh()
    got = vaes.iwae_test_log_px(model, params, x, key, k=30, chunk=10, batch=1, mesh=mesh)
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_reverse_kl_base_samples_are_split_over_the_devices():
    """Each of the 4 data devices draws and maps its own quarter of the reverse-KL batch (read
    from the compiled step: no (256, 2) sample array, (64, 2) ones), and the 4-device loss is
    the 1-device one within Monte Carlo error."""
    flow = fl.models.maf(2, 2, (8,))
    params = flow.init(jax.random.key(0))
    target = lambda x: -0.5 * jnp.sum((x - 1.0) ** 2)  # noqa: E731
    mesh = fl.sharding.make_mesh(4)
    objective = fl.training.parse_objective("reverse_kl")
    trainable, fixed = fl.partition(params)
    optimizer = fl.default_optimizer(10)
    shard = fl.sharding.batch_sharding(mesh)
    terms = fl.training.losses.term_losses(flow, objective, target, 256, None, shard)
    setup = fl.training.StepSetup(terms, optimizer, objective, fixed, None, shard)
    state = fl.sharding.replicate(
        fl.training.TrainState(trainable, optimizer.init(trainable), jnp.zeros((), jnp.int32)),
        mesh,
    )
    step = jax.jit(fl.training.make_step(setup), out_shardings=fl.sharding.replicated(mesh))
    key = fl.sharding.replicate(jax.random.key(1), mesh)
    hlo = step.lower(state, fl.training.Batch(), key).compile().as_text()
    assert "f32[64,2]" in hlo and "f32[256,2]" not in hlo

    kw = dict(objective="reverse_kl", target_log_prob=target, steps=20, batch_size=256,
              optimizer=optax.sgd(0.0), progress=False)  # fmt: skip
    one = np.asarray(fl.fit(jax.random.key(2), flow, params, **kw).history["loss"])
    four = np.asarray(fl.fit(jax.random.key(2), flow, params, mesh=mesh, **kw).history["loss"])
    se = np.sqrt(one.var() / len(one) + four.var() / len(four))
    assert abs(one.mean() - four.mean()) < 4 * se + 1e-5, (one.mean(), four.mean(), se)
