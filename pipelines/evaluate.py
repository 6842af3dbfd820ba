"""Job: evaluate a checkpoint on the eval (test) split, or compare reports.

Calls `hisac_tf.evaluation.evaluation.evaluate`: the checkpoint that
`evaluation.checkpoint` names (default: the best by valid AUC when
one exists, else the latest); AUC, GAUC, log loss (and the Bayes-optimal
figures on synthetic data) and the checkpoint used into
`<model_dir>/eval.json`.

The report also holds the metrics per slice and calibration
(`hisac_tf/evaluation/sliced_evaluation.py`); beside it are the
per-impression predictions and the reliability diagram, and TensorBoard
gets them under `<model_dir>/tensorboard/eval`.

    hisac-evaluate --compare runs/a/model/eval.json runs/b/model/eval.json

prints the per-slice differences to the first report with bootstrap
intervals over users, and writes compare.json and compare_auc.png to
--compare_output (default: the first report's directory;
`hisac_tf/evaluation/eval_compare.py`).
"""

from __future__ import annotations

import os
import sys

from absl import flags

from hisac_tf.config import Config, ConfigError
from hisac_tf.evaluation.eval_compare import (DEFAULT_DRAWS, compare,
                                            format_compare, write_compare)
from hisac_tf.evaluation.evaluation import evaluate
from pipelines import cli

flags.DEFINE_list(
    "compare", [],
    "Evaluation reports (eval.json) to compare, the first as baseline; "
    "more may follow as arguments: --compare a.json b.json c.json.")
flags.DEFINE_string("compare_output", "",
                    "Directory of compare.json / compare_auc.png.")
flags.DEFINE_integer("compare_draws", DEFAULT_DRAWS,
                     "Bootstrap draws of users per difference.")
flags.DEFINE_integer("compare_seed", 0, "Seed of the bootstrap draws.")


def main(cfg: Config, progress: bool = True) -> dict:
    return evaluate(cfg, progress=progress)


def compare_main(reports: list, output_dir: str = "",
                 draws: int = DEFAULT_DRAWS, seed: int = 0) -> dict:
    """Compares the reports; prints the table; writes the outputs."""
    result = compare(reports, num_draws=draws, seed=seed)
    output_dir = output_dir or os.path.dirname(os.path.abspath(reports[0]))
    paths = write_compare(result, output_dir)
    print(format_compare(result), file=sys.stderr)
    print("written: " + ", ".join(paths.values()), file=sys.stderr)
    return result


def main_from_flags(cfg: Config, args: list) -> dict:
    f = flags.FLAGS
    if not f.compare:
        if args:
            raise ConfigError(f"unexpected arguments {args} (reports to "
                              "compare follow --compare)")
        return main(cfg)
    return compare_main(list(f.compare) + list(args), f.compare_output,
                        f.compare_draws, f.compare_seed)


def run():
    cli.run(main_from_flags, positional=True)


if __name__ == "__main__":
    run()
