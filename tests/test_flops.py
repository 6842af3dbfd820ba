"""Tests for the cost model (hisac_tf/compressors/flops.py): multiply-adds
and elementwise bytes per component, and the latency it predicts."""

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import pytest

from hisac_tf import config as config_lib
from hisac_tf.compressors import flops as flops_lib

SHAPES = dict(n=6, a=2, c=3, d=4, ds=2, h=2, mlp_dims=(8,))


def sizes(name, **kwargs):
    return flops_lib.RequestSizes(name, **kwargs)

METHODS = [
    pytest.param("hisac", {}, id="hisac"),
    pytest.param("full", {}, id="full"),
    pytest.param("recent", {}, id="recent"),
    pytest.param("hisac", {"short_term_length": 4}, id="two_branch"),
    pytest.param("none", {"short_term_length": 4}, id="short_only"),
    pytest.param("kmeans", {}, id="kmeans"),
]


def test_request_flops_attention_mass_defaults_to_the_config():
    """It defaulted to False while ModelConfig.attention_mass is True."""
    default = flops_lib.request_flops(sizes("hisac", **SHAPES))
    explicit = flops_lib.request_flops(sizes(
        "hisac", **SHAPES,
        attention_mass=config_lib.ModelConfig().attention_mass))
    assert default == explicit
    assert config_lib.ModelConfig().attention_mass is True


@pytest.mark.parametrize("name,extra", METHODS)
def test_cost_macs_add_up_to_request_flops(name, extra):
    flops = flops_lib.request_flops(sizes(name, **SHAPES, **extra))
    cost = flops_lib.request_cost(sizes(name, **SHAPES, **extra))
    assert cost["request"]["macs"] == flops["request"]
    assert cost["user"]["macs"] == flops["user"]
    assert cost["candidate"]["macs"] == 3 * flops["per_candidate"]
    assert all(p["bytes"] >= 0 and p["macs"] >= 0
               for p in cost["components"].values())
    cached = flops_lib.request_cost(sizes(name, **SHAPES, **extra),
                                    cached=True)
    assert cached["request"] == cached["candidate"] == cost["candidate"]


def test_cost_bytes_hand_count_hisac():
    # N = 6, A = 2, C = 3, D = 4, Ds = 2, H = 2 (dk = 2, hk = 4), L = 2,
    # U = 2, MLP (8,): F = 3*4 + 3*4 + 4 = 28.
    cost = flops_lib.request_cost(sizes("hisac", **SHAPES))["components"]
    want = {
        "semantic_lookup": 32 * 6 + 8 * 6 * (2 + 2) + 6,  # 390
        "ranking_embedding": 68 * 6 * 4,  # 1632
        "voting": 8 * 6 * 2 * (4 + 3),  # ceil log2 6 = 3 -> 672
        # z_aug 8*6*5, ||z||^2 4*6*2, values ++ 1 8*6*5, exp 8*2*6
        "compression": 240 + 48 + 240 + 96,
        "group_sid_embedding": 8 * 2 * 2 * 4,  # 128
        "keys_values": 8 * 2 * 8 + 16 * 2 * 4,  # 256
        "candidate_embedding": 8 * 3 * 4 * 5,  # 480
        # exp over [H, C, G] 8*2*3*2, state prep 8*2*(12 + 6), small
        # per-candidate passes 48*3*4
        "target_attention": 96 + 288 + 576,
        "head": 16 * 3 * (56 + 8 + 1),  # 3120
    }
    assert {k: v["bytes"] for k, v in cost.items()} == want
    assert {k for k, v in cost.items() if v["side"] == "candidate"} == {
        "candidate_embedding", "target_attention", "head"}


def test_cost_scaling_full_grows_per_candidate_hisac_does_not():
    """full's candidate side grows with N, hisac's is flat in N; both user
    sides grow (about linearly) in N."""
    big = dict(a=200, c=100, d=32, ds=32, h=4)

    def cost(name, n):
        return flops_lib.request_cost(sizes(name, n=n, **big))

    for name in ("hisac", "full"):
        small, large = cost(name, 1_000), cost(name, 10_000)
        ratio = large["user"]["bytes"] / small["user"]["bytes"]
        assert 9.0 < ratio < 14.0, (name, ratio)
    assert cost("hisac", 10_000)["candidate"] == cost("hisac", 1_000)[
        "candidate"]
    full = [cost("full", n)["components"]["target_attention"]["bytes"]
            for n in (1_000, 10_000)]
    assert 9.5 < full[1] / full[0] <= 10.0


def test_predict_latency_hand_count():
    cost = {"cached": False, "components": {
        "a": {"side": "user", "macs": 500, "bytes": 300},
        "b": {"side": "candidate", "macs": 1_000, "bytes": 100},
    }}
    got = flops_lib.predict_latency(cost, matmul_flops_per_s=1_000.0,
                                    bytes_per_s=100.0, per_request_s=0.5)
    assert got["components"] == {"a": 1.0 + 3.0, "b": 2.0 + 1.0}
    assert (got["user_s"], got["candidate_s"]) == (4.0, 3.0)
    assert got["request_s"] == 7.5
    cached = flops_lib.predict_latency({**cost, "cached": True}, 1_000.0,
                                       100.0)
    assert cached["request_s"] == 3.0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        pytest.param({"matmul_flops_per_s": 0.0}, "matmul_flops_per_s.*0.0",
                     id="zero_flops"),
        pytest.param({"bytes_per_s": -1.0}, "bytes_per_s.*-1.0",
                     id="negative_bytes"),
        pytest.param({"per_request_s": -0.1}, "per_request_s.*-0.1",
                     id="negative_overhead"),
        pytest.param({"cost": {"macs": 1}}, "request_cost.*dict",
                     id="not_a_cost"),
    ],
)
def test_predict_latency_errors(kwargs, match):
    args = {"cost": flops_lib.request_cost(sizes("hisac", **SHAPES)),
            "matmul_flops_per_s": 1e9, "bytes_per_s": 1e9, **kwargs}
    with pytest.raises(ValueError, match=match):
        flops_lib.predict_latency(**args)


def test_cost_rejects_an_unknown_compressor():
    with pytest.raises(ValueError, match="unknown compressor 'nope'"):
        flops_lib.request_cost(sizes("nope", **SHAPES))


@pytest.mark.parametrize("field, value", [
    ("n", 0), ("c", -1), ("num_levels", 0), ("short_term_length", -2)])
def test_request_sizes_name_a_bad_size(field, value):
    with pytest.raises(ValueError, match=f"{field} must be .*{value}"):
        sizes("hisac", **{**SHAPES, field: value})


def test_no_branch_at_all_is_refused():
    with pytest.raises(ValueError, match="short_term_length > 0"):
        flops_lib.request_flops(sizes("none", **SHAPES))


def test_request_sizes_are_frozen():
    with pytest.raises(AttributeError):
        sizes("hisac", **SHAPES).n = 7


def test_config_cost_matches_config_flops():
    cfg = config_lib.load_config("tiny")
    cost = flops_lib.config_cost(cfg)
    flops = flops_lib.config_flops(cfg)
    assert cost["request"]["macs"] == flops["request"]
    assert flops_lib.config_cost(cfg, cached=True)["request"] == cost[
        "candidate"]


def test_predict_seconds_adds_its_terms():
    calib = {"matmul_macs_per_s": 1e9, "elementwise_bytes_per_s": 1e10,
             "op_overhead_s": 1e-6, "call_overhead_s": 1e-4}
    cost = {"cached": False, "components": {
        "a": {"side": "user", "macs": 2e9, "bytes": 0},
        "b": {"side": "candidate", "macs": 0, "bytes": 3e10}}}
    # R = 2 requests: twice the MACs and bytes, one call's ops.
    assert flops_lib.predict_seconds(cost, 100, calib, requests=2) == (
        pytest.approx(4.0 + 6.0 + 1e-4 + 1e-4))
    assert flops_lib.component_seconds(cost["components"], calib) == {
        "a": pytest.approx(2.0), "b": pytest.approx(3.0)}


def test_calibration_measures_positive_rates():
    calib = flops_lib.calibrate(calls=1, size=0.01)
    for key in ("matmul_macs_per_s", "elementwise_bytes_per_s",
                "call_overhead_s", *flops_lib.INTEGER_WORK.values(),
                *flops_lib.EXP_WORK.values()):
        assert calib[key] > 0, key
    assert calib["op_overhead_s"] >= 0


def test_calibration_statistic_is_checked():
    with pytest.raises(ValueError, match="statistic"):
        flops_lib.calibrate(calls=1, size=0.01, statistic="mean")
    with pytest.raises(ValueError, match="statistic"):
        flops_lib.integer_rates(calls=1, size=0.01, statistic="best")
