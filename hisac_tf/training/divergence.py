"""The divergence guard: a run whose loss explodes is stopped and marked.

A learning rate far too high can leave the loss huge but finite (the
non-finite guard never fires) and every prediction at 0.0, yet the run
used to write its checkpoints and exit 0. `DivergenceGuard`, a `fit`
callback placed before `PeriodicCheckpoint`, stops such a run with
`DivergenceError`:

- the early value: the smallest loss of the first
  `training.divergence_warmup_steps` steps of the run from step 0, kept
  in `<model_dir>/divergence.json` so that a resumed run is compared with
  it (a run resumed from an already diverged checkpoint would otherwise
  take its huge loss as normal);
- the check: at the steps where a later callback writes (checkpoint, log,
  validation steps and the last step), the peak loss of every step since
  the previous check (the losses stay tensors in between: no host copy
  per batch) must be finite and at most `training.divergence_factor`
  times the early value.

`ModelSelection` stops the run too when the valid predictions collapse to
one value (`collapsed`). Either way, and on a non-finite loss, the run is
marked diverged in `divergence.json` (`mark_diverged`); `hisac-export`
refuses such a model_dir unless `--force` (`check_not_diverged`), and a
later run that reaches `training.train_steps` clears the mark.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf import json_io

STATE_FILE = "divergence.json"
# Predictions whose max - min is at most this are one value (collapsed).
COLLAPSE_TOLERANCE = 1e-6


class DivergenceError(RuntimeError):
    """The loss diverged or the predictions collapsed (the run stopped)."""


class DivergedRunError(RuntimeError):
    """A model_dir marked diverged was asked for (export without force)."""


def state_path(model_dir: str) -> str:
    return os.path.join(model_dir, STATE_FILE)


def read_state(model_dir: str) -> dict:
    """`<model_dir>/divergence.json` ({} when there is none)."""
    path = state_path(model_dir)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _write_state(model_dir: str, state: dict) -> None:
    tf.io.gfile.makedirs(model_dir)
    path = state_path(model_dir)
    json_io.write_json(path + ".tmp", state)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def mark_diverged(model_dir: str, step: int, reason: str) -> None:
    """Marks the run of `model_dir` diverged at `step` for `reason`."""
    state = read_state(model_dir)
    state["diverged"] = {"step": int(step), "reason": reason}
    _write_state(model_dir, state)


def clear_diverged(model_dir: str) -> None:
    """Drops the mark after a run that reached its last step."""
    state = read_state(model_dir)
    if "diverged" in state:
        old = state.pop("diverged")
        _write_state(model_dir, state)
        print(f"note: {state_path(model_dir)}: the divergence mark of an "
              f"earlier run (step {old['step']}) was cleared: this run "
              "reached its last step", file=sys.stderr)


def stop(model_dir: str, step: int, reason: str,
         last_checkpoint: str | None = None, hint: str = "") -> DivergenceError:
    """Marks the run diverged; returns the error to raise."""
    mark_diverged(model_dir, step, reason)
    return DivergenceError(
        f"training stopped at step {step}: {reason}; no checkpoint was "
        f"written from this state (last checkpoint: "
        f"{last_checkpoint or 'none'}); the run is marked diverged in "
        f"{state_path(model_dir)}" + (f"; {hint}" if hint else ""))


def collapsed(probs: np.ndarray) -> str | None:
    """Why `probs` [M] collapsed to one value; None when they did not."""
    probs = np.asarray(probs, np.float64)
    if len(probs) < 2:
        return None
    spread = float(np.max(probs) - np.min(probs))
    if spread > COLLAPSE_TOLERANCE:
        return None
    return (f"the predictions on the valid split collapsed to one value "
            f"({float(probs[0]):g} for all {len(probs)} impressions, "
            f"max - min = {spread:g} <= {COLLAPSE_TOLERANCE:g})")


def check_not_diverged(model_dir: str, force: bool = False) -> None:
    """Raises `DivergedRunError` when `model_dir` is marked diverged.

    With `force` it prints a warning instead.
    """
    diverged = read_state(model_dir).get("diverged")
    if not diverged:
        return
    what = (f"training.model_dir {model_dir} is from a diverged run "
            f"(stopped at step {diverged['step']}: {diverged['reason']}; "
            f"see {state_path(model_dir)})")
    if force:
        print(f"warning: {what}; exported anyway (--force)", file=sys.stderr)
        return
    raise DivergedRunError(
        f"{what}: its checkpoints are not exported. Train again (e.g. with "
        "lower learning rates), or pass --force to export it anyway")


def _host_loss(value: Any) -> float:
    """A step's loss as a float (a RemoteValue under parameter_server)."""
    if hasattr(value, "fetch"):
        value = value.fetch()
    if isinstance(value, dict):
        value = value.get("loss", math.nan)
    if hasattr(value, "fetch"):
        value = value.fetch()
    return float(np.asarray(value))


class DivergenceGuard(tf.keras.callbacks.Callback):
    """Raises `DivergenceError` when the loss explodes (see the module).

    Args:
      counter: the run's `StepCounter` (`value`: the global step).
      model_dir: where `divergence.json` is kept.
      factor: `training.divergence_factor`; 0 turns the guard off.
      warmup_steps: `training.divergence_warmup_steps`.
      every: the periods of the writing callbacks (0 entries ignored).
      final_step: the run's last step.
      start: the step the run resumed at (0: a fresh run).
      manager: the checkpoint manager, to name the last checkpoint.
      hint: what to change, appended to the message.
    """

    def __init__(self, counter, model_dir: str, factor: float,
                 warmup_steps: int, every: Sequence[int], final_step: int,
                 start: int = 0,
                 manager: tf.train.CheckpointManager | None = None,
                 hint: str = ""):
        super().__init__()
        self._supports_tf_logs = True
        self.counter = counter
        self.model_dir = model_dir
        self.factor = float(factor)
        self.warmup_steps = int(warmup_steps)
        self.every = [int(e) for e in every if e]
        self.final_step = int(final_step)
        self.start = int(start)
        self.manager = manager
        self.hint = hint
        self.pending: list[tuple[int, Any]] = []
        self.warm: list[float] = []
        self.reference = None
        self.reference_steps = None
        state = read_state(model_dir) if self.factor else {}
        if self.start > 0 and "reference_loss" in state:
            self.reference = float(state["reference_loss"])
            self.reference_steps = list(state["reference_steps"])

    def due(self, step: int) -> bool:
        return step == self.final_step or any(
            step % e == 0 for e in self.every)

    def _warm_up(self, step: int, loss: Any) -> None:
        self.warm.append(_host_loss(loss))
        if step < self.start + self.warmup_steps and step < self.final_step:
            return
        finite = [v for v in self.warm if math.isfinite(v)]
        if not finite:
            return  # NonFiniteLossGuard names a non-finite loss.
        self.reference = min(finite)
        self.reference_steps = [self.start + 1, step]
        state = read_state(self.model_dir)
        state.update(reference_loss=self.reference,
                     reference_steps=self.reference_steps)
        _write_state(self.model_dir, state)

    def on_train_batch_end(self, batch, logs=None):
        if not self.factor:
            return
        step = self.counter.value
        loss = logs if hasattr(logs, "fetch") else (logs or {}).get("loss")
        if loss is None:
            return
        self.pending.append((step, loss))
        if self.reference is None:
            self._warm_up(step, loss)
        if self.reference is not None and self.due(step):
            self.check(step)

    def check(self, step: int) -> None:
        """Compares the peak loss since the last check with the limit."""
        values = [(_host_loss(v), s) for s, v in self.pending]
        first = self.pending[0][0]
        self.pending = []
        bad = [(v, s) for v, s in values if not math.isfinite(v)]
        peak, at = bad[0] if bad else max(values)
        limit = self.factor * self.reference
        if not bad and peak <= limit:
            return
        low, high = self.reference_steps
        reason = (
            f"the loss diverged: its peak over steps {first}-{step} is "
            f"{peak:g} (at step {at}) > training.divergence_factor "
            f"({self.factor:g}) x its early value {self.reference:g} (the "
            f"smallest loss of steps {low}-{high})")
        latest = self.manager.latest_checkpoint if self.manager else None
        raise stop(self.model_dir, step, reason, latest, self.hint)
