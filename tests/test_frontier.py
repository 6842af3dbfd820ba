"""benchmarks/frontier.py: the cost / quality frontier command (issue 23).

The pure parts (configurations, the seed interval, the docs section) run
fast; one slow test runs the command end to end with --small (data,
tokenizer, two seeds of two configurations on the `tiny` preset)."""

from __future__ import annotations

import json
import math

import pytest

from hisac_tf import config as config_lib
from tests.test_benchmarks import _load


@pytest.fixture(scope="module")
def frontier():
    return _load("frontier")


def test_every_compressor_agents_and_sparse_variants(frontier):
    names = frontier.method_names()
    from hisac_tf.compressors import COMPRESSOR_NAMES
    assert set(COMPRESSOR_NAMES) <= set(names)
    assert {"hisac_a50", "hisac_a100", "hisac_a200", "hisac_a400",
            "hisac_sparse_m16", "hisac_sparse_m64"} <= set(names)


def test_method_overrides(frontier):
    cfg = config_lib.load_config("taobao_mm")  # top_k (20, 10), K 200
    assert frontier.method_overrides("kmeans", cfg) == ("kmeans", {})
    compressor, over = frontier.method_overrides("hisac_a400", cfg)
    assert compressor == "hisac" and over["model.num_agents"] == 400
    assert over["model.top_k"] == [40, 10]  # 40 x 10 >= 400 agents
    assert frontier.method_overrides("hisac_a50", cfg)[1][
        "model.top_k"] == [20, 10]  # already enough
    _, sparse = frontier.method_overrides("hisac_sparse_m16", cfg)
    assert sparse == {"model.routing_top_m": 16,
                      "training.routing_in_input_pipeline": True}
    with pytest.raises(ValueError, match="hisac_x"):
        frontier.method_overrides("hisac_x", cfg)


def test_widened_top_k_stays_within_the_codebook(frontier):
    cfg = config_lib.load_config("tiny")  # top_k (2, 2), K (4, 4)
    assert frontier.widened_top_k(cfg, 400) == (4, 2)


def test_run_config_is_valid(frontier):
    base, _ = frontier.base_overrides("tiny", True, "/tmp/x")
    cfg = frontier.run_config("tiny", base, "hisac_sparse_m16")
    assert cfg.model.routing_top_m == 16
    assert cfg.training.routing_in_input_pipeline
    assert cfg.data.max_history == 40


@pytest.mark.parametrize("small", [True, False], ids=["small", "full"])
def test_every_default_preset_and_method_makes_a_valid_config(
        frontier, small):
    """The three default presets (longrange, features, taobao_mm) with
    every configuration load (the `features` preset's declared features
    included), at --small and at full size."""
    assert frontier.PRESETS == ("longrange", "features", "taobao_mm")
    for preset in frontier.PRESETS:
        base, _ = frontier.base_overrides(preset, small, "/tmp/x")
        for method in frontier.method_names():
            cfg = frontier.run_config(preset, base, method)
            assert cfg.data.max_history == (40 if small else
                                            config_lib.load_config(
                                                preset).data.max_history)
        if preset == "features":
            assert cfg.features  # the declared side features stay


def test_interval(frontier):
    one = frontier.interval([0.7])
    assert one == {"mean": 0.7, "std": None, "low": None, "high": None,
                   "seeds": 1}
    three = frontier.interval([0.70, 0.72, 0.74])
    # mean 0.72, std 0.02, t(2) = 4.303: half width 4.303 * 0.02 / sqrt 3
    half = 4.303 * 0.02 / math.sqrt(3)
    assert three["mean"] == pytest.approx(0.72)
    assert three["std"] == pytest.approx(0.02)
    assert three["low"] == pytest.approx(0.72 - half)
    assert three["high"] == pytest.approx(0.72 + half)


def test_paired_deltas_pair_seeds_with_hisac(frontier):
    def conf(method, *rows):
        return {"method": method, "per_seed": [
            {"seed": seed, "auc": auc, "gauc": gauc}
            for seed, auc, gauc in rows]}
    confs = [conf("hisac", (0, 0.80, 0.70), (1, 0.82, 0.71), (2, 0.81, 0.7)),
             conf("hisac_sparse_m16", (1, 0.81, 0.72), (0, 0.80, 0.69),
                  (7, 0.5, 0.5)),
             conf("recent", (5, 0.7, 0.6))]
    frontier.paired_deltas(confs)
    assert "vs_hisac" not in confs[0] and "vs_hisac" not in confs[2]
    auc = confs[1]["vs_hisac"]["auc"]
    assert auc["per_seed"] == pytest.approx({1: -0.01, 0: 0.0})
    assert auc["mean"] == pytest.approx(-0.005) and auc["seeds"] == 2
    assert auc["std"] == pytest.approx(0.01 / math.sqrt(2))
    assert confs[1]["vs_hisac"]["gauc"]["per_seed"] == pytest.approx(
        {1: 0.01, 0: -0.01})
    cost = {"macs": 1, "bytes": 1, "predicted_ms": 1.0}
    for c in confs:
        c.update(auc=frontier.interval([r["auc"] for r in c["per_seed"]]),
                 gauc=frontier.interval([r["gauc"] for r in c["per_seed"]]),
                 active_agents_mean=3.0, train_requests_per_s=None,
                 cost={"preset": cost, "n10k_c1k": cost})
    md = frontier.table({"presets": {"p": {"configurations": confs}}})
    assert "Δ AUC vs hisac" in md and "| -0.0050 ± 0.0071 |" in md
    without = [conf("recent", (0, 0.7, 0.6))]
    frontier.paired_deltas(without)
    assert "vs_hisac" not in without[0]


def test_write_docs_replaces_the_marked_section(frontier, tmp_path):
    doc = tmp_path / "perf.md"
    doc.write_text(f"a\n{frontier.MARK_BEGIN}\nold\n{frontier.MARK_END}\nb\n")
    results = {"command": "python -m benchmarks.frontier --small",
               "small": True, "seconds": 3.0, "environment": {
                   "device": "CPU", "load_average_1m": 1.0,
                   "time_utc": "t", "git_commit": "c"}}
    frontier.write_docs(str(doc), results, "| t |", str(tmp_path / "f.png"))
    text = doc.read_text()
    assert text.startswith("a\n") and text.endswith("b\n")
    assert "old" not in text and "| t |" in text and "(f.png)" in text
    doc.write_text("no markers")
    with pytest.raises(ValueError, match="frontier"):
        frontier.write_docs(str(doc), results, "", "f.png")


def test_any_agent_count_and_sparse_m_is_a_method(frontier, capsys):
    for name in ("hisac_sparse_m32", "hisac_sparse_m1", "hisac_a64"):
        assert frontier.known_method(name)
        assert frontier._methods(name) == (name,)
    for name in ("hisac_sparse_m0", "hisac_sparse_m", "hisac_a0"):
        assert not frontier.known_method(name)
    cfg = config_lib.load_config("taobao_mm")
    assert frontier.method_overrides("hisac_sparse_m32", cfg)[1][
        "model.routing_top_m"] == 32


def test_set_overrides_every_configuration(frontier):
    sets = ("model.count_slots=0", "model.routing_top_m=8")
    base, root = frontier.base_overrides("tiny", True, "/tmp/x", sets)
    tag = frontier.set_tag(sets)
    assert tag.startswith("_set-") and frontier.set_tag(()) == ""
    assert frontier.set_tag(sets[:1]) != tag
    assert f"training.model_dir={root}/models{tag}" in base
    # Model-only overrides share the data and the tokenizer.
    assert f"data.data_dir={root}/data" in base
    assert f"tokenizer.output_dir={root}/tokenizer" in base
    hisac = frontier.run_config("tiny", base, "hisac")
    assert hisac.model.count_slots == 0 and hisac.model.routing_top_m == 8
    # The method's own overrides come after --set.
    sparse = frontier.run_config("tiny", base, "hisac_sparse_m16")
    assert sparse.model.count_slots == 0
    assert sparse.model.routing_top_m == 16
    # Overrides of the generated inputs get their own data folders.
    base, root = frontier.base_overrides(
        "tiny", True, "/tmp/x", ("synthetic.num_users=70",))
    tag = frontier.set_tag(("synthetic.num_users=70",))
    assert f"data.data_dir={root}/data{tag}" in base
    assert f"tokenizer.output_dir={root}/tokenizer{tag}" in base
    assert frontier.run_config("tiny", base,
                               "recent").synthetic.num_users == 70


@pytest.mark.parametrize("argv,message", [
    (["--methods=nope"], "unknown method"),
    (["--methods=hisac_sparse_m0"], "unknown method"),
    (["--seeds=-1"], "seeds"),
    (["--presets=tiny", "--set", "model.nope=1"], "model.nope"),
    (["--presets=tiny", "--set", "nope.key=1"], "nope"),
    (["--presets=tiny", "--set", "model.num_agents"], "section.key=value"),
    (["--presets=tiny", "--methods=recent",
      "--set", "model.routing_top_m=8"], "routing_top_m"),
])
def test_argument_errors(frontier, argv, message, capsys):
    with pytest.raises(SystemExit):
        frontier.main(argv)
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_frontier_small_end_to_end(frontier, tmp_path):
    out = tmp_path / "frontier.json"
    plot = tmp_path / "frontier.png"
    doc = tmp_path / "perf.md"
    doc.write_text(f"{frontier.MARK_BEGIN}\n{frontier.MARK_END}\n")
    frontier.main([
        "--small", "--presets=tiny", "--methods=hisac_sparse_m16,recent",
        "--seeds=0,1", f"--work_dir={tmp_path}/runs", f"--output={out}",
        f"--plot={plot}", f"--docs={doc}"])
    result = json.loads(out.read_text())
    confs = result["presets"]["tiny"]["configurations"]
    assert [c["method"] for c in confs] == ["hisac_sparse_m16", "recent"]
    for c in confs:
        assert c["seeds"] == [0, 1]
        assert c["auc"]["low"] <= c["auc"]["mean"] <= c["auc"]["high"]
        assert c["cost"]["n10k_c1k"]["macs"] > c["cost"]["preset"]["macs"]
        assert c["train_requests_per_s"] > 0
    assert confs[0]["routing_top_m"] == 16
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert "hisac_sparse_m16" in doc.read_text()
