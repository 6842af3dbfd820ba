"""Cost-model terms of sparse routing and of the training step
(hisac_tf/compressors/flops.py `routed_items`, `training_cost`,
`HiSACCompressor.cost`; issue 23), by hand counts."""

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import pytest

from hisac_tf import config as config_lib
from hisac_tf.compressors import flops as flops_lib
from hisac_tf.compressors.compressor_sizes import CompressorSizes

# N = 6, A = 2, C = 3, D = 4, Ds = 2, H = 2, L = 2.
SHAPES = dict(n=6, a=2, c=3, d=4, ds=2, h=2, mlp_dims=(8,))


def _sizes(**changes):
    return flops_lib.RequestSizes("hisac", **dict(SHAPES, **changes))


@pytest.mark.parametrize("n,m,want", [
    (10, 0, 10), (10, 3, 3), (10, 10, 10), (10, 20, 10)])
def test_routed_items(n, m, want):
    assert flops_lib.routed_items(n, m) == want
    assert CompressorSizes(n=n, a=2, d=4, ds=2, h=2,
                           routing_top_m=m).routed_items == want


def test_sparse_compression_macs_and_bytes_hand_count():
    def cost(m):
        return flops_lib.compression_cost("hisac", CompressorSizes(
            n=6, a=2, d=4, ds=2, h=2, routing_top_m=m))

    dense, sparse = cost(0), cost(2)
    # Aggregation A m D = 2*2*4 instead of A N D = 2*6*4; logits unchanged.
    assert dense.macs - sparse.macs == 2 * 6 * 4 - 2 * 2 * 4
    # z_aug 8*6*5, ||z||^2 4*6*2, the selection over [A, N] 8*2*6,
    # gather + softmax over [A, m] 8*2*2*(4 + 2).
    assert sparse.bytes == 240 + 48 + 96 + 192
    # Off the tape: all but the aggregation A m D and its 8 A m (D + 1).
    assert sparse.off_tape_macs == sparse.macs - 2 * 2 * 4
    assert sparse.off_tape_bytes == sparse.bytes - 8 * 2 * 2 * 5
    # m >= N: the dense counts.
    assert cost(6) == dense


def test_routing_top_m_is_checked():
    with pytest.raises(ValueError, match="routing_top_m"):
        _sizes(routing_top_m=-1)
    with pytest.raises(ValueError, match="routing_top_m"):
        CompressorSizes(n=6, a=2, d=4, ds=2, h=2, routing_top_m=-1)


def test_sparse_request_cost_adds_up():
    flops = flops_lib.request_flops(_sizes(routing_top_m=2))
    cost = flops_lib.request_cost(_sizes(routing_top_m=2))
    assert cost["request"]["macs"] == flops["request"]
    dense = flops_lib.request_flops(_sizes())
    # A (N - m) D fewer aggregation MACs, and the history embedding of
    # the A m = 4 routed items instead of N = 6: 3 (N - A m) D.
    assert dense["request"] - flops["request"] == (
        2 * (6 - 2) * 4 + 3 * (6 - 4) * 4)


def test_config_cost_reads_routing_top_m():
    cfg = config_lib.load_config("tiny", ["model.routing_top_m=3"])
    assert flops_lib.RequestSizes.from_config(cfg).routing_top_m == 3
    n = cfg.data.max_history
    sparse = flops_lib.config_flops(cfg)["compression"]
    dense = flops_lib.config_flops(config_lib.load_config("tiny"))[
        "compression"]
    a, d = cfg.model.num_agents, cfg.model.embedding_dim
    assert dense - sparse == a * (n - 3) * d


def test_training_cost_stages():
    sizes = _sizes(routing_top_m=2)
    step = flops_lib.training_cost(sizes, batch=5)
    piped = flops_lib.training_cost(sizes, batch=5,
                                    routing_in_pipeline=True)
    request = flops_lib.request_cost(sizes)["components"]
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
    assert total == 5 * flops_lib.request_cost(sizes)["request"]["macs"]
    assert step["stages"]["optimizer"]["bytes"] > 0


def test_training_cost_of_a_baseline_keeps_its_compression_taped():
    """A compressor without an off-tape part (kmeans) has no routing
    stage: its compression and semantic lookup are in the forward."""
    step = flops_lib.training_cost(
        flops_lib.RequestSizes("kmeans", **SHAPES), batch=2,
        routing_in_pipeline=True)
    assert step["components"]["compression"]["side"] == "forward"
    assert step["components"]["semantic_lookup"]["side"] == "forward"
    assert "voting" not in step["components"]
    assert step["stages"]["input"] == {"macs": 0, "bytes": 0}
    assert step["stages"]["routing"] == {"macs": 0, "bytes": 0}


def test_training_cost_taped_part_of_sparse_is_flat_in_n():
    """With sparse routing neither the taped aggregation nor the ranking
    embedding (of at most A m routed items) grows with N; dense routing
    embeds all N items."""
    a = SHAPES["a"]
    costs = [flops_lib.training_cost(_sizes(n=n, routing_top_m=2), batch=1,
                                     routing_in_pipeline=True)
             for n in (10 * a, 100 * a)]
    for part in ("aggregation", "ranking_embedding"):
        assert costs[0]["components"][part] == costs[1]["components"][part]
    d = SHAPES["d"]
    assert (costs[0]["components"]["ranking_embedding"]["macs"]
            == 3 * (2 * a) * d)  # 3 E D, E = A m
    whole = [flops_lib.training_cost(_sizes(n=n), batch=1,
                                     routing_in_pipeline=True)
             for n in (10 * a, 100 * a)]
    assert (whole[1]["components"]["ranking_embedding"]["macs"]
            == 10 * whole[0]["components"]["ranking_embedding"]["macs"])


@pytest.mark.parametrize("long_term,short,m,want", [
    (True, 0, 0, 50), (True, 8, 0, 58), (False, 8, 0, 8),
    (True, 80, 0, 100), (True, 0, 4, 8), (True, 8, 30, 58)])
def test_embedded_items(long_term, short, m, want):
    """E = N for the long-term branch (min(N, A m) = 2 m with sparse
    routing, A = 2) + min(S, N) for the short-term window (N = 50; the
    S = 80 window is all 50 items)."""
    sizes = flops_lib.RequestSizes(
        "hisac" if long_term else "none",
        **dict(SHAPES, n=50, short_term_length=short, routing_top_m=m))
    assert flops_lib.embedded_items(sizes) == want


def test_predict_training_hand_count_and_errors():
    cost = {"stages": {"forward": {"macs": 10, "bytes": 40}}}
    got = flops_lib.predict_training(cost, matmul_flops_per_s=20.0,
                                     bytes_per_s=8.0)
    assert got == {"forward": pytest.approx(2 * 10 / 20 + 40 / 8)}
    with pytest.raises(ValueError, match="bytes_per_s"):
        flops_lib.predict_training(cost, 1.0, 0.0)
    with pytest.raises(ValueError, match="batch"):
        flops_lib.training_cost(_sizes(), batch=0)
    with pytest.raises(TypeError, match="RequestSizes"):
        flops_lib.training_cost(SHAPES, batch=1)
