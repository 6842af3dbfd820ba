"""Training on a user's own request TFRecords, named in the config.

The records here are written without hisac_tf (plain tf.train.Examples
under foreign key names); data.record_keys maps the core fields and
features[...].key a user feature onto them, and the train job reads them.
"""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf.data import synthetic
from hisac_tf.data.feature_spec import DataError, FeatureSpec
from pipelines import inspect_data, tokenize_items, train

KEYS = {"user_id": "uid", "request_time": "ts",
        "hist_item_ids": "clicked_items", "hist_category_ids": "clicked_cats",
        "hist_behaviors": "clicked_types", "hist_timestamps": "clicked_at",
        "cand_item_ids": "shown_items", "cand_category_ids": "shown_cats",
        "labels": "clicks"}
SEGMENT = {"name": "segment", "location": "user", "hash_buckets": 32,
           "key": "user_segment"}


def _int(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(
        value=np.asarray(values).ravel().tolist()))


def rewrite_foreign(src, dst):
    """Our records -> the user's own layout: other names, no true_ctr, a
    `user_segment` feature, nothing of hisac_tf's writer."""
    spec = FeatureSpec(20, 6, with_true_ctr=True)
    with tf.io.TFRecordWriter(dst, "GZIP") as w:
        for record in tf.data.TFRecordDataset(src, "GZIP"):
            raw = spec.parse(record[tf.newaxis])
            feats = {KEYS[k]: _int(raw[k][0].numpy()) for k in KEYS}
            gender = int(raw["gender"][0])
            age = int(raw["age_bucket"][0])
            feats["user_segment"] = _int([gender * 10 + age])
            w.write(tf.train.Example(features=tf.train.Features(
                feature=feats)).SerializeToString())


@pytest.fixture(scope="module")
def own_records(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("own"))
    ours = config_lib.load_config("tiny", [f"data.data_dir={root}/ours"])
    synthetic.generate(ours, progress=False)
    os.makedirs(f"{root}/data")
    for path in glob.glob(f"{root}/ours/*-0000*.tfrecord.gz"):
        name = os.path.basename(path)
        if name.startswith("items-"):
            tf.io.gfile.copy(path, f"{root}/data/{name}")
        else:
            rewrite_foreign(path, f"{root}/data/{name}")
    values = config_lib.load_config("tiny").to_dict()
    values["data"].update({
        "data_dir": f"{root}/data", "user_features": [],
        "record_keys": [f"{k}={v}" for k, v in KEYS.items()]})
    values["tokenizer"]["output_dir"] = f"{root}/tokenizer"
    values["training"].update({"model_dir": f"{root}/model",
                               "train_steps": 4, "checkpoint_every": 4,
                               "log_every": 2})
    values["features"] = [SEGMENT]
    return root, config_lib.from_dict(values)


def test_training_reads_foreign_keys(own_records):
    root, cfg = own_records
    tokenize_items.main(cfg, progress=False)
    result = train.main(cfg, progress=False)  # train, then evaluate
    assert result["train"]["step"] == 4
    assert np.isfinite(result["train"]["final_loss"])
    assert 0.0 <= result["eval"]["auc"] <= 1.0
    assert glob.glob(f"{root}/model/checkpoints/ckpt-4.index")


def test_schema_check_names_missing_and_mistyped_keys(own_records, capsys):
    root, cfg = own_records
    files = sorted(glob.glob(f"{root}/data/train-*"))
    assert inspect_data.check_schema(cfg, files) == []
    # Our own default names are not in these records.
    plain = config_lib.from_dict(dict(cfg.to_dict(), data=dict(
        cfg.to_dict()["data"], record_keys=[])))
    problems = inspect_data.check_schema(plain, files[:1])
    assert any("missing field user_id" in p
               and f"{files[0]}:0" in p for p in problems)
    mistyped = dict(SEGMENT, dtype="string")
    values = cfg.to_dict()
    values["features"] = [mistyped]
    problems = inspect_data.check_schema(config_lib.from_dict(values),
                                         files[:1])
    assert any("feature 'segment' (key 'user_segment')" in p
               and "int64_list" in p and "bytes_list" in p
               and f"{files[0]}:0" in p for p in problems)
    with pytest.raises(DataError):
        inspect_data.check_schema(plain, files[:1], raise_errors=True)
