"""fl.vae: the IAF posterior's log q, gradients, chunked IWAE evaluation, fit and resume, bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import sklearn.datasets
from fit_helpers import interrupted_at

import flowjax_lab as fl
from flowjax_lab.checkpoint import Checkpointer


def _binary(key, n, dim=16):
    return (jax.random.uniform(key, (n, dim)) < 0.3).astype(jnp.float32)


def _init(model, seed=0):
    return jax.jit(model.init)(jax.random.key(seed))  # eager flax init costs ~10 s of dispatch


def _random_params(model, seed=0, scale=0.3):
    """init + N(0, scale^2) noise from ONE normal draw (a draw per leaf compiles for seconds)."""
    leaves, tree = jax.tree.flatten(_init(model, seed))
    sizes = [leaf.size for leaf in leaves]
    noise = scale * np.asarray(jax.random.normal(jax.random.key(seed + 1), (sum(sizes),)))
    parts = np.split(noise, np.cumsum(sizes)[:-1])
    return jax.tree.unflatten(tree, [a + n.reshape(a.shape) for a, n in zip(leaves, parts)])


def test_iaf_posterior_log_q_of_samples_is_its_density():
    # log q from sampling (one MADE pass per IAF step) against the density direction (d passes);
    # the transform itself (round trip, log-det vs slogdet(jacfwd)) is in tests/registry.py.
    model = fl.vae.vae(
        (16,), latent_dim=3, hidden=(16,), posterior="iaf", iaf_steps=2, context_dim=2
    )
    p, x = _random_params(model), _binary(jax.random.key(2), 1)[0]

    @jax.jit
    def run(p, x):
        z, log_q = model.sample_and_log_q(p, x, jax.random.key(3), 4)
        return log_q, jax.vmap(lambda zi: model.log_q(p, x, zi))(z)

    log_q, density = run(p, x)
    np.testing.assert_allclose(density, log_q, atol=1e-4)
    assert float(jnp.std(log_q)) > 0.1  # a non-trivial posterior


def test_gradients_are_finite_for_every_variant():
    x = _binary(jax.random.key(4), 3)
    iaf = fl.vae.vae((16,), latent_dim=3, hidden=(16,), posterior="iaf", iaf_steps=1, prior="flow")
    conv = fl.vae.vae((4, 4, 1), latent_dim=2, hidden=(8,), likelihood="gaussian", network="conv")
    key, images = jax.random.key(5), x.reshape(3, 4, 4, 1) * 0.7

    def every_bound(p):
        return -(iaf.elbo(p, x, key) + iaf.iwae(p, x, key, 3)).sum()  # DReG: in the fit test

    def conv_elbo(p):
        return -conv.elbo(p, images, key).sum()

    for model, loss in ((iaf, every_bound), (conv, conv_elbo)):
        value, grads = jax.jit(jax.value_and_grad(loss))(_random_params(model))
        assert np.isfinite(float(value))
        leaves = jax.tree.leaves(fl.partition(grads)[0])
        assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
        assert any(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


def test_iwae_log_likelihood_is_chunked_exactly():
    model = fl.vae.vae((16,), latent_dim=2, hidden=(8,), posterior="iaf", iaf_steps=1)
    p, x, key = _random_params(model), _binary(jax.random.key(6), 3), jax.random.key(7)
    chunked = jax.jit(lambda p, x: fl.vae.iwae_log_likelihood(model, p, x, key, k=20, chunk=7))(
        p, x
    )

    def by_hand(x_i, key_i):  # chunks of 7 samples, the last 1 of the 21 dropped
        parts = [
            fl.latent_log_weights(
                model.log_joint, model.sample_and_log_q, p, x_i, jax.random.fold_in(key_i, c), 7
            )[1]
            for c in range(3)
        ]
        return fl.iwae_from_log_weights(jnp.concatenate(parts)[:20])

    want = jax.jit(jax.vmap(by_hand))(x, jax.random.split(key, 3))
    np.testing.assert_allclose(chunked, want, rtol=1e-5)
    mean, se = fl.vae.mean_and_se(chunked)
    assert np.isfinite(mean) and se > 0


def _digits():
    pixels = sklearn.datasets.load_digits().data.astype(np.float32) / 16.0
    return pixels[:1500], (pixels[1500:] > 0.5).astype(np.float32)  # train intensities, val binary


def test_fit_iwae_dreg_improves_the_validation_bound_and_resumes_exactly(tmp_path, monkeypatch):
    train, val = _digits()
    model = fl.vae.vae(
        (64,), latent_dim=4, hidden=(32,), posterior="iaf", iaf_steps=1, iaf_hidden=(16,)
    )
    params = _init(model)
    kwargs = dict(
        objective={"iwae_dreg": 4},
        data=train,
        val_data=val,
        binarize="dynamic",
        steps=200,
        batch_size=64,
        val_every=100,
        checkpoint_every=100,
        optimizer=optax.adam(3e-3),
        progress=False,
    )
    start = float(-jnp.mean(jax.jit(lambda p: model.iwae(p, val, jax.random.key(1), 4))(params)))
    full = fl.fit(jax.random.key(9), model, params, checkpoint_dir=tmp_path / "a", **kwargs)
    assert start > 40.0, start  # ~ 64 log 2 = 44.4 nats at init
    assert full.best_val_loss < 27.0, full.history["val_loss"]  # minus IWAE-4 on binary val rows

    with interrupted_at(monkeypatch, 120):  # between checkpoints
        fl.fit(
            jax.random.key(9),
            model,
            params,
            checkpoint_dir=tmp_path / "b",
            **kwargs,
            steps_per_chunk=50,
        )
    assert Checkpointer(tmp_path / "b").all_steps() == [100]
    resumed = fl.fit(
        jax.random.key(9), model, params, checkpoint_dir=tmp_path / "b", resume=True, **kwargs
    )
    chex.assert_trees_all_close(resumed.params, full.params, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(resumed.history["loss"], full.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(resumed.history["val_loss"], full.history["val_loss"], rtol=1e-5)


def test_vae_early_stopping_returns_the_best_validation_params():
    """A VAE fit on 40 images overfits; validation (minus the ELBO on 297 held-out images, at a
    fixed key) turns up, ``patience`` stops the fit, and the returned params are the best ones:
    their validation bound, recomputed, is the best recorded value."""
    train, val = _digits()
    model = fl.vae.vae((64,), latent_dim=8, hidden=(128,))
    params = _init(model)
    key = jax.random.key(21)
    result = fl.fit(
        key,
        model,
        params,
        objective="elbo",
        data=(train[:40] > 0.5).astype(np.float32),
        val_data=val[:297],
        steps=3000,
        batch_size=40,
        val_every=25,
        patience=3,
        optimizer=optax.adam(1e-2),
        progress=False,
    )
    h = result.history
    assert result.stopped_early and result.step < 3000, result.step
    assert result.step == result.best_step + 3 * 25
    assert result.best_val_loss == h["val_loss"].min() < h["val_loss"][-1] - 1.0, h["val_loss"]
    loss = jax.jit(fl.training.losses.validation_bound(model, {}, jax.random.fold_in(key, 0x5A11D)))
    start = float(loss(params, jnp.asarray(val[:297]), None))
    assert result.best_val_loss < start - 10.0, (start, h["val_loss"])  # ~44 nats at init
    again = float(loss(result.params, jnp.asarray(val[:297]), None))
    np.testing.assert_allclose(again, result.best_val_loss, rtol=1e-5)
    assert not np.allclose(
        jax.tree.leaves(result.last_params)[0], jax.tree.leaves(result.params)[0]
    )


def test_bad_input_is_named():
    model = fl.vae.vae((16,), latent_dim=4, hidden=(8,))
    p, x = _init(model), _binary(jax.random.key(1), 2)
    with pytest.raises(
        ValueError, match=r"binary data in \{0, 1\}, got 32 other values, e.g. \[0.5\]"
    ):
        model.elbo(p, jnp.full((2, 16), 0.5), jax.random.key(2))
    with pytest.raises(
        ValueError, match=r"expected a batch of shape \(n, \*\(16,\)\), got shape \(2, 15\)"
    ):
        model.iwae(p, x[:, :15], jax.random.key(2), 5)
    with pytest.raises(ValueError, match="k must be an integer number of samples >= 1, got 0"):
        model.iwae(p, x, jax.random.key(2), 0)
    with pytest.raises(ValueError, match="got 0"):
        fl.vae.iwae_log_likelihood(model, p, x, jax.random.key(2), k=0)
    with pytest.raises(ValueError, match=r"latent_dim is 4 but prior_flow's event shape is \(3,\)"):
        fl.vae.vae((16,), latent_dim=4, prior="flow", prior_flow=fl.models.maf(3, 1, (8,)))
    with pytest.raises(ValueError, match="network='conv' needs an image data_shape"):
        fl.vae.vae((16,), network="conv")
    with pytest.raises(ValueError, match="likelihood must be one of"):
        fl.vae.vae((16,), likelihood="poisson")
    fit = lambda **kw: fl.fit(jax.random.key(0), model, p, data=x, steps=1, progress=False, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="number of importance samples k, an integer >= 1, got 0"):
        fit(objective={"iwae": 0})
    with pytest.raises(
        ValueError, match=r"needs its number of importance samples: give \{'iwae': k\}"
    ):
        fit(objective="iwae")
    with pytest.raises(ValueError, match="a VAE trains with"):
        fit(objective="mle")
    with pytest.raises(ValueError, match=r"data: a Bernoulli likelihood needs binary data"):
        fl.fit(jax.random.key(0), model, p, objective="elbo", data=x * 0.5, steps=1)
    with pytest.raises(ValueError, match=r"intensities in \[0, 1\], got values in \[0.0, 2.0\]"):
        fl.fit(
            jax.random.key(0), model, p, objective="elbo", data=x * 2, binarize="dynamic", steps=1
        )
    flow = fl.models.maf(16, 1, (8,))
    with pytest.raises(ValueError, match="a VAE trains with"):
        fl.fit(
            jax.random.key(0), flow, flow.init(jax.random.key(0)), objective="elbo", data=x, steps=1
        )
