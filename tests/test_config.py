"""Config: presets, overrides, unknown keys and wrong types are errors."""

import dataclasses
import json

import pytest

from hisac_tf import config as config_lib
from hisac_tf.config import ConfigError


@pytest.mark.parametrize(
    "name", ["tiny", "demo", "taobao_mm", "taobao_mm_hour", "industrial",
             "longrange", "longrange_10k"])
def test_presets_load_and_validate(name):
    cfg = config_lib.load_config(name)
    assert cfg.name == name
    assert len(cfg.model.top_k) == len(cfg.tokenizer.codebook_sizes)


def test_paper_settings_of_presets():
    mm = config_lib.load_config("taobao_mm")
    assert mm.data.max_history == 1000
    assert mm.tokenizer.codebook_sizes == (200, 200)
    ind = config_lib.load_config("industrial")
    assert ind.data.max_history == 10_000
    assert ind.tokenizer.codebook_sizes == (512, 512)
    assert ind.model.num_agents == 200


def test_overrides_apply_with_types():
    cfg = config_lib.load_config(
        "tiny", ["model.num_agents=7", "model.top_k=[3, 1]",
                 "data.deterministic=true", "training.model_dir=/tmp/x"]
    )
    assert cfg.model.num_agents == 7
    assert cfg.model.top_k == (3, 1)
    assert cfg.data.deterministic is True
    assert cfg.training.model_dir == "/tmp/x"


@pytest.mark.parametrize(
    "override, message",
    [
        pytest.param("model.num_agentz=3", "model.num_agentz", id="unknown"),
        pytest.param("modle.num_agents=3", "modle", id="unknown-section"),
        pytest.param("model.num_agents=2.5", "model.num_agents must be an "
                     "integer, got 2.5", id="float-for-int"),
        pytest.param("model.num_agents=true", "model.num_agents",
                     id="bool-for-int"),
        pytest.param("model.top_k=3", "model.top_k must be a list",
                     id="scalar-for-list"),
        pytest.param("data.deterministic=1", "data.deterministic must be "
                     "true or false", id="int-for-bool"),
        pytest.param("model.num_agents=0", "model.num_agents must be >= 1, "
                     "got 0", id="zero-agents"),
        pytest.param("data.max_history=0", "data.max_history", id="zero-N"),
        pytest.param("model.top_k=[0, 2]", "model.top_k", id="zero-k"),
        pytest.param("model.top_k=[2]", "one k per level", id="levels"),
        pytest.param("training.mode=fit", "training.mode", id="mode"),
        pytest.param("model.routing_temperature=0", "routing_temperature",
                     id="tau"),
        pytest.param("model.num_heads=3", "divisible", id="heads"),
        pytest.param('tokenizer.latent_norm="l2"',
                     "tokenizer.latent_norm must be one of .*'l2'",
                     id="latent-norm"),
        pytest.param("tokenizer.ema_decay=1.5",
                     "tokenizer.ema_decay must be in .*1.5", id="ema-decay"),
        pytest.param("no_equals", "section.key=value", id="syntax"),
    ],
)
def test_bad_overrides_name_key_and_value(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        config_lib.load_config("tiny", [override])


@pytest.mark.parametrize(
    "override, message",
    [
        pytest.param('evaluation.checkpoint="first"',
                     "evaluation.checkpoint must be 'auto', 'best' or "
                     "'latest', got 'first'", id="checkpoint"),
        pytest.param("evaluation.history_buckets=[200, 50]",
                     "evaluation.history_buckets must be strictly "
                     "increasing", id="buckets-order"),
        pytest.param("evaluation.activity_buckets=[]",
                     "evaluation.activity_buckets", id="buckets-empty"),
        pytest.param("evaluation.activity_days=0",
                     "evaluation.activity_days must be > 0", id="days"),
        pytest.param("evaluation.calibration_bins=0",
                     "evaluation.calibration_bins must be >= 1",
                     id="bins"),
        pytest.param("evaluation.eval_steps=3", "evaluation.eval_steps",
                     id="evaluation-unknown"),
        pytest.param("cluster.strategy=horovod",
                     "cluster.strategy must be one of .*horovod",
                     id="strategy"),
        pytest.param("cluster.ps_shards=-1", "cluster.ps_shards must be "
                     ">= 0, got -1", id="ps-shards"),
        pytest.param("cluster.timeout_s=0", "cluster.timeout_s must be "
                     ">= 1", id="timeout"),
        pytest.param("cluster.timeout=5", "cluster.timeout", id="unknown"),
    ],
)
def test_evaluation_and_cluster_sections_check_their_keys(override,
                                                          message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        config_lib.load_config("tiny", [override])


def test_evaluation_and_cluster_sections_are_read():
    cfg = config_lib.load_config("tiny", [
        "evaluation.checkpoint=latest", "evaluation.activity_days=3",
        "cluster.strategy=multi_worker", "cluster.timeout_s=7"])
    assert cfg.evaluation.checkpoint == "latest"
    assert cfg.evaluation.activity_days == 3.0
    assert (cfg.cluster.strategy, cfg.cluster.timeout_s) == (
        "multi_worker", 7.0)
    assert config_lib.load_config("industrial").cluster.strategy == \
        "mirrored"


@pytest.mark.parametrize("old, new", sorted(config_lib.MOVED_KEYS.items()))
def test_moved_keys_name_their_new_place(old, new, tmp_path):
    section, key = old.split(".")
    # As an override and in a preset file: an error naming the new place.
    with pytest.raises(ConfigError, match=f"{old} .*{new}"):
        config_lib.load_config("tiny", [f"{old}=1"])
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"base": "tiny", section: {key: 1}}))
    with pytest.raises(ConfigError, match=new):
        config_lib.load_config(str(path))
    # The key is gone from its old section.
    assert key not in {f.name for f in dataclasses.fields(
        config_lib.TrainingConfig)}


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="tiny"):
        config_lib.load_config("nope")


def test_unknown_top_level_key(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"modell": {}}))
    with pytest.raises(ConfigError, match="modell"):
        config_lib.load_config(str(path))


def test_base_preset_is_extended(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"base": "tiny", "model": {"num_agents": 3}}))
    cfg = config_lib.load_config(str(path))
    assert cfg.model.num_agents == 3
    assert cfg.data.max_history == 20  # From tiny.


def test_round_trip_and_resolved_file(tmp_path):
    cfg = config_lib.load_config("demo", ["model.num_agents=9"])
    assert config_lib.from_dict(cfg.to_dict()) == cfg
    path = config_lib.write_resolved(cfg, str(tmp_path / "out"))
    assert config_lib.from_dict(json.loads(open(path).read())) == cfg


def test_frozen():
    cfg = config_lib.load_config("tiny")
    with pytest.raises(Exception):
        cfg.model.num_agents = 3  # type: ignore[misc]


# Every range that load_config checks, one row per field (issue 12, item
# 11): each was accepted before, and each error names the key and value.
RANGE_ERRORS = [
    ("training.dense_learning_rate=NaN",
     "training.dense_learning_rate must be a finite number, got nan"),
    ("training.embedding_learning_rate=-1",
     "training.embedding_learning_rate must be > 0, got -1.0"),
    ("training.dense_learning_rate=0", "dense_learning_rate must be > 0"),
    ("model.vote_temperature=NaN",
     "model.vote_temperature must be a finite number, got nan"),
    ("model.routing_temperature=Infinity",
     "model.routing_temperature must be a finite number, got inf"),
    ("tokenizer.learning_rate=-5",
     "tokenizer.learning_rate must be > 0, got -5.0"),
    ("tokenizer.beta=NaN", "tokenizer.beta must be a finite number, got nan"),
    ("tokenizer.beta=-0.5", "tokenizer.beta must be >= 0, got -0.5"),
    ("tokenizer.hidden_dims=[-1]",
     r"tokenizer.hidden_dims must hold widths >= 1, got \[-1\]"),
    ("tokenizer.output_dir=", "tokenizer.output_dir must not be empty"),
    ("tokenizer.seed=-1", "tokenizer.seed must be >= 0, got -1"),
    ("tokenizer.dead_code_threshold=-2", "dead_code_threshold must be >= 0"),
    ("model.top_k=[100, 100]",
     r"model.top_k\[0\] = 100 must be <= tokenizer.codebook_sizes\[0\] = 4"),
    ("model.mlp_dims=[0, -3]",
     r"model.mlp_dims must hold widths >= 1, got \[0, -3\] \(bad: 0\)"),
    ("model.dropout=NaN", "model.dropout must be a finite number"),
    ("model.compressor=", "model.compressor must not be empty"),
    ("export.grpc_port=99999",
     "export.grpc_port must be a TCP port in 1..65535, got 99999"),
    ("export.grpc_port=0", "export.grpc_port must be a TCP port"),
    ('export.model_name=""', "export.model_name must match .*got ''"),
    ("export.model_name=../../etc",
     "export.model_name must match .*got '../../etc'"),
    ("export.model_name=..", "export.model_name .*got '..'"),
    ("export.export_dir=", "export.export_dir must not be empty"),
    ('training.model_dir=""', "training.model_dir must not be empty"),
    ('data.data_dir=" "', "data.data_dir must not be empty"),
    ('data.train_pattern=""', "data.train_pattern must not be empty"),
    ('data.user_features=["gender", "gender"]',
     "data.user_features has duplicates"),
    ('data.user_features=[""]', "data.user_features must hold non-empty"),
    ("synthetic.content_noise=NaN",
     "synthetic.content_noise must be a finite number"),
    ("synthetic.zipf_exponent=Infinity", "synthetic.zipf_exponent"),
    ("synthetic.seed=-1", "synthetic.seed must be >= 0"),
    ("importer.warn_share=NaN", "importer.warn_share must be a finite"),
    ("importer.timestamp_unit=days", "importer.timestamp_unit must be"),
    ("importer.max_timestamp=0", "importer.max_timestamp must be > "),
    ("importer.min_timestamp=-1", "importer.min_timestamp must be a "),
]


@pytest.mark.parametrize(
    "override, message",
    [pytest.param(o, m, id=o.split("=")[0] + "=" + o.split("=", 1)[1][:12])
     for o, m in RANGE_ERRORS])
def test_every_range_is_checked_at_load_time(override, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.load_config("tiny", [override])


def test_ranges_are_checked_when_built_in_code():
    cfg = config_lib.Config()
    with pytest.raises(ConfigError, match="dense_learning_rate"):
        cfg.replace(training={"dense_learning_rate": float("nan")})
    with pytest.raises(ConfigError, match="routing_temperature .*inf"):
        config_lib.Config(model=config_lib.ModelConfig(
            routing_temperature=float("inf"))).validate()


@pytest.mark.parametrize("override", [
    "export.model_name=hisac-v2.1_x", "model.mlp_dims=[]",
    "export.grpc_port=65535", "model.top_k=[4, 4]"])
def test_edges_of_the_ranges_are_accepted(override):
    config_lib.load_config("tiny", [override])
