"""Job: train the HiSAC ranker (modes train / eval / train_and_eval).

`main(cfg) -> dict` builds the model under a `tf.distribute` strategy
scope, restores the latest checkpoint of `cfg.training.model_dir` (so a
job killed mid-run and restarted resumes at its last checkpoint: at most
`checkpoint_every - 1` steps are redone, none is lost twice), trains for
`cfg.training.train_steps` steps in all with a progress bar, writes a
checkpoint every `checkpoint_every` steps and TensorBoard summaries under
`<model_dir>/tensorboard`, and (train_and_eval) runs `pipelines.evaluate`.
The resolved config is written to `<model_dir>/config.json`.
"""

from __future__ import annotations

import json
import os
import sys
import time

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.config import Config, ConfigError, write_resolved
from hisac_tf.feature_spec import FeatureSpec
from hisac_tf.models.build import build_model, build_optimizer
from hisac_tf.semantic_tables import load_semantic_tables
from pipelines import input_pipeline


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The distribution strategy named by `training.strategy`."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"training.strategy {name!r} is not supported")


def build(cfg: Config, strategy: tf.distribute.Strategy):
    """Model, optimizer and checkpoint, created under `strategy.scope()`."""
    spec = FeatureSpec.from_config(cfg.data)
    tables = load_semantic_tables(cfg.tokenizer.output_dir)
    with strategy.scope():
        model = build_model(cfg, spec, tables)
        optimizer = build_optimizer(cfg, model)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, step=step
        )
    return spec, model, optimizer, step, checkpoint


def checkpoint_manager(cfg: Config, checkpoint, step):
    return tf.train.CheckpointManager(
        checkpoint,
        os.path.join(cfg.training.model_dir, "checkpoints"),
        max_to_keep=3,
        step_counter=step,
    )


# Sections that fix the model's variables: a checkpoint trained under other
# values cannot be resumed.
MODEL_SECTIONS = ("model", "tokenizer")


def check_model_dir(cfg: Config) -> None:
    """Refuses to resume checkpoints written under another model config."""
    path = os.path.join(cfg.training.model_dir, "config.json")
    if not tf.io.gfile.exists(path):
        return
    with tf.io.gfile.GFile(path) as f:
        old = json.load(f)
    new = cfg.to_dict()
    for section in MODEL_SECTIONS:
        previous = old.get(section, {})
        for key, value in new[section].items():
            # Keys absent from an older config.json were not settable then.
            before = previous.get(key, value)
            if before != value:
                raise ConfigError(
                    f"training.model_dir {cfg.training.model_dir} holds a "
                    f"model trained with {section}.{key}={before!r}, not "
                    f"{value!r}: use another training.model_dir or delete "
                    "that one"
                )


def train(cfg: Config, progress: bool = True) -> dict:
    """The training loop; returns the final step and training metrics."""
    t = cfg.training
    check_model_dir(cfg)
    write_resolved(cfg, t.model_dir)
    tf.random.set_seed(t.seed)
    strategy = make_strategy(t.strategy)
    spec, model, optimizer, step, checkpoint = build(cfg, strategy)
    manager = checkpoint_manager(cfg, checkpoint, step)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).expect_partial()
        print(
            f"resumed from {manager.latest_checkpoint} at step "
            f"{int(step.numpy())}", file=sys.stderr,
        )
    start = int(step.numpy())
    if start >= t.train_steps:
        return {"step": start, "resumed_at": start, "steps_run": 0}

    files = input_pipeline.list_files(
        os.path.join(cfg.data.data_dir, cfg.data.train_pattern)
    )
    ds = input_pipeline.request_dataset(
        files, spec, cfg.data.batch_size,
        compression=cfg.data.compression,
        shuffle_buffer=cfg.data.shuffle_buffer,
        repeat=True,
        deterministic=cfg.data.deterministic,
        seed=t.seed + start,  # A resumed run sees a fresh shuffle.
        num_parallel_reads=cfg.data.num_parallel_reads,
        drop_remainder=strategy.num_replicas_in_sync > 1,
    )
    dist_ds = strategy.experimental_distribute_dataset(ds)
    replicas = strategy.num_replicas_in_sync

    def replica_step(batch):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(batch, training=True)
            scaled = loss / replicas
        variables = model.trainable_variables
        grads = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    @tf.function
    def train_step(batch):
        losses = strategy.run(replica_step, args=(batch,))
        step.assign_add(1)
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, losses, None)

    writer = tf.summary.create_file_writer(
        os.path.join(t.model_dir, "tensorboard", "train")
    )
    bar = tf.keras.utils.Progbar(
        t.train_steps, stateful_metrics=["loss", "auc"],
        verbose=1 if progress else 0,
    )
    # The task's AUC accumulates over the run (shown as "auc").
    running_auc = {m.name: m for m in model.metrics}["auc"]
    iterator = iter(dist_ds)
    began = time.time()
    loss = float("nan")
    with input_pipeline.diagnosed(files, spec, cfg.data.compression):
        while int(step.numpy()) < t.train_steps:
            loss = float(train_step(next(iterator)))
            current = int(step.numpy())
            auc = float(running_auc.result())
            if current % t.log_every == 0 or current == t.train_steps:
                with writer.as_default(step=current):
                    tf.summary.scalar("loss", loss)
                    tf.summary.scalar("auc", auc)
                bar.update(current, [("loss", loss), ("auc", auc)])
            if current % t.checkpoint_every == 0:
                manager.save(checkpoint_number=current)
    final = int(step.numpy())
    latest = manager.latest_checkpoint or ""
    if not latest.endswith(f"-{final}"):
        manager.save(checkpoint_number=final)
    seconds = time.time() - began
    return {
        "step": final,
        "resumed_at": start,
        "steps_run": final - start,
        "final_loss": loss,
        "train_auc_running": float(running_auc.result()),
        "seconds": seconds,
        "steps_per_second": (final - start) / max(seconds, 1e-9),
    }


def main(cfg: Config, progress: bool = True) -> dict:
    results: dict = {"mode": cfg.training.mode}
    if cfg.training.mode in ("train", "train_and_eval"):
        results["train"] = train(cfg, progress=progress)
    if cfg.training.mode in ("eval", "train_and_eval"):
        from pipelines import evaluate

        results["eval"] = evaluate.main(cfg, progress=progress)
    path = os.path.join(cfg.training.model_dir, "train_results.json")
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(results, f, indent=2)
    return results


def run():
    from pipelines import cli

    cli.run(main)


if __name__ == "__main__":
    run()
