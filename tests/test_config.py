"""Config: presets, overrides, unknown keys and wrong types are errors."""

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
