"""The experiment runner: train, evaluate and diagnose each (run, N).

For each (run, N) of a plan, `run_one` trains a ranker with
`hisac_tf.training.trainer.train` into `<training.model_dir>/<name>-N<n>`
and evaluates it with `hisac_tf.training.evaluation.evaluate`: the same
data, tokenizer, seed, step budget, optimisers and ranking head unless the
run's overrides say otherwise; only `model.compressor` and
`data.max_history` change (histories are truncated to the newest N by the
reader, so every N up to the generated length reads the same files).

Inputs: the data must exist under `data.data_dir` (`train_pattern`); it is
generated (`hisac_tf.data.synthetic`) only when asked (`generate_data`),
never as a fallback for a wrong path. Missing tokenizer tables are trained
by the injected `train_tokenizer(cfg, progress=...)` (the job passes the
tokenizer job's main).

Resuming: a run that finished leaves its table row in
`<model_dir>/experiment_row.json` beside its resolved config; a later
experiment with the same run config reuses that row instead of training
and evaluating again, and an interrupted run resumes training from its
last checkpoint. results.json / results.md are rewritten after every run
(`"complete": false` until the last). "seconds" in results.json is the sum
of the runs' own seconds (a reused row keeps the seconds it took), so a
resumed experiment reports its whole cost; a run interrupted by an error
or Ctrl-C leaves its seconds so far in `<model_dir>/experiment_seconds.json`
and, resumed, reports them plus the resumed invocation's.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable, Mapping

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf import json_io
from hisac_tf.compressors.flops import config_flops
from hisac_tf.config import Config, ExperimentPlan, ExperimentRun, load_config
from hisac_tf.data import input_pipeline, synthetic
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.experiments import report
from hisac_tf.experiments.plan import (
    PresetLoader,
    plan_jobs,
    run_base,
    run_config,
)
from hisac_tf.tokenizer.semantic_tables import (
    MANIFEST,
    load_semantic_tables,
    save_semantic_tables,
    shuffled_tables,
)
from hisac_tf.layers.routing_diagnostics import ROUTING_KEYS
from hisac_tf.training.model_selection import CURVE_FILE, METRIC
from hisac_tf.training.checkpoints import restore_latest
from hisac_tf.training.evaluation import evaluate
from hisac_tf.training.trainer import train

ROW_FILE = "experiment_row.json"
# An unfinished run's seconds so far (interrupted invocations).
SECONDS_FILE = "experiment_seconds.json"
# Written by training into the model dir (read_learning_curve).
LEARNING_CURVE_FILE = CURVE_FILE
# Trains the tokenizer of `cfg` into cfg.tokenizer.output_dir.
TokenizerTrainer = Callable[..., Mapping]


def ensure_inputs(cfg: Config, train_tokenizer: TokenizerTrainer | None,
                  generate_data: bool = False,
                  progress: bool = False) -> dict:
    """Checks the data and the tokenizer tables of `cfg`; makes the ones
    it may make. Returns {"data": summary, "tokenizer": report} for what
    it made.

    Args:
      cfg: the config whose data.data_dir and tokenizer.output_dir are
        used.
      train_tokenizer: `f(cfg, progress=...)` writing the tables into
        cfg.tokenizer.output_dir; None: missing tables are an error.
      generate_data: write the synthetic data set of `cfg` when
        data.data_dir holds none (never done otherwise).
      progress: progress lines of the generator and the tokenizer.
    Raises:
      FileNotFoundError: no training data (and generate_data is False), or
        no tokenizer tables and no `train_tokenizer`; naming the path and
        what was expected there.
    """
    done = {}
    pattern = os.path.join(cfg.data.data_dir, cfg.data.train_pattern)
    try:
        found = input_pipeline.list_files(pattern)
    except FileNotFoundError:
        found = []
    if not found and not generate_data:
        raise FileNotFoundError(
            f"no training data under data.data_dir={cfg.data.data_dir!r}: "
            f"nothing matches {pattern!r} (data.train_pattern "
            f"{cfg.data.train_pattern!r}). Point data.data_dir at the "
            "output of hisac-import or hisac-generate, or pass "
            "--experiment_generate_data (plan key generate_data) to write "
            "this config's synthetic data there.")
    if not found:
        print(f"no data under {cfg.data.data_dir}: generating the "
              "synthetic data set (asked for)", file=sys.stderr)
        done["data"] = synthetic.generate(cfg, progress=progress)
    manifest = os.path.join(cfg.tokenizer.output_dir, MANIFEST)
    if not tf.io.gfile.exists(manifest):
        if train_tokenizer is None:
            raise FileNotFoundError(
                f"no tokenizer tables under tokenizer.output_dir="
                f"{cfg.tokenizer.output_dir!r} ({MANIFEST} missing): run "
                "hisac-tokenize first")
        print(f"no tokenizer tables under {cfg.tokenizer.output_dir}: "
              "training the tokenizer", file=sys.stderr)
        done["tokenizer"] = train_tokenizer(cfg, progress=progress)
    return done


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


def prepare_run(cfg: Config, run: ExperimentRun, output_dir: str, *,
                train_tokenizer: TokenizerTrainer | None,
                generate_data: bool = False,
                load_preset: PresetLoader = load_config,
                progress: bool = False) -> tuple[Config, list[str]]:
    """The base config of `run` (preset, overrides, tokenizer) and what
    was made for it.

    Inputs a preset or the overrides move elsewhere (data.data_dir,
    tokenizer.output_dir) go through `ensure_inputs`, as for the job's.
    """
    base = run_base(cfg, run, load_preset)
    made = []
    if (base.data.data_dir, base.tokenizer.output_dir) != (
            cfg.data.data_dir, cfg.tokenizer.output_dir):
        made += list(ensure_inputs(base, train_tokenizer, generate_data,
                                   progress=progress))
    if run.tokenizer == "shuffled":
        directory, new = shuffled_tokenizer(base, output_dir)
        if new:
            made.append(os.path.basename(directory))
        base = base.replace(tokenizer={"output_dir": directory})
    return base, made


def diagnose(cfg: Config) -> dict:
    """Parameters, groups active per eval request and, when the ranker
    reports them, the routing diagnostics (`ROUTING_KEYS`, None if not)
    of a trained run."""
    files = input_pipeline.list_files(
        os.path.join(cfg.data.data_dir, cfg.data.eval_pattern))
    spec = FeatureSpec.from_config(cfg.data, features=cfg.all_features)
    state, _, status = restore_latest(cfg, "diagnose", spec=spec)
    status.expect_partial()
    model = state.model
    ds = input_pipeline.request_dataset(
        files, spec, batch_size=cfg.data.batch_size,
        compression=cfg.data.compression, deterministic=True,
        num_parallel_reads=cfg.data.num_parallel_reads,
    )

    @tf.function(reduce_retracing=True)
    def user_side(batch):
        out = model.compress_user(batch, training=False, diagnostics=True)
        return {k: out[k] for k in ("num_active",) + ROUTING_KEYS
                if k in out}  # [B] each (or scalars)

    values: dict[str, list[np.ndarray]] = {}
    for batch in ds:
        out = user_side(batch)
        size = int(out["num_active"].shape[0])
        for key, value in out.items():
            value = np.asarray(value, dtype=np.float64)
            values.setdefault(key, []).append(
                np.full(size, value) if value.ndim == 0 else value)
    merged = {k: np.concatenate(v) for k, v in values.items()}
    counts = merged.get("num_active", np.zeros(0))
    out = {
        "parameters": int(sum(
            int(np.prod(v.shape)) for v in model.trainable_variables)),
        "compressor_parameters": int(sum(
            int(np.prod(v.shape))
            for v in (model.compressor.trainable_weights
                      if model.compressor is not None else ()))),
        "groups": int(model.num_groups),
        "active_mean": float(counts.mean()) if len(counts) else 0.0,
        "active_max": int(counts.max()) if len(counts) else 0,
        "eval_requests": int(len(counts)),
    }
    for key in ROUTING_KEYS:
        found = merged.get(key)
        out[key] = (float(found.mean())
                    if found is not None and len(found) else None)
    return out


def read_learning_curve(model_dir: str) -> dict:
    """The valid-AUC figures of `<model_dir>/learning_curve.json`.

    Returns {"learning_curve": [{step, valid_auc}] or None, "valid_auc":
    best valid AUC, "valid_auc_step": its step, "valid_auc_last": the last
    point's}; Nones when the file is absent. A file of another layout is
    reported on stderr (naming the path and the entry) and read as absent.
    """
    empty = {"learning_curve": None, "valid_auc": None,
             "valid_auc_step": None, "valid_auc_last": None}
    path = os.path.join(model_dir, LEARNING_CURVE_FILE)
    if not tf.io.gfile.exists(path):
        return empty
    with tf.io.gfile.GFile(path) as f:
        try:
            curve = json.load(f)
        except json.JSONDecodeError as e:
            print(f"warning: {path} is not valid JSON ({e}): no valid AUC "
                  "in the table", file=sys.stderr)
            return empty
    # The trainer writes {"points": [{"step", "auc", "gauc", ...}], ...}
    # (hisac_tf.training.model_selection); a plain list of {"step",
    # "valid_auc"} is read too.
    if isinstance(curve, Mapping) and isinstance(curve.get("points"), list):
        curve = [{"step": p.get("step"), "valid_auc": p.get(METRIC)}
                 if isinstance(p, Mapping) else p
                 for p in curve["points"]]
    points = []
    for i, p in enumerate(curve if isinstance(curve, list) else [curve]):
        if not (isinstance(p, Mapping) and isinstance(p.get("step"), int)
                and isinstance(p.get("valid_auc"), (int, float))):
            print(f"warning: {path}: entry {i} is {p!r}, expected "
                  '{"step": int, "valid_auc": float}: no valid AUC in the '
                  "table", file=sys.stderr)
            return empty
        points.append({"step": p["step"],
                       "valid_auc": float(p["valid_auc"])})
    if not points:
        return empty
    best = max(points, key=lambda p: p["valid_auc"])
    return {"learning_curve": points, "valid_auc": best["valid_auc"],
            "valid_auc_step": best["step"],
            "valid_auc_last": points[-1]["valid_auc"]}


def run_one(base: Config, run: ExperimentRun, length: int,
            progress: bool = False) -> dict:
    """Trains, evaluates and diagnoses one (run, N); its table row.

    `base` is the run's base config (preset, overrides and tokenizer
    applied). A row finished before for the same run config is reused.
    """
    run_cfg = run_config(base, run.compressor, length, run.name)
    done = finished_row(run_cfg)
    if done is not None:
        print(f"[experiment] {run.name} N={length}: finished before, "
              f"reusing {ROW_FILE}", file=sys.stderr, flush=True)
        return done
    began = time.time()
    before = seconds_before(run_cfg.training.model_dir)
    try:
        trained = train(run_cfg, progress=progress)
        evaluated = evaluate(run_cfg, progress=progress)
        diag = diagnose(run_cfg)
        fl = config_flops(run_cfg)
    except BaseException:  # Ctrl-C too: the time spent is kept.
        save_seconds_before(run_cfg.training.model_dir,
                            before + time.time() - began)
        raise
    elapsed = time.time() - began
    row = {
        "name": run.name,
        "group": run.group,
        "compressor": run.compressor,
        "n": int(length),
        "short_term_length": run_cfg.model.short_term_length,
        "seed": run_cfg.training.seed,
        "config_name": run_cfg.name,
        "seed_of": run.seed_of,
        "groups": diag["groups"],
        "auc": evaluated["auc"],
        "gauc": evaluated["gauc"],
        "log_loss": evaluated["log_loss"],
        "bayes_auc": evaluated.get("bayes_auc"),
        "bayes_gauc": evaluated.get("bayes_gauc"),
        "gap_to_bayes_auc": (
            evaluated["bayes_auc"] - evaluated["auc"]
            if "bayes_auc" in evaluated else None),
        **read_learning_curve(run_cfg.training.model_dir),
        "parameters": diag["parameters"],
        "compressor_parameters": diag["compressor_parameters"],
        "user_flops": fl["user"],
        "per_candidate_flops": fl["per_candidate"],
        "request_flops": fl["request"],
        "candidates": run_cfg.data.max_candidates,
        "active_groups_mean": diag["active_mean"],
        "active_groups_max": diag["active_max"],
        **{key: diag[key] for key in ROUTING_KEYS},
        "eval_impressions": evaluated["impressions"],
        "history_slices": report.history_slices(evaluated),
        "step": trained["step"],
        "train_seconds": trained.get("seconds", 0.0),
        "seconds": before + elapsed,
        "seconds_this_invocation": elapsed,
        "overrides": dict(run.overrides),
        "tokenizer": run.tokenizer,
        "tokenizer_dir": run_cfg.tokenizer.output_dir,
        "model_dir": run_cfg.training.model_dir,
    }
    json_io.write_json(os.path.join(run_cfg.training.model_dir, ROW_FILE),
                       {"config": run_cfg.to_dict(), "row": row})
    seconds_file = os.path.join(run_cfg.training.model_dir, SECONDS_FILE)
    if tf.io.gfile.exists(seconds_file):  # The row holds them now.
        tf.io.gfile.remove(seconds_file)
    tf.keras.backend.clear_session()
    return row


def seconds_before(model_dir: str) -> float:
    """Seconds earlier, interrupted invocations spent on this run."""
    path = os.path.join(model_dir, SECONDS_FILE)
    if not tf.io.gfile.exists(path):
        return 0.0
    with tf.io.gfile.GFile(path) as f:
        seconds = json.load(f).get("seconds")
    if not isinstance(seconds, (int, float)) or seconds < 0:
        print(f"warning: {path}: seconds is {seconds!r}, expected a number "
              ">= 0: not counted", file=sys.stderr)
        return 0.0
    return float(seconds)


def save_seconds_before(model_dir: str, seconds: float) -> None:
    """Keeps an interrupted run's seconds so far for its resumption."""
    tf.io.gfile.makedirs(model_dir)
    json_io.write_json(os.path.join(model_dir, SECONDS_FILE),
                       {"seconds": seconds})


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
    # The learning curve is read afresh (a reader may have learnt a layout).
    return {**saved["row"],
            **read_learning_curve(run_cfg.training.model_dir)}


def run_experiment(cfg: Config, plan: ExperimentPlan, *,
                   by_length: bool = False,
                   output_dir: str | None = None,
                   train_tokenizer: TokenizerTrainer | None = None,
                   generate_data: bool = False,
                   load_preset: PresetLoader = load_config,
                   progress: bool = False) -> dict:
    """Runs a checked plan (`plan.parse_plan`); returns the results (also
    in results.json, with results.md and the plots beside it).

    Args:
      cfg: the job's base config (data, tokenizer, budget, head, seed).
      plan: the runs; `plan.generate_data` asks for the data as
        `generate_data` does.
      by_length: train N by N across the runs (compressor mode) instead of
        run by run.
      output_dir: tables and plots (default runs/experiments/<cfg.name>).
      train_tokenizer: trains missing tokenizer tables (`ensure_inputs`).
      generate_data: generate missing data (`ensure_inputs`).
      load_preset: loads a run's `config` preset.
      progress: progress bars of the train / eval jobs.
    Raises:
      FileNotFoundError: missing data or tokenizer tables (`ensure_inputs`).
    """
    generate_data = generate_data or plan.generate_data
    jobs = plan_jobs(plan, by_length)
    output_dir = output_dir or os.path.join("runs", "experiments", cfg.name)
    tf.io.gfile.makedirs(output_dir)
    began = time.time()
    generated = set(ensure_inputs(cfg, train_tokenizer, generate_data,
                                  progress=progress))
    bases: dict[str, Config] = {}
    rows = []
    for i, (run, n) in enumerate(jobs, start=1):
        count = f"run {i}/{len(jobs)}"
        if run.name not in bases:
            bases[run.name], made = prepare_run(
                cfg, run, output_dir, train_tokenizer=train_tokenizer,
                generate_data=generate_data, load_preset=load_preset,
                progress=progress)
            generated.update(made)
        label = (run.name if run.name == run.compressor
                 else f"{run.name} ({run.compressor})")
        print(f"\n[experiment] {count}: {label}, N = {n}",
              file=sys.stderr, flush=True)
        row = run_one(bases[run.name], run, n, progress=progress)
        rows.append(row)
        report.write_outputs(
            report.results_dict(cfg, plan, jobs, generated, rows,
                                complete=False), output_dir, plots=False)
        print(f"[experiment] {count}: {run.name} N={n}: AUC "
              f"{row['auc']:.4f} GAUC {row['gauc']:.4f} "
              f"({row['seconds']:.0f} s)", file=sys.stderr, flush=True)
    results = report.results_dict(cfg, plan, jobs, generated, rows,
                                  complete=True)
    results["invocation_seconds"] = time.time() - began
    results["outputs"] = report.write_outputs(results, output_dir)
    print(f"\n{report.format_markdown_tables(rows)}\nresults: "
          f"{results['outputs']['json']}", file=sys.stderr)
    return results
