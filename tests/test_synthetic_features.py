"""The synthetic side features and the content-preference mode."""

import glob
import os

import numpy as np
import pytest

from hisac_tf.config import ConfigError, from_dict, load_config
from hisac_tf.data import input_pipeline, synthetic
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.data.feature_inspection import inspect_features
from hisac_tf.data.feature_stats import read_feature_stats
from hisac_tf.data.item_feature_loader import load_item_features
from hisac_tf.data.synthetic.side_features import (build_side_world,
                                                   engage, preference)
from hisac_tf.data.synthetic.world import build_world

FEATURES = load_config("features").to_dict()["features"]


def tiny_features(tmp_path, **synthetic_values):
    base = load_config("tiny").to_dict()
    base["data"]["data_dir"] = str(tmp_path)
    base["synthetic"].update({"num_users": 120, "brand_weight": 1.0,
                              "price_weight": 1.0, "hour_weight": 1.0,
                              **synthetic_values})
    features = [dict(f) for f in FEATURES]
    for f in features:
        if f["name"] == "content":
            f["dim"] = base["synthetic"]["content_dim"]
    base["features"] = features
    return from_dict(base)


def test_features_preset_writes_every_declared_feature(tmp_path):
    cfg = tiny_features(tmp_path)
    summary = synthetic.generate(cfg, str(tmp_path), progress=False)
    for split in ("train", "eval"):
        with_side = summary[split]["bayes_auc"]
        without = summary[split]["bayes_auc_without_side_features"]
        assert 0.5 < without < with_side, (split, without, with_side)
    items = load_item_features(cfg.data, cfg.all_features)
    assert items.item_ids.tolist() == list(range(1, 201))
    assert items.columns["brand"][0].startswith(b"brand_")
    assert items.columns["tags"].shape == (200, 3)
    assert (items.columns["tags"][:, 0] > 0).all()
    assert (items.columns["price"] > 0).all()
    stats = read_feature_stats(str(tmp_path))
    assert stats["price"]["count"] == 200
    assert stats["price"]["mean"] == pytest.approx(
        float(items.columns["price"].mean()), rel=1e-5)
    spec = FeatureSpec.from_config(cfg.data, with_true_ctr=True,
                                   features=cfg.all_features)
    assert spec.item_features[1].std > 0  # price, resolved
    files = sorted(glob.glob(os.path.join(str(tmp_path), "train-*")))
    ds = input_pipeline.request_dataset(files, spec, 64, deterministic=True)
    batch = next(iter(input_pipeline.iterate(ds, files, spec)))
    hours = batch["hour"].numpy()
    assert ((hours >= 1) & (hours <= 24)).all()
    assert set(batch["device"].numpy().tolist()) <= {b"ios", b"android",
                                                      b"web"}
    # hisac-inspect's per-feature table, with a vocabulary lacking "web".
    vocab = tmp_path / "device.txt"
    vocab.write_text("ios\nandroid\n")
    values = cfg.to_dict()
    for f in values["features"]:
        if f["name"] == "device":
            f.update(hash_buckets=0, vocabulary_file=str(vocab))
    report = inspect_features(from_dict(values), files)
    assert report["hour"]["coverage"] == 1.0
    assert report["hour"]["cardinality"] <= 24
    assert report["device"]["cardinality"] == 3
    assert 0.0 < report["device"]["oov_share"] < 1.0
    assert report["device"]["oov_values"] == ["web"]
    assert report["brand"]["coverage"] == 1.0
    assert report["price"]["dense"]["count"] == 200
    assert report["tags"]["cardinality"] <= 24


def test_default_presets_are_unchanged_by_the_side_world(tmp_path):
    plain = load_config("tiny", ["synthetic.num_users=6"])
    world = build_world(plain.synthetic)
    a = synthetic.simulate_user(world, plain, 3)
    assert not a.side_logits.any()


def test_unknown_synthetic_feature_is_refused(tmp_path):
    cfg = tiny_features(tmp_path)
    bad = cfg.to_dict()
    bad["features"].append({"name": "shop", "location": "item",
                            "hash_buckets": 8})
    with pytest.raises(ConfigError, match=r"features\['shop'\]: the "
                                          "synthetic generator makes only"):
        synthetic.generate(from_dict(bad), str(tmp_path), progress=False)


def test_content_engagements_follow_the_preference_not_the_category():
    cfg = load_config("tiny", ["synthetic.num_items=2000",
                               "synthetic.content_engagements=5",
                               "synthetic.content_weight=1"])
    syn = cfg.synthetic
    world = build_world(syn)
    side = build_side_world(world, syn)
    log = np.random.default_rng(0).integers(1, 2001, 5000)
    out = engage(side, syn, 7, log)
    changed = out != log
    assert 0.07 < changed.mean() < 0.13  # about 5 per 50
    p = preference(syn, 7)
    assert (side.style[out[changed]] @ p).mean() > 1.5
    assert abs((side.style[log] @ p).mean()) < 0.1
    # Over users, the engaged items spread over the categories like any
    # item does (one user's best matches are a few dozen items).
    engaged = np.concatenate([
        (lambda o: o[o != log])(engage(side, syn, u, log))
        for u in range(1, 41)])
    cats = np.bincount(world.item_category[engaged],
                       minlength=syn.num_topics + 1)[1:]
    share = cats / cats.sum()
    base = np.bincount(world.item_category[1:],
                       minlength=syn.num_topics + 1)[1:]
    np.testing.assert_allclose(share, base / base.sum(), atol=0.04)
