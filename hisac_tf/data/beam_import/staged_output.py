"""A temporary directory beside the output, committed only on success.

A pipeline writes everything into `<out_dir>/.staging-<id>/`; `commit`
moves the files into `out_dir` (the summary last, so a directory with a
summary is complete) and `discard` deletes the directory after a
failure, so a failing pipeline leaves no partial output at the output
path.
"""

from __future__ import annotations

import os
import uuid

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf


class StagedOutput:
    """Stages files under `out_dir` and commits or discards them.

    Example:
      staged = StagedOutput(out_dir)
      try:
          ...write into staged.path...
          staged.commit(last="summary.json")
      finally:
          staged.discard()
    """

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, f".staging-{uuid.uuid4().hex}")
        tf.io.gfile.makedirs(self.path)

    def files(self) -> list[str]:
        """Names of the files staged so far (not directories)."""
        return sorted(n for n in tf.io.gfile.listdir(self.path)
                      if not tf.io.gfile.isdir(os.path.join(self.path, n)))

    def commit(self, last: str | None = None) -> list[str]:
        """Moves the staged files into `out_dir`; returns their paths."""
        names = self.files()
        if last in names:
            names.remove(last)
            names.append(last)
        moved = []
        for name in names:
            target = os.path.join(self.out_dir, name)
            tf.io.gfile.rename(os.path.join(self.path, name), target,
                               overwrite=True)
            moved.append(target)
        self.discard()
        return moved

    def discard(self) -> None:
        """Deletes the staging directory and what is left in it."""
        if tf.io.gfile.exists(self.path):
            tf.io.gfile.rmtree(self.path)
