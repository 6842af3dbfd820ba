"""The experiment plan: read, checked against the configs, resolved.

A plan is JSON (a file or the parsed object), parsed into the typed
`hisac_tf.experiments.plan_schema.ExperimentPlan`:

    {"description": "optional free text",
     "generate_data": false,
     "runs": [
      {"name": "hisac", "compressor": "hisac",
       "lengths": [100, 300, 1000, 3000], "group": "scaling",
       "seeds": [0, 1, 2]},
      {"name": "hisac_tau0.25", "compressor": "hisac", "lengths": [1000],
       "group": "temperature", "set": {"model.routing_temperature": 0.25}},
      {"name": "hisac_random_sids", "compressor": "hisac",
       "lengths": [1000], "group": "tokenizer", "tokenizer": "shuffled"},
      {"name": "hisac_10k", "compressor": "hisac", "lengths": [10000],
       "config": "longrange_10k"}
    ]}

  name        required, unique, [A-Za-z0-9_.-]+; names the model directory
  compressor  required, a model.compressor value ("none": short-only)
  lengths     list of ints >= 1 (default [data.max_history])
  group       string (default "main"); one results table per group
  set         {"section.key": JSON value} config overrides of this run
              (checked like --set; model.compressor, data.max_history,
              training.model_dir and training.mode belong to the run)
  tokenizer   "trained" (default) or "shuffled": the trained tables with
              the (SID, latent) rows permuted among items, seed
              training.seed
  seeds       list of distinct ints >= 0: the entry becomes one run per
              seed, named `<name>-s<seed>` with training.seed set; the
              report aggregates them into mean ± std rows
  config      a preset name or JSON path the run starts from instead of
              the job's config (the job's --set overrides apply to it too)
  generate_data (plan level) true: generate the synthetic data of a config
              whose data.data_dir holds none (otherwise that is an error)

Unknown keys, duplicate names and bad values raise ConfigError naming the
run and the field before anything is trained.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping, Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.compressors.factory import supported_compressors
from hisac_tf.config import Config, ConfigError, load_config
from hisac_tf.experiments.plan_schema import (
    ExperimentPlan,
    ExperimentRun,
    apply_run_overrides,
    experiment_plan_from_dict,
)

DEFAULT_COMPRESSORS = ("hisac", "recent", "full", "kmeans")
# Loads a run's `config` preset (name or JSON path) into a Config.
PresetLoader = Callable[[str], Config]


def read_plan(plan: str | os.PathLike | Mapping) -> Any:
    """The plan as parsed JSON: `plan` itself or the file it names."""
    if not isinstance(plan, (str, os.PathLike)):
        return plan
    path = os.fspath(plan)
    if not tf.io.gfile.exists(path):
        raise ConfigError(f"experiment plan {path} does not exist")
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"experiment plan {path} is not valid JSON: {e}") from None


def where(run: ExperimentRun) -> str:
    """How errors name `run`."""
    return f"experiment plan run {run.name!r}"


def run_base(cfg: Config, run: ExperimentRun,
             load_preset: PresetLoader = load_config) -> Config:
    """The run's config before N: its preset (or `cfg`) and overrides.

    Raises:
      ConfigError: naming the run and the field config or set.
    """
    base = cfg
    if run.config:
        try:
            base = load_preset(run.config)
        except ConfigError as e:
            raise ConfigError(f"{where(run)}: field config: {e}") from None
    return apply_run_overrides(base, run.overrides, where(run))


def run_config(base: Config, compressor: str, length: int,
               name: str | None = None) -> Config:
    """The config of one (run, N): compressor, N and its own model_dir.

    The model directory is `<training.model_dir>/<name>-N<n>`, name
    defaulting to the compressor.
    """
    name = name or compressor
    return base.replace(
        model={"compressor": compressor},
        data={"max_history": int(length)},
        training={
            "model_dir": os.path.join(
                base.training.model_dir, f"{name}-N{int(length)}"),
            "mode": "train",
        },
    )


def resolve_run(cfg: Config, run: ExperimentRun,
                load_preset: PresetLoader = load_config) -> ExperimentRun:
    """`run` checked against its config, lengths defaulted.

    Raises:
      ConfigError: an unknown compressor, a bad preset or override, a
        shuffled tokenizer without a seed, or an N whose config does not
        build; naming the run and the field.
    """
    names = supported_compressors()
    if run.compressor not in names:
        raise ConfigError(
            f"{where(run)}: field compressor: unknown compressor "
            f"{run.compressor!r} (choose from {', '.join(names)})")
    base = run_base(cfg, run, load_preset)
    if run.tokenizer == "shuffled" and base.training.seed < 0:
        raise ConfigError(
            f"{where(run)}: field tokenizer 'shuffled' needs training.seed "
            f">= 0 (the permutation's seed), got {base.training.seed}")
    lengths = run.lengths or (base.data.max_history,)
    for n in lengths:
        try:
            run_config(base, run.compressor, n, run.name)
        except ConfigError as e:
            raise ConfigError(f"{where(run)}: N = {n}: {e}") from None
    return dataclasses.replace(run, lengths=tuple(lengths))


def parse_plan(plan: str | os.PathLike | Mapping, cfg: Config,
               load_preset: PresetLoader = load_config) -> ExperimentPlan:
    """Checks a plan (path or parsed JSON) against `cfg`; runs resolved.

    Raises:
      ConfigError: naming the run and the field, before anything runs.
    """
    parsed = experiment_plan_from_dict(read_plan(plan))
    runs = tuple(resolve_run(cfg, run, load_preset) for run in parsed.runs)
    return dataclasses.replace(parsed, runs=runs)


def compressor_plan(cfg: Config, compressors: Sequence[str],
                    lengths: Sequence[int] | None = None) -> ExperimentPlan:
    """The plan of compressor mode: one run per compressor, named after
    it, in group "main", over `lengths` (default [data.max_history]).

    Raises:
      ConfigError: no, unknown or duplicate compressors, or bad lengths.
    """
    compressors = list(compressors)
    lengths = list(lengths or [cfg.data.max_history])
    if not compressors:
        raise ConfigError("experiment_compressors must name at least one "
                          "compressor, got []")
    names = supported_compressors()
    unknown = [c for c in compressors if c not in names]
    if unknown:
        raise ConfigError(
            f"experiment_compressors: unknown compressor {unknown[0]!r} "
            f"(choose from {', '.join(names)})")
    if len(set(compressors)) != len(compressors):
        raise ConfigError(f"experiment_compressors has duplicates: "
                          f"{compressors}")
    bad = [n for n in lengths
           if isinstance(n, bool) or not isinstance(n, int) or n < 1]
    if bad:
        raise ConfigError(f"experiment_lengths must be ints >= 1, got "
                          f"{bad[0]!r}")
    runs = tuple(ExperimentRun(name=c, compressor=c,
                               lengths=tuple(int(n) for n in lengths))
                 for c in compressors)
    for run in runs:
        resolve_run(cfg, run)
    return ExperimentPlan(runs=runs)


def plan_jobs(plan: ExperimentPlan, by_length: bool = False
              ) -> list[tuple[ExperimentRun, int]]:
    """The (run, N) pairs in training order: run by run (a plan), or N by
    N across the runs (`by_length`, compressor mode)."""
    if not by_length:
        return [(run, n) for run in plan.runs for n in run.lengths]
    lengths = list(dict.fromkeys(n for run in plan.runs
                                 for n in run.lengths))
    return [(run, n) for n in lengths for run in plan.runs
            if n in run.lengths]
