"""The experiment job on `tiny`: trains and evaluates several compressors
on one data set and writes the results table and the plots."""

import json
import os

import pytest

from hisac_tf import config as config_lib
from hisac_tf.compressors.flops import config_flops
from hisac_tf.config import ConfigError
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
    for name in ("auc_vs_length.png", "auc_vs_flops.png"):
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
