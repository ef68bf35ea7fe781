"""The experiment schema: YAML parsing, --set overrides, and errors that name the key."""

from pathlib import Path

import pytest

from flowjax_lab.experiment import config as C
from flowjax_lab.training import parse_objective

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
BASE = {"name": "t", "model": {"name": "maf"}, "data": {"name": "two_moons"}}


def test_every_shipped_config_loads_and_round_trips():
    assert {p.name for p in CONFIGS} >= {
        "maf_two_moons.yaml",
        "realnvp_checkerboard.yaml",
        "nsf_digits.yaml",
        "reverse_kl_u1.yaml",
        "reverse_kl_funnel.yaml",
        "mixed_objective.yaml",
        "tiny.yaml",
        "maf_mnist.yaml",
        "glow_mnist.yaml",
        "glow_digits_tiny.yaml",
    }
    for path in CONFIGS:
        config = C.load_config(path)
        assert C.from_dict(C.to_dict(config)) == config, path.name


def test_yaml_file_and_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: x\nmodel: {name: nsf, hidden: [8, 8]}\ntarget: {name: u1}\n"
        "objective: reverse_kl\ntrain: {lr: 1e-3}\n"
    )
    config = C.load_config(path)
    assert config.model == C.ModelConfig(name="nsf", hidden=(8, 8))
    assert config.train.lr == 1e-3 and isinstance(config.train.lr, float)  # 1e-3 is a float
    assert config.train.steps == C.TrainConfig().steps and config.data is None
    assert config.target == C.TargetConfig("u1", {})


def test_overrides_are_parsed_as_yaml():
    config = C.from_dict(
        BASE,
        [
            "train.steps=500",
            "train.lr=3e-4",
            "train.clip=null",
            "model.hidden=[32, 16]",
            "data.params={alpha: 0.1}",
            "name=other",
            "target.name=u2",  # creates the missing section
            "objective={mle: 1, reverse_kl: 0.5}",
            "eval.plot_range=[-1, 1, -2, 2.5]",
        ],
    )
    assert config.train.steps == 500 and config.train.lr == 3e-4 and config.train.clip is None
    assert config.model.hidden == (32, 16) and config.data.params == {"alpha": 0.1}
    assert config.name == "other" and config.target.name == "u2"
    assert config.objective == parse_objective({"mle": 1.0, "reverse_kl": 0.5})
    assert config.eval.plot_range == (-1.0, 1.0, -2.0, 2.5)
    assert C.parse_override("a.b.c=x=y") == (["a", "b", "c"], "x=y")


def test_schedule_objective():
    config = C.from_dict(
        {**BASE, "target": {"name": "u1"}},
        ["objective=[{start: 0, objective: mle}, {start: 100, objective: {reverse_kl: 1.0}}]"],
    )
    assert config.objective == parse_objective([(0, "mle"), (100, {"reverse_kl": 1.0})])


@pytest.mark.parametrize(
    "raw, overrides, match",
    [
        # unknown keys: the message names the key path and the allowed keys
        (BASE, ["model.foo=1"], r"unknown key 'model\.foo'.*\['name', 'num_layers', 'hidden'"),
        (BASE, ["colour=1"], r"unknown key 'colour'.*top level.*'seed', 'data', 'target'"),
        (BASE, ["train.step=1"], r"unknown key 'train\.step'.*'steps', 'batch_size'"),
        (BASE, ["objective={mle: 1, kl: 2}"], r"'objective': unknown objective 'kl'; allowed: \['mle', 'reverse_kl'"),
        # wrong types
        (BASE, ["train.steps=abc"], r"'train\.steps': expected int, got 'abc'"),
        (BASE, ["train.steps=1.5"], r"'train\.steps': expected int"),
        (BASE, ["train.resume=1"], r"'train\.resume': expected bool"),
        (BASE, ["model.hidden=64"], r"'model\.hidden': expected a list of int"),
        (BASE, ["model.hidden=[64, x]"], r"'model\.hidden\[1\]': expected int"),
        (BASE, ["eval.plot_range=[1, 2]"], r"'eval\.plot_range': expected a list of 4 float"),
        (BASE, ["train.schedule=linear"], r"'train\.schedule': expected 'constant'"),
        (BASE, ["objective=maximum_likelihood"], r"'objective': unknown objective 'maximum_likelihood'"),
        (BASE, ["model=maf"], r"config 'model': expected a mapping with keys \['name'"),
        # missing fields, and sections an objective needs
        ({"model": {"name": "maf"}, "data": {"name": "x"}}, [], r"missing required key 'name'"),
        ({"name": "t", "data": {"name": "x"}}, [], r"missing required key 'model'"),
        (BASE, ["model={num_layers: 2}"], r"missing required key 'model\.name'"),
        ({"name": "t", "model": {"name": "maf"}}, [], r"give 'data'.*'target'"),
        (BASE, ["objective=reverse_kl"], r"reverse_kl needs a 'target' section"),
        # bad values
        (BASE, ["train.steps=0"], r"'train\.steps' must be a positive integer, got 0"),
        (BASE, ["eval.temperature=0"], r"'eval\.temperature': must be a positive number, got 0"),
        (BASE, ["train.resume=true"], r"train\.resume.*output\.run_id: seed"),
        (
            {**BASE, "target": {"name": "u1"}},
            ["objective=[{start: 5, objective: mle}]"],
            r"increasing starts beginning at 0",
        ),
        # bad --set
        (BASE, ["train.steps"], r"bad --set 'train\.steps': expected key\.path=value"),
        (BASE, ["=3"], r"bad --set"),
        (BASE, ["name.first=x"], r"bad --set 'name\.first=x': 'name' is 't', not a mapping"),
        (BASE, ["model.hidden=[1, 2"], r"bad --set .*not valid YAML"),
    ],
)
def test_errors_name_the_key(raw, overrides, match):
    with pytest.raises(ValueError, match=match):
        C.from_dict(raw, overrides)


def test_file_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot read config"):
        C.load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        C.load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping at the top level"):
        C.load_config(listing)


def test_yaml_is_data_not_code(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo hacked']\nmodel: {name: maf}\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        C.load_config(path)


def test_overrides_do_not_change_the_input():
    raw = {"name": "t", "model": {"name": "maf"}, "data": {"name": "two_moons"}}
    C.from_dict(raw, ["model.num_layers=2"])
    assert raw == {"name": "t", "model": {"name": "maf"}, "data": {"name": "two_moons"}}
