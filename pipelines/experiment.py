"""Job `experiment`: compressors and ablations on one data set, one table.

    hisac-experiment --config=tiny \
        --experiment_compressors=hisac,recent,full,kmeans \
        --experiment_lengths=10,20 \
        --experiment_output_dir=runs/experiments/tiny

    hisac-experiment --config=longrange \
        --experiment_plan=configs/experiments/longrange.json

Compressor mode (`--experiment_compressors`, `--experiment_lengths`): one
run per compressor, named after it, in group "main", trained N by N.
Plan mode (`--experiment_plan`, not together with those two): the named
runs of a JSON plan (`hisac_tf/experiments/plan.py` documents its keys:
lengths, group, set, tokenizer, seeds, config), run by run. The runner,
resuming and the tables are `hisac_tf/experiments/runner.py` and
`report.py`.

The data must exist under data.data_dir; `--experiment_generate_data` (or
the plan's "generate_data": true) generates this config's synthetic data
there when it holds none. Missing tokenizer tables are trained with the
tokenizer job (`pipelines.tokenize_items.main`).
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

from absl import flags

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
from hisac_tf.compressors import COMPRESSOR_NAMES
from hisac_tf.config import Config, ConfigError, load_config
from hisac_tf.experiments import plan as plan_lib
from hisac_tf.experiments import runner
from hisac_tf.experiments.plan import DEFAULT_COMPRESSORS, PresetLoader
from pipelines import cli, tokenize_items

flags.DEFINE_list(
    "experiment_compressors", list(DEFAULT_COMPRESSORS),
    f"Compressors to compare ({', '.join(COMPRESSOR_NAMES)}).")
flags.DEFINE_list(
    "experiment_lengths", [],
    "History lengths N (default: data.max_history).")
flags.DEFINE_string(
    "experiment_plan", "",
    "JSON plan of named runs (see hisac_tf/experiments/plan.py), instead "
    "of --experiment_compressors/--experiment_lengths.")
flags.DEFINE_string(
    "experiment_output_dir", "",
    "Table and plots (default runs/experiments/<config name>).")
flags.DEFINE_bool(
    "experiment_progress", False, "Progress bars of each run.")
flags.DEFINE_bool(
    "experiment_generate_data", False,
    "Generate the config's synthetic data when data.data_dir holds none "
    "(otherwise missing data is an error).")


def main(
    cfg: Config,
    compressors: Sequence[str] = DEFAULT_COMPRESSORS,
    lengths: Sequence[int] | None = None,
    output_dir: str | None = None,
    progress: bool = False,
    plan: str | os.PathLike | Mapping | None = None,
    generate_data: bool = False,
    load_preset: PresetLoader = load_config,
) -> dict:
    """Runs the experiment; returns the results (also in results.json).

    Args:
      cfg: the base config (data, tokenizer, budget, head, seed).
      compressors, lengths: compressor mode (default lengths:
        [data.max_history]).
      output_dir: default runs/experiments/<cfg.name>.
      progress: progress bars of the train / eval jobs.
      plan: a plan (path to its JSON file, or the parsed JSON) instead of
        `compressors` and `lengths`.
      generate_data: generate missing synthetic data (never otherwise).
      load_preset: loads a plan run's `config` preset.
    Raises:
      ConfigError: bad arguments or plan (before anything trains), or a
        plan together with non-default `compressors` / `lengths`.
      FileNotFoundError: no data under data.data_dir and no
        generate_data.
    """
    if plan is not None:
        if list(compressors) != list(DEFAULT_COMPRESSORS) or lengths:
            raise ConfigError(
                "experiment_plan replaces experiment_compressors and "
                "experiment_lengths: use one or the other, not both")
        checked = plan_lib.parse_plan(plan, cfg, load_preset)
    else:
        checked = plan_lib.compressor_plan(cfg, compressors, lengths)
    return runner.run_experiment(
        cfg, checked, by_length=plan is None, output_dir=output_dir,
        train_tokenizer=tokenize_items.main, generate_data=generate_data,
        load_preset=load_preset, progress=progress)


def main_from_flags(cfg: Config) -> dict:
    f = flags.FLAGS
    try:
        lengths = [int(n) for n in f.experiment_lengths]
    except ValueError:
        raise ConfigError(
            f"experiment_lengths must be ints, got {f.experiment_lengths}"
        ) from None
    return main(
        cfg, f.experiment_compressors, lengths or None,
        f.experiment_output_dir or None, f.experiment_progress,
        plan=f.experiment_plan or None,
        generate_data=f.experiment_generate_data,
        # A run's own preset gets the job's --set overrides too.
        load_preset=lambda name: load_config(name, f.set))


def run() -> None:
    cli.run(main_from_flags)


if __name__ == "__main__":
    run()
