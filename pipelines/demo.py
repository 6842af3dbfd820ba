"""The main job, end to end on an embedded default (`make demo`).

    synthetic data → read-back summary → RQ-VAE tokenizer → training →
    evaluation (AUC, GAUC beside the Bayes-optimal figures)

Each stage writes under `runs/<preset>/` and is skipped when its outputs
from the same config are already there, so an interrupted demo resumes
(training itself resumes from its latest checkpoint).
"""

from __future__ import annotations

import json
import os
import sys
import time

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.config import Config


def _stage(number: int, total: int, title: str) -> float:
    print(f"\n[{number}/{total}] {title}", file=sys.stderr, flush=True)
    return time.time()


def _same_config(path: str, section: str, cfg: Config) -> bool:
    """Whether `path` (a resolved config.json) used the same section."""
    if not tf.io.gfile.exists(path):
        return False
    with tf.io.gfile.GFile(path) as f:
        old = json.load(f)
    return old.get(section) == cfg.to_dict()[section]


def main(cfg: Config) -> dict:
    from pipelines import evaluate, inspect_data, synthetic, tokenize_items
    from pipelines import train

    total = 5
    results: dict = {"config": cfg.name}
    began = time.time()

    t0 = _stage(1, total, f"synthetic data → {cfg.data.data_dir}")
    data_cfg = os.path.join(cfg.data.data_dir, "config.json")
    if _same_config(data_cfg, "synthetic", cfg) and _same_config(
        data_cfg, "data", cfg
    ):
        with tf.io.gfile.GFile(
            os.path.join(cfg.data.data_dir, "summary.json")
        ) as f:
            results["data"] = json.load(f)
        print("  already generated with this config: reusing",
              file=sys.stderr)
    else:
        results["data"] = synthetic.generate(cfg)
    print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr)

    t0 = _stage(2, total, "reading the data back through the input pipeline")
    results["inspect"] = inspect_data.main(cfg)
    print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr)

    t0 = _stage(3, total, f"RQ-VAE tokenizer → {cfg.tokenizer.output_dir}")
    tok_cfg = os.path.join(cfg.tokenizer.output_dir, "config.json")
    report = os.path.join(cfg.tokenizer.output_dir, "tokenizer_report.json")
    if all(
        _same_config(tok_cfg, section, cfg)
        for section in ("tokenizer", "synthetic", "data")
    ) and tf.io.gfile.exists(report):
        with tf.io.gfile.GFile(report) as f:
            results["tokenizer"] = json.load(f)
        print("  already trained with this config: reusing", file=sys.stderr)
    else:
        results["tokenizer"] = tokenize_items.main(cfg)
        # Checkpoints trained on older semantic tables are meaningless now.
        if tf.io.gfile.exists(cfg.training.model_dir):
            print(f"  new tables: removing stale {cfg.training.model_dir}",
                  file=sys.stderr)
            tf.io.gfile.rmtree(cfg.training.model_dir)
    print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr)

    t0 = _stage(4, total, f"training HiSAC → {cfg.training.model_dir}")
    results["train"] = train.train(cfg)
    print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr)

    t0 = _stage(5, total, "evaluation on the last days (eval split)")
    results["eval"] = evaluate.main(cfg)
    print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr)

    results["seconds"] = time.time() - began
    out = os.path.join("runs", cfg.name, "demo_results.json")
    tf.io.gfile.makedirs(os.path.dirname(out))
    with tf.io.gfile.GFile(out, "w") as f:
        json.dump(results, f, indent=2, default=str)
    print(
        f"\ndone in {results['seconds']:.0f} s: "
        f"{evaluate.format_report(results['eval'])}\nresults: {out}",
        file=sys.stderr,
    )
    return results


def run():
    from pipelines import cli

    cli.run(main)


if __name__ == "__main__":
    run()
