"""Image runs through the CLI (a tiny Glow on 8x8 digits) and the pixel-data config errors."""

import contextlib
import io
import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest

import flowjax_lab as fl
from flowjax_lab import data as D
from flowjax_lab.experiment import build as problems
from flowjax_lab.experiment import cli, pipeline
from flowjax_lab.experiment import config as C

TINY = str(Path(__file__).parent.parent / "configs" / "glow_digits_tiny.yaml")


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        argv = ["train", TINY, "--set", f"output.root={root}", "--set", "output.run_id=seed"]
        assert cli.main([*argv, "--no-progress"]) == 0
    return root / "glow_digits_tiny-seed0", buf.getvalue()


def test_tiny_glow_run_writes_image_pictures_and_beats_the_uniform_density(image_run):
    run_dir, out = image_run
    for name in ("samples.png", "bits_per_dim.png", "loss.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"picture:    {run_dir / name}" in out
    summary = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    bpd, se = summary["test_bits_per_dim"], summary["test_bits_per_dim_se"]
    assert math.isfinite(bpd) and 0 < se < 0.1
    # the uniform density on [0, 1)^64 is log2(17) = 4.09 bits/dim; 200 steps get > 0.5 below
    assert bpd < math.log2(17) - 0.5, bpd
    # bits/dim is the NLL on the 17-level pixel scale: (nll + 64 log 17) / (64 log 2)
    assert bpd == pytest.approx((summary["test_nll"] + 64 * math.log(17)) / (64 * math.log(2)))


def test_eval_prints_test_bits_per_dim_with_its_se(image_run, capsys, tmp_path):
    run_dir, _ = image_run
    assert cli.main(["eval", str(run_dir)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "test bits/dim" in x)
    value, _, se = line.split(":")[1].split()
    summary = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert float(value) == pytest.approx(summary["test_bits_per_dim"], abs=2e-4)
    assert float(se) == pytest.approx(summary["test_bits_per_dim_se"], abs=2e-4)
    out = tmp_path / "x.npy"
    assert cli.main(["sample", str(run_dir), "-n", "5", "-o", str(out)]) == 0
    assert "5 samples of shape (8, 8, 1)" in capsys.readouterr().out
    assert np.load(out).shape == (5, 8, 8, 1)
    # --temperature: x = g(T z), the same as fl.sample_at_temperature on the run's params
    assert cli.main(["sample", str(run_dir), "-n", "5", "-o", str(out), "--temperature", "0.5"]) == 0
    _, _, flow, params = pipeline.load_run(run_dir)
    want = fl.sample_at_temperature(flow, params, jax.random.key(0), 5, 0.5)
    np.testing.assert_allclose(np.load(out), np.asarray(want), atol=1e-5)
    assert not np.allclose(np.load(out), pipeline.sample(run_dir, 5))


def _config(*overrides):
    return C.load_config(TINY, list(overrides))


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["model.params.levels=4"], r"'model\.params\.levels': 4 levels .* 8x8 image .* \[1, 3\]"),
        (["model.params.depth=4"], r"unknown key 'model\.params\.depth'.*allowed keys"),
        (["model.name=maf"], r"model 'maf' takes vectors, but the data are images of shape"),
        (["data.name=digits"], r"model 'glow' needs image data"),
    ],
)
def test_image_model_errors_name_the_value(overrides, match):
    config = _config(*overrides)
    problem = problems.build_problem(config)
    with pytest.raises(ValueError, match=match):
        problems.build_flow(config, problem.event_shape or problem.dim)


@pytest.mark.parametrize(
    "params, match",
    [
        ("{preprocessing: jpeg}", r"'data\.params\.preprocessing': expected 'maf' or 'dequantize'"),
        ("{preprocessing: maf, pad: 2}", r"'data\.params\.pad': not used by preprocessing 'maf'"),
        ("{colour: 1}", r"unknown key 'data\.params\.colour'"),
        ("{train_rows: 0}", r"'data\.params\.train_rows' must be an integer in \[1, 50000\], got 0"),
        ("{preprocessing: dequantize, noise: gaussian}", r"'data\.params\.noise': expected"),
        ("{preprocessing: maf, noise: gaussian}", r"'data\.params\.noise': expected"),
    ],
)
def test_mnist_data_params_are_checked(params, match):
    with pytest.raises(ValueError, match=match):
        problems.build_problem(_config("data.name=mnist", f"data.params={params}"))


def test_the_mnist_configs_build_their_models():
    """Builds only (no data, no init): glow_mnist's 3 levels fit its 32x32 padded images."""
    configs = Path(TINY).parent
    glow = C.load_config(configs / "glow_mnist.yaml")
    assert glow.data.params == {"preprocessing": "dequantize", "pad": 2}
    assert problems.build_flow(glow, (32, 32, 1)).event_shape == (32, 32, 1)
    with pytest.raises(ValueError, match=r"28x28 image can be squeezed at most 2 times"):
        problems.build_flow(glow, (28, 28, 1))
    maf = C.load_config(configs / "maf_mnist.yaml")
    assert (maf.model.num_layers, maf.model.hidden) == (5, (1024,))
    assert problems.build_flow(maf, 784).event_shape == (784,)


def test_image_training_rows_are_pixels_dequantised_per_step_unless_fixed():
    """Default ``noise: per_step``: the run fits integer pixels with ``fit(dequantize=17)``;
    ``train`` is one fixed draw of the same images (data init, plots)."""
    per_step = problems.build_problem(_config())
    pixels, fixed = per_step.train_pixels, per_step.train
    assert pixels is not None and per_step.num_levels == 17
    np.testing.assert_array_equal(pixels, np.floor(pixels))
    assert pixels.min() >= 0 and pixels.max() <= 16 and pixels.max() > 8
    u = fixed * 17 - pixels  # x = (p + u) / 17, u in [0, 1)
    assert u.min() > -1e-4 and u.max() < 1 + 1e-4 and 0.4 < u.mean() < 0.6
    assert problems.build_problem(_config("data.params={noise: fixed}")).train_pixels is None


def test_maf_mnist_per_step_noise_feeds_the_same_images_in_model_units():
    """``preprocessing: maf, noise: per_step``: the run fits the training images' integer pixels
    with fresh noise, mapped by ``pixels_to_model_units`` (logit, standardisation) into the units
    of ``train``; on the paper's own noise draw that map gives ``train`` back, row for row. The
    default (the paper's protocol) trains on the one fixed draw."""
    params = "data.params={preprocessing: maf, train_rows: 300, noise: per_step}"
    p = problems.build_problem(_config("data.name=mnist", params, "data.standardize=true"))
    assert p.train_pixels.shape == (300, 784) and p.num_levels == 256
    y = np.asarray(D.unstandardize(p.standardizer, p.train), np.float64)
    x = np.asarray(D.inverse_logit_transform(y, p.alpha), np.float64)  # the paper's (p + u) / 256
    u = x * 256 - p.train_pixels  # the paper's noise, in [0, 1) up to float32 rounding of train
    assert u.min() > -2e-3 and u.max() < 1 + 2e-3 and 0.45 < u.mean() < 0.55
    back = problems.pixels_to_model_units(p)(np.asarray(x, np.float32))
    np.testing.assert_allclose(back, p.train, rtol=5e-3, atol=2e-3)  # float32 x near 1
    fixed = problems.build_problem(
        _config("data.name=mnist", "data.params={preprocessing: maf, train_rows: 300}")
    )
    assert fixed.train_pixels is None and problems.pixels_to_model_units(fixed) is None
