"""An empty shard is refused by name unless its split is declared to
have them (issue 22, item 9).

`hisac-evaluate` with a 0-byte `eval-*.tfrecord.gz` beside a good shard
used to exit 0 on half the eval split (TensorFlow reads a 0-byte GZIP
file as no records). Training (train and valid splits) and evaluation
now check every shard for a record before anything is built: a 0-byte
compressed file is always refused (no writer makes one: an empty GZIP
TFRecord file is 20 bytes), a record-less shard unless
`data.allow_empty_shards` names its split.
"""

import os
import re
import subprocess
import sys

import pytest

from hisac_tf import config as config_lib
from hisac_tf.config import ConfigError
from hisac_tf.data.feature_spec import DataError
from hisac_tf.data.split_files import split_files
from hisac_tf.training.trainer import train
from pipelines import evaluate
from tests.test_evaluate_errors import request, write_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(tmp_path, *overrides):
    return config_lib.load_config("tiny", [
        f"data.data_dir={tmp_path}", f"training.model_dir={tmp_path}/m",
        "data.max_history=10", "data.max_candidates=4", *overrides])


def shards(tmp_path, split, second):
    """Two shards of `split`: one good, one `second` ('zero-bytes',
    'no-records')."""
    write_records(tmp_path / f"{split}-00000-of-00002.tfrecord.gz",
                  [request()] * 3)
    bad = tmp_path / f"{split}-00001-of-00002.tfrecord.gz"
    if second == "zero-bytes":
        bad.write_bytes(b"")
    else:
        write_records(bad, [])
    return bad


MESSAGES = {
    "zero-bytes": "is 0 bytes: not a GZIP TFRecord file",
    "no-records": "holds no records",
}


@pytest.mark.parametrize("second", list(MESSAGES))
@pytest.mark.parametrize("split", ["train", "valid", "eval"])
def test_an_empty_shard_is_named(tmp_path, split, second):
    bad = shards(tmp_path, split, second)
    with pytest.raises(DataError, match=(
            f"{re.escape(str(bad))}: {MESSAGES[second]}.* \\(1 of the 2 "
            f"file\\(s\\) of the {split} split")):
        split_files(config(tmp_path).data, split)


@pytest.mark.parametrize("second", list(MESSAGES))
def test_evaluate_refuses_an_empty_eval_shard(tmp_path, second):
    bad = shards(tmp_path, "eval", second)
    with pytest.raises(DataError, match=re.escape(str(bad))):
        evaluate.main(config(tmp_path), progress=False)


@pytest.mark.parametrize("second", list(MESSAGES))
def test_train_refuses_an_empty_train_shard_before_training(tmp_path,
                                                            second):
    bad = shards(tmp_path, "train", second)
    with pytest.raises(DataError, match=re.escape(str(bad))):
        train(config(tmp_path), progress=False)
    assert not os.path.exists(tmp_path / "m" / "checkpoints")


def test_train_refuses_an_empty_valid_shard(tmp_path):
    shards(tmp_path, "train", "no-records")
    os.remove(tmp_path / "train-00001-of-00002.tfrecord.gz")
    bad = shards(tmp_path, "valid", "no-records")
    with pytest.raises(DataError, match=re.escape(str(bad))):
        train(config(tmp_path, "training.valid_every=2"), progress=False)


def test_a_declared_split_accepts_record_less_shards(tmp_path, capsys):
    bad = shards(tmp_path, "eval", "no-records")
    cfg = config(tmp_path, 'data.allow_empty_shards=["eval"]')
    files = split_files(cfg.data, "eval")
    assert str(bad) in files and len(files) == 2
    assert f"1 record-less shard(s) of the eval split accepted " \
        f"(data.allow_empty_shards): {bad}" in capsys.readouterr().err
    # Another split is still checked.
    bad_train = shards(tmp_path, "train", "no-records")
    with pytest.raises(DataError, match=re.escape(str(bad_train))):
        split_files(cfg.data, "train")


def test_a_declared_split_still_refuses_a_zero_byte_gzip(tmp_path):
    bad = shards(tmp_path, "eval", "zero-bytes")
    cfg = config(tmp_path, 'data.allow_empty_shards=["eval"]')
    with pytest.raises(DataError, match=re.escape(f"{bad}: is 0 bytes")):
        split_files(cfg.data, "eval")


def test_a_split_of_empty_shards_is_empty_even_when_declared(tmp_path):
    write_records(tmp_path / "eval-00000-of-00001.tfrecord.gz", [])
    cfg = config(tmp_path, 'data.allow_empty_shards=["eval"]')
    with pytest.raises(DataError, match="the eval split is empty"):
        split_files(cfg.data, "eval")


def test_allow_empty_shards_names_splits(tmp_path):
    with pytest.raises(ConfigError, match=(
            r"data.allow_empty_shards must hold splits out of \['train', "
            r"'valid', 'eval'\], got \['test'\]")):
        config(tmp_path, 'data.allow_empty_shards=["test"]')


@pytest.mark.slow
def test_hisac_evaluate_exits_non_zero_naming_the_zero_byte_shard(tmp_path):
    bad = shards(tmp_path, "eval", "zero-bytes")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.evaluate", "--config=tiny",
         f"--set=data.data_dir={tmp_path}",
         f"--set=training.model_dir={tmp_path}/m",
         "--set=data.max_history=10", "--set=data.max_candidates=4"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode != 0
    assert f"{bad}: is 0 bytes: not a GZIP TFRecord file" in out.stderr
