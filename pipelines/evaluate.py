"""Job: evaluate the latest checkpoint on the eval split.

Calls `hisac_tf.training.evaluation.evaluate`: AUC, GAUC, log loss (and
the Bayes-optimal figures on synthetic data) into `<model_dir>/eval.json`.
"""

from __future__ import annotations

from hisac_tf.config import Config
from hisac_tf.training.evaluation import evaluate
from pipelines import cli


def main(cfg: Config, progress: bool = True) -> dict:
    return evaluate(cfg, progress=progress)


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
