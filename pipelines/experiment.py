"""Job `experiment`: compressors and ablations on one data set, one table.

    python -m pipelines.experiment --config=tiny \
        --experiment_compressors=hisac,recent,full,kmeans \
        --experiment_lengths=10,20 \
        --experiment_output_dir=runs/experiments/tiny

    python -m pipelines.experiment --config=tiny \
        --experiment_plan=configs/experiments/plan.json

Compressor mode (`--experiment_compressors`, `--experiment_lengths`): for
each history length N in `lengths` (default: data.max_history) and each
compressor, trains a ranker with `hisac_tf.training.trainer.train` into
`<training.model_dir>/<compressor>-N<n>` and evaluates it with
`hisac_tf.training.evaluation.evaluate`: the same data, tokenizer, seed,
step budget,
optimisers and ranking head; only `model.compressor` and `data.max_history`
change (histories are truncated to the newest N by the reader, so every N
up to the generated length reads the same files). Each compressor is a run
named after it, in group "main".

Plan mode (`--experiment_plan=<JSON file>`, not together with the two flags
above): a list of named runs, trained in the plan's order, each over its
lengths, into `<training.model_dir>/<name>-N<n>`:

    {"description": "optional free text",
     "runs": [
      {"name": "hisac", "compressor": "hisac",
       "lengths": [100, 300, 1000, 3000], "group": "scaling"},
      {"name": "hisac_tau0.25", "compressor": "hisac", "lengths": [1000],
       "group": "temperature", "set": {"model.routing_temperature": 0.25}},
      {"name": "hisac_random_sids", "compressor": "hisac",
       "lengths": [1000], "group": "tokenizer", "tokenizer": "shuffled"}
    ]}

  name        required, unique, [A-Za-z0-9_.-]+; names the model directory
  compressor  required, one of hisac_tf.compressors.COMPRESSOR_NAMES
  lengths     list of ints >= 1 (default [data.max_history])
  group       string (default "main"); one results table per group
  set         {"section.key": JSON value} config overrides of this run
              (checked like --set; model.compressor, data.max_history,
              training.model_dir and training.mode belong to the run)
  tokenizer   "trained" (default) or "shuffled": the trained tables with
              the (SID, latent) rows permuted among items
              (`hisac_tf.tokenizer.semantic_tables.shuffled_tables`, seed
              training.seed), written once into
              `<output_dir>/tokenizer_shuffled_seed<seed>`

Unknown keys, duplicate names and bad values raise ConfigError naming the
run and the field before anything is trained.

Resuming: a run that finished leaves its table row in
`<model_dir>/experiment_row.json` beside its resolved config; a later
experiment with the same run config reuses that row instead of training and
evaluating again, and an interrupted run resumes training from its last
checkpoint (train.train). results.json / results.md are rewritten after
every run (`"complete": false` until the last), so a long experiment shows
its finished rows while it runs.

Per run and N the table has: name, AUC, GAUC, log loss, the Bayes-optimal
AUC and the gap to it (synthetic data), trainable parameters (all, and the
compressor's own), user-side, per-candidate and per-request multiply-adds
(`hisac_tf.compressors.flops`, C = data.max_candidates), and the mean
number of groups (agents) actually active per eval request. Writes
`results.json`, `results.md` (one table per group) and the plots
`auc_vs_length.png` (runs with more than one N), `auc_vs_flops.png` (the
first group) and `ablations.png` (AUC per run at the most frequent N) into
the output directory; a plot with nothing to show is not written. Data and
tokenizer tables are generated (`hisac_tf.data.synthetic`,
`pipelines.tokenize_items`) when `data.data_dir` / `tokenizer.output_dir`
hold none.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import sys
import time
from typing import Any, Mapping, Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf.compressors import COMPRESSOR_NAMES
from hisac_tf.compressors.flops import config_flops
from hisac_tf.config import Config, ConfigError
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.data import input_pipeline, synthetic
from hisac_tf.training.checkpoints import restore_latest
from hisac_tf.training.evaluation import evaluate
from hisac_tf.training.trainer import train
from pipelines import tokenize_items
from hisac_tf.tokenizer.semantic_tables import (
    MANIFEST,
    load_semantic_tables,
    save_semantic_tables,
    shuffled_tables,
)

ROW_FILE = "experiment_row.json"
DEFAULT_COMPRESSORS = ("hisac", "recent", "full", "kmeans")
DEFAULT_GROUP = "main"
TOKENIZERS = ("trained", "shuffled")
PLAN_KEYS = ("runs", "description")
RUN_KEYS = ("name", "compressor", "lengths", "group", "set", "tokenizer")
# Config keys each run sets itself: not allowed in a run's "set".
RUN_FIXED_KEYS = {
    "model.compressor": "compressor",
    "data.max_history": "lengths",
    "training.model_dir": "name",
    "training.mode": None,
}
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def ensure_inputs(cfg: Config, progress: bool = False) -> dict:
    """Generates the synthetic data and the tokenizer tables if missing."""
    done = {}
    pattern = os.path.join(cfg.data.data_dir, cfg.data.train_pattern)
    try:
        found = input_pipeline.list_files(pattern)
    except FileNotFoundError:
        found = []
    if not found:
        print(f"no data under {cfg.data.data_dir}: generating",
              file=sys.stderr)
        done["data"] = synthetic.generate(cfg, progress=progress)
    manifest = os.path.join(cfg.tokenizer.output_dir, MANIFEST)
    if not tf.io.gfile.exists(manifest):
        print(f"no tokenizer tables under {cfg.tokenizer.output_dir}: "
              "training the tokenizer", file=sys.stderr)
        done["tokenizer"] = tokenize_items.main(cfg, progress=progress)
    return done


@dataclasses.dataclass(frozen=True)
class Run:
    """One named run of an experiment: a compressor over its lengths.

    Attributes:
      name: unique, names the model directories `<name>-N<n>`.
      compressor: the `model.compressor` of the run.
      lengths: the history lengths N, in order.
      group: the results table the run's rows go to.
      overrides: {"section.key": value} applied to the base config.
      tokenizer: "trained" or "shuffled" (`shuffled_tables`).
    """

    name: str
    compressor: str
    lengths: tuple[int, ...]
    group: str = DEFAULT_GROUP
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tokenizer: str = "trained"

    def to_dict(self) -> dict:
        return {
            "name": self.name, "compressor": self.compressor,
            "lengths": list(self.lengths), "group": self.group,
            "set": dict(self.overrides), "tokenizer": self.tokenizer,
        }


def _where(index: int | None, name: str | None = None) -> str:
    if name is not None:
        return f"experiment plan run {name!r}"
    return f"experiment plan runs[{index}]"


def _config_sections(cfg: Config) -> list[str]:
    return [f.name for f in dataclasses.fields(cfg)
            if dataclasses.is_dataclass(getattr(cfg, f.name))]


def apply_overrides(cfg: Config, overrides: Mapping[str, Any],
                    where: str = "experiment run") -> Config:
    """`cfg` with {"section.key": value} applied (checked like --set).

    Raises:
      ConfigError: naming `where`, the field `set` and the key that is
        malformed, unknown, of the wrong type or fixed by the run.
    """
    if not isinstance(overrides, Mapping):
        raise ConfigError(
            f"{where}: field set must map section.key to a value, got "
            f"{overrides!r}")
    sections = _config_sections(cfg)
    update: dict[str, dict] = {}
    for key, value in overrides.items():
        parts = key.split(".") if isinstance(key, str) else []
        if len(parts) != 2 or not all(parts):
            raise ConfigError(
                f"{where}: field set key {key!r} must look like "
                "section.key (e.g. model.routing_temperature)")
        if key in RUN_FIXED_KEYS:
            field = RUN_FIXED_KEYS[key]
            raise ConfigError(
                f"{where}: field set key {key!r} is set by the run itself"
                + (f" (use the run's field {field})" if field else ""))
        section, name = parts
        if section not in sections:
            raise ConfigError(
                f"{where}: field set key {key!r}: unknown config section "
                f"{section!r} (known: {', '.join(sections)})")
        update.setdefault(section, {})[name] = value
    try:
        return cfg.replace(**update)
    except ConfigError as e:
        raise ConfigError(f"{where}: field set: {e}") from None


def read_plan(plan: str | os.PathLike | Mapping) -> Mapping:
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


def _parse_run(entry: Any, index: int, cfg: Config) -> Run:
    if not isinstance(entry, Mapping):
        raise ConfigError(
            f"{_where(index)}: must be a JSON object, got {entry!r}")
    if "name" not in entry:
        raise ConfigError(f"{_where(index)}: field name is missing")
    name = entry["name"]
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"{_where(index)}: field name must match [A-Za-z0-9_.-]+, "
            f"got {name!r}")
    where = _where(index, name)
    unknown = [k for k in entry if k not in RUN_KEYS]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (known: "
            f"{', '.join(RUN_KEYS)})")
    if "compressor" not in entry:
        raise ConfigError(f"{where}: field compressor is missing")
    compressor = entry["compressor"]
    if compressor not in COMPRESSOR_NAMES:
        raise ConfigError(
            f"{where}: field compressor: unknown compressor "
            f"{compressor!r} (choose from {', '.join(COMPRESSOR_NAMES)})")
    lengths = entry.get("lengths", [cfg.data.max_history])
    if not isinstance(lengths, (list, tuple)) or not lengths:
        raise ConfigError(
            f"{where}: field lengths must be a non-empty list of ints "
            f">= 1, got {lengths!r}")
    bad = [n for n in lengths
           if isinstance(n, bool) or not isinstance(n, int) or n < 1]
    if bad:
        raise ConfigError(
            f"{where}: field lengths must hold ints >= 1, got {bad[0]!r}")
    if len(set(lengths)) != len(lengths):
        raise ConfigError(
            f"{where}: field lengths has duplicates: {list(lengths)}")
    group = entry.get("group", DEFAULT_GROUP)
    if not isinstance(group, str) or not group.strip() or "\n" in group:
        raise ConfigError(
            f"{where}: field group must be a non-empty one-line string, "
            f"got {group!r}")
    tokenizer = entry.get("tokenizer", "trained")
    if tokenizer not in TOKENIZERS:
        raise ConfigError(
            f"{where}: field tokenizer must be one of "
            f"{', '.join(TOKENIZERS)}, got {tokenizer!r}")
    overrides = entry.get("set", {})
    base = apply_overrides(cfg, overrides, where)
    if tokenizer == "shuffled" and base.training.seed < 0:
        raise ConfigError(
            f"{where}: field tokenizer 'shuffled' needs training.seed >= "
            f"0 (the permutation's seed), got {base.training.seed}")
    for n in lengths:
        try:
            run_config(base, compressor, n, name)
        except ConfigError as e:
            raise ConfigError(f"{where}: N = {n}: {e}") from None
    return Run(name=name, compressor=compressor,
               lengths=tuple(int(n) for n in lengths), group=group,
               overrides=dict(overrides), tokenizer=tokenizer)


def parse_plan(plan: str | os.PathLike | Mapping, cfg: Config) -> list[Run]:
    """Checks a plan (path or parsed JSON) against `cfg`; its runs.

    Raises:
      ConfigError: naming the run and the field, before anything runs.
    """
    plan = read_plan(plan)
    if not isinstance(plan, Mapping):
        raise ConfigError(
            'experiment plan must be a JSON object {"runs": [...]}, got '
            f"{plan!r}")
    unknown = [k for k in plan if k not in PLAN_KEYS]
    if unknown:
        raise ConfigError(
            f"experiment plan: unknown top-level key {unknown[0]!r} "
            f"(known: {', '.join(PLAN_KEYS)})")
    if not isinstance(plan.get("description", ""), str):
        raise ConfigError(
            "experiment plan: field description must be a string, got "
            f"{plan['description']!r}")
    entries = plan.get("runs")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            "experiment plan: field runs must be a non-empty list, got "
            f"{entries!r}")
    runs, seen = [], {}
    for index, entry in enumerate(entries):
        run = _parse_run(entry, index, cfg)
        if run.name in seen:
            raise ConfigError(
                f"experiment plan: run name {run.name!r} is used twice "
                f"(runs[{seen[run.name]}] and runs[{index}])")
        seen[run.name] = index
        runs.append(run)
    return runs


def run_config(cfg: Config, compressor: str, length: int,
               name: str | None = None) -> Config:
    """The config of one run: compressor, N and its own model_dir.

    The model directory is `<training.model_dir>/<name>-N<n>`, name
    defaulting to the compressor.
    """
    name = name or compressor
    return cfg.replace(
        model={"compressor": compressor},
        data={"max_history": int(length)},
        training={
            "model_dir": os.path.join(
                cfg.training.model_dir, f"{name}-N{int(length)}"
            ),
            "mode": "train",
        },
    )


def shuffled_tokenizer(cfg: Config, output_dir: str) -> tuple[str, bool]:
    """Writes the shuffled tables of `cfg`'s tokenizer once; (dir, new).

    The directory is `<output_dir>/tokenizer_shuffled_seed<seed>`
    (training.seed); one holding a manifest is reused as is.
    """
    seed = cfg.training.seed
    directory = os.path.join(output_dir, f"tokenizer_shuffled_seed{seed}")
    if tf.io.gfile.exists(os.path.join(directory, MANIFEST)):
        return directory, False
    tables = load_semantic_tables(cfg.tokenizer.output_dir)
    save_semantic_tables(shuffled_tables(tables, seed), directory)
    return directory, True


def prepare_run(cfg: Config, run: Run, output_dir: str,
                progress: bool = False) -> tuple[Config, list[str]]:
    """The base config of `run` (overrides, tokenizer) and what was made.

    Inputs the overrides move elsewhere (data.data_dir,
    tokenizer.output_dir) are generated when missing, as for the base.
    """
    base = apply_overrides(cfg, run.overrides, _where(None, run.name))
    made = []
    if (base.data.data_dir, base.tokenizer.output_dir) != (
            cfg.data.data_dir, cfg.tokenizer.output_dir):
        made += list(ensure_inputs(base, progress=progress))
    if run.tokenizer == "shuffled":
        directory, new = shuffled_tokenizer(base, output_dir)
        if new:
            made.append(os.path.basename(directory))
        base = base.replace(tokenizer={"output_dir": directory})
    return base, made


def diagnose(cfg: Config) -> dict:
    """Parameters and groups active per eval request of a trained run."""
    files = input_pipeline.list_files(
        os.path.join(cfg.data.data_dir, cfg.data.eval_pattern)
    )
    spec = FeatureSpec.from_config(cfg.data)
    state, _, status = restore_latest(cfg, "diagnose", spec=spec)
    status.expect_partial()
    model = state.model
    ds = input_pipeline.request_dataset(
        files, spec, batch_size=cfg.data.batch_size,
        compression=cfg.data.compression, deterministic=True,
        num_parallel_reads=cfg.data.num_parallel_reads,
    )

    @tf.function(reduce_retracing=True)
    def active(batch):
        state = model.compress_user(batch, training=False)
        return state["num_active"]  # [B]

    counts = [active(batch).numpy() for batch in ds]
    counts = np.concatenate(counts) if counts else np.zeros(0)
    compressor_params = sum(
        int(np.prod(v.shape)) for v in model.compressor.trainable_weights
    )
    return {
        "parameters": int(sum(
            int(np.prod(v.shape)) for v in model.trainable_variables
        )),
        "compressor_parameters": int(compressor_params),
        "groups": int(model.num_groups),
        "active_mean": float(counts.mean()) if len(counts) else 0.0,
        "active_max": int(counts.max()) if len(counts) else 0,
        "eval_requests": int(len(counts)),
    }


def run_one(cfg: Config, compressor: str, length: int,
            progress: bool = False, run: Run | None = None) -> dict:
    """Trains, evaluates and diagnoses one (run, N); one table row.

    `cfg` is the run's base config (overrides and tokenizer applied);
    without `run` the run is the compressor alone (group "main").
    """
    run = run or Run(name=compressor, compressor=compressor,
                     lengths=(int(length),))
    run_cfg = run_config(cfg, compressor, length, run.name)
    done = finished_row(run_cfg)
    if done is not None:
        print(f"[experiment] {run.name} N={length}: finished before, "
              f"reusing {ROW_FILE}", file=sys.stderr, flush=True)
        return done
    began = time.time()
    trained = train(run_cfg, progress=progress)
    evaluated = evaluate(run_cfg, progress=progress)
    diag = diagnose(run_cfg)
    fl = config_flops(run_cfg)
    row = {
        "name": run.name,
        "group": run.group,
        "compressor": compressor,
        "n": int(length),
        "groups": diag["groups"],
        "auc": evaluated["auc"],
        "gauc": evaluated["gauc"],
        "log_loss": evaluated["log_loss"],
        "bayes_auc": evaluated.get("bayes_auc"),
        "bayes_gauc": evaluated.get("bayes_gauc"),
        "gap_to_bayes_auc": (
            evaluated["bayes_auc"] - evaluated["auc"]
            if "bayes_auc" in evaluated else None
        ),
        "parameters": diag["parameters"],
        "compressor_parameters": diag["compressor_parameters"],
        "user_flops": fl["user"],
        "per_candidate_flops": fl["per_candidate"],
        "request_flops": fl["request"],
        "candidates": run_cfg.data.max_candidates,
        "active_groups_mean": diag["active_mean"],
        "active_groups_max": diag["active_max"],
        "eval_impressions": evaluated["impressions"],
        "step": trained["step"],
        "train_seconds": trained.get("seconds", 0.0),
        "seconds": time.time() - began,
        "overrides": dict(run.overrides),
        "tokenizer": run.tokenizer,
        "tokenizer_dir": run_cfg.tokenizer.output_dir,
        "model_dir": run_cfg.training.model_dir,
    }
    with tf.io.gfile.GFile(
        os.path.join(run_cfg.training.model_dir, ROW_FILE), "w"
    ) as f:
        json.dump({"config": run_cfg.to_dict(), "row": row}, f, indent=2)
    tf.keras.backend.clear_session()
    return row


def finished_row(run_cfg: Config) -> dict | None:
    """The table row a finished run left in its model dir, if any.

    Reused only when it was written for exactly this run config (same
    data, tokenizer, model and training settings, same step budget), so an
    interrupted experiment resumes without evaluating finished runs again.
    """
    path = os.path.join(run_cfg.training.model_dir, ROW_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        saved = json.load(f)
    if saved.get("config") != json.loads(json.dumps(run_cfg.to_dict())):
        return None
    return saved["row"]


def _check_args(compressors: Sequence[str], lengths: Sequence[int]):
    if not compressors:
        raise ConfigError("experiment_compressors must name at least one "
                          "compressor, got []")
    unknown = [c for c in compressors if c not in COMPRESSOR_NAMES]
    if unknown:
        raise ConfigError(
            f"experiment_compressors: unknown compressor {unknown[0]!r} "
            f"(choose from {', '.join(COMPRESSOR_NAMES)})"
        )
    if len(set(compressors)) != len(compressors):
        raise ConfigError(f"experiment_compressors has duplicates: "
                          f"{list(compressors)}")
    bad = [n for n in lengths
           if isinstance(n, bool) or not isinstance(n, int) or n < 1]
    if bad:
        raise ConfigError(f"experiment_lengths must be ints >= 1, got "
                          f"{bad[0]!r}")


def main(
    cfg: Config,
    compressors: Sequence[str] = DEFAULT_COMPRESSORS,
    lengths: Sequence[int] | None = None,
    output_dir: str | None = None,
    progress: bool = False,
    plan: str | os.PathLike | Mapping | None = None,
) -> dict:
    """Runs the experiment; returns the results (also in results.json).

    Args:
      cfg: the base config (data, tokenizer, budget, head, seed).
      compressors: `model.compressor` values to compare (compressor mode).
      lengths: history lengths N (default: [data.max_history]).
      output_dir: where the table and plots go (default
        runs/experiments/<cfg.name>).
      progress: progress bars of the train/eval jobs.
      plan: a plan (path to its JSON file, or the parsed JSON; see the
        module docstring) instead of `compressors` and `lengths`.

    Raises:
      ConfigError: bad arguments or plan, or a plan together with
        non-default `compressors` / `lengths`.
    """
    if plan is not None:
        if list(compressors) != list(DEFAULT_COMPRESSORS) or lengths:
            raise ConfigError(
                "experiment_plan replaces experiment_compressors and "
                "experiment_lengths: use one or the other, not both")
        plan = read_plan(plan)
        runs = parse_plan(plan, cfg)
        jobs = [(run, n) for run in runs for n in run.lengths]
    else:
        compressors = list(compressors)
        lengths = [int(n) for n in (lengths or [cfg.data.max_history])]
        _check_args(compressors, lengths)
        runs = [Run(name=c, compressor=c, lengths=tuple(lengths))
                for c in compressors]
        jobs = [(run, n) for n in lengths for run in runs]
    output_dir = output_dir or os.path.join("runs", "experiments", cfg.name)
    tf.io.gfile.makedirs(output_dir)
    began = time.time()
    generated = set(ensure_inputs(cfg, progress=progress))
    bases: dict[str, Config] = {}
    rows = []
    for i, (run, n) in enumerate(jobs, start=1):
        count = f"run {i}/{len(jobs)}"
        if run.name not in bases:
            bases[run.name], made = prepare_run(cfg, run, output_dir,
                                                progress=progress)
            generated.update(made)
        label = (run.name if run.name == run.compressor
                 else f"{run.name} ({run.compressor})")
        print(f"\n[experiment] {count}: {label}, N = {n}",
              file=sys.stderr, flush=True)
        row = run_one(bases[run.name], run.compressor, n,
                      progress=progress, run=run)
        rows.append(row)
        write_outputs(results_dict(cfg, runs, jobs, generated, rows, plan,
                                   complete=False), output_dir, plots=False)
        print(f"[experiment] {count}: {run.name} N={n}: AUC "
              f"{row['auc']:.4f} GAUC {row['gauc']:.4f} "
              f"({row['seconds']:.0f} s)", file=sys.stderr, flush=True)
    results = results_dict(cfg, runs, jobs, generated, rows, plan,
                           complete=True)
    results["seconds"] = time.time() - began
    paths = write_outputs(results, output_dir)
    results["outputs"] = paths
    print(f"\n{format_markdown_tables(rows)}\nresults: {paths['json']}",
          file=sys.stderr)
    return results


def results_dict(cfg: Config, runs, jobs, generated, rows, plan,
                 complete: bool) -> dict:
    """What results.json holds; `complete` is False while runs remain."""
    results = {
        "config": cfg.to_dict(),
        "complete": complete,
        "compressors": list(dict.fromkeys(r.compressor for r in runs)),
        "lengths": list(dict.fromkeys(n for _, n in jobs)),
        "runs": [r.to_dict() for r in runs],
        "generated": sorted(generated),
        "rows": list(rows),
    }
    if plan is not None and plan.get("description"):
        results["description"] = plan["description"]
    return results


# ------------------------------------------------------------ outputs
def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def _num(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _name(row: dict) -> str:
    return row.get("name", row["compressor"])


def _group(row: dict) -> str:
    return row.get("group", DEFAULT_GROUP)


def format_table(rows: Sequence[dict]) -> str:
    """The Markdown results table, one row per (run, N)."""
    head = (
        "| name | compressor | N | G | AUC | GAUC | log loss | Bayes AUC | "
        "gap to Bayes AUC | params (compressor) | user MACs | "
        "MACs / candidate | MACs / request | groups active / user |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {_name(r)} | {r['compressor']} | {r['n']} | "
            f"{r['groups']} | "
            f"{_num(r['auc'])} | {_num(r['gauc'])} | "
            f"{_num(r['log_loss'])} | {_num(r['bayes_auc'])} | "
            f"{_num(r['gap_to_bayes_auc'])} | "
            f"{_si(r['parameters'])} ({_si(r['compressor_parameters'])}) | "
            f"{_si(r['user_flops'])} | {_si(r['per_candidate_flops'])} | "
            f"{_si(r['request_flops'])} | "
            f"{r['active_groups_mean']:.1f} |"
        )
    return "\n".join(lines)


def _legend(rows: Sequence[dict]) -> list[str]:
    """One line per run that differs from the base config."""
    lines, seen = [], set()
    for r in rows:
        name = _name(r)
        if name in seen:
            continue
        seen.add(name)
        notes = [f"{k} = {json.dumps(v)}"
                 for k, v in (r.get("overrides") or {}).items()]
        if r.get("tokenizer", "trained") == "shuffled":
            notes.append("shuffled tokenizer (SIDs and latents permuted "
                         "among items)")
        if notes:
            lines.append(f"- `{name}`: {'; '.join(notes)}")
    return lines


def format_markdown_tables(rows: Sequence[dict]) -> str:
    """One `## <group>` section per group, in first-appearance order."""
    parts = []
    for group in dict.fromkeys(_group(r) for r in rows):
        mine = [r for r in rows if _group(r) == group]
        legend = _legend(mine)
        parts += [f"## {group}", ""]
        if legend:
            parts += legend + [""]
        parts += [format_table(mine), ""]
    return "\n".join(parts)


def write_outputs(results: dict, output_dir: str,
                  plots: bool = True) -> dict:
    """results.json, results.md and the plots; returns the paths written.

    Keys: json, markdown, and auc_vs_length, auc_vs_flops, ablations for
    the plots that had something to show (none with plots=False: the
    partial tables written after every run).
    """
    rows = results["rows"]
    paths = {
        "json": os.path.join(output_dir, "results.json"),
        "markdown": os.path.join(output_dir, "results.md"),
    }
    with tf.io.gfile.GFile(paths["json"], "w") as f:
        json.dump(results, f, indent=2)
    cfg = results["config"]
    c = cfg["data"]["max_candidates"]
    text = [f"# Experiment: {cfg['name']}", ""]
    if not results.get("complete", True):
        text += [f"**Partial: {len(rows)} of {len(results['runs'])} runs' "
                 "rows so far (the experiment is still running or was "
                 "interrupted).**", ""]
    if results.get("description"):
        text += [results["description"], ""]
    text += [
        f"Same data ({cfg['data']['data_dir']}), tokenizer, seed "
        f"{cfg['training']['seed']}, {cfg['training']['train_steps']} "
        f"training steps of batch {cfg['data']['batch_size']}, same head "
        f"(D = {cfg['model']['embedding_dim']}, H = "
        f"{cfg['model']['num_heads']}) unless a run's overrides say "
        f"otherwise; G = A = "
        f"{cfg['model']['num_agents']} groups except full / sim_hard "
        f"(G = N). MACs: multiply-adds per request "
        f"(hisac_tf/compressors/flops.py), C = {c} candidates.",
        "",
        format_markdown_tables(rows),
    ]
    with tf.io.gfile.GFile(paths["markdown"], "w") as f:
        f.write("\n".join(text))
    for key, write in (("auc_vs_length", plot_auc_vs_length),
                       ("auc_vs_flops", plot_auc_vs_flops),
                       ("ablations", plot_ablations)) if plots else ():
        path = os.path.join(output_dir, f"{key}.png")
        if write(rows, path):
            paths[key] = path
    return paths


# -------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bayes(rows: Sequence[dict]) -> float | None:
    bayes = [r["bayes_auc"] for r in rows if r.get("bayes_auc") is not None]
    return float(np.mean(bayes)) if bayes else None


def _save(fig, path: str) -> None:
    fig.tight_layout()
    with tf.io.gfile.GFile(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)


def _plot_series(rows: Sequence[dict], path: str, key: str, xlabel: str,
                 log: bool) -> bool:
    """AUC against `key`, one series per run name; False if no rows."""
    if not rows:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    try:
        for name in dict.fromkeys(_name(r) for r in rows):
            mine = sorted((r for r in rows if _name(r) == name),
                          key=lambda r: r[key])
            ax.plot([r[key] for r in mine], [r["auc"] for r in mine],
                    marker="o", label=name)
        bayes = _bayes(rows)
        if bayes is not None:
            ax.axhline(bayes, color="gray", linestyle="--",
                       label="Bayes-optimal AUC")
        if log:
            ax.set_xscale("log")
            if key == "n":  # Tick at the measured lengths, not at 10^k.
                ticks = sorted({r[key] for r in rows})
                ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("eval AUC")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        _save(fig, path)
    finally:
        plt.close(fig)
    return True


def plot_auc_vs_length(rows: Sequence[dict], path: str) -> bool:
    """AUC vs N of the runs with more than one N; False if none."""
    lengths = collections.defaultdict(set)
    for r in rows:
        lengths[_name(r)].add(r["n"])
    mine = [r for r in rows if len(lengths[_name(r)]) > 1]
    return _plot_series(mine, path, "n", "history length N (log scale)",
                        True)


def plot_auc_vs_flops(rows: Sequence[dict], path: str) -> bool:
    """AUC vs per-request MACs of the first group's rows; False if none."""
    first = _group(rows[0]) if rows else None
    mine = [r for r in rows if _group(r) == first]
    return _plot_series(mine, path, "request_flops",
                        "multiply-adds per request", True)


def plot_ablations(rows: Sequence[dict], path: str) -> bool:
    """Horizontal bars: AUC per run at the most frequent N; False if none.

    Ties between Ns go to the one that appears first.
    """
    if not rows:
        return False
    n = collections.Counter(r["n"] for r in rows).most_common(1)[0][0]
    mine = [r for r in rows if r["n"] == n]
    names = [_name(r) for r in mine]
    aucs = [float(r["auc"]) for r in mine]
    bayes = _bayes(mine)
    plt = _pyplot()
    fig, ax = plt.subplots(
        figsize=(6.4, max(2.4, 0.8 + 0.4 * len(mine))))
    try:
        y = np.arange(len(mine))
        ax.barh(y, aucs, color="tab:blue")
        for yi, auc in zip(y, aucs):
            ax.text(auc, yi, f" {auc:.4f}", va="center", fontsize="small")
        if bayes is not None:
            ax.axvline(bayes, color="gray", linestyle="--",
                       label="Bayes-optimal AUC")
            ax.legend(fontsize="small", loc="lower right")
        ax.set_yticks(y)
        ax.set_yticklabels(names)
        ax.invert_yaxis()  # Plan order from the top.
        values = aucs + ([bayes] if bayes is not None else [])
        low = min(0.5, min(values)) - 0.02
        ax.set_xlim(low, max(values) + 0.04)
        ax.set_xlabel(f"eval AUC at N = {n}")
        ax.grid(True, axis="x", alpha=0.3)
        _save(fig, path)
    finally:
        plt.close(fig)
    return True


# ---------------------------------------------------------------- CLI
def _define_flags() -> None:
    """This job's flags, defined once and only by its CLI."""
    from absl import flags

    if "experiment_compressors" not in flags.FLAGS:
        flags.DEFINE_list(
            "experiment_compressors", list(DEFAULT_COMPRESSORS),
            f"Compressors to compare ({', '.join(COMPRESSOR_NAMES)}).")
        flags.DEFINE_list(
            "experiment_lengths", [],
            "History lengths N (default: data.max_history).")
        flags.DEFINE_string(
            "experiment_plan", "",
            "JSON plan of named runs (see pipelines/experiment.py), "
            "instead of --experiment_compressors/--experiment_lengths.")
        flags.DEFINE_string(
            "experiment_output_dir", "",
            "Table and plots (default runs/experiments/<config name>).")
        flags.DEFINE_bool(
            "experiment_progress", False, "Progress bars of each run.")


def _main_from_flags(cfg: Config) -> dict:
    from absl import flags

    f = flags.FLAGS
    try:
        lengths = [int(n) for n in f.experiment_lengths]
    except ValueError:
        raise ConfigError(
            f"experiment_lengths must be ints, got {f.experiment_lengths}"
        ) from None
    return main(cfg, f.experiment_compressors, lengths or None,
                f.experiment_output_dir or None, f.experiment_progress,
                plan=f.experiment_plan or None)


def run() -> None:
    _define_flags()
    from pipelines import cli

    cli.run(_main_from_flags)


if __name__ == "__main__":
    run()
