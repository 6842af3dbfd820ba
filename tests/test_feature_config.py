"""The `features` config section: declarations, defaults, errors."""

import pytest

from hisac_tf.config import ConfigError, from_dict, load_config
from hisac_tf.feature_config import (
    FeatureConfig,
    FeatureConfigError,
    check_features,
    features_from_list,
)

TAOBAO_LIKE = [
    {"name": "brand", "location": "item", "dtype": "string",
     "hash_buckets": 1000},
    {"name": "shop", "location": "item", "hash_buckets": 500,
     "key": "seller_id"},
    {"name": "tags", "location": "item", "kind": "multi_categorical",
     "hash_buckets": 64, "max_values": 4},
    {"name": "price", "location": "item", "kind": "dense",
     "transform": "log1p_standardize", "clip_min": -5.0, "clip_max": 5.0},
    {"name": "content", "location": "item", "kind": "vector", "dim": 8,
     "key": "content_embedding"},
    {"name": "hour", "location": "context", "hash_buckets": 24},
    {"name": "device", "location": "context", "dtype": "string",
     "vocabulary_file": "vocab/device.txt"},
    {"name": "paid", "location": "event", "kind": "dense",
     "transform": "log1p", "default": 0.0},
]


def test_default_features_are_the_user_features():
    cfg = load_config("tiny")
    names = [f.name for f in cfg.all_features]
    assert names == ["gender", "age_bucket"]
    assert all(f.location == "user" and f.hash_buckets == 128
               for f in cfg.all_features)


def test_declared_features_round_trip_through_the_config():
    cfg = from_dict({"features": TAOBAO_LIKE})
    assert [f.name for f in cfg.features] == [f["name"] for f in TAOBAO_LIKE]
    again = from_dict(cfg.to_dict())
    assert again.features == cfg.features
    by_name = {f.name: f for f in cfg.all_features}
    assert by_name["shop"].record_key == "seller_id"
    assert by_name["paid"].record_key == "hist_paid"
    assert by_name["paid"].batch_key == "hist_paid"
    assert by_name["hour"].batch_key == "hour"
    assert not by_name["brand"].in_request


@pytest.mark.parametrize("entry, message", [
    ({"name": "x", "location": "shelf", "hash_buckets": 4},
     "features['x'].location"),
    ({"name": "x", "location": "user"}, "exactly one of hash_buckets"),
    ({"name": "x", "location": "user", "hash_buckets": 1},
     "features['x'].hash_buckets"),
    ({"name": "x", "location": "user", "hash_buckets": 4, "colour": 1},
     "unknown key features['x'].colour"),
    ({"name": "x", "location": "user", "hash_buckets": "4"},
     "features['x'].hash_buckets must be an integer"),
    ({"name": "x", "location": "user", "kind": "dense", "std": 0.0},
     "features['x'].std"),
    ({"name": "x", "location": "user", "kind": "multi_categorical",
      "hash_buckets": 4}, "features['x'].max_values"),
    ({"name": "hist_x", "location": "user", "hash_buckets": 4},
     "reserved"),
    ({"location": "user"}, "needs a 'name'"),
    ({"name": "x", "location": "user", "kind": "dense",
      "dtype": "string"}, "features['x'].dtype"),
])
def test_bad_feature_names_the_feature_and_key(entry, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")
                       .replace("]", r"\]").replace(".", r"\.")):
        from_dict({"features": [entry]})


def test_shared_table_must_agree():
    a = FeatureConfig("a", "item", hash_buckets=10, table="t")
    b = FeatureConfig("b", "user", hash_buckets=20, table="t")
    with pytest.raises(FeatureConfigError, match="share table 't'"):
        check_features([a, b])
    check_features([a, FeatureConfig("b", "user", hash_buckets=10,
                                     table="t")])


def test_clash_with_default_user_feature_is_an_error():
    with pytest.raises(ConfigError, match="'gender' is declared twice"):
        from_dict({"features": [
            {"name": "gender", "location": "user", "hash_buckets": 4}]})


def test_two_features_one_key_is_an_error():
    with pytest.raises(FeatureConfigError, match="both read key 'k'"):
        check_features(features_from_list([
            {"name": "a", "location": "user", "hash_buckets": 4, "key": "k"},
            {"name": "b", "location": "context", "hash_buckets": 4,
             "key": "k"},
        ]))


def test_record_keys_of_core_fields():
    cfg = from_dict({"data": {"record_keys": ["hist_item_ids=clicks"]}})
    assert cfg.data.record_keys == ("hist_item_ids=clicks",)
    with pytest.raises(ConfigError, match="not a core request field"):
        from_dict({"data": {"record_keys": ["brand=b"]}})
    with pytest.raises(ConfigError, match="field=key"):
        from_dict({"data": {"record_keys": ["hist_item_ids"]}})


def test_features_must_be_a_list():
    with pytest.raises(ConfigError, match="features must be a list"):
        from_dict({"features": {"name": "x"}})


def test_readme_features_config_is_valid():
    """The worked config of README "Your own features" loads."""
    import json
    import os
    import re
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        text = f.read()
    block = re.search(r"<!-- features-config -->\s*```json\n(.*?)```",
                      text, re.S).group(1)
    values = json.loads(block)
    base = load_config(values.pop("base")).to_dict()
    base["data"].update(values.pop("data"))
    cfg = from_dict(dict(base, **values))
    names = {f.name: f for f in cfg.all_features}
    assert names["shop"].record_key == "seller_id"
    assert names["paid"].batch_key == "hist_paid"
