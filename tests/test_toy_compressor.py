"""A compressor added in one file (tests/toy_compressor.py, one decorator)
goes through the factory, the cost model, the config and an experiment
plan without touching anything else (issue 20 item 5)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf.compressors import (
    compressor_names,
    make_compressor,
    register_compressor,
    supported_compressors,
)
from hisac_tf.compressors import flops as flops_lib
from hisac_tf.compressors.history_compressor import HistoryCompressor
from hisac_tf.compressors.recent_compressor import RecentCompressor
from hisac_tf.config import ConfigError
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.experiments import plan as plan_lib
from hisac_tf.models.build import build_model
from hisac_tf.tokenizer.semantic_tables import SemanticTables
from serving.load_test import random_request
from tests import toy_compressor as toy


def tiny(root, *extra):
    return config_lib.load_config("tiny", [
        f"data.data_dir={root}/data",
        f"tokenizer.output_dir={root}/tokenizer",
        f"training.model_dir={root}/models",
        "tokenizer.epochs=5", "training.train_steps=4",
        "training.checkpoint_every=4", "training.log_every=4", *extra])


def tables(cfg, num_items=50, seed=0):
    rng = np.random.default_rng(seed)
    sizes = cfg.tokenizer.codebook_sizes
    dim = cfg.tokenizer.latent_dim
    return SemanticTables(
        item_ids=np.arange(1, num_items + 1, dtype=np.int64),
        sids=np.stack([rng.integers(0, k, num_items) for k in sizes], 1)
        .astype(np.int32),  # [items, L]
        latents=rng.normal(size=(num_items, dim)).astype(np.float32),
        codebooks=tuple(rng.normal(size=(k, dim)).astype(np.float32)
                        for k in sizes))


def test_the_toy_is_registered_by_its_decorator():
    assert toy.NAME in compressor_names()
    assert toy.NAME in supported_compressors()


def test_factory_builds_the_toy_and_it_compresses():
    layer = make_compressor(toy.NAME, num_groups=3)
    assert isinstance(layer, toy.StrideCompressor)
    values = tf.reshape(tf.range(2 * 7 * 2, dtype=tf.float32),
                        [2, 7, 2])  # h [B, N, D]
    valid = tf.sequence_mask([7, 0], 7)  # [B, N]: 7 items, then none
    out = layer(values, valid)
    # Row 0: items 0, 3, 6 | 1, 4 | 2, 5 (features 2i, 2i + 1).
    np.testing.assert_allclose(out["group_states"][0].numpy(), [
        [6.0, 7.0], [5.0, 6.0], [7.0, 8.0]])
    assert out["num_active"].numpy().tolist() == [3, 0]
    assert np.all(out["group_states"][1].numpy() == 0.0)
    clone = type(layer).from_config(layer.get_config())
    assert clone.num_groups == 3


def test_cost_model_reads_the_toys_own_cost():
    sizes = flops_lib.RequestSizes(toy.NAME, n=10, a=3, c=4, d=8, ds=4,
                                   h=2)
    flops = flops_lib.request_flops(sizes)
    assert (flops["groups"], flops["compression"]) == (3, 10 * 8)
    cost = flops_lib.request_cost(sizes)
    assert cost["components"]["compression"] == {
        "side": "user", "macs": 80, "bytes": 8 * 10 * 8}
    assert "voting" not in cost["components"]
    assert cost["request"]["macs"] == flops["request"]
    # Same head and attention as patching, whose cost is the same.
    patching = flops_lib.request_flops(sizes.replace(compressor="patching"))
    assert patching == flops


def test_the_toy_builds_through_the_config_and_scores(tmp_path):
    cfg = tiny(tmp_path, f"model.compressor={toy.NAME}")
    spec = FeatureSpec.from_config(cfg.data)
    model = build_model(cfg, spec, tables(cfg))
    assert isinstance(model.compressor, toy.StrideCompressor)
    assert model.compressor.num_groups == cfg.model.num_agents
    batch = random_request(spec, 12, 3, 2, num_items=50, num_categories=5)
    ctr = model({k: tf.constant(v) for k, v in batch.items()})
    assert ctr.shape == (2, 3) and np.all(np.isfinite(ctr.numpy()))
    fl = flops_lib.config_flops(cfg)
    assert fl["compression"] == cfg.data.max_history * \
        cfg.model.embedding_dim


def test_an_experiment_plan_takes_the_toy(tmp_path):
    cfg = tiny(tmp_path)
    plan = plan_lib.parse_plan({"runs": [
        {"name": "toy", "compressor": toy.NAME, "lengths": [10, 20]},
        {"name": "recent", "compressor": "recent", "lengths": [10]},
    ]}, cfg)
    assert [(r.name, r.compressor, r.lengths) for r in plan.runs] == [
        ("toy", toy.NAME, (10, 20)), ("recent", "recent", (10,))]
    run_cfg = plan_lib.run_config(cfg, toy.NAME, 20, "toy")
    assert run_cfg.model.compressor == toy.NAME
    assert plan_lib.compressor_plan(cfg, [toy.NAME]).runs[0].compressor \
        == toy.NAME
    with pytest.raises(ConfigError, match="'toy_strid'.*toy_stride"):
        plan_lib.parse_plan({"runs": [
            {"name": "x", "compressor": "toy_strid"}]}, cfg)


@pytest.mark.slow
def test_an_experiment_trains_and_reports_the_toy(tmp_path):
    from pipelines import experiment

    root = str(tmp_path)
    cfg = tiny(root)
    plan_path = os.path.join(root, "plan.json")
    with open(plan_path, "w") as f:
        json.dump({"generate_data": True, "runs": [
            {"name": "toy", "compressor": toy.NAME, "lengths": [10]}]}, f)
    results = experiment.main(cfg, output_dir=os.path.join(root, "out"),
                              plan=plan_path)
    (row,) = results["rows"]
    assert (row["compressor"], row["n"], row["step"]) == (toy.NAME, 10, 4)
    assert 0.0 < row["auc"] < 1.0
    fl = flops_lib.config_flops(plan_lib.run_config(cfg, toy.NAME, 10))
    assert row["request_flops"] == fl["request"]
    assert fl["compression"] == 10 * cfg.model.embedding_dim


# --- registration errors -------------------------------------------------
def test_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="'recent' is already"):
        @register_compressor("recent")
        class Other(RecentCompressor):
            pass


def test_none_is_reserved():
    with pytest.raises(ValueError, match="'none' is reserved"):
        register_compressor("none")


def test_a_class_without_cost_is_refused():
    with pytest.raises(TypeError, match="NoCost must implement cost"):
        @register_compressor("toy_no_cost")
        class NoCost(HistoryCompressor):
            def compress(self, *args, **kwargs):
                return {}
    assert "toy_no_cost" not in compressor_names()


def test_an_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown compressor 'nope'.*"
                                         "hisac.*toy_stride"):
        make_compressor("nope", num_groups=2)
