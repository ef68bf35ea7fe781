"""Multi-device and multi-process fits: 4 forced host devices and 2 processes, each in its own
process (the device count is fixed at start-up); argument checks here."""

import os
import socket
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest
from common_multidevice import fit_kwargs, problem

import flowjax_lab as fl

HERE = os.path.dirname(__file__)


def _env(devices: int) -> dict:
    path = os.pathsep.join([HERE, os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")])
    flags = f"--xla_force_host_platform_device_count={devices}"
    env = {**os.environ, "PYTHONPATH": path, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    return {k: v for k, v in env.items() if not k.startswith("FLOWJAX_LAB_")}


@pytest.mark.slow
def test_four_devices_in_own_process():
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "x4_devices.py"]
    out = subprocess.run(cmd, env=_env(4), capture_output=True, text=True, cwd=HERE, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "5 passed" in out.stdout, out.stdout[-2000:]


@pytest.mark.slow
def test_two_processes_on_localhost_match_one_process(tmp_path):
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    worker = os.path.join(HERE, "multihost_worker.py")
    procs = [
        subprocess.Popen(
            [sys.executable, worker, port, str(pid), str(tmp_path)],
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in (0, 1)
    ]
    flow, params, data = problem()  # the one-process run, while the two run
    one = fl.fit(jax.random.key(2), flow, params, **fit_kwargs(data))
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("the two-process fit did not finish in 300 s")
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    runs = [np.load(tmp_path / f"params{pid}.npz") for pid in (0, 1)]
    want = [np.asarray(x) for x in jax.tree.leaves(one.params)]
    for i, w in enumerate(want):
        np.testing.assert_array_equal(runs[0][f"arr_{i}"], runs[1][f"arr_{i}"])
        np.testing.assert_allclose(runs[0][f"arr_{i}"], w, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(runs[0]["loss"], one.history["loss"], rtol=1e-5, atol=1e-5)
    lp = np.load(tmp_path / "log_prob0.npy")
    np.testing.assert_array_equal(lp, np.load(tmp_path / "log_prob1.npy"))
    np.testing.assert_allclose(lp, jax.jit(flow.log_prob)(one.params, data[:101]), rtol=1e-4)
    # resumed from step 40 to 60 on both processes == one uninterrupted 60-step run
    longer = fl.fit(jax.random.key(2), flow, params, **{**fit_kwargs(data), "steps": 60})
    resumed = [np.load(tmp_path / f"resumed{pid}.npz") for pid in (0, 1)]
    for i, w in enumerate(jax.tree.leaves(longer.last_params)):
        np.testing.assert_array_equal(resumed[0][f"arr_{i}"], resumed[1][f"arr_{i}"])
        np.testing.assert_allclose(resumed[0][f"arr_{i}"], np.asarray(w), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(resumed[0]["loss"], longer.history["loss"], rtol=1e-5, atol=1e-5)
    assert fl.Checkpointer(tmp_path / "ckpt").all_steps() == [20, 40, 60]  # by process 0


def test_distributed_settings_from_arguments_and_environment(monkeypatch):
    for name in fl.distributed.ENV.values():
        monkeypatch.delenv(name, raising=False)
    assert fl.distributed.settings() is None and fl.distributed.initialize() is False
    monkeypatch.setenv("FLOWJAX_LAB_COORDINATOR", "10.0.0.1:8476")
    monkeypatch.setenv("FLOWJAX_LAB_NUM_PROCESSES", "4")
    monkeypatch.setenv("FLOWJAX_LAB_PROCESS_ID", "3")
    assert fl.distributed.settings(process_id=2) == {
        "coordinator_address": "10.0.0.1:8476",
        "num_processes": 4,
        "process_id": 2,
    }
    with pytest.raises(ValueError, match=r"process_id must be in 0 \.\. 3.*got 4"):
        fl.distributed.settings(process_id=4)
    with pytest.raises(ValueError, match="coordinator must be host:port, got '10.0.0.1'"):
        fl.distributed.settings("10.0.0.1")
    monkeypatch.setenv("FLOWJAX_LAB_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="FLOWJAX_LAB_NUM_PROCESSES must be an integer"):
        fl.distributed.settings()
    monkeypatch.delenv("FLOWJAX_LAB_COORDINATOR")
    monkeypatch.delenv("FLOWJAX_LAB_NUM_PROCESSES")
    with pytest.raises(ValueError, match="need a coordinator address"):
        fl.distributed.settings()


def test_mesh_arguments_are_checked():
    n = jax.device_count()
    with pytest.raises(ValueError, match=f"devices={n + 1}: there are {n} devices"):
        fl.sharding.make_mesh(n + 1)
    with pytest.raises(ValueError, match="model=3 must be a positive divisor"):
        fl.sharding.make_mesh(1, model=3)
    with pytest.raises(TypeError, match="mesh: expected a jax.sharding.Mesh"):
        fl.sharding.as_mesh("all")
    mesh = fl.sharding.make_mesh(1)
    assert fl.sharding.data_size(mesh) == 1
    x = np.arange(6.0).reshape(3, 2)
    chex.assert_trees_all_equal(
        fl.sharding.sharded_batch_eval(lambda p, x: x * p, mesh)(2.0, x), 2.0 * x
    )
