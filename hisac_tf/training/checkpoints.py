"""Model state under a strategy, checkpoints, resume and restore.

One place builds the ranker with its optimizer and checkpoint
(`build_state`), names the checkpoint directory (`checkpoint_manager`),
refuses a model_dir trained under another model config
(`check_model_dir`), keeps the best checkpoint by valid AUC apart
(`best_dir`, `best_manager`), chooses the checkpoint to evaluate
(`select_checkpoint`) and restores the latest checkpoint or fails with the
path it looked in (`restore_latest`). Training, evaluation, export and the
experiment runner all go through these.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.config import Config, ConfigError
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.data.item_feature_loader import load_item_features
from hisac_tf.models.build import build_model, build_optimizer
from hisac_tf.training.strategy import table_partitioning
from hisac_tf.tokenizer.semantic_tables import load_semantic_tables

# Sections that fix the model's variables: a checkpoint trained under other
# values cannot be resumed.
MODEL_SECTIONS = ("model", "tokenizer")


class TrainingState(NamedTuple):
    """What `build_state` creates under a strategy scope."""

    spec: FeatureSpec
    model: tf.keras.Model
    optimizer: tf.keras.optimizers.Optimizer
    step: tf.Variable
    checkpoint: tf.train.Checkpoint


def build_state(cfg: Config, strategy: tf.distribute.Strategy | None = None,
                spec: FeatureSpec | None = None) -> TrainingState:
    """Model, optimizer, step and checkpoint under `strategy.scope()`."""
    strategy = strategy or tf.distribute.get_strategy()
    spec = spec or FeatureSpec.from_config(cfg.data, features=cfg.all_features)
    tables = load_semantic_tables(cfg.tokenizer.output_dir)
    # Under parameter_server the embedding tables are split across the PS
    # (strategy.TablePartitioner); elsewhere this changes nothing.
    with strategy.scope(), table_partitioning():
        model = build_model(cfg, spec, tables,
                            load_item_features(cfg.data, spec.features))
        optimizer = build_optimizer(cfg, model)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, step=step
        )
    return TrainingState(spec, model, optimizer, step, checkpoint)


def checkpoint_dir(cfg: Config) -> str:
    return os.path.join(cfg.training.model_dir, "checkpoints")


def checkpoint_manager(cfg: Config, checkpoint, step):
    return tf.train.CheckpointManager(
        checkpoint, checkpoint_dir(cfg), max_to_keep=3, step_counter=step,
    )


def best_dir(cfg: Config) -> str:
    """Where the best checkpoint by valid AUC lives."""
    return os.path.join(cfg.training.model_dir, "best")


def best_manager(cfg: Config, checkpoint, step):
    """Keeps one checkpoint: the best by valid AUC so far."""
    return tf.train.CheckpointManager(
        checkpoint, best_dir(cfg), max_to_keep=1, step_counter=step,
    )


def select_checkpoint(cfg: Config) -> tuple[str, str]:
    """(kind, path) of the checkpoint `training.evaluate_checkpoint` names.

    kind is "best" (the best by valid AUC, under `best_dir`) or "latest".
    "auto" takes the best when one exists, else the latest. Raises
    FileNotFoundError naming the directory when the checkpoint is missing.
    """
    choice = cfg.training.evaluate_checkpoint
    best = tf.train.latest_checkpoint(best_dir(cfg))
    if choice == "auto":
        choice = "best" if best else "latest"
    if choice == "best":
        if best is None:
            raise FileNotFoundError(
                f"training.evaluate_checkpoint is 'best' but {best_dir(cfg)} "
                "holds no checkpoint: train with training.valid_every > 0 "
                "or evaluate the 'latest'"
            )
        return "best", best
    latest = tf.train.latest_checkpoint(checkpoint_dir(cfg))
    if latest is None:
        raise FileNotFoundError(
            f"no checkpoint under {checkpoint_dir(cfg)} "
            "(training.model_dir); train first"
        )
    return "latest", latest


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


def restore_latest(cfg: Config, purpose: str, spec: FeatureSpec | None = None,
                   path: str | None = None):
    """(state, checkpoint path, load status) of the latest checkpoint.

    Args:
      purpose: what the restore is for ("evaluate", "export"), named in
        the error when `training.model_dir` holds no checkpoint.
      path: a specific checkpoint to restore instead of the latest.

    The returned status is the checkpoint's restore status: the model's
    variables are created lazily, so callers that need them matched run a
    batch first and then `status.assert_existing_objects_matched()`.
    """
    state = build_state(cfg, spec=spec)
    if path is None:
        manager = checkpoint_manager(cfg, state.checkpoint, state.step)
        path = manager.latest_checkpoint
    if path is None:
        raise FileNotFoundError(
            f"no checkpoint to {purpose} under {checkpoint_dir(cfg)} "
            "(training.model_dir); train first"
        )
    status = state.checkpoint.restore(path)
    return state, path, status
