"""Job: read request-level TFRecords back and print summary statistics.

Calls `hisac_tf.data.data_summary.summarize_data`: the train and eval
shards of `data` are read through the training input pipeline and
summarised into `<data_dir>/inspect.json`.
"""

from __future__ import annotations

from hisac_tf.config import Config
from hisac_tf.data.data_summary import summarize_data
from pipelines import cli


def main(cfg: Config) -> dict:
    return summarize_data(cfg)


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
