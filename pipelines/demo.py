"""The main job, end to end on an embedded default (`make demo`).

    synthetic data → read-back summary → RQ-VAE tokenizer → training →
    evaluation (AUC, GAUC beside the Bayes-optimal figures, per slice,
    calibration and the reliability diagram) → SavedModel
    export → local gRPC PredictionService → scores of demo users over gRPC

Each stage writes under `runs/<preset>/` and is skipped when its outputs
from the same config are already there, so an interrupted demo resumes
(training itself resumes from its latest checkpoint; the export is reused
when the newest version was made from the latest checkpoint).
"""

from __future__ import annotations

import json
import os
import sys
import time

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf import json_io
from hisac_tf.config import Config
from hisac_tf.data import input_pipeline, synthetic
from hisac_tf.data.data_summary import summarize_data
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.training.checkpoints import select_checkpoint
from hisac_tf.training.evaluation import evaluate, format_report
from hisac_tf.training.sliced_evaluation import format_sliced
from hisac_tf.export import exporter
from hisac_tf.training.trainer import train
from pipelines import cli, tokenize_items
from serving import grpc_client, local_server


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
    total = 7
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
    results["inspect"] = summarize_data(cfg)
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
    results["train"] = train(cfg)
    print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr)

    t0 = _stage(5, total, "evaluation on the last days (eval split)")
    results["eval"] = evaluate(cfg)
    print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr)

    t0 = _stage(6, total, f"export → {cfg.export.export_dir}")
    results["export"] = export_latest(cfg)
    print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr)

    t0 = _stage(7, total, "local gRPC server → scoring demo users")
    results["grpc"] = score_over_grpc(cfg)
    print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr)

    results["seconds"] = time.time() - began
    run_dir = os.path.dirname(os.path.normpath(cfg.training.model_dir))
    out = os.path.join(run_dir, "demo_results.json")
    tf.io.gfile.makedirs(os.path.dirname(out))
    json_io.write_json(out, results, default=str)
    print(
        f"\ndone in {results['seconds']:.0f} s: "
        f"{format_report(results['eval'])}\n"
        f"{format_sliced(results['eval'])}\nresults: {out}",
        file=sys.stderr,
    )
    return results


def export_latest(cfg: Config) -> dict:
    """Exports a new version unless the newest came from the checkpoint
    export would take (the best by valid AUC when kept, else the latest)."""
    summary_path = os.path.join(cfg.export.export_dir, exporter.SUMMARY_FILE)
    _, latest = select_checkpoint(cfg)
    if tf.io.gfile.exists(summary_path):
        with tf.io.gfile.GFile(summary_path) as f:
            summary = json.load(f)
        if summary.get("checkpoint") == latest and tf.io.gfile.exists(
            summary.get("path", "")
        ):
            print(f"  {summary['path']} is from {latest}: reusing",
                  file=sys.stderr)
            return summary
    return exporter.export_model(cfg)


def score_over_grpc(cfg: Config, users: int = 3) -> dict:
    """Starts the local server, scores eval requests both ways, stops it."""
    spec = FeatureSpec.from_config(cfg.data, features=cfg.all_features)
    path = input_pipeline.list_files(
        os.path.join(cfg.data.data_dir, cfg.data.eval_pattern)
    )[0]
    features = grpc_client.requests_from_tfrecord(path, spec, users)
    labels = next(iter(input_pipeline.request_dataset(
        path, spec, users, compression=cfg.data.compression,
        deterministic=True, num_parallel_reads=1,
    )))["labels"].numpy()
    server, port = local_server.start_server(
        cfg.export.export_dir, model_name=cfg.export.model_name
    )
    try:
        with grpc_client.HisacClient(
            f"127.0.0.1:{port}", model_name=cfg.export.model_name, spec=spec
        ) as client:  # Closed before the server stops.
            client.wait_until_ready(timeout_s=60)
            ctr = client.predict(features)  # [R, C]
            user, cands = grpc_client.split_request(features)
            state = client.encode_user(user)
            two_step = client.score_with_state(state, cands)
            status = client.status()
    finally:
        local_server.stop(server)
    rows = []
    for r in range(len(ctr)):
        c = int(features["cand_count"][r])
        order = np.argsort(-ctr[r, :c])
        print(
            f"  user {int(features['user_id'][r])}: {c} candidates, "
            f"top 3 by ctr " + ", ".join(
                f"item {int(features['cand_item_ids'][r, i])} "
                f"ctr {ctr[r, i]:.3f} (clicked {int(labels[r, i])})"
                for i in order[:3]
            ),
            file=sys.stderr,
        )
        rows.append({
            "user_id": int(features["user_id"][r]),
            "ctr": ctr[r, :c].round(5).tolist(),
            "labels": labels[r, :c].astype(int).tolist(),
        })
    gap = float(np.max(np.abs(ctr - two_step)))
    versions = ", ".join(f"v{s['version']} {s['state']}" for s in status)
    print(f"  serving_default vs encode_user + score_with_state: max |Δ| "
          f"{gap:.2e}; server 127.0.0.1:{port} ({versions}), stopped",
          file=sys.stderr)
    return {"port": port, "requests": rows, "two_step_max_abs_diff": gap}


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
