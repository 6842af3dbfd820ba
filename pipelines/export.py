"""Job: export the evaluated checkpoint as a SavedModel version for TF Serving.

The checkpoint is the one `evaluation.checkpoint` names (by default the
best by valid AUC when the run kept one, else the latest), the one
`hisac-evaluate` scores.

    hisac-export --config=demo [--set export.version=3]

Writes `<export.export_dir>/<version>/` (signatures, warmup requests,
config, summary) atomically and the export directory's models.config;
see `hisac_tf.export.exporter` (docs/design.md §6).
"""

from __future__ import annotations

from hisac_tf.config import Config
from hisac_tf.export import exporter
from pipelines import cli


def main(cfg: Config, version: int | None = None,
         progress: bool = True) -> dict:
    return exporter.export_model(cfg, version=version, progress=progress)


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
