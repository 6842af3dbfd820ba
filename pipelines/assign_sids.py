"""Job `hisac-assign-sids`: every item's SID and latent, on Apache Beam.

The work is `hisac_tf.tokenizer.beam_sid_assignment` (its docstring holds
the contract): the trained tokenizer of `--sid_tokenizer_dir` (default
`tokenizer.output_dir`) assigns every item of `--sid_items` (default
`data.data_dir/data.item_table_pattern`) into `--sid_output_dir`
(default: the tokenizer directory's `sids/`), as `--sid_shards` shards
plus, with `--sid_merge`, the semantic tables the ranker loads. With
`--sample_only` it writes instead the seeded sample of
`tokenizer.train_sample_items` items the tokenizer trains on at scale.
The runner: `--runner`, `--direct_num_workers`, `--direct_running_mode`
and `--beam_pipeline_args`, as `hisac-import --engine=beam`.

    hisac-assign-sids --config=demo --sample_only --sid_output_dir=s
    hisac-tokenize --config=demo --tokenize_items='s/items-sample-*'
    hisac-assign-sids --config=demo --sid_shards=64 --runner=DataflowRunner \\
        --beam_pipeline_args='--project=p --region=r --temp_location=gs://b/t'
"""

from __future__ import annotations

import json
import os
import sys

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
from absl import flags

from hisac_tf.config import Config, ConfigError
from hisac_tf.tokenizer.beam_sid_assignment import (
    assign_sids_beam,
    sample_item_table_beam,
)
from pipelines import cli, import_logs

_FLAGS = {
    "sid_items": (str, "Item-table glob (default: data.data_dir/"
                       "data.item_table_pattern)."),
    "sid_tokenizer_dir": (str, "Trained tokenizer (default: "
                               "tokenizer.output_dir)."),
    "sid_output_dir": (str, "Output directory (default: "
                            "<tokenizer dir>/sids)."),
    "sid_shards": (int, "SID table shards (default 1)."),
    "sid_merge": (bool, "Also write the merged semantic tables (default "
                        "true; off for tables too large for one host)."),
    "sample_only": (bool, "Write the tokenizer's training sample "
                          "(tokenizer.train_sample_items) and stop."),
}


def main(cfg: Config) -> dict:
    """Assigns the SIDs (or writes the sample); returns the counts."""
    fl = flags.FLAGS
    tok_dir = fl.sid_tokenizer_dir or cfg.tokenizer.output_dir
    items = fl.sid_items or os.path.join(cfg.data.data_dir,
                                         cfg.data.item_table_pattern)
    out_dir = fl.sid_output_dir or os.path.join(tok_dir, "sids")
    beam = import_logs.beam_args(
        {name: getattr(fl, name) for name in import_logs.BEAM_FLAGS
         if name != "engine"})
    if fl.sample_only:
        n = cfg.tokenizer.train_sample_items
        if n < 1:
            raise ConfigError("--sample_only needs tokenizer."
                              f"train_sample_items >= 1, got {n}")
        counts = {"sample": sample_item_table_beam(
            items, n, cfg.tokenizer.seed, out_dir, cfg.data.compression,
            beam), "items": n}
    else:
        counts = assign_sids_beam(
            tok_dir, items, out_dir, fl.sid_shards or 1,
            max(cfg.tokenizer.batch_size, 1024), cfg.data.compression,
            fl.sid_merge is not False, beam)
    print(json.dumps(counts), file=sys.stderr)
    return counts


def run() -> None:
    """`hisac-assign-sids`: --config/--set, the flags above, Beam's."""
    definers = {str: flags.DEFINE_string, int: flags.DEFINE_integer,
                bool: flags.DEFINE_bool}
    beam = {k: v for k, v in import_logs.BEAM_FLAGS.items() if k != "engine"}
    for name, (kind, text) in {**_FLAGS, **beam}.items():
        if name not in flags.FLAGS:
            definers[kind](name, None, text)
    cli.run(main)


if __name__ == "__main__":
    run()
