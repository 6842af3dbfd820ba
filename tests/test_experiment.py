"""The experiment harness on `tiny` (hisac_tf/experiments and the
`hisac-experiment` job): trains and evaluates several compressors on one
data set and writes the results table and the plots; the plan, the
inputs check, seeds and the report."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf.compressors.flops import config_flops
from hisac_tf.config import ConfigError
from hisac_tf.experiments import plan as plan_lib
from hisac_tf.experiments import plan_schema, report, runner
from hisac_tf.experiments.plan_schema import ExperimentRun
from hisac_tf.models.hisac_ranker import HiSACRanker
from hisac_tf.tokenizer.semantic_tables import (
    SemanticTables,
    load_semantic_tables,
    shuffled_tables,
)
from pipelines import experiment

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny(root, *extra):
    return config_lib.load_config("tiny", [
        f"data.data_dir={root}/data",
        f"tokenizer.output_dir={root}/tokenizer",
        f"training.model_dir={root}/models",
        "tokenizer.epochs=5",
        "training.train_steps=4",
        "training.checkpoint_every=4",
        "training.log_every=4",
        *extra,
    ])


@pytest.mark.slow
def test_experiment_on_tiny_writes_table_and_plots(tmp_path):
    root = str(tmp_path)
    cfg = tiny(root)
    out_dir = os.path.join(root, "out")
    results = experiment.main(
        cfg, compressors=["hisac", "recent"], lengths=[10, 20],
        output_dir=out_dir, generate_data=True)
    # Data and tokenizer were missing: the job made them (data as asked).
    assert results["generated"] == ["data", "tokenizer"]
    rows = results["rows"]
    assert [(r["compressor"], r["n"]) for r in rows] == [
        ("hisac", 10), ("recent", 10), ("hisac", 20), ("recent", 20)]
    for r in rows:
        # Compressor mode: each compressor is a run named after it.
        assert (r["name"], r["group"], r["overrides"], r["tokenizer"]) == (
            r["compressor"], "main", {}, "trained")
        assert r["model_dir"] == os.path.join(
            root, "models", f"{r['compressor']}-N{r['n']}")
        assert 0.0 < r["auc"] < 1.0 and 0.0 <= r["gauc"] <= 1.0
        assert r["log_loss"] > 0.0
        assert r["bayes_auc"] > 0.5
        assert r["gap_to_bayes_auc"] == pytest.approx(
            r["bayes_auc"] - r["auc"])
        assert r["step"] == 4
        assert (r["short_term_length"], r["seed"], r["config_name"]) == (
            cfg.model.short_term_length, cfg.training.seed, "tiny")
        assert r["groups"] == cfg.model.num_agents
        assert 0.0 < r["active_groups_mean"] <= r["groups"]
        assert r["parameters"] > 0 and r["compressor_parameters"] == 0
        run_cfg = plan_lib.run_config(cfg, r["compressor"], r["n"])
        fl = config_flops(run_cfg)
        assert (r["user_flops"], r["per_candidate_flops"],
                r["request_flops"]) == (fl["user"], fl["per_candidate"],
                                        fl["request"])
        assert os.path.isfile(os.path.join(r["model_dir"], "eval.json"))
    # Same data, same evaluation set, same Bayes ceiling for every run.
    assert len({r["bayes_auc"] for r in rows}) == 1
    assert len({r["eval_impressions"] for r in rows}) == 1
    # recent selects items (no arithmetic): cheaper user side than hisac;
    # a longer history costs hisac more.
    by = {(r["compressor"], r["n"]): r for r in rows}
    assert by["hisac", 20]["user_flops"] > by["recent", 20]["user_flops"]
    assert by["hisac", 20]["user_flops"] > by["hisac", 10]["user_flops"]

    saved = json.load(open(os.path.join(out_dir, "results.json")))
    assert saved["rows"] == rows
    assert saved["seconds"] == pytest.approx(sum(r["seconds"] for r in rows))
    table = open(os.path.join(out_dir, "results.md")).read()
    assert "| compressor | N | S | seed | G | AUC | GAUC |" in table
    main_table, _, slices = table.partition("AUC by history length")
    assert main_table.count("\n| hisac |") == 2
    assert main_table.count("\n| recent |") == 2
    assert main_table.count("## main") == 1
    # The history-length slices: one row per run (tiny: all too small).
    assert slices.count("\n| hisac |") == 2
    assert sorted(results["outputs"]) == [
        "ablations", "auc_by_history_length", "auc_vs_flops",
        "auc_vs_length", "json", "markdown"]
    for name in ("auc_vs_length.png", "auc_vs_flops.png", "ablations.png",
                 "auc_by_history_length.png"):
        with open(os.path.join(out_dir, name), "rb") as f:
            data = f.read()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000


@pytest.mark.parametrize("compressors, lengths, message", [
    pytest.param(["hisac", "nope"], [10], "unknown compressor 'nope'",
                 id="unknown-compressor"),
    pytest.param([], [10], "at least one", id="no-compressor"),
    pytest.param(["full", "full"], [10], "duplicates", id="duplicate"),
    pytest.param(["full"], [0], "experiment_lengths", id="zero-length"),
])
def test_experiment_argument_errors(tmp_path, compressors, lengths,
                                    message):
    with pytest.raises(ConfigError, match=message):
        experiment.main(tiny(str(tmp_path)), compressors=compressors,
                        lengths=lengths, output_dir=str(tmp_path))


# ------------------------------------------------------ shuffled tokenizer
def _tables(v=60, seed=3):
    rng = np.random.default_rng(seed)
    return SemanticTables(
        item_ids=np.arange(1, v + 1, dtype=np.int64) * 3,
        sids=rng.integers(0, 4, size=(v, 2)).astype(np.int32),
        latents=rng.normal(size=(v, 3)).astype(np.float32),
        codebooks=(rng.normal(size=(4, 3)).astype(np.float32),
                   rng.normal(size=(4, 3)).astype(np.float32)),
    )


def test_shuffled_tables_permutes_sid_latent_pairs():
    tables = _tables()
    before = (tables.sids.copy(), tables.latents.copy())
    out = shuffled_tables(tables, seed=7)
    # Input untouched; ids and codebooks kept.
    np.testing.assert_array_equal(tables.sids, before[0])
    np.testing.assert_array_equal(tables.latents, before[1])
    np.testing.assert_array_equal(out.item_ids, tables.item_ids)
    for a, b in zip(out.codebooks, tables.codebooks):
        np.testing.assert_array_equal(a, b)
    # Every new row is the (sid, latent) pair of exactly one old row (the
    # latents are distinct, so they identify the source row): a
    # permutation that keeps the pairs together.
    source = [int(np.flatnonzero((tables.latents == z).all(1))[0])
              for z in out.latents]
    assert sorted(source) == list(range(tables.num_items))
    np.testing.assert_array_equal(out.sids, tables.sids[source])
    # Same code-usage distribution per level.
    for level in range(tables.num_levels):
        np.testing.assert_array_equal(
            np.bincount(out.sids[:, level], minlength=4),
            np.bincount(tables.sids[:, level], minlength=4))
    # Most rows moved (a random permutation fixes about one row).
    assert np.mean(np.array(source) != np.arange(tables.num_items)) > 0.8
    # Deterministic for a seed, another permutation for another seed.
    again = shuffled_tables(tables, seed=7)
    np.testing.assert_array_equal(again.latents, out.latents)
    np.testing.assert_array_equal(again.sids, out.sids)
    other = shuffled_tables(tables, seed=8)
    assert not np.array_equal(other.latents, out.latents)


@pytest.mark.parametrize("seed", [
    pytest.param(-1, id="negative"),
    pytest.param(1.5, id="float"),
    pytest.param(True, id="bool"),
])
def test_shuffled_tables_rejects_bad_seed(seed):
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        shuffled_tables(_tables(), seed=seed)


# ------------------------------------------------------------------ plans
@pytest.mark.slow
def test_experiment_plan_on_tiny(tmp_path, capsys, monkeypatch):
    root = str(tmp_path)
    cfg = tiny(root)
    out_dir = os.path.join(root, "out")
    plan_path = os.path.join(root, "plan.json")
    with open(plan_path, "w") as f:
        json.dump({"description": "two ablations", "generate_data": True,
                   "runs": [
            {"name": "hisac_tau0.5", "compressor": "hisac",
             "lengths": [10], "group": "temperature",
             "set": {"model.routing_temperature": 0.5}},
            {"name": "hisac_random_sids", "compressor": "hisac",
             "lengths": [10], "group": "tokenizer", "tokenizer": "shuffled",
             "set": {"training.seed": 1}},
        ]}, f)
    results = experiment.main(cfg, output_dir=out_dir, plan=plan_path)
    shuffled_dir = os.path.join(out_dir, "tokenizer_shuffled_seed1")
    assert results["generated"] == [
        "data", "tokenizer", "tokenizer_shuffled_seed1"]
    rows = results["rows"]
    assert [(r["name"], r["group"], r["compressor"], r["n"], r["tokenizer"])
            for r in rows] == [
        ("hisac_tau0.5", "temperature", "hisac", 10, "trained"),
        ("hisac_random_sids", "tokenizer", "hisac", 10, "shuffled")]
    assert rows[0]["overrides"] == {"model.routing_temperature": 0.5}
    assert rows[1]["overrides"] == {"training.seed": 1}
    assert rows[0]["tokenizer_dir"] == os.path.join(root, "tokenizer")
    assert rows[1]["tokenizer_dir"] == shuffled_dir
    for r in rows:
        assert r["model_dir"] == os.path.join(
            root, "models", f"{r['name']}-N10")
        assert os.path.isfile(os.path.join(r["model_dir"], "eval.json"))
        assert r["step"] == 4 and 0.0 < r["auc"] < 1.0
    # Each run trained under its own config.
    saved_cfg = [json.load(open(os.path.join(r["model_dir"],
                                             "config.json")))
                 for r in rows]
    assert saved_cfg[0]["model"]["routing_temperature"] == 0.5
    assert saved_cfg[0]["tokenizer"]["output_dir"] == os.path.join(
        root, "tokenizer")
    assert saved_cfg[1]["model"]["routing_temperature"] == 1.0
    assert saved_cfg[1]["training"]["seed"] == 1
    assert saved_cfg[1]["tokenizer"]["output_dir"] == shuffled_dir
    # The shuffled tables are the trained ones permuted with seed 1, and
    # are reused once written.
    trained = load_semantic_tables(os.path.join(root, "tokenizer"))
    written = load_semantic_tables(shuffled_dir)
    expected = shuffled_tables(trained, 1)
    np.testing.assert_array_equal(written.sids, expected.sids)
    np.testing.assert_array_equal(written.latents, expected.latents)
    run_base = cfg.replace(training={"seed": 1})
    assert runner.shuffled_tokenizer(run_base, out_dir) == (
        shuffled_dir, False)

    # HiSAC runs report the routing diagnostics, averaged over the eval
    # requests (routing_diagnostics); no valid split here: no curve.
    for r in rows:
        assert r["effective_items_per_agent"] >= 1.0
        assert 0.0 <= r["off_sid_mass"] <= 1.0
        assert r["agents_per_user"] > 0
        assert r["valid_auc"] is None and r["learning_curve"] is None
    original = HiSACRanker.compress_user

    def with_routing(self, features, training=None, diagnostics=False):
        out = original(self, features, training=training)
        out["effective_items_per_agent"] = tf.fill(
            tf.shape(out["num_active"]), 3.0)  # [B]
        out["off_sid_mass"] = tf.constant(0.25)  # a scalar per batch
        return out

    monkeypatch.setattr(HiSACRanker, "compress_user", with_routing)
    run_cfg = plan_lib.run_config(
        cfg.replace(model={"routing_temperature": 0.5}), "hisac", 10,
        "hisac_tau0.5")
    diag = runner.diagnose(run_cfg, rows[0]["checkpoint"])
    assert diag["effective_items_per_agent"] == pytest.approx(3.0)
    assert diag["off_sid_mass"] == pytest.approx(0.25)
    assert diag["agents_per_user"] is None  # the patched ranker's
    assert diag["eval_requests"] > 0
    monkeypatch.undo()

    err = capsys.readouterr().err
    assert "[experiment] run 1/2: hisac_tau0.5 (hisac), N = 10" in err
    assert "[experiment] run 2/2: hisac_random_sids N=10: AUC" in err
    saved = json.load(open(os.path.join(out_dir, "results.json")))
    assert saved["rows"] == rows
    assert [r["name"] for r in saved["runs"]] == [
        "hisac_tau0.5", "hisac_random_sids"]
    assert saved["description"] == "two ablations"
    table = open(os.path.join(out_dir, "results.md")).read()
    assert "two ablations" in table
    assert table.index("## temperature") < table.index("## tokenizer")
    assert table.count("| name | compressor | N | S | seed |") == 2
    assert "\n| hisac_tau0.5 | hisac | 10 | 50 | 0 |" in table
    assert "- `hisac_tau0.5`: model.routing_temperature = 0.5" in table
    assert "- `hisac_random_sids`: training.seed = 1; shuffled" in table
    # No run has two lengths: no AUC-vs-N plot.
    assert sorted(results["outputs"]) == [
        "ablations", "auc_by_history_length", "auc_vs_flops", "json",
        "markdown"]
    assert not os.path.exists(os.path.join(out_dir, "auc_vs_length.png"))
    for name in ("ablations.png", "auc_vs_flops.png"):
        with open(os.path.join(out_dir, name), "rb") as f:
            assert f.read(8) == PNG_MAGIC
    assert saved["complete"] is True

    # Resume: finished runs' rows are reused, nothing trains again; a run
    # whose config changed (another step budget) is not reused.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(runner, "train", no_training)
    again = experiment.main(cfg, output_dir=out_dir, plan=plan_path)
    assert again["rows"] == rows
    assert "finished before, reusing experiment_row.json" in (
        capsys.readouterr().err)
    # The resumed experiment's seconds are the runs' own, not this call's.
    assert again["seconds"] == pytest.approx(
        sum(r["seconds"] for r in rows))
    assert again["invocation_seconds"] < again["seconds"]
    longer = cfg.replace(training={"train_steps": 5})
    with pytest.raises(AssertionError, match="trained again"):
        experiment.main(longer, output_dir=out_dir, plan=plan_path)


def test_partial_results_are_marked(tmp_path):
    rows = [{"name": "a", "group": "main", "compressor": "recent", "n": 10,
             "groups": 4, "auc": 0.6, "gauc": 0.6, "log_loss": 0.4,
             "bayes_auc": None, "gap_to_bayes_auc": None,
             "parameters": 10, "compressor_parameters": 0,
             "user_flops": 1, "per_candidate_flops": 1, "request_flops": 1,
             "active_groups_mean": 1.0, "overrides": {},
             "tokenizer": "trained"}]
    cfg = tiny(str(tmp_path))
    results = {"config": cfg.to_dict(), "complete": False,
               "runs": [{"name": "a"}, {"name": "b"}], "rows": rows}
    paths = report.write_outputs(results, str(tmp_path), plots=False)
    assert sorted(paths) == ["json", "markdown"]
    text = open(paths["markdown"]).read()
    assert "**Partial: 1 of 2 runs' rows so far" in text


def _plan(**run):
    entry = {"name": "a", "compressor": "hisac", "lengths": [10]}
    entry.update(run)
    return {"runs": [entry]}


@pytest.mark.parametrize("plan, message", [
    pytest.param({"runs": [{"name": "a", "compressor": "hisac"},
                           {"name": "a", "compressor": "recent"}]},
                 r"run name 'a' is used twice \(runs\[0\] and runs\[1\]\)",
                 id="duplicate-name"),
    pytest.param(_plan(lenghts=[10]), r"run 'a': unknown key 'lenghts'",
                 id="unknown-run-key"),
    pytest.param({"runs": _plan()["runs"], "group": "x"},
                 "unknown top-level key 'group'", id="unknown-plan-key"),
    pytest.param(_plan(compressor="nope"),
                 "run 'a': field compressor: unknown compressor 'nope'",
                 id="unknown-compressor"),
    pytest.param({"runs": [{"name": "a"}]},
                 "run 'a': field compressor is missing",
                 id="missing-compressor"),
    pytest.param({"runs": [{"compressor": "hisac"}]},
                 r"runs\[0\]: field name is missing", id="missing-name"),
    pytest.param(_plan(name="a b"), r"runs\[0\]: field name must match",
                 id="bad-name"),
    pytest.param(_plan(lengths=[10, 0]),
                 "run 'a': field lengths must hold ints >= 1, got 0",
                 id="zero-length"),
    pytest.param(_plan(lengths=[10.5]),
                 "run 'a': field lengths must hold ints >= 1, got 10.5",
                 id="float-length"),
    pytest.param(_plan(lengths=[]), "run 'a': field lengths must be a "
                 "non-empty list", id="no-lengths"),
    pytest.param(_plan(lengths=[10, 10]), "run 'a': field lengths has "
                 "duplicates", id="duplicate-length"),
    pytest.param(_plan(group=""), "run 'a': field group", id="empty-group"),
    pytest.param(_plan(tokenizer="random"),
                 "run 'a': field tokenizer must be one of trained, "
                 "shuffled, got 'random'", id="bad-tokenizer"),
    pytest.param(_plan(set={"model.no_such_key": 1}),
                 "run 'a': field set: unknown config key "
                 "model.no_such_key", id="unknown-override-key"),
    pytest.param(_plan(set={"modle.num_agents": 1}),
                 "run 'a': field set key 'modle.num_agents': unknown "
                 "config section 'modle'", id="unknown-override-section"),
    pytest.param(_plan(set={"num_agents": 1}),
                 "run 'a': field set key 'num_agents' must look like "
                 "section.key", id="malformed-override-key"),
    pytest.param(_plan(set={"model.routing_temperature": "hot"}),
                 "run 'a': field set: model.routing_temperature must be a "
                 "number, got 'hot'", id="override-wrong-type"),
    pytest.param(_plan(set={"model.routing_temperature": 0}),
                 "run 'a': field set: model.routing_temperature must be "
                 "> 0", id="override-invalid-value"),
    pytest.param(_plan(set={"model.compressor": "full"}),
                 "run 'a': field set key 'model.compressor' is set by the "
                 "run itself", id="override-fixed-key"),
    pytest.param(_plan(tokenizer="shuffled", set={"training.seed": -1}),
                 "run 'a': field tokenizer 'shuffled' needs "
                 "training.seed >= 0", id="shuffled-negative-seed"),
    pytest.param({"runs": []}, "field runs must be a non-empty list",
                 id="no-runs"),
    pytest.param([], "must be a JSON object", id="not-an-object"),
])
def test_experiment_plan_errors(tmp_path, plan, message):
    root = str(tmp_path)
    with pytest.raises(ConfigError, match=message):
        experiment.main(tiny(root), output_dir=root, plan=plan)
    # Checked before anything is generated or trained.
    assert not os.path.exists(os.path.join(root, "data"))


@pytest.mark.parametrize("kwargs", [
    pytest.param({"compressors": ["hisac"]}, id="with-compressors"),
    pytest.param({"lengths": [10]}, id="with-lengths"),
])
def test_experiment_plan_excludes_compressor_flags(tmp_path, kwargs):
    with pytest.raises(ConfigError, match="use one or the other"):
        experiment.main(tiny(str(tmp_path)), output_dir=str(tmp_path),
                        plan=_plan(), **kwargs)


def test_experiment_plan_file_errors(tmp_path):
    cfg = tiny(str(tmp_path))
    missing = os.path.join(str(tmp_path), "missing.json")
    with pytest.raises(ConfigError, match="missing.json does not exist"):
        plan_lib.parse_plan(missing, cfg)
    broken = os.path.join(str(tmp_path), "broken.json")
    with open(broken, "w") as f:
        f.write('{"runs": [')
    with pytest.raises(ConfigError, match="broken.json is not valid JSON"):
        plan_lib.parse_plan(broken, cfg)


def test_parse_plan_defaults(tmp_path):
    cfg = tiny(str(tmp_path))
    plan = plan_lib.parse_plan(
        {"runs": [{"name": "x.y-1", "compressor": "recent"}]}, cfg)
    assert plan.description == "" and plan.generate_data is False
    assert plan.runs == (ExperimentRun(
        name="x.y-1", compressor="recent",
        lengths=(cfg.data.max_history,), group="main", overrides={},
        tokenizer="trained", config="", seed_of=""),)


def _fake_row(name, group, n, auc):
    return {
        "name": name, "group": group, "compressor": "hisac", "n": n,
        "groups": 4, "auc": auc, "gauc": auc, "log_loss": 0.6,
        "bayes_auc": 0.8, "gap_to_bayes_auc": 0.8 - auc,
        "parameters": 1000, "compressor_parameters": 0,
        "user_flops": 10 * n, "per_candidate_flops": 50,
        "request_flops": 10 * n + 300, "active_groups_mean": 2.0,
        "overrides": {}, "tokenizer": "trained",
    }


@pytest.mark.parametrize("rows, plots", [
    pytest.param([], [], id="no-rows"),
    pytest.param([_fake_row("a", "g1", 10, 0.6),
                  _fake_row("b", "g2", 10, 0.7)],
                 ["ablations", "auc_vs_flops"], id="single-lengths"),
    pytest.param([_fake_row("a", "g1", 10, 0.6),
                  _fake_row("a", "g1", 20, 0.65),
                  _fake_row("b", "g2", 20, 0.7)],
                 ["ablations", "auc_vs_flops", "auc_vs_length"],
                 id="scaling-and-ablation"),
])
def test_write_outputs_skips_empty_plots(tmp_path, rows, plots):
    results = {"config": tiny(str(tmp_path)).to_dict(), "rows": rows}
    paths = report.write_outputs(results, str(tmp_path))
    assert sorted(paths) == sorted(["json", "markdown", *plots])
    written = sorted(f[:-4] for f in os.listdir(tmp_path)
                     if f.endswith(".png"))
    assert written == sorted(plots)
    table = open(paths["markdown"]).read()
    groups = list(dict.fromkeys(r["group"] for r in rows))
    assert [line[3:] for line in table.splitlines()
            if line.startswith("## ")] == groups


def test_committed_plan_is_valid():
    """configs/experiments/taobao_mm_hour.json
    (docs/results/taobao_mm_hour/report.md) parses against its preset:
    every run's config builds, names are unique."""
    cfg = config_lib.load_config("taobao_mm_hour")
    path = os.path.join(os.path.dirname(__file__), os.pardir, "configs",
                        "experiments", "taobao_mm_hour.json")
    runs = plan_lib.parse_plan(path, cfg).runs
    names = [r.name for r in runs]
    assert len(names) == len(set(names)) > 10
    groups = {r.group for r in runs}
    assert {"scaling", "baselines", "ablations", "head", "seeds",
            "budget"} <= groups
    scaling = [r for r in runs if r.group == "scaling"]
    assert {r.compressor for r in scaling} >= {"hisac", "full", "recent"}
    assert all(r.lengths == (100, 300, 1000, 3000) for r in scaling)


# ------------------------------------------------- inputs: no silent data
def _no_tokenizer(cfg, progress=False):
    raise AssertionError("the tokenizer must not train here")


@pytest.mark.parametrize("how", [
    pytest.param("missing", id="missing-dir"),
    pytest.param("empty", id="empty-dir"),
])
def test_missing_data_is_an_error_naming_the_path(tmp_path, how):
    typo = os.path.join(str(tmp_path), "real_lgo")
    if how == "empty":
        os.makedirs(typo)
    cfg = tiny(str(tmp_path), f"data.data_dir={typo}")
    with pytest.raises(FileNotFoundError) as e:
        runner.ensure_inputs(cfg, _no_tokenizer)
    message = str(e.value)
    assert typo in message and cfg.data.train_pattern in message
    assert "--experiment_generate_data" in message
    # Nothing was generated.
    assert os.listdir(str(tmp_path)) == ([] if how == "missing"
                                         else ["real_lgo"])
    assert how == "missing" or os.listdir(typo) == []


def test_experiment_job_refuses_missing_data(tmp_path):
    root = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="no training data under"):
        experiment.main(tiny(root), compressors=["recent"], lengths=[10],
                        output_dir=os.path.join(root, "out"))
    assert not os.path.exists(os.path.join(root, "data"))
    assert not os.path.exists(os.path.join(root, "models"))


def test_data_is_generated_when_asked(tmp_path):
    cfg = tiny(str(tmp_path))
    calls = []

    def fake_tokenizer(run_cfg, progress=False):
        calls.append(run_cfg)
        return {"trained": True}

    done = runner.ensure_inputs(cfg, fake_tokenizer, generate_data=True)
    assert sorted(done) == ["data", "tokenizer"]
    assert done["tokenizer"] == {"trained": True} and calls == [cfg]
    assert any(f.startswith("train-")
               for f in os.listdir(cfg.data.data_dir))
    # Data present: nothing is generated again, asked or not.
    calls.clear()
    assert list(runner.ensure_inputs(cfg, fake_tokenizer)) == ["tokenizer"]


def test_missing_tokenizer_without_trainer_is_an_error(tmp_path):
    cfg = tiny(str(tmp_path))
    runner.ensure_inputs(cfg, lambda c, progress=False: {},
                         generate_data=True)
    with pytest.raises(FileNotFoundError,
                       match="no tokenizer tables under tokenizer.output_dir"):
        runner.ensure_inputs(cfg, None)


# ---------------------------------------------------------------- seeds
def test_seeds_expand_into_one_run_per_seed(tmp_path):
    cfg = tiny(str(tmp_path))
    plan = plan_lib.parse_plan({"runs": [
        {"name": "hisac", "compressor": "hisac", "lengths": [10, 20],
         "seeds": [0, 1, 2], "set": {"model.routing_temperature": 0.5}},
        {"name": "full", "compressor": "full", "lengths": [10]},
    ]}, cfg)
    assert [r.name for r in plan.runs] == [
        "hisac-s0", "hisac-s1", "hisac-s2", "full"]
    assert [r.seed_of for r in plan.runs] == ["hisac"] * 3 + [""]
    for seed, run in enumerate(plan.runs[:3]):
        assert run.overrides == {"model.routing_temperature": 0.5,
                                 "training.seed": seed}
        assert run.lengths == (10, 20)
        base = plan_lib.run_base(cfg, run)
        assert base.training.seed == seed
        run_cfg = plan_lib.run_config(base, run.compressor, 20, run.name)
        assert run_cfg.training.model_dir == os.path.join(
            str(tmp_path), "models", f"hisac-s{seed}-N20")
    assert [(r.name, n) for r, n in plan_lib.plan_jobs(plan)][:3] == [
        ("hisac-s0", 10), ("hisac-s0", 20), ("hisac-s1", 10)]
    assert plan.runs[0].to_dict()["seed_of"] == "hisac"


@pytest.mark.parametrize("seeds, message", [
    pytest.param([], "field seeds must be a non-empty list", id="empty"),
    pytest.param([0, -1], "field seeds must hold distinct ints >= 0, got -1",
                 id="negative"),
    pytest.param([1, 1], r"field seeds has duplicates: \[1, 1\]",
                 id="duplicate"),
    pytest.param([True], "field seeds must hold", id="bool"),
    pytest.param(3, "field seeds must be a non-empty list", id="not-a-list"),
])
def test_seeds_errors(tmp_path, seeds, message):
    with pytest.raises(ConfigError, match="run 'a': " + message):
        plan_lib.parse_plan(_plan(seeds=seeds), tiny(str(tmp_path)))


def test_seeds_and_seed_override_conflict(tmp_path):
    with pytest.raises(ConfigError, match="run 'a': field seeds and field "
                       "set key 'training.seed' both set the seed"):
        plan_lib.parse_plan(_plan(seeds=[0, 1], set={"training.seed": 3}),
                            tiny(str(tmp_path)))


def test_expanded_name_clash_names_both_entries(tmp_path):
    plan = {"runs": [{"name": "a", "compressor": "hisac", "seeds": [1]},
                     {"name": "a-s1", "compressor": "full"}]}
    with pytest.raises(ConfigError, match=r"run name 'a-s1' is used twice "
                       r"\(runs\[0\] and runs\[1\]\)"):
        plan_lib.parse_plan(plan, tiny(str(tmp_path)))


def _seed_row(name, seed, auc, group="g", **extra):
    row = _fake_row(name, group, 100, auc)
    row.update(seed=seed, short_term_length=50, config_name="tiny",
               valid_auc=auc + 0.01, valid_auc_step=40)
    row.update(extra)
    return row


def test_seed_aggregates_mean_and_std():
    rows = [
        *[_seed_row(f"hisac-s{k}", k, auc, seed_of="hisac",
                    overrides={"training.seed": k})
          for k, auc in enumerate([0.70, 0.72, 0.74])],
        # Named by hand, one group, own seeds: aggregated as "full".
        _seed_row("full_seed1", 1, 0.60, compressor="full",
                  overrides={"training.seed": 1}),
        _seed_row("full_seed2", 2, 0.64, compressor="full",
                  overrides={"training.seed": 2}),
        # Another override: not the same run.
        _seed_row("hot", 3, 0.5, overrides={"model.top_k": [3, 3]}),
        # Same key in another group: not aggregated with the others.
        _seed_row("hisac-s3", 3, 0.9, group="other"),
        # Two runs with the same seed: no std to take.
        _seed_row("x1", 5, 0.55, group="dup"),
        _seed_row("x2", 5, 0.56, group="dup"),
    ]
    aggs = report.seed_aggregates(rows)
    assert [(a["name"], a["group"], a["seeds"]) for a in aggs] == [
        ("hisac", "g", [0, 1, 2]), ("full", "g", [1, 2])]
    hisac, full = aggs
    assert hisac["auc_mean"] == pytest.approx(0.72)
    assert hisac["auc_std"] == pytest.approx(0.02)  # n - 1
    assert hisac["valid_auc_mean"] == pytest.approx(0.73)
    assert full["auc_mean"] == pytest.approx(0.62)
    assert full["auc_std"] == pytest.approx(np.std([0.6, 0.64], ddof=1))
    assert hisac["runs"] == ["hisac-s0", "hisac-s1", "hisac-s2"]
    table = report.format_markdown_tables(rows)
    assert "Mean ± std over seeds" in table
    assert "| hisac | hisac | 100 | 50 | 0, 1, 2 | 0.7200 ± 0.0200 |" in table
    # One mean ± std table, in group g only.
    assert table.count("| name | compressor | N | S | seeds |") == 1


# ------------------------------------------------------- report columns
def test_table_columns_for_the_ladder():
    row = _seed_row("twobranch_hisac", 0, 0.7,
                    effective_items_per_agent=12.34,
                    off_sid_mass=0.1234, agents_per_user=7.25)
    blank = _fake_row("recent", "g", 100, 0.6)
    table = report.format_table([row, blank])
    lines = table.splitlines()
    assert lines[0].startswith(
        "| name | compressor | N | S | seed | G | AUC | GAUC | log loss | "
        "valid AUC (best @ step) |")
    assert lines[0].endswith(
        "| items / agent | mass outside SID | agents / user |")
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[:6] == ["twobranch_hisac", "hisac", "100", "50", "0", "4"]
    assert cells[9] == "0.7100 @ 40"
    assert cells[-3:] == ["12.3", "0.123", "7.2"]
    blank_cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert blank_cells[3:5] == ["–", "–"] and blank_cells[9] == "–"
    assert blank_cells[-3:] == ["–", "–", "–"]


def _write_curve(model_dir, curve):
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, runner.LEARNING_CURVE_FILE), "w") as f:
        f.write(curve if isinstance(curve, str) else json.dumps(curve))


def test_read_learning_curve(tmp_path, capsys):
    d = str(tmp_path)
    assert runner.read_learning_curve(d) == {
        "learning_curve": None, "valid_auc": None, "valid_auc_step": None,
        "valid_auc_last": None}
    _write_curve(d, [{"step": 100, "valid_auc": 0.6},
                     {"step": 200, "valid_auc": 0.68},
                     {"step": 300, "valid_auc": 0.66}])
    got = runner.read_learning_curve(d)
    assert (got["valid_auc"], got["valid_auc_step"],
            got["valid_auc_last"]) == (0.68, 200, 0.66)
    assert len(got["learning_curve"]) == 3


def test_read_learning_curve_of_the_trainer(tmp_path):
    """The layout hisac_tf.training.model_selection writes."""
    _write_curve(str(tmp_path), {
        "metric": "valid auc", "valid_every": 100,
        "points": [{"step": 100, "auc": 0.61, "gauc": 0.6},
                   {"step": 200, "auc": 0.64, "gauc": 0.62},
                   {"step": 300, "auc": 0.63, "gauc": 0.62}],
        "best": {"step": 200, "auc": 0.64}})
    got = runner.read_learning_curve(str(tmp_path))
    assert (got["valid_auc"], got["valid_auc_step"],
            got["valid_auc_last"]) == (0.64, 200, 0.63)


@pytest.mark.parametrize("curve, message", [
    pytest.param("[{", "is not valid JSON", id="broken-json"),
    pytest.param([{"step": 1, "auc": 0.6}], "entry 0 is", id="wrong-key"),
    pytest.param({"step": "x"}, "entry 0 is", id="not-a-list"),
])
def test_read_learning_curve_other_layout_warns(tmp_path, capsys, curve,
                                                message):
    _write_curve(str(tmp_path), curve)
    assert runner.read_learning_curve(str(tmp_path))["valid_auc"] is None
    err = capsys.readouterr().err
    assert message in err and runner.LEARNING_CURVE_FILE in err


def test_learning_curves_plot(tmp_path):
    row = _seed_row("hisac", 0, 0.7, learning_curve=[
        {"step": 10, "valid_auc": 0.6}, {"step": 20, "valid_auc": 0.65}])
    results = {"config": tiny(str(tmp_path)).to_dict(), "rows": [row]}
    paths = report.write_outputs(results, str(tmp_path))
    with open(paths["learning_curves"], "rb") as f:
        assert f.read(8) == PNG_MAGIC


def test_results_seconds_sum_the_runs_own():
    plan = plan_lib.ExperimentPlan(runs=(ExperimentRun(
        name="a", compressor="hisac", lengths=(10, 20)),))
    rows = [dict(_fake_row("a", "main", 10, 0.6), seconds=30.0),
            dict(_fake_row("a", "main", 20, 0.6), seconds=12.5)]
    results = report.results_dict(
        config_lib.load_config("tiny"), plan, plan_lib.plan_jobs(plan),
        set(), rows, complete=True)
    assert results["seconds"] == 42.5


# ---------------------------------------------------- presets per run
def test_run_config_preset(tmp_path):
    cfg = tiny(str(tmp_path))
    other = tiny(str(tmp_path), "data.max_history=30",
                 f"data.data_dir={tmp_path}/other")
    loaded = []

    def load_preset(name):
        loaded.append(name)
        if name != "other":
            raise ConfigError(f"unknown config preset {name!r}")
        return other

    plan = plan_lib.parse_plan({"runs": [
        {"name": "far", "compressor": "hisac", "config": "other",
         "set": {"model.short_term_length": 5}}]}, cfg, load_preset)
    (run,) = plan.runs
    assert run.lengths == (30,) and run.config == "other"
    base = plan_lib.run_base(cfg, run, load_preset)
    assert base.data.data_dir == f"{tmp_path}/other"
    assert base.model.short_term_length == 5
    with pytest.raises(ConfigError, match="run 'a': field config: unknown "
                       "config preset 'nope'"):
        plan_lib.parse_plan(_plan(config="nope"), cfg, load_preset)
    with pytest.raises(ConfigError, match="run 'a': field config must name"):
        plan_lib.parse_plan(_plan(config=""), cfg, load_preset)


def test_plan_generate_data_must_be_bool(tmp_path):
    with pytest.raises(ConfigError, match="field generate_data must be "
                       "true or false, got 'yes'"):
        plan_lib.parse_plan({"runs": _plan()["runs"],
                             "generate_data": "yes"}, tiny(str(tmp_path)))


# ---------------------------------------------------- the longrange plan
LONGRANGE_PLAN = os.path.join(os.path.dirname(__file__), os.pardir,
                              "configs", "experiments", "longrange.json")
LADDER = ("hisac", "hisac_hard", "hisac_no_voting", "kmeans", "lsh",
          "patching", "aggregator", "full", "sim_hard")


def test_longrange_plan_holds_the_ladder():
    """configs/experiments/longrange.json (issue 10 item 6) parses and
    holds every rung of the ladder."""
    plan = plan_schema.experiment_plan_from_dict(
        plan_lib.read_plan(LONGRANGE_PLAN))
    runs = {r.name: r for r in plan.runs}
    s = "model.short_term_length"
    two = [r for r in plan.runs
           if r.group == "two_branch" and r.compressor != "none"]
    assert {r.compressor for r in two} == set(LADDER)
    assert all(r.overrides[s] == 50 and r.lengths == (100, 1000)
               and not r.config for r in two)
    short = [r for r in plan.runs if r.compressor == "none"]
    assert all(r.overrides[s] == 50 for r in short)
    long_only = {r.compressor for r in plan.runs if r.overrides[s] == 0}
    assert long_only == {"hisac", "full"}
    # Three seeds for two-branch hisac, two-branch full and short-only.
    for name in ("twobranch_hisac", "twobranch_full", "short_only"):
        assert [runs[f"{name}-s{k}"].overrides["training.seed"]
                for k in range(3)] == [0, 1, 2]
    n10k = [r for r in plan.runs if r.config == "longrange_10k"]
    assert sorted(r.compressor for r in n10k) == ["full", "hisac", "none"]
    assert all(r.lengths == (10_000,) and r.overrides[s] == 50
               for r in n10k)


@pytest.mark.parametrize("plan_path", [
    pytest.param(LONGRANGE_PLAN, id="longrange"),
    pytest.param(os.path.join(os.path.dirname(LONGRANGE_PLAN),
                              "longrange_n1000.json"), id="n1000"),
    pytest.param(os.path.join(os.path.dirname(LONGRANGE_PLAN),
                              "longrange_10k.json"), id="n10k"),
])
def test_longrange_plans_validate_against_their_presets(plan_path):
    """Every run's config builds on the longrange presets, short-only
    runs (compressor "none") included; every run config resolves."""
    cfg = config_lib.load_config("longrange")
    plan = plan_lib.parse_plan(plan_path, cfg)
    for run, n in plan_lib.plan_jobs(plan):
        run_cfg = plan_lib.run_config(plan_lib.run_base(cfg, run),
                                      run.compressor, n, run.name)
        assert run_cfg.data.max_history == n
        assert run_cfg.model.compressor == run.compressor
