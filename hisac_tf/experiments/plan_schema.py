"""The experiment plan's schema: its typed runs, parsed and checked.

The plan of `hisac-experiment` (its JSON layout: `hisac_tf.experiments.
plan`): named runs, each a compressor over history lengths with its own
config overrides. Parsed here from the config module alone, without the
model code or TensorFlow; `hisac_tf.experiments.plan` checks the
compressor names and builds every run's config before anything trains.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from hisac_tf.config import NAME_CHARS, Config, ConfigError

# The config's sections (its dataclass fields), which a run's "set" keys
# must name.
SECTIONS = tuple(f.name for f in dataclasses.fields(Config)
                 if dataclasses.is_dataclass(f.default))
EXPERIMENT_GROUP = "main"
EXPERIMENT_TOKENIZERS = ("trained", "shuffled")
EXPERIMENT_PLAN_KEYS = ("runs", "description", "generate_data")
EXPERIMENT_RUN_KEYS = ("name", "compressor", "lengths", "group", "set",
                       "tokenizer", "seeds", "config")
# Config keys each run sets itself: not allowed in a run's "set".
EXPERIMENT_FIXED_KEYS = {
    "model.compressor": "compressor",
    "data.max_history": "lengths",
    "training.model_dir": "name",
    "training.mode": None,
}


@dataclasses.dataclass(frozen=True)
class ExperimentRun:
    """One named run of an experiment: a compressor over its lengths.

    Attributes:
      name: unique, names the model directories `<name>-N<n>`.
      compressor: the `model.compressor` of the run.
      lengths: the history lengths N, in order; () until resolved against
        the run's config (default [data.max_history]).
      group: the results table the run's rows go to.
      overrides: {"section.key": value} applied to the run's base config.
      tokenizer: "trained" or "shuffled" (SIDs and latents permuted).
      config: a preset name or JSON path the run starts from instead of
        the job's config ("" for the job's).
      seed_of: the plan entry a `seeds` list expanded into this run ("" for
        a run written out in the plan).
    """

    name: str
    compressor: str
    lengths: tuple[int, ...] = ()
    group: str = EXPERIMENT_GROUP
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tokenizer: str = "trained"
    config: str = ""
    seed_of: str = ""

    def to_dict(self) -> dict:
        out = {
            "name": self.name, "compressor": self.compressor,
            "lengths": list(self.lengths), "group": self.group,
            "set": dict(self.overrides), "tokenizer": self.tokenizer,
        }
        if self.config:
            out["config"] = self.config
        if self.seed_of:
            out["seed_of"] = self.seed_of
        return out


@dataclasses.dataclass(frozen=True)
class ExperimentPlan:
    """The runs of an experiment, in the order they train.

    Attributes:
      runs: the runs, a `seeds` entry already expanded into one run per
        seed (`<name>-s<seed>`, training.seed set).
      description: free text for the results.
      generate_data: the plan asks for the synthetic data of a config
        whose data.data_dir holds none (never done unless asked).
    """

    runs: tuple[ExperimentRun, ...]
    description: str = ""
    generate_data: bool = False


def _plan_where(index: int, name: str | None = None) -> str:
    if name is not None:
        return f"experiment plan run {name!r}"
    return f"experiment plan runs[{index}]"


def check_run_overrides(overrides: Any, where: str) -> dict[str, Any]:
    """{"section.key": value} of a run, checked for shape only.

    Raises:
      ConfigError: naming `where`, the field `set` and the key that is
        malformed, of an unknown section or fixed by the run.
    """
    if not isinstance(overrides, Mapping):
        raise ConfigError(
            f"{where}: field set must map section.key to a value, got "
            f"{overrides!r}")
    for key in overrides:
        parts = key.split(".") if isinstance(key, str) else []
        if len(parts) != 2 or not all(parts):
            raise ConfigError(
                f"{where}: field set key {key!r} must look like "
                "section.key (e.g. model.routing_temperature)")
        if key in EXPERIMENT_FIXED_KEYS:
            field = EXPERIMENT_FIXED_KEYS[key]
            raise ConfigError(
                f"{where}: field set key {key!r} is set by the run itself"
                + (f" (use the run's field {field})" if field else ""))
        if parts[0] not in SECTIONS:
            raise ConfigError(
                f"{where}: field set key {key!r}: unknown config section "
                f"{parts[0]!r} (known: {', '.join(SECTIONS)})")
    return dict(overrides)


def apply_run_overrides(cfg: Config, overrides: Mapping[str, Any],
                        where: str = "experiment run") -> Config:
    """`cfg` with a run's {"section.key": value} applied (checked like
    --set).

    Raises:
      ConfigError: naming `where` and the field `set`.
    """
    update: dict[str, dict] = {}
    for key, value in check_run_overrides(overrides, where).items():
        section, name = key.split(".")
        update.setdefault(section, {})[name] = value
    try:
        return cfg.replace(**update)
    except ConfigError as e:
        raise ConfigError(f"{where}: field set: {e}") from None


def _check_int_list(values: Any, where: str, field: str, low: int,
                    what: str) -> tuple[int, ...]:
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(
            f"{where}: field {field} must be a non-empty list of {what}, "
            f"got {values!r}")
    bad = [n for n in values
           if isinstance(n, bool) or not isinstance(n, int) or n < low]
    if bad:
        raise ConfigError(
            f"{where}: field {field} must hold {what}, got {bad[0]!r}")
    if len(set(values)) != len(values):
        raise ConfigError(
            f"{where}: field {field} has duplicates: {list(values)}")
    return tuple(int(n) for n in values)


def _experiment_runs(entry: Any, index: int) -> list[ExperimentRun]:
    """The run(s) of one plan entry: one, or one per seed of `seeds`."""
    if not isinstance(entry, Mapping):
        raise ConfigError(
            f"{_plan_where(index)}: must be a JSON object, got {entry!r}")
    if "name" not in entry:
        raise ConfigError(f"{_plan_where(index)}: field name is missing")
    name = entry["name"]
    if (not isinstance(name, str) or not name
            or not set(name) <= NAME_CHARS):
        raise ConfigError(
            f"{_plan_where(index)}: field name must match "
            f"[A-Za-z0-9_.-]+, got {name!r}")
    where = _plan_where(index, name)
    unknown = [k for k in entry if k not in EXPERIMENT_RUN_KEYS]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (known: "
            f"{', '.join(EXPERIMENT_RUN_KEYS)})")
    if "compressor" not in entry:
        raise ConfigError(f"{where}: field compressor is missing")
    compressor = entry["compressor"]
    if not isinstance(compressor, str):
        raise ConfigError(
            f"{where}: field compressor must be a string, got "
            f"{compressor!r}")
    lengths = ()
    if "lengths" in entry:
        lengths = _check_int_list(entry["lengths"], where, "lengths", 1,
                                  "ints >= 1")
    group = entry.get("group", EXPERIMENT_GROUP)
    if not isinstance(group, str) or not group.strip() or "\n" in group:
        raise ConfigError(
            f"{where}: field group must be a non-empty one-line string, "
            f"got {group!r}")
    tokenizer = entry.get("tokenizer", "trained")
    if tokenizer not in EXPERIMENT_TOKENIZERS:
        raise ConfigError(
            f"{where}: field tokenizer must be one of "
            f"{', '.join(EXPERIMENT_TOKENIZERS)}, got {tokenizer!r}")
    preset = entry.get("config", "")
    if not isinstance(preset, str) or ("config" in entry and not preset):
        raise ConfigError(
            f"{where}: field config must name a preset or a JSON file, "
            f"got {preset!r}")
    overrides = check_run_overrides(entry.get("set", {}), where)
    run = ExperimentRun(
        name=name, compressor=compressor, lengths=lengths, group=group,
        overrides=overrides, tokenizer=tokenizer, config=preset)
    if "seeds" not in entry:
        return [run]
    seeds = _check_int_list(entry["seeds"], where, "seeds", 0,
                            "distinct ints >= 0")
    if "training.seed" in overrides:
        raise ConfigError(
            f"{where}: field seeds and field set key 'training.seed' both "
            "set the seed: use one")
    return [
        dataclasses.replace(
            run, name=f"{name}-s{seed}", seed_of=name,
            overrides={**overrides, "training.seed": seed})
        for seed in seeds
    ]


def experiment_plan_from_dict(values: Any) -> ExperimentPlan:
    """Builds an `ExperimentPlan` from its parsed JSON; unknown keys,
    duplicate names and bad values are errors naming the run and the
    field. Compressor names, presets and the runs' configs are checked
    by `hisac_tf.experiments.plan`.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(
            'experiment plan must be a JSON object {"runs": [...]}, got '
            f"{values!r}")
    unknown = [k for k in values if k not in EXPERIMENT_PLAN_KEYS]
    if unknown:
        raise ConfigError(
            f"experiment plan: unknown top-level key {unknown[0]!r} "
            f"(known: {', '.join(EXPERIMENT_PLAN_KEYS)})")
    description = values.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(
            "experiment plan: field description must be a string, got "
            f"{description!r}")
    generate = values.get("generate_data", False)
    if not isinstance(generate, bool):
        raise ConfigError(
            "experiment plan: field generate_data must be true or false, "
            f"got {generate!r}")
    entries = values.get("runs")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            "experiment plan: field runs must be a non-empty list, got "
            f"{entries!r}")
    runs, seen = [], {}
    for index, entry in enumerate(entries):
        for run in _experiment_runs(entry, index):
            if run.name in seen:
                raise ConfigError(
                    f"experiment plan: run name {run.name!r} is used twice "
                    f"(runs[{seen[run.name]}] and runs[{index}])")
            seen[run.name] = index
            runs.append(run)
    return ExperimentPlan(runs=tuple(runs), description=description,
                          generate_data=generate)
