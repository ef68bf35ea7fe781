"""VAE experiments: the config schema's VAE keys and their errors, and (below) the CLI end to end."""

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from flowjax_lab import experiment
from flowjax_lab.experiment import cli
from flowjax_lab.experiment import config as C

VAE = {
    "name": "v",
    "model": {"name": "vae", "params": {"latent_dim": 4}},
    "data": {"name": "binarized_digits"},
    "objective": "elbo",
}


def test_vae_objectives_parse():
    assert C.from_dict(VAE).objective.spec == "elbo"
    assert C.from_dict(VAE, ["objective={iwae_dreg: 5}"]).objective.spec == {"iwae_dreg": 5}
    config = C.from_dict(VAE, ["objective={iwae: 50}", "eval.iwae_k=100"])
    assert config.objective.samples == {"iwae": 50} and config.eval.iwae_k == 100
    assert C.from_dict(C.to_dict(config)) == config
    assert C.from_dict(VAE, ["data.name=digits", "model.params.likelihood=gaussian"])


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["objective={iwae: 0}"], r"'objective\.iwae': the value is the number of importance samples k, an integer >= 1, got 0"),
        (["objective={iwae: 2.5}"], r"'objective\.iwae': .*an integer >= 1, got 2\.5"),
        (["objective={iwae: 5, dreg: 1}"], r"'objective': unknown objective 'dreg'; allowed: \['mle'"),
        (["objective={iwae_dreg: 0}"], r"'objective\.iwae_dreg': .*an integer >= 1, got 0"),
        (
            ["objective=mle"],
            r"a VAE trains with \['elbo', 'iwae', 'iwae_dreg'\].*got \['mle'\] for model 'vae'",
        ),
        (["model.name=maf"], r"got \['elbo'\] for model 'maf'"),
        (["model.name=maf", "objective=mle"], r"'data\.name': 'binarized_digits' is for model"),
        (["data.name=digits"], r"Bernoulli likelihood needs binary data, got 'digits'"),
        (["target.name=u1"], r"model 'vae' needs a 'data' section and no 'target'"),
        (["eval.iwae_k=0"], r"'eval\.iwae_k' must be a positive integer, got 0"),
        (["eval.iwae_kk=3"], r"unknown key 'eval\.iwae_kk'"),
        (
            ["objective=[{start: 0, objective: elbo}, {start: 5, objective: mle}]"],
            r"'objective': the schedule mixes flow and VAE terms",
        ),
    ],
)
def test_vae_config_errors_name_the_value(overrides, match):
    with pytest.raises(ValueError, match=match):
        C.from_dict(VAE, overrides)


def test_vae_config_takes_the_sylvester_posterior_options():
    from flowjax_lab.experiment.build import build_vae

    sets = ["model.params.posterior=sylvester", "model.params.sylvester_kind=householder",
            "model.params.sylvester_steps=3", "model.params.num_vectors=2"]  # fmt: skip
    model = build_vae(C.from_dict(VAE, sets), 64)
    params = model.posterior.init(np.zeros(2, np.uint32))  # a legacy key: shapes only
    bias = params["bias"]
    assert bias["r"].shape == (3, 2, 2) and bias["v"].shape == (3, 2, 4)  # M = 2, K = M, d = 4
    assert params["kernel"]["b"].shape == (4, 3, 2)  # context_dim (default d = 4) x steps x M
    with pytest.raises(ValueError, match=r"vae: sylvester_kind must be one of .*got 'qr'"):
        build_vae(C.from_dict(VAE, ["model.params.posterior=sylvester",
                                    "model.params.sylvester_kind=qr"]), 64)  # fmt: skip


# --------------------------------------------------------------------------- the CLI end to end

DIGITS = str(Path(__file__).parent.parent / "configs" / "vae_digits.yaml")


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """configs/vae_digits.yaml, shortened, trained once through the CLI: (run folder, stdout)."""
    root = tmp_path_factory.mktemp("runs")
    sets = [f"output.root={root}", "output.run_id=seed", "train.steps=300", "eval.iwae_k=200"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli.main(
            ["train", DIGITS, *[a for s in sets for a in ("--set", s)], "--no-progress"]
        )
    assert code == 0
    return root / "vae_digits-seed0", buf.getvalue()


def test_cli_trains_a_vae_and_writes_its_pictures(vae_run):
    run_dir, out = vae_run
    for name in ("loss.png", "reconstructions.png", "samples.png"):
        assert f"picture:    {run_dir / name}" in out
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = rows[-1]
    assert summary["summary"] and summary["steps"] == 300 and summary["iwae_k"] == 200
    assert [r["val_loss"] for r in rows if "val_loss" in r]  # validated every 100 steps
    # training improves the validation ELBO: ~-49 nats at init, ~-28 after 300 steps
    assert summary["val_elbo"] > summary["val_elbo_init"] + 10.0
    # IWAE-200 is a tighter bound than the ELBO (here by ~1 nat), with a finite s.e.
    assert math.isfinite(summary["test_log_px"]) and 0 < summary["test_log_px_se"] < 2.0
    assert summary["test_log_px"] > summary["test_elbo"]
    assert "test log p(x) (IWAE)" in out and "+-" in out


def test_cli_eval_recomputes_the_test_log_px_and_takes_iwae_k(vae_run, capsys):
    run_dir, _ = vae_run
    summary = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    metrics = experiment.evaluate(run_dir)  # the best checkpoint, the same keys: same numbers
    assert metrics["test_log_px"] == pytest.approx(summary["test_log_px"], abs=1e-3)
    assert cli.main(["eval", str(run_dir), "--iwae-k", "20", "--iwae-chunk", "7"]) == 0
    out = capsys.readouterr().out
    assert "IWAE importance samples k: 20" in out
    value = float(out.split("test log p(x) (IWAE):")[1].split("+-")[0])
    assert summary["test_elbo"] - 1.0 < value < summary["test_log_px"] + 1.0  # k = 20 sits between
    assert cli.main(["eval", str(run_dir), "--iwae-k", "0"]) == 2
    assert "iwae_k must be a positive integer, got 0" in capsys.readouterr().err


def test_cli_samples_a_vae(vae_run, tmp_path, capsys):
    run_dir, _ = vae_run
    out = tmp_path / "x.npy"
    assert cli.main(["sample", str(run_dir), "-n", "5", "-o", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (5, 64) and 0.0 <= x.min() and x.max() <= 1.0  # Bernoulli means
