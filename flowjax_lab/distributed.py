"""Multi-host start-up: ``jax.distributed.initialize`` from arguments or the environment.

Every process of a multi-host run calls ``initialize`` once, before any other JAX call; then
``jax.devices()`` lists the devices of all processes, ``fl.sharding.make_mesh()`` spans them,
and ``fl.fit(..., mesh=mesh)`` runs one data-parallel fit in which each process feeds the rows
of its own devices and process 0 writes the checkpoints. Launch (two hosts, or two processes on
one machine)::

  # on every host, with its own process id (0 on the coordinator's host):
  FLOWJAX_LAB_COORDINATOR=10.0.0.1:8476 FLOWJAX_LAB_NUM_PROCESSES=2 FLOWJAX_LAB_PROCESS_ID=0 \\
      flowjax-lab train configs/maf_two_moons.yaml
  # or the same as flags:
  flowjax-lab train CONFIG --coordinator 10.0.0.1:8476 --num-processes 2 --process-id 1

On a CPU the cross-process collectives are gloo (jax's default, set explicitly here). On
clusters that JAX detects itself (Slurm, TPU pods, Open MPI) ``jax.distributed.initialize()``
with no arguments works too.
"""

from __future__ import annotations

import os

import jax

ENV = {
    "coordinator": "FLOWJAX_LAB_COORDINATOR",
    "num_processes": "FLOWJAX_LAB_NUM_PROCESSES",
    "process_id": "FLOWJAX_LAB_PROCESS_ID",
}

__all__ = ["ENV", "initialize", "settings"]


def settings(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> dict | None:
    """The (coordinator, num_processes, process_id) to use: arguments first, then ``ENV``.

    None when neither gives a coordinator (a single-process run); a ValueError naming the
    missing or bad value when the settings are incomplete.
    """
    coordinator = coordinator or os.environ.get(ENV["coordinator"]) or None
    if num_processes is None and os.environ.get(ENV["num_processes"]):
        num_processes = _int(os.environ[ENV["num_processes"]], ENV["num_processes"])
    if process_id is None and os.environ.get(ENV["process_id"]):
        process_id = _int(os.environ[ENV["process_id"]], ENV["process_id"])
    if coordinator is None:
        if num_processes not in (None, 1) or process_id not in (None, 0):
            raise ValueError(
                f"num_processes={num_processes}, process_id={process_id} need a coordinator "
                f"address host:port (--coordinator or {ENV['coordinator']})"
            )
        return None
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"coordinator must be host:port, got {coordinator!r}")
    if num_processes is None or num_processes < 1:
        raise ValueError(
            f"num_processes must be a positive integer (--num-processes or "
            f"{ENV['num_processes']}), got {num_processes!r}"
        )
    if process_id is None or not 0 <= process_id < num_processes:
        raise ValueError(
            f"process_id must be in 0 .. {num_processes - 1} (--process-id or "
            f"{ENV['process_id']}), got {process_id!r}"
        )
    return {
        "coordinator_address": coordinator,
        "num_processes": num_processes,
        "process_id": process_id,
    }


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout: int = 300,
) -> bool:
    """Join a multi-process run (see the module docstring); returns whether one was joined.

    Args:
      coordinator: "host:port" of process 0's coordinator service (``FLOWJAX_LAB_COORDINATOR``).
      num_processes: processes in the run (``FLOWJAX_LAB_NUM_PROCESSES``).
      process_id: this process, 0 .. num_processes - 1 (``FLOWJAX_LAB_PROCESS_ID``).
      timeout: seconds to wait for all processes to connect.
    """
    given = settings(coordinator, num_processes, process_id)
    if given is None:
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**given, initialization_timeout=timeout)
    return True


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {text!r}") from None
