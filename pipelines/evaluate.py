"""Job: evaluate a checkpoint on the eval (test) split.

Calls `hisac_tf.training.evaluation.evaluate`: the checkpoint that
`training.evaluate_checkpoint` names (default: the best by valid AUC when
one exists, else the latest); AUC, GAUC, log loss (and the Bayes-optimal
figures on synthetic data) and the checkpoint used into
`<model_dir>/eval.json`.
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
