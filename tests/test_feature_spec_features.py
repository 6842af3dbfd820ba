"""Declared features in FeatureSpec: parse, pad, own keys, bad input."""

import json

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf.config import DataConfig
from hisac_tf.data import input_pipeline
from hisac_tf.data.feature_spec import DataError, FeatureSpec
from hisac_tf.data.feature_stats import (
    DenseStatistics,
    FeatureStatsError,
    resolve_statistics,
    write_feature_stats,
)
from hisac_tf.feature_config import FeatureConfig, default_features

FEATURES = default_features(("gender",)) + (
    FeatureConfig("device", "context", dtype="string", hash_buckets=16,
                  key="dev"),
    FeatureConfig("hour", "context", hash_buckets=24),
    FeatureConfig("segments", "user", kind="multi_categorical",
                  hash_buckets=8, max_values=2),
    FeatureConfig("spend", "user", kind="dense", default=-1.0),
    FeatureConfig("distance", "context", kind="dense"),
    FeatureConfig("persona", "user", kind="vector", dim=2),
    FeatureConfig("shop", "event", dtype="string", hash_buckets=8),
    FeatureConfig("paid", "event", kind="dense", default=0.0),
    FeatureConfig("look", "event", kind="vector", dim=2),
    FeatureConfig("brand", "item", dtype="string", hash_buckets=8),
)
RENAMED = (("hist_item_ids", "clicked"), ("user_id", "uid"))
SPEC = FeatureSpec(4, 3, features=FEATURES, record_keys=RENAMED)


def request(hist=3, **changes):
    out = {
        "user_id": 7, "request_time": 1000, "gender": 2,
        "hist_item_ids": list(range(11, 11 + hist)),
        "hist_category_ids": [5] * hist, "hist_behaviors": [1] * hist,
        "hist_timestamps": list(range(100, 100 + hist)),
        "cand_item_ids": [51, 52], "cand_category_ids": [7, 7],
        "labels": [1, 0],
        "device": "ios", "hour": 13, "segments": [3, 4, 5],
        "spend": None, "distance": 2.5, "persona": [0.5, -0.5],
        "hist_shop": [b"s%d" % i for i in range(hist)],
        "hist_paid": [1.0] * (hist - 1) + [float("nan")],
        "hist_look": [[i, -i] for i in range(hist)],
    }
    out.update(changes)
    return out


def write(path, requests, spec=SPEC):
    with tf.io.TFRecordWriter(str(path), "GZIP") as w:
        for r in requests:
            w.write(spec.to_example(r).SerializeToString())
    return str(path)


def read_all(files, spec=SPEC):
    ds = input_pipeline.request_dataset(files, spec, 8, deterministic=True)
    return list(input_pipeline.iterate(ds, files, spec))


def test_default_spec_keeps_the_old_layout():
    spec = FeatureSpec(4, 3)
    assert spec.scalar_features == ("user_id", "request_time", "gender",
                                    "age_bucket")
    assert spec.user_features == ("gender", "age_bucket")
    assert [f.name for f in spec.features] == ["gender", "age_bucket"]
    assert spec.extra_features == () and spec.item_features == ()
    assert set(spec.raw_parse_spec()) == set(
        FeatureSpec(4, 3, user_features=("gender", "age_bucket"))
        .raw_parse_spec())
    assert set(spec.input_signature()) == {
        "user_id", "request_time", "gender", "age_bucket", "hist_item_ids",
        "hist_category_ids", "hist_behaviors", "hist_timestamps",
        "hist_length", "cand_item_ids", "cand_category_ids", "cand_count"}


def test_declared_features_round_trip_under_own_keys(tmp_path):
    example = SPEC.to_example(request())
    keys = set(example.features.feature)
    assert {"uid", "clicked", "dev", "hist_shop"} <= keys
    assert not {"user_id", "hist_item_ids", "brand"} & keys
    path = write(tmp_path / "a.tfrecord.gz", [request(), request(hist=6)])
    (batch,) = read_all([path])
    np.testing.assert_array_equal(batch["user_id"], [7, 7])
    np.testing.assert_array_equal(batch["hist_item_ids"][0], [11, 12, 13, 0])
    assert batch["device"].dtype == tf.string
    assert batch["device"].numpy().tolist() == [b"ios", b"ios"]
    np.testing.assert_array_equal(batch["segments"], [[3, 4], [3, 4]])
    np.testing.assert_allclose(batch["spend"], [-1.0, -1.0])  # default
    np.testing.assert_allclose(batch["persona"][0], [0.5, -0.5])
    assert batch["hist_shop"].numpy()[0].tolist() == [b"s0", b"s1", b"s2",
                                                      b""]
    # The newest 4 of 6, padded: event values move with the history.
    assert batch["hist_shop"].numpy()[1].tolist() == [b"s2", b"s3", b"s4",
                                                      b"s5"]
    np.testing.assert_allclose(batch["hist_paid"][0], [1, 1, 0, 0])
    assert batch["hist_look"].shape == (2, 4, 2)
    np.testing.assert_allclose(batch["hist_look"][1, 0], [2, -2])
    assert "brand" not in batch
    sig = SPEC.input_signature()
    for name, value in batch.items():
        if name in sig:
            assert sig[name].dtype == value.dtype, name
            assert sig[name].shape.is_compatible_with(value.shape), name


@pytest.mark.parametrize("change, message", [
    ({"distance": float("nan")},
     r"distance \(feature 'distance', key 'distance'\) must be a "
     r"number: NaN or missing and the feature has no default"),
    ({"hour": "13"}, r"feature 'hour' \(key 'hour'\) has type bytes_list, "
                     r"expected int64_list"),
    ({"hist_shop": [1, 2, 3]}, r"feature 'shop' \(key 'hist_shop'\) has "
                               r"type int64_list, expected bytes_list"),
    ({"hist_paid": [1.0]}, r"hist_paid must have as many entries as "
                           r"hist_item_ids"),
])
def test_bad_feature_values_name_feature_file_and_record(
        tmp_path, change, message):
    bad = request(**change) if "hour" not in change and (
        "hist_shop" not in change) else None
    path = tmp_path / "a.tfrecord.gz"
    if bad is None:  # Written with a spec of the wrong dtype.
        name = next(iter(change))
        f = SPEC.feature(name)
        wrong = FeatureConfig(f.name, f.location, dtype=(
            "string" if f.dtype == "int64" else "int64"), hash_buckets=8)
        spec = FeatureSpec(4, 3, record_keys=RENAMED, features=tuple(
            wrong if g.name == f.name else g for g in FEATURES))
        with tf.io.TFRecordWriter(str(path), "GZIP") as w:
            w.write(SPEC.to_example(request()).SerializeToString())
            w.write(spec.to_example(request(**change)).SerializeToString())
    else:
        write(path, [request(), bad])
    with pytest.raises(DataError, match=message) as e:
        read_all([str(path)])
    assert "a.tfrecord.gz:1" in str(e.value)


def test_missing_feature_names_feature_file_and_record(tmp_path):
    spec = FeatureSpec(4, 3, record_keys=RENAMED, features=tuple(
        f for f in FEATURES if f.name != "hour"))
    path = write(tmp_path / "a.tfrecord.gz", [request()], spec)
    with pytest.raises(DataError, match=r"a\.tfrecord\.gz:0: missing "
                                        r"feature 'hour' \(key 'hour'\)"):
        read_all([path])
    with pytest.raises(DataError, match="request is missing feature 'hour'"):
        SPEC.to_example({k: v for k, v in request().items() if k != "hour"})
    with pytest.raises(DataError, match="unknown feature 'colour'"):
        SPEC.feature("colour")


def test_impression_examples_carry_the_request_features():
    (ex,) = SPEC.impression_examples(request() | {
        "cand_item_ids": [51], "cand_category_ids": [7]})
    raw = SPEC.parse_impressions(tf.constant([ex.SerializeToString()]))
    out = SPEC.pad_impressions(raw)
    assert out["device"].numpy().tolist() == [b"ios"]
    np.testing.assert_allclose(out["spend"], [-1.0])
    assert out["hist_look"].shape == (1, 4, 2)
    np.testing.assert_array_equal(out["cand_item_ids"], [[51]])


def test_statistics_resolve_from_feature_stats_json(tmp_path):
    price = FeatureConfig("price", "item", kind="dense",
                          transform="log1p_standardize")
    fixed = FeatureConfig("age", "user", kind="dense",
                          transform="standardize", mean=30.0, std=10.0)
    with pytest.raises(FeatureStatsError, match="feature 'price'.*"
                                                "feature_stats.json"):
        resolve_statistics((price, fixed), str(tmp_path))
    stats = DenseStatistics().add([0.0, np.e - 1, float("nan")])
    write_feature_stats(str(tmp_path), {"price": stats})
    body = json.loads((tmp_path / "feature_stats.json").read_text())
    assert body["features"]["price"]["missing"] == 1
    got, same = resolve_statistics((price, fixed), str(tmp_path))
    assert got.mean == pytest.approx(0.5) and got.std == pytest.approx(0.5)
    assert same == fixed
    cfg = DataConfig(data_dir=str(tmp_path))
    spec = FeatureSpec.from_config(cfg, features=(price,))
    assert spec.item_features[0].std == pytest.approx(0.5)
    assert spec.user_features == ()


ITEM_FEATURES = (
    FeatureConfig("brand", "item", dtype="string", hash_buckets=8),
    FeatureConfig("tags", "item", kind="multi_categorical", hash_buckets=8,
                  max_values=2, key="tag_ids"),
    FeatureConfig("price", "item", kind="dense", default=0.0),
    FeatureConfig("content", "item", kind="vector", dim=2,
                  key="content_embedding"),
)


def write_items(path, rows):
    from hisac_tf.data.feature_spec import feature_values, item_example
    by_name = {f.name: f for f in ITEM_FEATURES}
    with tf.io.TFRecordWriter(str(path), "GZIP") as w:
        for item, values in rows:
            feats = {by_name[k].record_key: feature_values(by_name[k], v)
                     for k, v in values.items() if k != "content"}
            w.write(item_example(item, 1, values.get("content", [0, 0]),
                                 features=feats).SerializeToString())


def test_load_item_features_reads_the_item_table(tmp_path):
    from hisac_tf.data.item_feature_loader import load_item_features
    write_items(tmp_path / "items-00000-of-00001.tfrecord.gz", [
        (9, {"brand": "acme", "tags": [1, 2, 3], "price": 2.0,
             "content": [1, 2]}),
        (3, {"brand": b"zeta", "tags": [4], "price": float("nan")}),
    ])
    cfg = DataConfig(data_dir=str(tmp_path))
    values = load_item_features(cfg, FEATURES + ITEM_FEATURES[1:])
    np.testing.assert_array_equal(values.item_ids, [3, 9])
    assert values.columns["brand"].tolist() == [b"zeta", b"acme"]
    np.testing.assert_array_equal(values.columns["tags"], [[4, 0], [1, 2]])
    np.testing.assert_allclose(values.columns["price"], [0.0, 2.0])
    np.testing.assert_allclose(values.columns["content"], [[0, 0], [1, 2]])
    assert load_item_features(cfg, default_features(("g",))).item_ids.size \
        == 0
    shop = FeatureConfig("shop", "item", hash_buckets=8)
    with pytest.raises(DataError, match=r"items-00000-of-00001\.tfrecord\."
                                        r"gz:0: missing item feature 'shop'"):
        load_item_features(cfg, (shop,))
    wrong = FeatureConfig("brand", "item", hash_buckets=8)
    with pytest.raises(DataError, match=r":0: item feature 'brand' \(key "
                                        r"'brand'\) has type bytes_list, "
                                        r"expected int64_list"):
        load_item_features(cfg, (wrong,))
    strict = FeatureConfig("price", "item", kind="dense")
    with pytest.raises(DataError, match=r":1: item feature 'price' .* is "
                                        r"nan and the feature has no "
                                        r"default"):
        load_item_features(cfg, (strict,))
