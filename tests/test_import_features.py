"""hisac-import with declared features: log, item and user columns."""

import csv
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf.config import Config, ConfigError
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.data.importers.bad_rows import BadRowError
from hisac_tf.data.importers.log_importer import STAGING_DIR, import_logs
from hisac_tf.data.item_feature_loader import load_item_features
from hisac_tf.feature_config import features_from_list

FEATURES = [
    {"name": "paid", "location": "event", "kind": "dense", "key": "Paid",
     "default": 0.0},
    {"name": "hour", "location": "context", "hash_buckets": 32},
    {"name": "device", "location": "context", "dtype": "string",
     "hash_buckets": 8},
    {"name": "brand", "location": "item", "dtype": "string",
     "hash_buckets": 16},
    {"name": "tags", "location": "item", "kind": "multi_categorical",
     "dtype": "string", "hash_buckets": 16, "max_values": 2},
    {"name": "price", "location": "item", "kind": "dense",
     "transform": "log1p_standardize"},
    {"name": "spend", "location": "user", "kind": "dense"},
]
HEADER = ["user_id", "item_id", "category_id", "behavior_type", "timestamp",
          "Paid", "hour", "device"]
EVENTS = [
    (1, 10, 100, "pv", 1000, 2.5, 3, "ios"),
    (1, 11, 100, "pv", 1100, "", 3, "ios"),
    (1, 12, 101, "buy", 4000, 9.0, 4, "web"),
    (1, 13, 101, "pv", 4100, 1.0, 4, "android"),
    (2, 10, 100, "pv", 1200, 0.5, 3, "ios"),
    (2, 14, 102, "cart", 7400, 3.0, 5, "web"),
]


def write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def config(tmp_path, events, name="out"):
    items = write(tmp_path / "items.csv",
                  ["item_id", "category_id", "emb_0", "emb_1", "brand",
                   "tags", "price"],
                  [(i, 100 + (i > 11) + (i > 13), 0.1 * i, -0.1 * i,
                    f"b{i % 3}", "new|sale|x" if i % 2 else "", 10.0 * i)
                   for i in range(10, 15)])
    users = write(tmp_path / "users.csv",
                  ["user_id", "gender", "age_bucket", "spend"],
                  [(1, 1, 3, 120.0), (2, 2, 5, 80.0)])
    return Config().replace(
        data={"data_dir": str(tmp_path / name), "max_history": 10,
              "max_candidates": 8},
        importer={"input": events, "items": items, "users": users,
                  "request_window_s": 600, "negatives_per_request": 0,
                  "warn_min_requests": 0, "allow_single_class_split": True,
                  "warn_min_impressions": 0},
        features=features_from_list(FEATURES))


def test_import_writes_declared_features(tmp_path):
    cfg = config(tmp_path, write(tmp_path / "events.csv", HEADER, EVENTS))
    import_logs(cfg)
    out = cfg.data.data_dir
    assert not os.path.exists(os.path.join(out, STAGING_DIR))
    stats = json.load(open(os.path.join(out, "feature_stats.json")))
    assert stats["features"]["price"]["count"] == 5
    assert stats["features"]["spend"]["mean"] == pytest.approx(100.0)
    assert "paid" in stats["features"]  # over the train period
    spec = FeatureSpec.from_config(cfg.data, features=cfg.all_features)
    assert spec.feature("price").std > 0  # resolved from the statistics
    requests = []
    for path in sorted(glob.glob(os.path.join(out, "*-0000*.tfrecord.gz"))):
        if os.path.basename(path).startswith("items-"):
            continue
        for rec in tf.data.TFRecordDataset(path, "GZIP"):
            raw = spec.parse(tf.reshape(rec, [1]))
            requests.append({k: (v.to_list()[0] if isinstance(
                v, tf.RaggedTensor) else v.numpy().tolist()[0])
                for k, v in raw.items()})
    by_time = {(r["user_id"], r["request_time"]): r for r in requests}
    r = by_time[(1, 4000)]  # history: the events at 1000 and 1100
    assert r["hist_item_ids"] == [10, 11]
    np.testing.assert_allclose(r["hist_paid"], [2.5, 0.0])  # "" -> default
    assert r["hour"] == 4 and r["device"] == b"web"
    assert r["spend"] == pytest.approx(120.0)
    items = load_item_features(cfg.data, cfg.all_features)
    assert items.columns["brand"].tolist()[:2] == [b"b1", b"b2"]
    assert items.columns["tags"].tolist()[0] == [b"", b""]
    assert items.columns["tags"].tolist()[1] == [b"new", b"sale"]


def test_bad_feature_value_names_column_file_line_and_writes_nothing(
        tmp_path):
    good = config(tmp_path, write(tmp_path / "events.csv", HEADER, EVENTS))
    import_logs(good)
    before = sorted(os.listdir(good.data.data_dir))
    bad_rows = list(EVENTS)
    bad_rows[3] = bad_rows[3][:5] + ("lots", 4, "ios")
    cfg = config(tmp_path, write(tmp_path / "bad.csv", HEADER, bad_rows))
    cfg = cfg.replace(importer={"overwrite": True})
    with pytest.raises(BadRowError, match=r"bad\.csv.*line 5.*paid.*"
                                          r"not a number"):
        import_logs(cfg)
    # The earlier import's outputs are untouched, nothing half-written.
    assert sorted(os.listdir(good.data.data_dir)) == before
    nan_rows = list(EVENTS)
    nan_rows[0] = nan_rows[0][:5] + (2.0, 3, "ios")
    values = [dict(f) for f in FEATURES]
    values[0].pop("default")
    strict = config(tmp_path, write(tmp_path / "nan.csv", HEADER,
                                    [r[:5] + ("nan",) + r[6:]
                                     for r in nan_rows]), name="strict")
    strict = strict.replace(features=features_from_list(values))
    with pytest.raises(BadRowError, match=r"nan\.csv.*line 2.*paid.*no "
                                          r"default"):
        import_logs(strict)
    assert not glob.glob(os.path.join(strict.data.data_dir, "*.tfrecord*"))


def test_missing_feature_column_and_item_table_are_named(tmp_path):
    events = write(tmp_path / "events.csv", HEADER[:5] + ["hour", "device"],
                   [e[:5] + e[6:] for e in EVENTS])
    with pytest.raises(Exception, match=r"lacks column 'Paid' of feature "
                                        r"'paid' \(event\)"):
        import_logs(config(tmp_path, events))
    cfg = config(tmp_path, write(tmp_path / "e.csv", HEADER, EVENTS))
    with pytest.raises(ConfigError, match="item features .*brand.* item "
                                          "table"):
        import_logs(cfg.replace(importer={"items": ""}))


def test_bad_vocabulary_file_stops_the_import_before_writing(tmp_path):
    from hisac_tf.data.vocabulary import VocabularyError
    events = write(tmp_path / "events.csv", HEADER, EVENTS)
    vocab = tmp_path / "device.txt"
    values = [dict(f) for f in FEATURES]
    values[2] = dict(values[2], hash_buckets=0, vocabulary_file=str(vocab))
    cfg = config(tmp_path, events).replace(
        features=features_from_list(values))
    with pytest.raises(VocabularyError, match=r"feature 'device'.*"
                                              r"device\.txt.*does not exist"):
        import_logs(cfg)
    vocab.write_text("ios\nweb\nios\n")
    with pytest.raises(VocabularyError, match=r"feature 'device': .*"
                                              r"device\.txt:3 repeats 'ios'"):
        import_logs(cfg)
    assert not glob.glob(os.path.join(cfg.data.data_dir, "*"))
    vocab.write_text("ios\nweb\nandroid\n")
    import_logs(cfg)
    assert glob.glob(os.path.join(cfg.data.data_dir, "train-*"))


def test_parquet_log_gives_the_same_records_as_csv(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    csv_cfg = config(tmp_path, write(tmp_path / "events.csv", HEADER,
                                     EVENTS), name="from_csv")
    import_logs(csv_cfg)
    cols = list(zip(*EVENTS))
    table = pa.table({
        "user_id": pa.array(cols[0], pa.int64()),
        "item_id": pa.array(cols[1], pa.int64()),
        "category_id": pa.array(cols[2], pa.int64()),
        "behavior_type": pa.array(cols[3]),
        "timestamp": pa.array(cols[4], pa.int64()),
        "Paid": pa.array([None if v == "" else v for v in cols[5]],
                         pa.float64()),
        "hour": pa.array(cols[6], pa.int64()),
        "device": pa.array(cols[7]),
    })
    pq.write_table(table, str(tmp_path / "events.parquet"))
    pq_cfg = config(tmp_path, str(tmp_path / "events.parquet"),
                    name="from_parquet")
    import_logs(pq_cfg)
    for name in sorted(os.listdir(csv_cfg.data.data_dir)):
        if name.endswith(".tfrecord.gz"):
            a = [r.numpy() for r in tf.data.TFRecordDataset(
                os.path.join(csv_cfg.data.data_dir, name), "GZIP")]
            b = [r.numpy() for r in tf.data.TFRecordDataset(
                os.path.join(pq_cfg.data.data_dir, name), "GZIP")]
            assert a == b, name
