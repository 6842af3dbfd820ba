"""hisac-evaluate on broken or empty eval files names the file or the
split (issue 12, item 10), before any checkpoint is looked for."""

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf.data import input_pipeline
from hisac_tf.data.feature_spec import DataError, FeatureSpec
from pipelines import evaluate

SPEC = FeatureSpec(10, 4, with_true_ctr=False)


def request(**changes):
    values = dict(
        user_id=1, request_time=100, gender=1, age_bucket=1,
        hist_item_ids=[1], hist_category_ids=[1], hist_behaviors=[1],
        hist_timestamps=[5], cand_item_ids=[3, 4], cand_category_ids=[1, 1],
        labels=[0, 1])
    values.update(changes)
    return SPEC.to_example(values).SerializeToString()


def write_records(path, records, compression="GZIP"):
    with tf.io.TFRecordWriter(str(path), compression) as w:
        for r in records:
            w.write(r)
    return str(path)


def config(tmp_path):
    return config_lib.load_config("tiny", [
        f"data.data_dir={tmp_path}", f"training.model_dir={tmp_path}/m",
        "data.max_history=10", "data.max_candidates=4"])


@pytest.mark.parametrize("content", ["random-bytes", "uncompressed-as-gz"])
def test_unreadable_eval_shard_is_named(tmp_path, content):
    path = tmp_path / "eval-00000-of-00001.tfrecord.gz"
    if content == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(3000))
    else:
        write_records(path, [request()] * 3, compression="")
    with pytest.raises(DataError, match=(
            f"{path}: not a readable TFRecord file with "
            r"data.compression='GZIP' \(corrupt, truncated or compressed "
            r"otherwise; DataLossError")):
        evaluate.main(config(tmp_path), progress=False)


def test_a_later_unreadable_shard_is_named(tmp_path):
    write_records(tmp_path / "eval-00000-of-00002.tfrecord.gz", [request()])
    bad = tmp_path / "eval-00001-of-00002.tfrecord.gz"
    bad.write_bytes(np.random.default_rng(1).bytes(3000))
    with pytest.raises(DataError, match=f"{bad}: not a readable TFRecord"):
        evaluate.main(config(tmp_path), progress=False)


def test_empty_eval_split_says_so(tmp_path):
    write_records(tmp_path / "eval-00000-of-00002.tfrecord.gz", [])
    write_records(tmp_path / "eval-00001-of-00002.tfrecord.gz", [])
    with pytest.raises(DataError, match=(
            r"the eval split is empty: the 2 file\(s\) matching "
            r"'eval-\*.tfrecord.gz' in .* hold no requests")):
        evaluate.main(config(tmp_path), progress=False)


def test_bad_label_message_shows_the_value(tmp_path):
    path = write_records(tmp_path / "bad.tfrecord.gz",
                         [request(), request(labels=[0, 2])])
    error = input_pipeline.diagnose_files([path], SPEC, "GZIP")
    assert str(error) == f"{path}:1: field labels must be 0 or 1; got 2"
