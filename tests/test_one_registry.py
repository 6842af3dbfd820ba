"""One registry per concept (issue 20 item 5): strategy names live in
hisac_tf/config.py (no TensorFlow) and the distribution code reads them
from there; compressor names live in the compressor registry, and every
registered compressor answers the cost model."""

from __future__ import annotations

import pytest

from hisac_tf import config as config_lib
from hisac_tf.compressors import COMPRESSOR_NAMES, compressor_names
from hisac_tf.compressors import flops as flops_lib
from hisac_tf.compressors.compressor_sizes import (
    CompressionCost,
    CompressorSizes,
)
from hisac_tf.distribute import strategy


def test_strategy_names_are_held_once():
    assert strategy.STRATEGIES is config_lib.STRATEGIES
    assert strategy.ALIASES is config_lib.STRATEGY_ALIASES
    for name in config_lib.STRATEGIES + tuple(config_lib.STRATEGY_ALIASES):
        cfg = config_lib.load_config("tiny", [f"cluster.strategy={name}"])
        assert strategy.canonical(cfg.cluster.strategy) in \
            config_lib.STRATEGIES


def test_an_unknown_strategy_lists_the_names():
    with pytest.raises(config_lib.ConfigError,
                       match="'nope'") as info:
        config_lib.load_config("tiny", ["cluster.strategy=nope"])
    for name in config_lib.STRATEGIES:
        assert name in str(info.value)


def test_every_registered_compressor_has_a_cost():
    assert set(COMPRESSOR_NAMES) <= set(compressor_names())
    sizes = CompressorSizes(n=50, a=4, d=8, ds=4, h=2)
    for name in compressor_names():
        cost = flops_lib.compression_cost(name, sizes)
        assert isinstance(cost, CompressionCost)
        assert cost.groups in (sizes.a, sizes.n), name


def test_compressor_sizes_name_a_bad_size():
    with pytest.raises(ValueError, match="CompressorSizes: a must be an "
                                         "int >= 1, got 0"):
        CompressorSizes(n=5, a=0, d=2, ds=2, h=1)
