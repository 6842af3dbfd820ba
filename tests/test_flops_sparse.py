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
    zero = dict.fromkeys(flops_lib.STAGE_KEYS, 0)
    # The frozen work moves from the step to the input pipeline, as is.
    assert step["stages"]["routing"] == piped["stages"]["input"]
    assert step["stages"]["input"] == zero
    assert piped["stages"]["routing"] == zero
    for k in off:
        assert piped["components"][k]["side"] == "input"
    # Aggregation on the tape: A m D per request, its gather's bytes.
    assert step["components"]["aggregation"] == {
        **zero, "side": "forward", "macs": 5 * 2 * 2 * 4,
        "bytes": 5 * 8 * 2 * 2 * 5}
    # The routing logits carry the rest of the compression, per request.
    assert (step["components"]["routing_logits"]["macs"]
            + step["components"]["aggregation"]["macs"]
            == 5 * request["compression"]["macs"])
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
    zero = dict.fromkeys(flops_lib.STAGE_KEYS, 0)
    assert step["stages"]["input"] == zero
    assert step["stages"]["routing"] == zero


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
    # Integer work at its rates, + 7 ops at 0.1 s of dispatch each.
    work = {"stages": {
        "forward": {"macs": 10, "bytes": 40, "sort_steps": 3,
                    "search_steps": 0, "select_elements": 2,
                    "unique_elements": 0},
        "optimizer": {"macs": 0, "bytes": 8, "unique_elements": 4}}}
    rates = {"sort_s_per_step": 0.5, "select_s_per_element": 0.25,
             "unique_s_per_element": 0.125, "op_overhead_s": 0.1}
    got = flops_lib.predict_training(work, 20.0, 8.0, rates=rates,
                                     ops={"forward": 7})
    assert got == {"forward": pytest.approx(1 + 5 + 1.5 + 0.5 + 0.7),
                   "optimizer": pytest.approx(1 + 0.5)}
    # 4 exp elements at 1.5 s each, less the 8 / 8 s their bytes took;
    # two calls at 0.25 s.
    exp = {"stages": {"forward": {"macs": 0, "bytes": 32,
                                  "exp_elements": 4}}}
    got = flops_lib.predict_training(
        exp, 20.0, 8.0, calls={"forward": 2},
        rates={"exp_s_per_element": 1.5, "call_overhead_s": 0.25})
    assert got == {"forward": pytest.approx(4 + 4 * (1.5 - 1) + 0.5)}
    with pytest.raises(ValueError, match="calls"):
        flops_lib.predict_training(cost, 20.0, 8.0, rates=rates,
                                   calls={"forward": 1.5})
    with pytest.raises(ValueError, match="select_s_per_element"):
        flops_lib.predict_training(
            work, 20.0, 8.0, rates={"sort_s_per_step": 0.5})
    with pytest.raises(ValueError, match="op_overhead_s"):
        flops_lib.predict_training(cost, 20.0, 8.0, ops={"forward": 3})
    with pytest.raises(ValueError, match="unknown stages"):
        flops_lib.predict_training(cost, 20.0, 8.0, rates=rates,
                                   ops={"backwards": 3})
    with pytest.raises(ValueError, match="forward"):
        flops_lib.predict_training(cost, 20.0, 8.0, rates=rates,
                                   ops={"forward": -1})
    with pytest.raises(ValueError, match="sort_s_per_step"):
        flops_lib.predict_training(
            work, 20.0, 8.0, rates={**rates, "sort_s_per_step": -1.0})
    with pytest.raises(ValueError, match="batch"):
        flops_lib.training_cost(_sizes(), batch=0)
    with pytest.raises(TypeError, match="RequestSizes"):
        flops_lib.training_cost(SHAPES, batch=1)


def _piped():
    """hisac, m = 2 (K = 2 < N = 6), B = 5, plan in the pipeline, V = 16
    ids, tables of 10 items, 3 categories, 8 behaviours, 4 gaps, 6 SID
    codes."""
    sizes = _sizes(routing_top_m=2, semantic_items=16,
                   table_rows=(10, 3, 8, 4, 6))
    return sizes, flops_lib.training_cost(sizes, batch=5,
                                          routing_in_pipeline=True)


def test_training_cost_integer_work_of_the_plan_hand_count():
    _, cost = _piped()
    parts = cost["components"]
    # Binary search: B N ceil(log2 V) = 5 * 6 * 4.
    assert parts["semantic_lookup"]["search_steps"] == 120
    # Voting: the row sort B N ceil(log2 N) = 5 * 6 * 3 and L = 2 level
    # passes of 4 int64 ops, 5 * 32 * 6 * 2 bytes.
    assert parts["voting"]["sort_steps"] == 90
    assert parts["voting"]["bytes"] == 1920
    # Sparse routing: top-m over B A N = 5 * 2 * 6 logits, the routed
    # positions' argsort B N ceil(log2 N) = 90.
    assert parts["routing_logits"]["select_elements"] == 60
    assert parts["routing_logits"]["sort_steps"] == 90
    # Exp passes: the routing softmax B A m = 5 * 2 * 2, the target
    # attention's B H C G = 5 * 2 * 3 * 2.
    assert parts["routing_logits"]["exp_elements"] == 20
    assert parts["target_attention"]["exp_elements"] == 60
    plan = cost["stages"]["input"]
    assert (plan["sort_steps"], plan["search_steps"],
            plan["select_elements"]) == (180, 120, 60)
    # No integer work on the tape; V = 0 counts no search.
    assert cost["stages"]["forward"]["sort_steps"] == 0
    assert flops_lib.training_cost(_sizes(), batch=1)["stages"][
        "routing"]["search_steps"] == 0


def test_table_reads_hand_count():
    sizes, _ = _piped()
    # E = min(N, A m) = 4 routed items; C = 3; G = A = 2; L = 2.
    reads = flops_lib.table_reads(sizes, batch=5, routing_in_pipeline=True)
    assert reads == {
        "item": (35, 10), "category": (35, 3), "behavior": (20, 8),
        "time_gap": (20, 4), "sid": (50, 6),
        "user_0": (5, 5), "user_1": (5, 5), "user_2": (5, 5)}
    # Without table_rows nothing bounds the distinct rows; sparse
    # routing embeds its A m = 4 routed items with or without the plan
    # in the pipeline, dense routing all N = 6.
    sparse = flops_lib.table_reads(_sizes(routing_top_m=2), batch=5)
    assert sparse["item"] == (5 * (4 + 3), 5 * (4 + 3))
    whole = flops_lib.table_reads(_sizes(), batch=5)
    assert whole["item"] == (5 * (6 + 3), 5 * (6 + 3))


def test_training_cost_backward_and_optimizer_hand_count():
    sizes, cost = _piped()
    parts, d = cost["components"], SHAPES["d"]
    taped = {k: p for k, p in parts.items() if p["side"] == "forward"}
    gathers = ("ranking_embedding", "candidate_embedding",
               "group_sid_embedding")
    rows_read, distinct = 175, 46  # table_reads: summed
    agg = parts["aggregation"]
    # Contractions and elementwise passes twice, but the aggregation
    # (frozen alpha: dh = alpha^T du once) and the gathers: one 8 D
    # bytes copy of each row's gradient (IndexedSlices), no MAC.
    passes = {k: p for k, p in taped.items()
              if k not in gathers and k != "aggregation"}
    assert parts["backward"]["macs"] == 2 * sum(
        p["macs"] for p in passes.values()) + agg["macs"]
    assert parts["backward"]["bytes"] == 2 * sum(
        p["bytes"] for p in passes.values()) + agg["bytes"] \
        + 8 * d * rows_read
    # Adam: 7 floats a dense weight (per candidate + keys and values
    # 2 (2 D) hk = 64); Adagrad: tf.unique of small tables' ids streamed
    # (16 bytes an id: every table here has <= 4096 distinct rows), the
    # segment sum 8 D a row read, the update 5 floats a value of a
    # distinct row.
    weights = flops_lib.request_flops(sizes)["per_candidate"] + 64
    assert parts["optimizer"]["bytes"] == (
        4 * 7 * weights + 16 * rows_read + 8 * d * rows_read
        + 4 * 5 * d * distinct)
    assert parts["optimizer"]["unique_elements"] == 0


def test_optimizer_hashes_the_ids_of_large_tables():
    """Item rows above UNIQUE_CACHED_ROWS distinct ids pay tf.unique's
    rate an id; the small tables stream theirs."""
    sizes = _sizes(n=1000, table_rows=(10_000, 3, 8, 4, 6))
    cost = flops_lib.training_cost(sizes, batch=5)
    reads = flops_lib.table_reads(sizes, batch=5)
    assert reads["item"] == (5 * 1003, 5 * 1003)  # > 4096 distinct
    assert cost["components"]["optimizer"]["unique_elements"] == 5 * 1003


def test_routed_positions_bound_the_embedded_items():
    """U from the plan: E = min(N, A m, U) with sparse routing (in the
    step and in a request alike); dense routing embeds all N."""
    sizes = _sizes(routing_top_m=2, routed_positions=3)
    assert flops_lib.embedded_items(sizes) == 3
    assert flops_lib.embedded_items(
        sizes.replace(routed_positions=0)) == 4  # A m = 2 x 2
    assert flops_lib.embedded_items(_sizes(routed_positions=3)) == 6
    with pytest.raises(ValueError, match="routed_positions"):
        _sizes(routed_positions=-1)


def test_table_rows_and_integer_work_are_checked():
    with pytest.raises(ValueError, match="table_rows"):
        _sizes(table_rows=(10, 0))
    with pytest.raises(ValueError, match="table_rows"):
        _sizes(table_rows=(1,) * 6)
    with pytest.raises(ValueError, match="semantic_items"):
        _sizes(semantic_items=-1)
    with pytest.raises(ValueError, match="select_elements"):
        flops_lib.CompressionCost(groups=1, select_elements=-1)


def test_from_config_reads_the_table_sizes():
    cfg = config_lib.load_config("tiny")
    sizes = flops_lib.RequestSizes.from_config(cfg)
    m = cfg.model
    assert sizes.semantic_items == cfg.synthetic.num_items
    assert sizes.table_rows == (
        m.item_vocab_buckets, m.category_vocab_buckets, 8,
        m.time_gap_buckets, sum(cfg.tokenizer.codebook_sizes))
    assert flops_lib.RequestSizes.from_config(
        cfg, semantic_items=7).semantic_items == 7
