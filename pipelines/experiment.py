"""Job `experiment`: every compressor on one data set, one table.

    python -m pipelines.experiment --config=tiny \
        --experiment_compressors=hisac,recent,full,kmeans \
        --experiment_lengths=10,20 \
        --experiment_output_dir=runs/experiments/tiny

For each history length N in `lengths` (default: data.max_history) and
each compressor, trains a ranker with `pipelines.train.train` into
`<training.model_dir>/<compressor>-N<n>` and evaluates it with
`pipelines.evaluate.main`: the same data, tokenizer, seed, step budget,
optimisers and ranking head; only `model.compressor` and `data.max_history`
change (histories are truncated to the newest N by the reader, so every N
up to the generated length reads the same files). A finished run found in
its model directory is not trained again (train.train resumes), so an
interrupted experiment continues.

Per run the table has: AUC, GAUC, log loss, the Bayes-optimal AUC and the
gap to it (synthetic data), trainable parameters (all, and the
compressor's own), user-side, per-candidate and per-request multiply-adds
(`hisac_tf.compressors.flops`, C = data.max_candidates), and the mean
number of groups (agents) actually active per eval request. Writes
`results.json`, `results.md` and the plots `auc_vs_length.png` and
`auc_vs_flops.png` into the output directory. Data and tokenizer tables
are generated (`pipelines.synthetic`, `pipelines.tokenize_items`) when
`data.data_dir` / `tokenizer.output_dir` hold none.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf.compressors import COMPRESSOR_NAMES
from hisac_tf.compressors.flops import config_flops
from hisac_tf.config import Config, ConfigError
from hisac_tf.feature_spec import FeatureSpec
from hisac_tf.semantic_tables import MANIFEST

DEFAULT_COMPRESSORS = ("hisac", "recent", "full", "kmeans")


def ensure_inputs(cfg: Config, progress: bool = False) -> dict:
    """Generates the synthetic data and the tokenizer tables if missing."""
    from pipelines import input_pipeline, synthetic, tokenize_items

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


def run_config(cfg: Config, compressor: str, length: int) -> Config:
    """The config of one run: compressor, N and its own model_dir."""
    return cfg.replace(
        model={"compressor": compressor},
        data={"max_history": int(length)},
        training={
            "model_dir": os.path.join(
                cfg.training.model_dir, f"{compressor}-N{int(length)}"
            ),
            "mode": "train",
        },
    )


def diagnose(cfg: Config) -> dict:
    """Parameters and groups active per eval request of a trained run."""
    from pipelines import input_pipeline, train

    files = input_pipeline.list_files(
        os.path.join(cfg.data.data_dir, cfg.data.eval_pattern)
    )
    spec = FeatureSpec.from_config(cfg.data)
    _, model, _, step, checkpoint = train.build(
        cfg, tf.distribute.get_strategy()
    )
    manager = train.checkpoint_manager(cfg, checkpoint, step)
    checkpoint.restore(manager.latest_checkpoint).expect_partial()
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
            progress: bool = False) -> dict:
    """Trains, evaluates and diagnoses one (compressor, N); one table row."""
    from pipelines import evaluate, train

    run_cfg = run_config(cfg, compressor, length)
    began = time.time()
    trained = train.train(run_cfg, progress=progress)
    evaluated = evaluate.main(run_cfg, progress=progress)
    diag = diagnose(run_cfg)
    fl = config_flops(run_cfg)
    row = {
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
        "model_dir": run_cfg.training.model_dir,
    }
    tf.keras.backend.clear_session()
    return row


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
) -> dict:
    """Runs the experiment; returns the results (also in results.json).

    Args:
      cfg: the base config (data, tokenizer, budget, head, seed).
      compressors: `model.compressor` values to compare.
      lengths: history lengths N (default: [data.max_history]).
      output_dir: where the table and plots go (default
        runs/experiments/<cfg.name>).
      progress: progress bars of the train/eval jobs.
    """
    compressors = list(compressors)
    lengths = [int(n) for n in (lengths or [cfg.data.max_history])]
    _check_args(compressors, lengths)
    output_dir = output_dir or os.path.join("runs", "experiments", cfg.name)
    tf.io.gfile.makedirs(output_dir)
    prepared = ensure_inputs(cfg, progress=progress)
    rows = []
    for n in lengths:
        for name in compressors:
            print(f"\n[experiment] {name}, N = {n}", file=sys.stderr,
                  flush=True)
            row = run_one(cfg, name, n, progress=progress)
            rows.append(row)
            print(f"[experiment] {name} N={n}: AUC {row['auc']:.4f} "
                  f"GAUC {row['gauc']:.4f} ({row['seconds']:.0f} s)",
                  file=sys.stderr, flush=True)
    results = {
        "config": cfg.to_dict(),
        "compressors": compressors,
        "lengths": lengths,
        "generated": sorted(prepared),
        "rows": rows,
    }
    paths = write_outputs(results, output_dir)
    results["outputs"] = paths
    print(f"\n{format_table(rows)}\nresults: {paths['json']}",
          file=sys.stderr)
    return results


# ------------------------------------------------------------ outputs
def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def _num(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def format_table(rows: Sequence[dict]) -> str:
    """The Markdown results table, one row per (N, compressor)."""
    head = (
        "| compressor | N | G | AUC | GAUC | log loss | Bayes AUC | "
        "gap to Bayes AUC | params (compressor) | user MACs | "
        "MACs / candidate | MACs / request | groups active / user |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['compressor']} | {r['n']} | {r['groups']} | "
            f"{_num(r['auc'])} | {_num(r['gauc'])} | "
            f"{_num(r['log_loss'])} | {_num(r['bayes_auc'])} | "
            f"{_num(r['gap_to_bayes_auc'])} | "
            f"{_si(r['parameters'])} ({_si(r['compressor_parameters'])}) | "
            f"{_si(r['user_flops'])} | {_si(r['per_candidate_flops'])} | "
            f"{_si(r['request_flops'])} | "
            f"{r['active_groups_mean']:.1f} |"
        )
    return "\n".join(lines)


def write_outputs(results: dict, output_dir: str) -> dict:
    """results.json, results.md and the two plots; returns their paths."""
    rows = results["rows"]
    paths = {
        "json": os.path.join(output_dir, "results.json"),
        "markdown": os.path.join(output_dir, "results.md"),
        "auc_vs_length": os.path.join(output_dir, "auc_vs_length.png"),
        "auc_vs_flops": os.path.join(output_dir, "auc_vs_flops.png"),
    }
    with tf.io.gfile.GFile(paths["json"], "w") as f:
        json.dump(results, f, indent=2)
    cfg = results["config"]
    c = cfg["data"]["max_candidates"]
    text = [
        f"# Compressor comparison: {cfg['name']}",
        "",
        f"Same data ({cfg['data']['data_dir']}), tokenizer, seed "
        f"{cfg['training']['seed']}, {cfg['training']['train_steps']} "
        f"training steps of batch {cfg['data']['batch_size']}, same head "
        f"(D = {cfg['model']['embedding_dim']}, H = "
        f"{cfg['model']['num_heads']}); G = A = "
        f"{cfg['model']['num_agents']} groups except full / sim_hard "
        f"(G = N). MACs: multiply-adds per request "
        f"(hisac_tf/compressors/flops.py), C = {c} candidates.",
        "",
        format_table(rows),
        "",
    ]
    with tf.io.gfile.GFile(paths["markdown"], "w") as f:
        f.write("\n".join(text))
    plot(rows, paths["auc_vs_length"], paths["auc_vs_flops"])
    return paths


def plot(rows: Sequence[dict], length_path: str, flops_path: str) -> None:
    """AUC vs N and AUC vs per-request MACs, one series per compressor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["compressor"] for r in rows))
    bayes = [r["bayes_auc"] for r in rows if r["bayes_auc"] is not None]
    for path, key, xlabel, log in (
        (length_path, "n", "history length N", False),
        (flops_path, "request_flops", "multiply-adds per request", True),
    ):
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for name in names:
            mine = sorted((r for r in rows if r["compressor"] == name),
                          key=lambda r: r[key])
            ax.plot([r[key] for r in mine], [r["auc"] for r in mine],
                    marker="o", label=name)
        if bayes:
            ax.axhline(float(np.mean(bayes)), color="gray", linestyle="--",
                       label="Bayes-optimal AUC")
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("eval AUC")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        with tf.io.gfile.GFile(path, "wb") as f:
            fig.savefig(f, format="png", dpi=110)
        plt.close(fig)


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
                f.experiment_output_dir or None, f.experiment_progress)


def run() -> None:
    _define_flags()
    from pipelines import cli

    cli.run(_main_from_flags)


if __name__ == "__main__":
    run()
