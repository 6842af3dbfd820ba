"""Job: export the latest checkpoint as a SavedModel version for TF Serving.

    hisac-export --config=demo [--set export.version=3] [--force]

Writes `<export.export_dir>/<version>/` (signatures, warmup requests,
config, summary) atomically and the export directory's models.config;
see `hisac_tf.export.exporter` (docs/design.md §6). A training.model_dir
marked diverged (`hisac_tf.training.divergence`) is refused unless
`--force`.
"""

from __future__ import annotations

from absl import flags

from hisac_tf.config import Config
from hisac_tf.export import exporter
from pipelines import cli

flags.DEFINE_bool("force", False,
                  "Export a training.model_dir marked diverged "
                  "(<model_dir>/divergence.json) anyway.")


def main(cfg: Config, version: int | None = None,
         progress: bool = True, force: bool = False) -> dict:
    return exporter.export_model(cfg, version=version, progress=progress,
                                 force=force)


def main_from_flags(cfg: Config) -> dict:
    return main(cfg, force=flags.FLAGS.force)


def run():
    cli.run(main_from_flags)


if __name__ == "__main__":
    run()
