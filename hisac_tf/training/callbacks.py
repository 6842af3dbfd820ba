"""Keras callbacks of the ranker's `fit`: step, checkpoints, summaries.

`train` (hisac_tf.training.trainer) runs one `fit` of the remaining steps
with these callbacks, in this order:

- `StepCounter`: the global step after each batch (`value`, a Python
  int: no TensorFlow op per batch), so a resumed run counts on from its
  checkpoint; the checkpointed step variable is set (`sync`) before every
  save and at the end.
- `NonFiniteLossGuard`: stops the run with `NonFiniteLossError` when the
  loss is NaN or infinite at a step where anything is written (a log
  step, a checkpoint or validation step, the last step), before the
  callbacks after it save: no checkpoint is written from a diverged run.
- `PeriodicCheckpoint`: a checkpoint every `every` steps (and at the
  steps of `also_every`, the validation steps, and at the end) through
  the `tf.train.CheckpointManager` of `<model_dir>/checkpoints`. With the
  restore at start (`train`) this is `BackupAndRestore`'s kill-and-resume
  contract: a killed job restarted resumes at its last checkpoint and
  redoes at most `every - 1` steps.
- `TrainingSummaries`: the train logs (loss, regularization_loss,
  total_loss, auc_approx, log_loss) into TensorBoard every `log_every`
  steps, at the global step (Keras' own TensorBoard callback counts from
  0 in every `fit`, so a resumed run would overwrite its curves).
- `ProgressBar`: a progress bar over the whole run (`train_steps`).

All of them accept the step's logs as tensors (`_supports_tf_logs`), so
Keras does not copy the logs to the host after every batch.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf


def host_logs(logs: dict | None) -> dict[str, float]:
    """The scalar logs of a step as Python floats."""
    # Under parameter_server the logs are a RemoteValue: fetched here.
    if hasattr(logs, "fetch"):
        logs = logs.fetch()
    values = {
        key: value.fetch() if hasattr(value, "fetch") else value
        for key, value in (logs or {}).items()
    }
    return {
        key: float(np.asarray(value))
        for key, value in values.items()
        if np.asarray(value).ndim == 0
    }


class StepCounter(tf.keras.callbacks.Callback):
    """The global step: `start + batches run` (first in the callbacks).

    Args:
      step: the checkpointed global step (int64 variable).
      start: the step the run resumed at.

    Attributes:
      value: the global step after the current batch.
    """

    def __init__(self, step: tf.Variable, start: int):
        super().__init__()
        self._supports_tf_logs = True
        self.step = step
        self.start = int(start)
        self.value = int(start)

    def on_train_batch_end(self, batch, logs=None):
        self.value = self.start + batch + 1

    def sync(self) -> int:
        """Sets the step variable to `value` (before a save); returns it."""
        self.step.assign(self.value)
        return self.value

    def on_train_end(self, logs=None):
        self.sync()


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss (the run was stopped)."""


class NonFiniteLossGuard(tf.keras.callbacks.Callback):
    """Raises `NonFiniteLossError` on a NaN or infinite loss.

    Checked at the steps where a later callback writes something (every
    multiple of one of `every`, and `final_step`), so the host reads the
    loss only there (no copy per batch), and always before those callbacks
    run: it must come before `PeriodicCheckpoint` and `ModelSelection`.
    Weights that produced a non-finite loss are therefore never saved.

    Args:
      counter: the run's `StepCounter`.
      every: the periods of the writing callbacks (checkpoint_every,
        log_every, valid_every; 0 entries are ignored).
      final_step: the run's last step.
      manager: the checkpoint manager, to name the last good checkpoint.
      hint: what to change, appended to the message.
    """

    KEYS = ("loss", "total_loss", "regularization_loss")

    def __init__(self, counter: StepCounter, every: Sequence[int],
                 final_step: int,
                 manager: tf.train.CheckpointManager | None = None,
                 hint: str = ""):
        super().__init__()
        self._supports_tf_logs = True
        self.counter = counter
        self.every = [int(e) for e in every if e]
        self.final_step = int(final_step)
        self.manager = manager
        self.hint = hint

    def due(self, step: int) -> bool:
        return step == self.final_step or any(
            step % e == 0 for e in self.every)

    def check(self, step: int, logs: dict | None) -> None:
        values = {k: v for k, v in host_logs(logs).items() if k in self.KEYS}
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if not bad:
            return
        latest = self.manager.latest_checkpoint if self.manager else None
        shown = ", ".join(f"{k}={v}" for k, v in sorted(values.items()))
        raise NonFiniteLossError(
            f"training stopped at step {step}: the loss is not finite "
            f"({shown}); no checkpoint was written from this state (last "
            f"checkpoint: {latest or 'none'})"
            + (f"; {self.hint}" if self.hint else ""))

    def on_train_batch_end(self, batch, logs=None):
        step = self.counter.value
        if self.due(step):
            self.check(step, logs)


class PeriodicCheckpoint(tf.keras.callbacks.Callback):
    """Saves through `manager` every `every` steps and at the end.

    Args:
      manager: the `tf.train.CheckpointManager` of `<model_dir>/checkpoints`.
      counter: the run's `StepCounter` (the checkpoint number).
      every: `training.checkpoint_every`.
      also_every: further steps to save at (the validation steps, so a
        resumed run never goes back behind a recorded valid point); 0 for
        none.
    """

    def __init__(self, manager: tf.train.CheckpointManager,
                 counter: StepCounter, every: int, also_every: int = 0):
        super().__init__()
        if every < 1:
            raise ValueError(
                f"training.checkpoint_every must be >= 1, got {every!r}"
            )
        self._supports_tf_logs = True
        self.manager = manager
        self.counter = counter
        self.every = int(every)
        self.also_every = int(also_every)
        self.saved_at = -1

    def due(self, step: int) -> bool:
        return step % self.every == 0 or (
            self.also_every > 0 and step % self.also_every == 0
        )

    def save(self, step: int) -> None:
        # Under parameter_server the scheduled steps finish first, so the
        # checkpoint holds every step it is numbered with.
        coordinator = getattr(self.model, "_cluster_coordinator", None)
        if coordinator is not None:
            coordinator.join()
        self.counter.sync()
        self.manager.save(checkpoint_number=step)
        self.saved_at = step

    def on_train_batch_end(self, batch, logs=None):
        step = self.counter.value
        if self.due(step):
            self.save(step)

    def on_train_end(self, logs=None):
        step = self.counter.value
        latest = self.manager.latest_checkpoint or ""
        if self.saved_at != step and not latest.endswith(f"-{step}"):
            self.save(step)


class TrainingSummaries(tf.keras.callbacks.Callback):
    """Train logs into `<model_dir>/tensorboard/train` every `log_every`.

    Args:
      log_dir: the TensorBoard directory of the train curves.
      counter: the run's `StepCounter` (the summaries' x axis).
      log_every: `training.log_every`.
      final_step: the run's last step (always logged).
    """

    def __init__(self, log_dir: str, counter: StepCounter, log_every: int,
                 final_step: int):
        super().__init__()
        self._supports_tf_logs = True
        self.writer = tf.summary.create_file_writer(log_dir)
        self.counter = counter
        self.log_every = int(log_every)
        self.final_step = int(final_step)
        self.last: dict[str, float] = {}

    def on_train_batch_end(self, batch, logs=None):
        step = self.counter.value
        if step % self.log_every and step != self.final_step:
            return
        self.last = host_logs(logs)
        with self.writer.as_default(step=step):
            for key, value in self.last.items():
                tf.summary.scalar(key, value)
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()


class ProgressBar(tf.keras.callbacks.Callback):
    """A progress bar of the global step out of `train_steps`.

    Args:
      counter: the run's `StepCounter`.
      train_steps: `training.train_steps`, the total of the run.
      log_every: updates every this many steps (and at the end).
      verbose: 0 hides the bar.
    """

    SHOWN = ("loss", "auc_approx")

    def __init__(self, counter: StepCounter, train_steps: int,
                 log_every: int, verbose: int = 1):
        super().__init__()
        self._supports_tf_logs = True
        self.counter = counter
        self.train_steps = int(train_steps)
        self.log_every = int(log_every)
        self.bar = tf.keras.utils.Progbar(
            train_steps, stateful_metrics=list(self.SHOWN), verbose=verbose,
        )

    def on_train_batch_end(self, batch, logs=None):
        step = self.counter.value
        if step % self.log_every and step != self.train_steps:
            return
        values = host_logs(logs)
        self.bar.update(
            step, [(k, values[k]) for k in self.SHOWN if k in values]
        )


def summary_dir(model_dir: str, split: str) -> str:
    """`<model_dir>/tensorboard/<split>` (train, valid)."""
    return os.path.join(model_dir, "tensorboard", split)
