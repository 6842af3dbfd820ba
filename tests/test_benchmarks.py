"""The performance benchmarks run on tiny sizes, so that they cannot rot.

benchmarks/serving_cost.py, training.py and gpu.sh (docs/performance.md)
run end to end on the `tiny` preset; their JSON holds every field the docs
read. No timing is asserted: only that times, memory and predictions are
there and positive, and that the helpers compute what they claim.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


def _load(name: str):
    """The module `benchmarks.<name>` (benchmarks are a package)."""
    return importlib.import_module(f"benchmarks.{name}")


@pytest.fixture(scope="module")
def bc():
    return _load("bench_common")


@pytest.mark.parametrize("slow, fast, expected", [
    ([[2.0, 2.0], [4.0, 4.0], [3.0]], [[1.0], [1.0, 1.0], [1.0]],
     {"median": 3.0, "min": 2.0, "max": 4.0, "rounds": 3}),
    ([[1.0, 9.0, 2.0]], [[1.0]], {"median": 2.0, "min": 2.0, "max": 2.0,
                                  "rounds": 1}),
], ids=["three-rounds", "round-median-not-mean"])
def test_ratios_are_per_round_medians(bc, slow, fast, expected):
    assert bc.round_ratios(slow, fast) == expected


def test_interleaved_rounds_times_every_fn_each_round(bc):
    calls = []
    fns = {name: (lambda name=name: calls.append(name))
           for name in ("a", "b", "c")}
    out = bc.interleaved_rounds(fns, rounds=4, calls=2, seed=1)
    assert {k: [len(r) for r in v] for k, v in out.items()} == {
        k: [2, 2, 2, 2] for k in "abc"}
    assert sorted(calls) == sorted(list("abc") * 8)
    # Each round holds every name once (6 calls), in some order.
    for start in range(0, 24, 6):
        assert sorted(set(calls[start:start + 6])) == ["a", "b", "c"]


@pytest.mark.parametrize("rounds, calls", [(0, 1), (1, 0)],
                         ids=["no-rounds", "no-calls"])
def test_interleaved_rounds_refuses_empty(bc, rounds, calls):
    with pytest.raises(ValueError, match="rounds and calls"):
        bc.interleaved_rounds({"a": lambda: None}, rounds, calls)


def test_unknown_method_is_named(bc):
    with pytest.raises(ValueError, match="'hisca'"):
        bc.method_config("hisca", 10, 5)


def test_method_configs_differ_only_in_the_long_term_branch(bc):
    cfgs = {m: bc.method_config(m, 100, 10) for m in bc.METHODS}
    assert {m: c.model.compressor for m, c in cfgs.items()} == {
        "hisac": "hisac", "full": "full", "recent": "recent",
        "short_only": "none", "two_branch": "hisac",
        "two_branch_no_counts": "hisac", "hisac_sparse": "hisac",
        "hisac_pipeline": "hisac", "hisac_sparse_pipeline": "hisac",
        "hisac_sparse8_pipeline": "hisac"}
    assert cfgs["hisac_sparse"].model.routing_top_m > 0
    assert cfgs["hisac_sparse8_pipeline"].model.routing_top_m == 8
    assert cfgs["hisac_pipeline"].training.routing_in_input_pipeline
    assert cfgs["hisac"].model.routing_top_m == 0
    assert cfgs["two_branch_no_counts"].model.count_slots == 0
    assert cfgs["two_branch"].model.short_term_length == 50
    assert cfgs["two_branch"].model.count_slots == 256
    assert cfgs["hisac"].model.short_term_length == 0
    assert all(c.data.max_history == 100 for c in cfgs.values())


def test_peak_bytes_sees_a_large_intermediate(bc):
    import tensorflow as tf

    x = tf.ones([256, 1024])  # 1 MiB
    fn = tf.function(lambda: tf.reduce_sum(tf.exp(x) * 2.0 + x))
    assert bc.peak_bytes(fn) >= 1 << 20


@pytest.mark.parametrize("script, argv, message", [
    ("serving_cost", ["--n=0"], "expected positive integers"),
    ("serving_cost", ["--methods=hisac,nope"], "unknown methods ['nope']"),
    ("training", ["--n=a"], "expected positive integers"),
], ids=["zero-history", "unknown-method", "not-a-number"])
def test_bad_flags_are_refused(script, argv, message, capsys):
    module = _load(script)
    with pytest.raises(SystemExit):
        module.main(argv)
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_serving_cost_runs_tiny(tmp_path):
    out = tmp_path / "serving_cost.json"
    _load("serving_cost").main([
        "--tiny", "--n=20,40", "--c=4,8", "--r=1", "--rounds=1",
        "--methods=hisac,full,two_branch", "--breakdown_n=40",
        f"--output={out}"])
    result = json.loads(out.read_text())
    assert [(c["n"], c["c"], c["r"]) for c in result["cells"]] == [
        (20, 4, 1), (20, 8, 1), (40, 4, 1), (40, 8, 1)]
    for cell in result["cells"]:
        assert set(cell["methods"]) == {"hisac", "full", "two_branch"}
        for method, modes in cell["methods"].items():
            for mode in ("request", "cached"):
                row = modes[mode]
                assert row["p50_ms"] > 0 and row["p99_ms"] >= row["p50_ms"]
                assert row["peak_bytes"] >= 0
                assert row["predicted_ms"] > 0
        assert {"full_request_over_hisac_request",
                "two_branch_request_over_hisac_request",
                "full_request_over_hisac_cached",
                "full_over_hisac_peak_memory"} <= set(cell["ratios"])
    hisac = result["breakdown"]["hisac"]["40"]
    assert {"voting", "prototypes", "routing", "routing_floor",
            "target_attention", "attention_floor", "head",
            "head_floor"} <= set(hisac["parts"])
    assert hisac["voting_prototypes_routing_x_floor"] > 0
    assert "compress" in result["breakdown"]["full"]["40"]["parts"]
    slope = result["slopes"]["hisac"]
    assert set(slope["user_ms_by_n"]) == {"20", "40"}
    assert "user_ms_per_1000_items" in slope
    assert {t["target"] for t in result["targets"]} >= {
        "request N=10k C=1000: full/hisac p50"}
    assert result["calibration"]["matmul_macs_per_s"] > 0


@pytest.mark.slow
def test_training_runs_tiny(tmp_path):
    out = tmp_path / "training.json"
    _load("training").main([
        "--tiny", "--n=20", "--methods=hisac,hisac_sparse_pipeline,full",
        f"--output={out}"])
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["n"] == 20 and set(row["methods"]) == {
        "hisac", "hisac_sparse_pipeline", "full"}
    for v in row["methods"].values():
        assert v["steps_per_s"] > 0
        assert v["requests_per_s"] == pytest.approx(
            v["steps_per_s"] * result["sizes"]["batch"])
        assert set(v["stages_ms"]) == {
            "input", "plan", "forward", "backward", "user", "candidate",
            "head", "optimiser"}
        assert set(v["predicted_ms"]) == {
            "input", "routing", "forward", "backward", "optimizer"}
        for q in v["measured_vs_predicted"].values():
            assert q["predicted_ms"] > 0
            if q["measured_ms"] > 0:  # backward: taped - forward, noisy
                assert q["ratio"] == pytest.approx(
                    q["predicted_ms"] / q["measured_ms"])
            else:
                assert q["ratio"] is None
        assert v["graph_ops"]["forward"] > 0
        assert v["graph_ops"]["taped"] > v["graph_ops"]["forward"]
    # Calibrated inside the rounds, with the integer kernels' rates.
    assert row["calibration"]["sort_s_per_step"] > 0
    sizes = result["sizes"]
    assert len(row["calibrations_per_round"]) == (
        sizes["rounds"] * sizes["calls_per_round"])
    piped = row["methods"]["hisac_sparse_pipeline"]
    # m = 32 >= N = 20: the plan is dense, with no routed positions.
    assert piped["routed_positions"] == 0
    assert piped["semantic_items"] > 0
    assert set(piped["measured_vs_predicted"]) == {
        "plan", "forward", "backward", "optimizer"}
    assert set(row["methods"]["full"]["measured_vs_predicted"]) == {
        "forward", "backward", "optimizer"}
    assert piped["routing_in_input_pipeline"]
    assert piped["stages_ms"]["plan"] > 0
    assert piped["serial_requests_per_s"] < piped["requests_per_s"]
    assert row["methods"]["hisac"]["stages_ms"]["plan"] == 0
    assert "hisac_over_full_requests_per_s" in row["ratios"]


@pytest.mark.parametrize("argv, message", [
    ([], "usage"),
    (["out", "--fast"], "unknown option"),
], ids=["no-folder", "unknown-option"])
def test_gpu_script_refuses_bad_arguments(tmp_path, argv, message):
    argv = [str(tmp_path / a) if a == "out" else a for a in argv]
    done = subprocess.run(["bash", os.path.join(BENCH, "gpu.sh"), *argv],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert message in done.stderr


def test_gpu_script_parses():
    done = subprocess.run(["bash", "-n", os.path.join(BENCH, "gpu.sh")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_training_end_to_end_runs_tiny(tmp_path):
    out = tmp_path / "e2e.json"
    _load("training_end_to_end").main([
        "--tiny", "--methods=hisac_sparse_pipeline,full",
        f"--output={out}"])
    result = json.loads(out.read_text())
    assert set(result["methods"]) == {"hisac_sparse_pipeline", "full"}
    assert result["methods"]["hisac_sparse_pipeline"][
        "routing_in_input_pipeline"]
    for v in result["methods"].values():
        assert v["requests_per_s"] > 0 and len(
            v["requests_per_s_rounds"]) == 1
    assert "hisac_sparse_pipeline_over_full_requests_per_s" in result[
        "ratios"]


@pytest.mark.parametrize("argv, message", [
    (["--tiny", "--steps=0"], "--steps"),
    (["--tiny", "--plan_workers=-1"], "--plan_workers"),
    (["--tiny", "--methods=nope"], "unknown methods"),
], ids=["no-steps", "negative-workers", "unknown-method"])
def test_training_end_to_end_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        _load("training_end_to_end").main(argv)
    assert message in capsys.readouterr().err
