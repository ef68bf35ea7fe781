"""One process of the two-process test (see test_sharding.py): a sharded fit on localhost,
then a resumed one from the checkpoints process 0 wrote.

Usage: python multihost_worker.py COORDINATOR_PORT PROCESS_ID OUT_DIR
Each process has 2 CPU devices (XLA_FLAGS set by the caller); the mesh spans all 4.
"""

import sys

import flowjax_lab as fl

port, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fl.distributed.initialize(f"127.0.0.1:{port}", 2, pid, timeout=60)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from common_multidevice import fit_kwargs, problem  # noqa: E402

assert jax.process_count() == 2 and jax.device_count() == 4 and jax.local_device_count() == 2
flow, params, data = problem()
mesh = fl.sharding.make_mesh()
result = fl.fit(
    jax.random.key(2), flow, params, mesh=mesh, checkpoint_dir=f"{out}/ckpt", **fit_kwargs(data)
)
leaves = [np.asarray(x) for x in jax.tree.leaves(result.params)]
np.savez(f"{out}/params{pid}.npz", *leaves, loss=result.history["loss"])
lp = fl.sharding.sharded_log_prob(flow, result.params, data[:101], mesh)
np.save(f"{out}/log_prob{pid}.npy", lp)
# resume: both processes read process 0's step-40 checkpoint and go on to step 60
kw = {**fit_kwargs(data), "steps": 60}
resumed = fl.fit(
    jax.random.key(2), flow, params, mesh=mesh, checkpoint_dir=f"{out}/ckpt", resume=True, **kw
)
leaves = [np.asarray(x) for x in jax.tree.leaves(resumed.last_params)]
np.savez(f"{out}/resumed{pid}.npz", *leaves, loss=resumed.history["loss"])
print(f"process {pid} done")
