"""Job: train the HiSAC ranker (modes train / eval / train_and_eval).

`main(cfg)` is `run_task(cfg)`: the job of this process in its cluster
(TF_CONFIG; one process without it). The chief trains with
`hisac_tf.training.trainer.train` (Keras `fit` under the strategy scope,
resume from the latest checkpoint, checkpoints, TensorBoard, and with
`training.valid_every` the valid split's learning curve and best
checkpoint) and, in train_and_eval mode, evaluates with
`hisac_tf.evaluation.evaluation.evaluate` (the checkpoint
`evaluation.checkpoint` names: the best by valid AUC when one exists);
the results go to `<model_dir>/train_results.json`.
"""

from __future__ import annotations

import dataclasses
import os

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf import json_io
from hisac_tf.config import Config
from hisac_tf.distribute.strategy import (
    ClusterSettings,
    read_tf_config,
    serve_forever,
    task_of,
    task_role,
)
from hisac_tf.evaluation.evaluation import evaluate
from hisac_tf.training.trainer import train
from pipelines import cli


def worker_config(cfg: Config, tf_config: dict) -> Config:
    """`cfg` with the model_dir of a non-chief worker:
    `<model_dir>/workers/<type>-<index>` (its checkpoints and summaries,
    which multi-worker saving needs every worker to write)."""
    kind, index = task_of(tf_config)
    model_dir = os.path.join(
        cfg.training.model_dir, "workers", f"{kind}-{index}")
    return dataclasses.replace(
        cfg, training=dataclasses.replace(cfg.training, model_dir=model_dir)
    )


def run_task(cfg: Config, progress: bool = True) -> dict:
    """Does this process's part of the job; returns its results.

    By the role TF_CONFIG gives the process (`task_role`):

    - "server" (a worker or PS task of parameter_server): serves the
      chief's steps until the process is stopped (writes nothing).
    - "worker" (a non-chief worker of multi_worker_mirrored): trains in
      step with the chief, resuming from the chief's checkpoints and
      writing its own under `<model_dir>/workers/<type>-<index>`, where
      its train_results.json goes too; it never evaluates.
    - "chief" (or a lone process): trains and/or evaluates, as
      `training.mode` says.
    """
    tf_config = read_tf_config()
    role = task_role(ClusterSettings.from_config(cfg.cluster), tf_config)
    if role == "server":
        serve_forever(tf_config)  # blocks until the process is stopped
        return {"mode": cfg.training.mode, "role": role}
    results: dict = {"mode": cfg.training.mode, "role": role}
    train_mode = cfg.training.mode in ("train", "train_and_eval")
    if role == "worker":
        own = worker_config(cfg, tf_config)
        if train_mode:
            results["train"] = train(
                own, progress=progress,
                resume_from=cfg.training.model_dir)
        cfg = own
    else:
        if train_mode:
            results["train"] = train(cfg, progress=progress)
        if cfg.training.mode in ("eval", "train_and_eval"):
            results["eval"] = evaluate(cfg, progress=progress)
    tf.io.gfile.makedirs(cfg.training.model_dir)  # a worker's, in eval mode
    path = os.path.join(cfg.training.model_dir, "train_results.json")
    json_io.write_json(path, results)
    return results


def main(cfg: Config, progress: bool = True) -> dict:
    return run_task(cfg, progress=progress)


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
