"""Config validation and the layers agree on model sizes (issue 22,
item 13).

`model.user_vocab_buckets = 1` used to pass `load_config`, then stop the
job at model build (after the data was read) with `num_buckets must be
>= 2, got 1`. Every `*_buckets` field is now checked at load with the
layers' own rule (`hisac_tf.buckets.MIN_BUCKETS`), and every integer
model size the config accepts builds.
"""

import dataclasses
import typing

import numpy as np
import pytest

from hisac_tf import config as config_lib
from hisac_tf.config import ConfigError
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.layers.id_hashing import IdHashing
from hisac_tf.models.build import build_model
from hisac_tf.tokenizer.semantic_tables import SemanticTables

CFG = config_lib.load_config("tiny")
SPEC = FeatureSpec.from_config(CFG.data)


def tables(num_items=40, sizes=(4, 4), dim=8):
    rng = np.random.default_rng(0)
    return SemanticTables(
        item_ids=np.arange(1, num_items + 1, dtype=np.int64),
        sids=np.stack([rng.integers(0, k, num_items) for k in sizes], 1)
        .astype(np.int32),
        latents=rng.normal(size=(num_items, dim)).astype(np.float32),
        codebooks=tuple(rng.normal(size=(k, dim)).astype(np.float32)
                        for k in sizes),
    )


def int_fields(suffix=""):
    """(section, field) of every int field of every config section."""
    found = []
    for section in config_lib._SECTIONS:
        cls = type(getattr(CFG, section))
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if hints[field.name] is int and field.name.endswith(suffix):
                found.append((section, field.name))
    return found


BUCKET_FIELDS = int_fields("_buckets")


def test_the_walk_finds_the_bucket_fields():
    assert {"model.item_vocab_buckets", "model.category_vocab_buckets",
            "model.user_vocab_buckets", "model.time_gap_buckets"} <= {
                f"{s}.{f}" for s, f in BUCKET_FIELDS}


@pytest.mark.parametrize("section, field", BUCKET_FIELDS,
                         ids=[f"{s}.{f}" for s, f in BUCKET_FIELDS])
@pytest.mark.parametrize("value", [1, 0, -3])
def test_one_bucket_is_refused_at_load(section, field, value):
    with pytest.raises(ConfigError, match=(
            rf"{section}\.{field} must be >= 2 \(row 0 is padding\), got "
            rf"{value}$")):
        config_lib.load_config("tiny", [f"{section}.{field}={value}"])


@pytest.mark.parametrize("section, field", BUCKET_FIELDS,
                         ids=[f"{s}.{f}" for s, f in BUCKET_FIELDS])
def test_two_buckets_load_and_build(section, field):
    cfg = config_lib.load_config("tiny", [f"{section}.{field}=2"])
    build_model(cfg, SPEC, tables())


def test_layers_use_the_same_rule():
    with pytest.raises(ValueError, match="num_buckets must be >= 2, got 1"):
        IdHashing(1)
    IdHashing(2)


MODEL_INTS = int_fields()
MODEL_INTS = [f for s, f in MODEL_INTS if s == "model"]


@pytest.mark.parametrize("compressor", ["hisac", "kmeans", "lsh", "none"])
@pytest.mark.parametrize("field", MODEL_INTS)
def test_every_model_size_the_config_accepts_builds(field, compressor):
    """Sizes 0..2 of each int model field: accepted at load -> builds."""
    for value in (0, 1, 2):
        try:
            cfg = config_lib.load_config("tiny", [
                f"model.{field}={value}", f'model.compressor="{compressor}"',
                "model.short_term_length=4"
                if field != "short_term_length" else "model.count_slots=8"])
        except ConfigError:
            continue
        build_model(cfg, SPEC, tables())
