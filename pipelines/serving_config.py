"""Job: write TF Serving's config files (models, batching, monitoring).

    python -m pipelines.serving_config [--serving_versions=1,2
        --serving_stable=1 --serving_canary=2]
        [--serving_config_dir=serving/configs]

The default directory is the checked-in `serving/configs/` that the
Dockerfile ships; see `hisac_tf.export.tf_serving_config`.
"""

from __future__ import annotations

from absl import flags

from hisac_tf.config import Config
from hisac_tf.export import tf_serving_config
from pipelines import cli

flags.DEFINE_string(
    "serving_config_dir", tf_serving_config.CONFIG_DIR,
    "Where to write models.config, batching.config, monitoring.config.")
flags.DEFINE_string("serving_versions", "1",
                    "Comma-separated model versions to serve.")
flags.DEFINE_integer("serving_stable", None,
                     "Version labelled stable (default: lowest).")
flags.DEFINE_integer("serving_canary", None,
                     "Version labelled canary (default: highest).")
FLAGS = flags.FLAGS


def main(cfg: Config) -> dict:
    """Writes the three files; returns file name -> path."""
    try:
        versions = tf_serving_config.versions_from_text(
            FLAGS.serving_versions)
    except tf_serving_config.ServingConfigError as e:
        raise SystemExit(f"--serving_versions: {e}") from None
    texts = tf_serving_config.default_texts(
        cfg.export.model_name, versions, FLAGS.serving_stable,
        FLAGS.serving_canary)
    paths = tf_serving_config.write_texts(FLAGS.serving_config_dir, texts)
    for path in paths.values():
        print(f"wrote {path}")
    return paths


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
