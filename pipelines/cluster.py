"""Job: a local cluster of chief, workers and parameter servers.

    hisac-cluster --cluster_workers=2 --cluster_ps=2 --config=tiny \
        [--set=section.key=value ...] [--cluster_timeout_s=600] \
        [--cluster_restart_workers=0] [-- command ...]

Starts every task of the cluster as its own process on free loopback
ports with its `TF_CONFIG`, streams their logs prefixed with the task
("[worker:1] ..."), stops them all when the job ends or one task fails,
and exits with the job's code (`hisac_tf.training.local_cluster`).
Without a command after `--` the job is `hisac-train` with this
`--config` and `--set`, and `training.strategy` set to
`parameter_server` when there are PS tasks, else `multi_worker_mirrored`
(docs/distributed.md).
"""

from __future__ import annotations

import sys

from absl import app, flags

from hisac_tf.config import ConfigError
from hisac_tf.training.local_cluster import run_local_cluster
from pipelines import cli

flags.DEFINE_integer("cluster_workers", 2, "Worker tasks.")
flags.DEFINE_integer("cluster_ps", 0,
                     "Parameter-server tasks (0: multi-worker mirrored).")
flags.DEFINE_float("cluster_timeout_s", None,
                   "Stop every task and exit 124 after this many seconds.")
flags.DEFINE_integer("cluster_restart_workers", 0,
                     "With PS tasks: start a dead worker again, up to this "
                     "many times.")
FLAGS = flags.FLAGS


def train_command() -> list[str]:
    """`hisac-train` with this job's --config and --set, and the strategy
    the cluster's shape needs."""
    strategy = ("parameter_server" if FLAGS.cluster_ps
                else "multi_worker_mirrored")
    return (
        [sys.executable, "-m", "pipelines.train", f"--config={FLAGS.config}"]
        + [f"--set={item}" for item in FLAGS.set]
        + [f"--set=training.strategy={strategy}"]
    )


def main(argv: list[str]) -> int:
    if not argv[1:]:
        try:  # A bad --config fails here, not in every task.
            cli.load()
        except ConfigError as e:
            print(f"config error: {e}", file=sys.stderr)
            return 2
    command = argv[1:] or train_command()
    return run_local_cluster(
        command, FLAGS.cluster_workers, FLAGS.cluster_ps,
        timeout_s=FLAGS.cluster_timeout_s,
        restart_workers=FLAGS.cluster_restart_workers,
    )


def run():
    app.run(main)


if __name__ == "__main__":
    run()
