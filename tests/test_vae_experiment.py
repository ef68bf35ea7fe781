"""VAE experiments: the config schema's VAE keys and their errors, and (below) the CLI end to end."""

import pytest

from flowjax_lab import config as C

VAE = {
    "name": "v",
    "model": {"name": "vae", "params": {"latent_dim": 4}},
    "data": {"name": "binarized_digits"},
    "objective": "elbo",
}


def test_vae_objectives_parse():
    assert C.from_dict(VAE).objective == "elbo"
    config = C.from_dict(VAE, ["objective={iwae: 50}", "eval.iwae_k=100"])
    assert config.objective == {"iwae": 50} and config.eval.iwae_k == 100
    assert C.from_dict(C.to_dict(config)) == config
    assert C.from_dict(VAE, ["data.name=digits", "model.params.likelihood=gaussian"])


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["objective={iwae: 0}"], r"'objective\.iwae': k must be an integer >= 1, got 0"),
        (["objective={iwae: 2.5}"], r"'objective\.iwae': k must be an integer >= 1, got 2\.5"),
        (["objective={iwae: 5, dreg: 1}"], r"unknown key 'objective\.dreg'"),
        (["objective=mle"], r"model 'vae' takes 'elbo' or \{iwae: k\}.*got objective 'mle'"),
        (["model.name=maf"], r"got objective 'elbo' for model 'maf'"),
        (["model.name=maf", "objective=mle"], r"'data\.name': 'binarized_digits' is for model"),
        (["data.name=digits"], r"Bernoulli likelihood needs binary data, got 'digits'"),
        (["target.name=u1"], r"model 'vae' needs a 'data' section and no 'target'"),
        (["eval.iwae_k=0"], r"'eval\.iwae_k': must be an integer >= 1, got 0"),
        (["eval.iwae_kk=3"], r"unknown key 'eval\.iwae_kk'"),
        (["objective=[{start: 0, objective: elbo}]"], r"'objective\[0\]\.objective'.*got 'elbo'"),
    ],
)
def test_vae_config_errors_name_the_value(overrides, match):
    with pytest.raises(ValueError, match=match):
        C.from_dict(VAE, overrides)
