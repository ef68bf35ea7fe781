"""``flowjax-lab``: a thin argparse layer over ``flowjax_lab.experiment``.

  flowjax-lab train CONFIG.yaml [--set a.b=value ...]   train; prints the run folder and pictures
      [--coordinator HOST:PORT --num-processes N --process-id I]   one process of a multi-host
      run (or FLOWJAX_LAB_COORDINATOR / _NUM_PROCESSES / _PROCESS_ID; see fl.distributed)
  flowjax-lab eval RUN_DIR                              test NLL, or ELBO / log Z / ESS
  flowjax-lab eval VAE_RUN_DIR [--iwae-k 5000]          a VAE's test log p(x) by IWAE, +- s.e.
  flowjax-lab sample RUN_DIR -n N -o FILE.npy           N samples in data units

Errors (a bad config, a missing run folder, ...) print one line to stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from flowjax_lab import distributed
from flowjax_lab.checks import positive_int
from flowjax_lab.experiment import config as cfg
from flowjax_lab.experiment import pipeline as experiment

_LABELS = {
    "test_nll": "test NLL (nats, data units)",
    "test_bits_per_dim": "test bits/dim",
    "test_log_lik": "test log-lik (nats, logit)",
    "test_true_nll": "true test NLL",
    "test_kl_gap": "KL gap (test NLL - true)",
    "val_nll": "validation NLL",
    "elbo": "ELBO",
    "log_z": "log Z (importance sampling)",
    "true_log_z": "log Z (exact)",
    "log_z_minus_elbo": "log Z - ELBO",
    "ess": "ESS / n",
    "test_log_px": "test log p(x) (IWAE)",
    "iwae_k": "IWAE importance samples k",
    "test_elbo": "test ELBO",
    "val_elbo": "validation ELBO",
    "val_elbo_init": "validation ELBO at init",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowjax-lab", description="Train, evaluate and sample normalizing flows."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run a YAML experiment config")
    train.add_argument("config", help="path to a YAML config (see configs/)")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.steps=500 (repeatable)",
    )
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    multi = train.add_argument_group("multi-host (see flowjax_lab.distributed)")
    multi.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    multi.add_argument("--num-processes", type=int, metavar="N", help="processes in the run")
    multi.add_argument("--process-id", type=int, metavar="I", help="this process, 0 .. N - 1")
    ev = sub.add_parser("eval", help="print the metrics of a run folder")
    ev.add_argument("run_dir")
    ev.add_argument(
        "--iwae-k", type=int, default=None, help="VAE runs: importance samples (default 5000)"
    )
    ev.add_argument(
        "--iwae-chunk", type=int, default=None, help="VAE runs: samples drawn at a time"
    )
    sample = sub.add_parser("sample", help="write samples of a run's model to a .npy file")
    sample.add_argument("run_dir")
    sample.add_argument("-n", type=int, required=True, help="number of samples")
    sample.add_argument("-o", "--output", required=True, help="output .npy file")
    sample.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    sample.add_argument(
        "--temperature", type=float, default=None,
        help="flows: x = g(T z) (default: the config's eval.temperature, 1)",
    )  # fmt: skip
    return parser


def _format(metrics: dict) -> str:
    lines = []
    for key, label in _LABELS.items():
        value = metrics.get(key)
        if value is None:
            continue
        se = metrics.get(f"{key}_se")
        text = f"{value}" if isinstance(value, int) else f"{value:.4f}"
        lines.append(f"{label:>28}: {text}" + (f" +- {se:.4f}" if se is not None else ""))
    return "\n".join(lines)


def _train(args) -> None:
    config = cfg.load_config(args.config, args.overrides)
    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    result = experiment.run(config, progress=False if args.no_progress else None)
    print(_format(result.metrics))
    print(f"run folder: {result.run_dir}")
    for path in result.plots:
        print(f"picture:    {path}")


def _eval(args) -> None:
    print(_format(experiment.evaluate(args.run_dir, args.iwae_k, args.iwae_chunk)))


def _sample(args) -> None:
    positive_int(args.n, "-n")
    out = Path(args.output)
    if not out.parent.is_dir():
        raise ValueError(f"output folder {out.parent} does not exist")
    x = experiment.sample(args.run_dir, args.n, seed=args.seed, temperature=args.temperature)
    np.save(out, x)
    event = f"dimension {x.shape[1]}" if x.ndim == 2 else f"shape {tuple(x.shape[1:])}"
    print(f"wrote {x.shape[0]} samples of {event} to {out}")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 on errors)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed its usage message
        return int(e.code or 0)
    commands = {"train": _train, "eval": _eval, "sample": _sample}
    try:
        commands[args.command](args)
    except (ValueError, OSError, FloatingPointError) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"flowjax-lab {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
