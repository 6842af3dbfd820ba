"""The experiment job on `tiny`: trains and evaluates several compressors
on one data set and writes the results table and the plots."""

import json
import os

import numpy as np
import pytest

from hisac_tf import config as config_lib
from hisac_tf.compressors.flops import config_flops
from hisac_tf.config import ConfigError
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
        output_dir=out_dir)
    # Data and tokenizer were missing: the job made them.
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
        assert r["groups"] == cfg.model.num_agents
        assert 0.0 < r["active_groups_mean"] <= r["groups"]
        assert r["parameters"] > 0 and r["compressor_parameters"] == 0
        run_cfg = experiment.run_config(cfg, r["compressor"], r["n"])
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
    table = open(os.path.join(out_dir, "results.md")).read()
    assert "| compressor | N | G | AUC | GAUC |" in table
    assert table.count("\n| hisac |") == 2
    assert table.count("\n| recent |") == 2
    assert table.count("## main") == 1
    assert sorted(results["outputs"]) == [
        "ablations", "auc_vs_flops", "auc_vs_length", "json", "markdown"]
    for name in ("auc_vs_length.png", "auc_vs_flops.png", "ablations.png"):
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
        json.dump({"description": "two ablations", "runs": [
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
    assert experiment.shuffled_tokenizer(run_base, out_dir) == (
        shuffled_dir, False)

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
    assert table.count("| name | compressor | N |") == 2
    assert "\n| hisac_tau0.5 | hisac | 10 |" in table
    assert "- `hisac_tau0.5`: model.routing_temperature = 0.5" in table
    assert "- `hisac_random_sids`: training.seed = 1; shuffled" in table
    # No run has two lengths: no AUC-vs-N plot.
    assert sorted(results["outputs"]) == [
        "ablations", "auc_vs_flops", "json", "markdown"]
    assert not os.path.exists(os.path.join(out_dir, "auc_vs_length.png"))
    for name in ("ablations.png", "auc_vs_flops.png"):
        with open(os.path.join(out_dir, name), "rb") as f:
            assert f.read(8) == PNG_MAGIC
    assert saved["complete"] is True

    # Resume: finished runs' rows are reused, nothing trains again; a run
    # whose config changed (another step budget) is not reused.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    # The name the runner calls (it imports the library's train).
    monkeypatch.setattr(experiment, "train", no_training)
    again = experiment.main(cfg, output_dir=out_dir, plan=plan_path)
    assert again["rows"] == rows
    assert "finished before, reusing experiment_row.json" in (
        capsys.readouterr().err)
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
    paths = experiment.write_outputs(results, str(tmp_path), plots=False)
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
        experiment.parse_plan(missing, cfg)
    broken = os.path.join(str(tmp_path), "broken.json")
    with open(broken, "w") as f:
        f.write('{"runs": [')
    with pytest.raises(ConfigError, match="broken.json is not valid JSON"):
        experiment.parse_plan(broken, cfg)


def test_parse_plan_defaults(tmp_path):
    cfg = tiny(str(tmp_path))
    (run,) = experiment.parse_plan(
        {"runs": [{"name": "x.y-1", "compressor": "recent"}]}, cfg)
    assert run == experiment.Run(
        name="x.y-1", compressor="recent",
        lengths=(cfg.data.max_history,), group="main", overrides={},
        tokenizer="trained")


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
    paths = experiment.write_outputs(results, str(tmp_path))
    assert sorted(paths) == sorted(["json", "markdown", *plots])
    written = sorted(f[:-4] for f in os.listdir(tmp_path)
                     if f.endswith(".png"))
    assert written == sorted(plots)
    table = open(paths["markdown"]).read()
    groups = list(dict.fromkeys(r["group"] for r in rows))
    assert [line[3:] for line in table.splitlines()
            if line.startswith("## ")] == groups


def test_committed_plan_is_valid():
    """configs/experiments/taobao_mm_hour.json (docs/results.md) parses
    against its preset: every run's config builds, names are unique."""
    cfg = config_lib.load_config("taobao_mm_hour")
    path = os.path.join(os.path.dirname(__file__), os.pardir, "configs",
                        "experiments", "taobao_mm_hour.json")
    runs = experiment.parse_plan(path, cfg)
    names = [r.name for r in runs]
    assert len(names) == len(set(names)) > 10
    groups = {r.group for r in runs}
    assert {"scaling", "baselines", "ablations", "head", "seeds",
            "budget"} <= groups
    scaling = [r for r in runs if r.group == "scaling"]
    assert {r.compressor for r in scaling} >= {"hisac", "full", "recent"}
    assert all(r.lengths == (100, 300, 1000, 3000) for r in scaling)
