"""The CLI end to end on a tiny config (train -> run folder -> eval -> sample), and its errors."""

import contextlib
import io
import json
import math
from pathlib import Path

import chex
import numpy as np
import pytest

import flowjax_lab as fl
from flowjax_lab import experiment
from flowjax_lab.experiment import build as problems
from flowjax_lab.experiment import cli
from flowjax_lab.experiment import config as C

TINY = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")


def _train(capsys, root, *overrides):
    sets = [
        a for o in ("output.run_id=seed", f"output.root={root}", *overrides) for a in ("--set", o)
    ]
    code = cli.main(["train", TINY, *sets, "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def mle_run(tmp_path_factory):
    """The tiny config trained once through the CLI: (run folder, stdout)."""
    root = tmp_path_factory.mktemp("runs")
    buf = io.StringIO()  # module scope has no capsys
    with contextlib.redirect_stdout(buf):
        code = cli.main(
            [
                "train",
                TINY,
                "--set",
                f"output.root={root}",
                "--set",
                "output.run_id=seed",
                "--no-progress",
            ]
        )
    assert code == 0
    return root / "tiny-seed0", buf.getvalue()


def test_train_writes_the_run_folder(mle_run):
    run_dir, out = mle_run
    assert f"run folder: {run_dir}" in out
    assert f"picture:    {run_dir / 'density.png'}" in out
    for name in ("config.yaml", "metrics.jsonl", "loss.png", "density.png"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the resolved config reloads to the same config
    assert C.load_config(run_dir / "config.yaml") == C.load_config(
        TINY, [f"output.root={run_dir.parent}", "output.run_id=seed"]
    )
    # checkpoints every 100 steps of 200, last 2 kept
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [
        "100",
        "200",
    ]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows[:-1]]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == 200
    assert all(math.isfinite(r["loss"]) for r in rows[:-1] if "loss" in r)
    assert [r["val_loss"] for r in rows if "val_loss" in r] and rows[-1]["summary"] is True
    summary = rows[-1]
    # eight Gaussians: the true test NLL is ~2.96 nats; a 200-step MAF gets within ~1.5 of it
    assert summary["test_true_nll"] < summary["test_nll"] < summary["test_true_nll"] + 1.5
    assert summary["test_kl_gap"] == pytest.approx(
        summary["test_nll"] - summary["test_true_nll"], abs=1e-6
    )


def test_cli_and_fl_fit_with_the_same_settings_give_the_same_params(mle_run):
    """The CLI's optimizer is ``fl.default_optimizer`` with the config's lr (and fl.fit's
    defaults for the rest): fl.fit on the same data, keys and steps gives the same params."""
    run_dir, _ = mle_run
    config, problem, flow, cli_params = experiment.load_run(run_dir)
    keys = experiment.run_keys(config)
    params = experiment.flows.init(flow, problem, keys.init)
    tc = config.train
    result = fl.fit(
        keys.fit,
        flow,
        params,
        data=problem.train,
        val_data=problem.val,
        steps=tc.steps,
        batch_size=tc.batch_size,
        val_every=tc.val_every,
        optimizer=fl.default_optimizer(tc.steps, tc.lr),
        progress=False,
    )
    chex.assert_trees_all_close(result.params, cli_params, rtol=1e-5, atol=1e-6)


def test_eval_prints_the_saved_metrics(mle_run, capsys):
    run_dir, _ = mle_run
    assert cli.main(["eval", str(run_dir)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    line = next(x for x in out.splitlines() if "test NLL" in x)
    assert float(line.split(":")[1].split()[0]) == pytest.approx(summary["test_nll"], abs=1e-3)
    assert experiment.evaluate(run_dir)["test_nll"] == pytest.approx(summary["test_nll"], abs=1e-4)


def test_sample_writes_npy(mle_run, capsys, tmp_path):
    run_dir, _ = mle_run
    out = tmp_path / "x.npy"
    assert cli.main(["sample", str(run_dir), "-n", "300", "-o", str(out)]) == 0
    assert "wrote 300 samples of dimension 2" in capsys.readouterr().out
    x = np.load(out)
    assert x.shape == (300, 2) and np.isfinite(x).all()
    # in data units: eight Gaussians sit on a circle of radius 2 sqrt 2
    assert 1.5 < np.median(np.linalg.norm(x, axis=1)) < 4.0


def test_existing_run_folder_is_not_overwritten(mle_run, capsys):
    run_dir, _ = mle_run
    before = (run_dir / "metrics.jsonl").read_bytes()
    code = cli.main(
        ["train", TINY, "--set", f"output.root={run_dir.parent}", "--set", "output.run_id=seed"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "exists" in err and "train.resume" in err
    assert (run_dir / "metrics.jsonl").read_bytes() == before


def test_reverse_kl_run_reports_elbo_log_z_ess(tmp_path, capsys):
    _train(
        capsys,
        tmp_path,
        "data=null",
        "target.name=banana",
        "objective=reverse_kl",
        "train.steps=100",
        "eval.num_samples=2000",
    )
    run_dir = tmp_path / "tiny-seed0"
    summary = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert summary["true_log_z"] == 0.0  # the banana is normalised
    assert summary["elbo"] <= summary["log_z"] + 1e-6  # Jensen, on the same samples
    assert 0.0 < summary["ess"] <= 1.0 and summary["log_z_se"] > 0
    assert (run_dir / "density.png").is_file()
    assert cli.main(["eval", str(run_dir)]) == 0
    out = capsys.readouterr().out
    for label in ("ELBO", "log Z (importance sampling)", "log Z (exact)", "ESS / n"):
        assert label in out, out


@pytest.mark.parametrize(
    "argv, match",
    [
        (["train", TINY, "--set", "model.foo=1"], "unknown key 'model.foo'"),
        (["train", TINY, "--set", "train.steps"], "bad --set"),
        (["train", "/no/such.yaml"], "cannot read config"),
        (["train", TINY, "--set", "model.name=pixelcnn"], "unknown model 'pixelcnn'"),
        (["train", TINY, "--set", "data.name=cifar10"], "unknown data set 'cifar10'"),
        (["train", TINY, "--set", "model.name=glow"], "model 'glow' needs image data"),
        (["eval", "/no/such/run"], "not a run folder"),
        (["sample", "/no/such/run", "-n", "3", "-o", "TMP/x.npy"], "not a run folder"),
    ],
)
def test_errors_are_one_line_and_exit_2(argv, match, capsys, tmp_path):
    argv = [a.replace("TMP/", f"{tmp_path}/") for a in argv]
    if argv[0] == "train":
        argv += ["--set", f"output.root={tmp_path}"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1 and err.startswith(f"flowjax-lab {argv[0]}: error")
    assert not any(tmp_path.iterdir())  # nothing written


def test_usage_errors_exit_2(capsys):
    assert cli.main([]) == 2
    assert cli.main(["sample", "run"]) == 2  # -n and -o are required
    assert "usage: flowjax-lab" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(problems.MODELS))
def test_every_model_name_builds(name):
    image = name in problems.IMAGE_MODELS
    model = {"name": name, "num_layers": 2, "hidden": [8]}
    if image:
        model["params"] = {"levels": 2, "steps_per_level": 1, "hidden_channels": 4}
    config = C.from_dict({"name": "m", "model": model, "data": {"name": "two_moons"}})
    shape = (8, 8, 1) if image else (2,)
    flow = problems.build_flow(config, shape if image else 2)
    assert flow.event_shape == shape


def test_model_and_target_params_are_checked():
    base = {
        "name": "m",
        "model": {"name": "maf"},
        "target": {"name": "funnel"},
        "objective": "reverse_kl",
    }
    with pytest.raises(ValueError, match=r"unknown key 'model\.params\.colour'.*allowed keys"):
        problems.build_flow(C.from_dict(base, ["model.params={colour: red}"]), 2)
    with pytest.raises(
        ValueError, match=r"unknown key 'target\.params\.width'.*\['dim', 'sigma'\]"
    ):
        problems.build_problem(C.from_dict(base, ["target.params={width: 2}"]))
    with pytest.raises(ValueError, match=r"unknown target 'u9'"):
        problems.build_problem(C.from_dict(base, ["target.name=u9"]))
