"""`hisac-evaluate --compare` on small reports made by the sliced
evaluation, and its refusals."""

import json
import os

import numpy as np
import pytest

from hisac_tf import config as config_lib
from hisac_tf import metrics
from hisac_tf.evaluation import eval_compare, slices
from hisac_tf.evaluation.sliced_evaluation import sliced_evaluation
from pipelines import evaluate as evaluate_job

NUM_USERS, PER_USER = 60, 10


def small_data(seed=0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(1, NUM_USERS + 1), PER_USER)  # [n]
    n = users.size
    hist = np.repeat(rng.choice([20, 120, 600], NUM_USERS), PER_USER)
    keys = slices.SliceKeys(hist, np.repeat(rng.integers(0, 30, NUM_USERS),
                                            PER_USER),
                            rng.integers(1, 40, n), rng.random(n) < 0.8)
    truth = 1 / (1 + np.exp(-rng.normal(-1, 1, n)))
    labels = (rng.random(n) < truth).astype(int)
    return users, labels, truth, keys


def write_report(tmp_path, name, users, labels, probs, truth, keys):
    model_dir = os.path.join(tmp_path, name)
    cfg = config_lib.load_config("tiny", [
        f'training.model_dir="{model_dir}"',
        "evaluation.history_buckets=[50, 200]",
        "evaluation.min_slice_impressions=50"])
    out = sliced_evaluation(cfg, users, labels, probs, truth, keys)
    report = {"auc": metrics.auc(labels, probs), **out.report}
    path = os.path.join(model_dir, "eval.json")
    with open(path, "w") as f:
        json.dump(report, f)
    return path


@pytest.fixture
def two_reports(tmp_path):
    users, labels, truth, keys = small_data()
    rng = np.random.default_rng(1)
    noisy = np.clip(truth + rng.normal(0, 0.2, truth.size), 0, 1)
    short = write_report(str(tmp_path), "short", users, labels, noisy,
                         truth, keys)
    best = write_report(str(tmp_path), "hisac", users, labels, truth, truth,
                        keys)
    return short, best


def test_compare_view_runs_on_two_reports(two_reports, tmp_path, capsys):
    short, best = two_reports
    out_dir = str(tmp_path / "cmp")
    result = evaluate_job.compare_main([short, best], out_dir, draws=200)
    printed = capsys.readouterr().err
    assert "baseline: short" in printed and "Δ hisac" in printed
    assert os.path.exists(os.path.join(out_dir, "compare.json"))
    assert os.path.exists(os.path.join(out_dir, "compare_auc.png"))
    rows = {(r["dimension"], r["slice"], r["metric"]): r
            for r in result["rows"]}
    whole = rows[("all", "all", "auc")]
    diff = whole["diffs"][0]
    # The difference is the two reports' AUCs apart, inside its interval.
    with open(short) as f:
        a = json.load(f)["auc"]
    with open(best) as f:
        b = json.load(f)["auc"]
    assert diff["diff"] == pytest.approx(b - a)
    assert diff["low"] <= diff["diff"] <= diff["high"]
    assert diff["diff"] > 0  # the true CTR ranks better than noise
    # history 600 falls in ≥200; the empty-or-small rules hold per slice
    assert ("history_length", "≥200", "gauc") in rows
    statuses = {r["status"] for r in result["rows"]}
    assert statuses <= {"ok", "too_small", "empty", "single_class"}


def test_compare_refuses_reports_of_different_impressions(tmp_path):
    users, labels, truth, keys = small_data()
    a = write_report(str(tmp_path), "a", users, labels, truth, truth, keys)
    flipped = labels.copy()
    flipped[5] = 1 - flipped[5]
    b = write_report(str(tmp_path), "b", users, flipped, truth, truth, keys)
    with pytest.raises(ValueError,
                       match="b differs from a in labels at impression 5"):
        eval_compare.compare([a, b], num_draws=10)


def test_compare_needs_two_reports_with_predictions(tmp_path):
    with pytest.raises(ValueError, match="at least two reports"):
        eval_compare.compare(["x.json"])
    old = tmp_path / "eval.json"
    old.write_text(json.dumps({"auc": 0.7}))
    with pytest.raises(ValueError, match="no per-impression predictions"):
        eval_compare.load_report(str(old))
