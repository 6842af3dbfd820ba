"""Cost-model terms of sparse routing and of the training step
(hisac_tf/compressors/flops.py `routed_items`, `training_cost`; issue 23),
by hand counts."""

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import pytest

from hisac_tf import config as config_lib
from hisac_tf.compressors import flops as flops_lib

# N = 6, A = 2, C = 3, D = 4, Ds = 2, H = 2, L = 2.
SHAPES = dict(n=6, a=2, c=3, d=4, ds=2, h=2, mlp_dims=(8,))


@pytest.mark.parametrize("n,m,want", [
    (10, 0, 10), (10, 3, 3), (10, 10, 10), (10, 20, 10)])
def test_routed_items(n, m, want):
    assert flops_lib.routed_items(n, m) == want


def test_sparse_compression_macs_and_bytes_hand_count():
    dense = flops_lib.compression_flops("hisac", n=6, a=2, d=4, ds=2, h=2)
    sparse = flops_lib.compression_flops("hisac", n=6, a=2, d=4, ds=2, h=2,
                                         routing_top_m=2)
    # Aggregation A m D = 2*2*4 instead of A N D = 2*6*4; logits unchanged.
    assert dense - sparse == 2 * 6 * 4 - 2 * 2 * 4
    nbytes = flops_lib.compression_bytes("hisac", n=6, a=2, d=4, ds=2,
                                         routing_top_m=2)
    # z_aug 8*6*5, ||z||^2 4*6*2, the selection over [A, N] 8*2*6,
    # gather + softmax over [A, m] 8*2*2*(4 + 2).
    assert nbytes == 240 + 48 + 96 + 192
    # m >= N: the dense counts.
    assert flops_lib.compression_flops(
        "hisac", n=6, a=2, d=4, ds=2, h=2, routing_top_m=6) == dense


def test_sparse_request_cost_adds_up():
    flops = flops_lib.request_flops("hisac", **SHAPES, routing_top_m=2)
    cost = flops_lib.request_cost("hisac", **SHAPES, routing_top_m=2)
    assert cost["request"]["macs"] == flops["request"]
    dense = flops_lib.request_flops("hisac", **SHAPES)
    assert dense["request"] - flops["request"] == 2 * (6 - 2) * 4


def test_config_cost_reads_routing_top_m():
    cfg = config_lib.load_config("tiny", ["model.routing_top_m=3"])
    sizes = dict(n=cfg.data.max_history)
    sparse = flops_lib.config_flops(cfg)["compression"]
    dense = flops_lib.config_flops(config_lib.load_config("tiny"))[
        "compression"]
    a, d = cfg.model.num_agents, cfg.model.embedding_dim
    assert dense - sparse == a * (sizes["n"] - 3) * d


def test_training_cost_stages():
    sizes = dict(SHAPES, routing_top_m=2)
    step = flops_lib.training_cost("hisac", batch=5, **sizes)
    piped = flops_lib.training_cost("hisac", batch=5,
                                    routing_in_pipeline=True, **sizes)
    request = flops_lib.request_cost("hisac", **sizes)["components"]
    off = ("semantic_lookup", "voting", "routing_logits")
    # The frozen work moves from the step to the input pipeline, as is.
    assert step["stages"]["routing"] == piped["stages"]["input"]
    assert step["stages"]["input"] == {"macs": 0, "bytes": 0}
    assert piped["stages"]["routing"] == {"macs": 0, "bytes": 0}
    for k in off:
        assert piped["components"][k]["side"] == "input"
    # Aggregation on the tape: A m D per request, its gather's bytes.
    assert step["components"]["aggregation"] == {
        "side": "forward", "macs": 5 * 2 * 2 * 4,
        "bytes": 5 * 8 * 2 * 2 * 5}
    # The routing logits carry the rest of the compression, per request.
    assert (step["components"]["routing_logits"]["macs"]
            + step["components"]["aggregation"]["macs"]
            == 5 * request["compression"]["macs"])
    fwd = step["stages"]["forward"]
    assert step["stages"]["backward"] == {"macs": 2 * fwd["macs"],
                                          "bytes": 2 * fwd["bytes"]}
    # Everything but the optimiser and the backward is the request's cost.
    total = sum(s["macs"] for k, s in step["stages"].items()
                if k not in ("backward", "optimizer"))
    assert total == 5 * flops_lib.request_cost(
        "hisac", **sizes)["request"]["macs"]
    assert step["stages"]["optimizer"]["bytes"] > 0


def test_training_cost_taped_part_of_sparse_is_flat_in_n_but_embedding():
    """With the plan in the pipeline the taped aggregation does not grow
    with N; the ranking embedding of the N history items still does."""
    big = dict(SHAPES, n=600, routing_top_m=2)
    small = dict(SHAPES, n=60, routing_top_m=2)
    costs = [flops_lib.training_cost("hisac", batch=1,
                                     routing_in_pipeline=True, **s)
             for s in (small, big)]
    assert (costs[0]["components"]["aggregation"]
            == costs[1]["components"]["aggregation"])
    assert (costs[1]["components"]["ranking_embedding"]["macs"]
            == 10 * costs[0]["components"]["ranking_embedding"]["macs"])


def test_predict_training_hand_count_and_errors():
    cost = {"stages": {"forward": {"macs": 10, "bytes": 40}}}
    got = flops_lib.predict_training(cost, matmul_flops_per_s=20.0,
                                     bytes_per_s=8.0)
    assert got == {"forward": pytest.approx(2 * 10 / 20 + 40 / 8)}
    with pytest.raises(ValueError, match="bytes_per_s"):
        flops_lib.predict_training(cost, 1.0, 0.0)
    with pytest.raises(ValueError, match="batch"):
        flops_lib.training_cost("hisac", batch=0, **SHAPES)
