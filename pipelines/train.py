"""Job: train the HiSAC ranker (modes train / eval / train_and_eval).

`main(cfg)` trains with `hisac_tf.training.trainer.train` (Keras `fit`
under the strategy scope, resume from the latest checkpoint, checkpoints,
TensorBoard, and with `training.valid_every` the valid split's learning
curve and best checkpoint) and, in train_and_eval mode, evaluates with
`hisac_tf.evaluation.evaluation.evaluate` (the best checkpoint when one
exists, `training.evaluate_checkpoint`); the results go to
`<model_dir>/train_results.json`.
"""

from __future__ import annotations

import os

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

from hisac_tf import json_io
from hisac_tf.config import Config
from hisac_tf.evaluation.evaluation import evaluate
from hisac_tf.distribute.strategy import is_chief, read_tf_config
from hisac_tf.training.trainer import train, worker_config
from pipelines import cli


def main(cfg: Config, progress: bool = True) -> dict:
    results: dict = {"mode": cfg.training.mode}
    if cfg.training.mode in ("train", "train_and_eval"):
        results["train"] = train(cfg, progress=progress)
    tf_config = read_tf_config()
    if not is_chief(tf_config):
        # A non-chief worker of a cluster: the chief evaluates; this one's
        # results go beside its own checkpoints.
        cfg = worker_config(cfg, tf_config)
    elif cfg.training.mode in ("eval", "train_and_eval"):
        results["eval"] = evaluate(cfg, progress=progress)
    path = os.path.join(cfg.training.model_dir, "train_results.json")
    json_io.write_json(path, results)
    return results


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
