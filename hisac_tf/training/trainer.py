"""The ranker's training: `model.compile` + `model.fit`.

`train(cfg)` builds the model under the `tf.distribute` strategy of
`cluster.strategy`, compiles it with the paper's optimizer (Adagrad for
embedding tables, Adam for dense weights; `build_optimizer`) and trains
with `fit`, so every step is `tfrs.models.Model.train_step`: the task's
loss plus the regularisation losses (`sum(model.losses)`), whose gradient
reaches every regularised weight.

Kill-and-resume has `BackupAndRestore`'s semantics with the checkpoints
that evaluation and export restore: `train` restores the latest
checkpoint of `<model_dir>/checkpoints`, and `fit` runs the remaining
steps of `training.train_steps` (the total), writing a checkpoint every
`checkpoint_every` steps, so a job killed mid-run and restarted redoes at
most `checkpoint_every - 1` steps. TensorBoard gets the train curves
(`<model_dir>/tensorboard/train`: loss, regularization_loss, total_loss,
auc_approx, log_loss) and, with `training.valid_every > 0`, the valid
ones (`tensorboard/valid`: exact AUC, GAUC, log loss, agents per user),
with the best checkpoint by valid AUC kept under `<model_dir>/best` and
the learning curve in `<model_dir>/learning_curve.json`
(`ModelSelection`). The resolved config is written to
`<model_dir>/config.json`; a model_dir trained under another model config
is refused (`check_model_dir`). A NaN or infinite loss stops the run with
`NonFiniteLossError` before any later checkpoint is written
(`NonFiniteLossGuard`).

`train` always returns: the task roles of a cluster (a parameter-server
task that only serves, a non-chief worker with its own model_dir) are
`pipelines.train.run_task`'s, and `train` refuses to run as either
without it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf import json_io
from hisac_tf.config import Config, write_resolved
from hisac_tf.data import input_pipeline
from hisac_tf.data.split_files import split_files
from hisac_tf.distribute.strategy import (
    ClusterError,
    ClusterSettings,
    is_parameter_server,
    make_strategy,
    placement,
    read_tf_config,
    table_partitioning,
    task_of,
    task_role,
)
from hisac_tf.models.routing_plan import with_routing_plan
from hisac_tf.training.callbacks import (
    NonFiniteLossError,
    NonFiniteLossGuard,
    PeriodicCheckpoint,
    ProgressBar,
    StepCounter,
    TrainingSummaries,
    host_logs,
    summary_dir,
)
from hisac_tf.training import divergence
from hisac_tf.training.checkpoints import (
    CHECKPOINT_SUBDIR,
    build_state,
    check_model_dir,
    checkpoint_dir,
    checkpoint_manager,
)
from hisac_tf.training.model_selection import (
    ModelSelection,
    read_curve,
    valid_files,
)


def compile_for_training(model: tf.keras.Model,
                         optimizer: tf.keras.optimizers.Optimizer) -> None:
    """`model.compile(optimizer)` for TFRS's `train_step` / `test_step`.

    Call inside the strategy scope the model was built in. The loss and
    metrics are the model's own (its `tfrs.tasks.Ranking`).
    """
    model.compile(optimizer=optimizer)


def train(cfg: Config, progress: bool = True,
          callbacks: Sequence[tf.keras.callbacks.Callback] = (),
          resume_from: str | None = None) -> dict:
    """Trains to `training.train_steps`; returns the step and metrics.

    Args:
      cfg: the run's config.
      progress: show the progress bar.
      callbacks: further `fit` callbacks, called after the trainer's own
        (the global step and the checkpoint of a batch are done by then).
      resume_from: the model_dir whose latest checkpoint the run resumes
        from (default `training.model_dir`); a non-chief worker resumes
        from the chief's while writing under its own model_dir.

    Raises:
      ClusterError: TF_CONFIG makes this process a task that only serves
        (parameter_server), or a non-chief worker without `resume_from`:
        both are started through `pipelines.train.run_task`.

    Returns:
      step (final global step), resumed_at, steps_run, final_loss,
      regularization_loss, train_auc_approx (the 200-threshold running AUC
      of this run), seconds, steps_per_second and, with validation, best
      ({step, auc, checkpoint} by valid AUC) and valid_points.
    """
    settings = ClusterSettings.from_config(cfg.cluster)
    tf_config = read_tf_config()
    role = task_role(settings, tf_config)
    kind, index = task_of(tf_config)
    if role == "server":
        raise ClusterError(
            f"TF_CONFIG makes this process the {kind}:{index} task of "
            "parameter_server, which serves the chief and never trains: "
            "start it with pipelines.train.run_task (hisac-train)")
    if role == "worker" and resume_from is None:
        raise ClusterError(
            f"TF_CONFIG makes this process the non-chief {kind}:{index} "
            "task, which must not write the chief's model_dir: start it "
            "with pipelines.train.run_task (hisac-train), which gives it "
            "its own model_dir and the chief's checkpoints (resume_from)")
    t = cfg.training
    check_model_dir(cfg)
    # The strategy first: a multi-worker one must configure collective ops
    # before any TensorFlow op runs, and the shard checks below read records.
    strategy = make_strategy(settings)
    # Missing valid files fail here, before anything is built or trained.
    if t.valid_every:
        valid_files(cfg)
    files = split_files(cfg.data, "train")  # Missing data: fail, never make.
    write_resolved(cfg, t.model_dir)
    tf.random.set_seed(t.seed)
    spec, model, optimizer, step, checkpoint = build_state(cfg, strategy)
    with strategy.scope():
        compile_for_training(model, optimizer)
    manager = checkpoint_manager(cfg, checkpoint, step)
    latest = tf.train.latest_checkpoint(
        checkpoint_dir(cfg) if resume_from is None else
        os.path.join(resume_from, CHECKPOINT_SUBDIR))
    if latest:
        checkpoint.restore(latest).expect_partial()
        print(
            f"resumed from {latest} at step {int(step.numpy())}",
            file=sys.stderr,
        )
    start = int(step.numpy())
    if start >= t.train_steps:
        done = {"step": start, "resumed_at": start, "steps_run": 0}
        if t.valid_every:
            done["best"] = read_curve(cfg).get("best")
        return done

    def dataset(context: tf.distribute.InputContext | None = None):
        # data.batch_size is per replica; each input pipeline (worker)
        # reads its own part of the files, or of the records when there
        # are fewer files than pipelines (input_pipeline.request_dataset).
        ds = input_pipeline.request_dataset(
            files, spec, cfg.data.batch_size,
            compression=cfg.data.compression,
            shuffle_buffer=cfg.data.shuffle_buffer,
            repeat=True,
            deterministic=cfg.data.deterministic,
            seed=t.seed + start,  # A resumed run sees a fresh shuffle.
            num_parallel_reads=cfg.data.num_parallel_reads,
            drop_remainder=context is not None,
            num_shards=context.num_input_pipelines if context else 1,
            shard_index=context.input_pipeline_id if context else 0,
        )
        if t.routing_in_input_pipeline:  # HiSAC's routing off the step.
            ds = with_routing_plan(ds, model)
        return ds

    if settings.strategy == "default":
        ds = dataset()
    else:
        ds = tf.keras.utils.experimental.DatasetCreator(dataset)
    counter = StepCounter(step, start)
    extra = list(callbacks)
    every = (t.checkpoint_every, t.log_every, t.valid_every)
    hint = (f"lower training.dense_learning_rate ({t.dense_learning_rate}) "
            "or training.embedding_learning_rate "
            f"({t.embedding_learning_rate}), or check the data")
    callbacks = [
        counter,
        NonFiniteLossGuard(counter, every, t.train_steps, manager,
                           hint=hint),
        divergence.DivergenceGuard(
            counter, t.model_dir, t.divergence_factor,
            t.divergence_warmup_steps, every, t.train_steps, start=start,
            manager=manager, hint=hint + " (training.divergence_factor=0 "
            "turns this check off)"),
        PeriodicCheckpoint(manager, counter, t.checkpoint_every,
                           also_every=t.valid_every),
        TrainingSummaries(summary_dir(t.model_dir, "train"), counter,
                          t.log_every, t.train_steps),
        ProgressBar(counter, t.train_steps, t.log_every,
                    verbose=1 if progress else 0),
    ]
    selection = None
    if t.valid_every:
        selection = ModelSelection(cfg, spec, checkpoint, counter)
        callbacks.append(selection)
    callbacks += extra
    began = time.time()
    with input_pipeline.diagnosed(files, spec, cfg.data.compression), \
            strategy.scope(), table_partitioning():
        try:
            history = model.fit(
                ds, epochs=1, steps_per_epoch=t.train_steps - start,
                callbacks=callbacks, verbose=0,
            )
        except NonFiniteLossError as e:  # DivergenceError marks itself.
            divergence.mark_diverged(t.model_dir, counter.value, str(e))
            raise
    divergence.clear_diverged(t.model_dir)
    if is_parameter_server(strategy):
        write_placement(model, t.model_dir)
    seconds = time.time() - began
    final = int(step.numpy())
    logs = host_logs({k: v[-1] for k, v in history.history.items()})
    results = {
        "step": final,
        "resumed_at": start,
        "steps_run": final - start,
        "final_loss": logs.get("loss", float("nan")),
        "regularization_loss": logs.get("regularization_loss", 0.0),
        "train_auc_approx": logs.get("auc_approx", float("nan")),
        "seconds": seconds,
        "steps_per_second": (final - start) / max(seconds, 1e-9),
    }
    if strategy.num_replicas_in_sync > 1:
        # TFRS's `loss` is this replica's share of the global mean.
        results["replicas"] = strategy.num_replicas_in_sync
    if selection is not None:
        results["best"] = selection.best
        results["valid_points"] = len(selection.points)
    return results


def write_placement(model: tf.keras.Model, model_dir: str) -> dict:
    """Writes `<model_dir>/placement.json`: each weight's shard devices."""
    devices = placement(model)
    json_io.write_json(os.path.join(model_dir, "placement.json"), devices,
                       indent=1, sort_keys=True)
    return devices
