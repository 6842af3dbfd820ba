"""The shared absl command line of every hisac_tf job.

Flags are defined once here (absl refuses a flag defined twice in one
process, and the demo job imports every other job), so each job module
only writes `def run(): cli.run(main_from_flags)`.

    --config   preset name under configs/ or a JSON path (default: tiny)
    --set      section.key=value overrides, repeatable
"""

from __future__ import annotations

import sys
from typing import Callable

from absl import app, flags, logging

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
from hisac_tf import config as config_lib
from hisac_tf.data import filesystems

FLAGS = flags.FLAGS

flags.DEFINE_string("config", "tiny", "Config preset name or JSON path.")
flags.DEFINE_multi_string(
    "set", [], "Override, section.key=value (value parsed as JSON)."
)


def load() -> config_lib.Config:
    """The config named by --config with the --set overrides applied."""
    return config_lib.load_config(FLAGS.config, FLAGS.set)


def run(main: Callable[..., object], positional: bool = False) -> None:
    """Runs `main(cfg)` under absl; config errors exit 2 with the message.

    With `positional`, arguments after the flags are allowed and passed
    on: `main(cfg, args)`.
    """

    def _main(argv):
        logging.set_verbosity(logging.WARNING)  # TF's INFO lines are noise.
        if len(argv) > 1 and not positional:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        try:
            cfg = load()
        except config_lib.ConfigError as e:
            print(f"config error: {e}", file=sys.stderr)
            return 2
        if positional:
            return filesystems.run_job(lambda: main(cfg, list(argv[1:])))
        return filesystems.run_job(lambda: main(cfg))

    app.run(_main)
