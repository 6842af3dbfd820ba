"""Job: train the RQ-VAE item tokenizer and write the semantic tables.

docs/design.md §2.1. The work is `hisac_tf.tokenizer.trainer.
train_tokenizer` (item-table scan, `fit` with the codebook callbacks,
assignment, tables, quality report, TensorBoard); this module is its
command line.

CLI: python -m pipelines.tokenize_items --config=tiny
       [--set tokenizer.epochs=30] [--tokenize_items=GLOB]
       [--tokenize_output_dir=DIR] [--tokenize_content_dim=F]
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
from absl import flags

from hisac_tf.config import Config
from hisac_tf.tokenizer.trainer import REPORT, train_tokenizer
from pipelines import cli

__all__ = ["REPORT", "main", "run"]


def main(
    cfg: Config,
    items_pattern: str | None = None,
    output_dir: str | None = None,
    progress: bool = True,
    content_dim: int | None = None,
) -> dict:
    """Trains the tokenizer; returns the report (see `train_tokenizer`)."""
    return train_tokenizer(cfg, items_pattern, output_dir, progress,
                           content_dim)


flags.DEFINE_string(
    "tokenize_items", None,
    "Item-table glob (default: data.data_dir/data.item_table_pattern).")
flags.DEFINE_string(
    "tokenize_output_dir", None,
    "Output directory (default: tokenizer.output_dir).")
flags.DEFINE_integer(
    "tokenize_content_dim", None,
    "Content-embedding width (default: read from the first record).")


def _main_from_flags(cfg: Config) -> int:
    fl = flags.FLAGS
    main(cfg, fl.tokenize_items, fl.tokenize_output_dir,
         content_dim=fl.tokenize_content_dim)
    return 0


def run() -> None:
    cli.run(_main_from_flags)


if __name__ == "__main__":
    run()
