"""The ranker's training loop.

`train(cfg)` builds the model under the `tf.distribute` strategy of
`training.strategy`, restores the latest checkpoint of
`training.model_dir` (a job killed mid-run and restarted resumes at its
last checkpoint: at most `checkpoint_every - 1` steps are redone), trains
for `training.train_steps` steps in all with a progress bar, writes a
checkpoint every `checkpoint_every` steps and TensorBoard summaries under
`<model_dir>/tensorboard`. The resolved config is written to
`<model_dir>/config.json`.
"""

from __future__ import annotations

import os
import sys
import time

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.config import Config, write_resolved
from hisac_tf.data import input_pipeline
from hisac_tf.training.checkpoints import (
    build_state,
    check_model_dir,
    checkpoint_manager,
)
from hisac_tf.training.strategy import make_strategy


def train(cfg: Config, progress: bool = True) -> dict:
    """The training loop; returns the final step and training metrics."""
    t = cfg.training
    check_model_dir(cfg)
    write_resolved(cfg, t.model_dir)
    tf.random.set_seed(t.seed)
    strategy = make_strategy(t.strategy)
    spec, model, optimizer, step, checkpoint = build_state(cfg, strategy)
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
