"""Sliced evaluation: per-slice metrics against an independent reference,
slice assignment, calibration bins by hand, bad input, TensorBoard."""

import itertools
import math

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf import metrics
from hisac_tf.evaluation import calibration as cal
from hisac_tf.evaluation import eval_summaries, slices
from hisac_tf.evaluation.sliced_evaluation import (checked_rows,
                                                 format_sliced,
                                                 sliced_evaluation)

SETTINGS = slices.SliceSettings(history_buckets=(50, 200),
                                activity_buckets=(5,), min_impressions=1,
                                calibration_bins=2)


def pairwise_auc(labels, scores):
    """Share of (positive, negative) pairs ranked right, ties 1/2."""
    pos = [s for y, s in zip(labels, scores) if y]
    neg = [s for y, s in zip(labels, scores) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0
               for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def loop_gauc(users, labels, scores):
    """Σ_u n_u AUC_u / Σ_u n_u over users with both classes, by loops."""
    num, den = 0.0, 0
    for u in sorted(set(users)):
        mine = [i for i, v in enumerate(users) if v == u]
        ys = [labels[i] for i in mine]
        if 0 < sum(ys) < len(ys):
            num += len(mine) * pairwise_auc(ys, [scores[i] for i in mine])
            den += len(mine)
    return num / den


# Hand-built impressions: 3 users, history lengths 10 / 120 / 900 (one
# bucket each with edges 50, 200), items 1..4 (item 4 has no SID).
USERS = np.array([1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3])
LABELS = np.array([1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 0])
PROBS = np.array([.9, .2, .4, .3, .5, .6, .5, .1, .7, .8, .3, .35])
HIST = np.array([10] * 4 + [120] * 5 + [900] * 3)
RECENT = np.array([2] * 4 + [9] * 5 + [9] * 3)
ITEMS = np.array([1, 2, 3, 4, 1, 1, 2, 3, 4, 1, 1, 2])
KEYS = slices.SliceKeys(HIST, RECENT, ITEMS, ITEMS != 4)


def rows_by_slice(rows):
    return {(r["dimension"], r["slice"]): r for r in rows}


def test_slice_metrics_match_an_independent_computation():
    rows = rows_by_slice(slices.slice_rows(USERS, LABELS, PROBS, KEYS,
                                           SETTINGS, truth=PROBS / 2))
    cases = {
        ("all", "all"): np.ones(12, bool),
        ("history_length", "<50"): HIST < 50,
        ("history_length", "50–200"): (HIST >= 50) & (HIST < 200),
        ("history_length", "≥200"): HIST >= 200,
        ("user_activity", "<5"): RECENT < 5,
        ("user_activity", "≥5"): RECENT >= 5,
        ("semantic_id", "has_sid"): ITEMS != 4,
        ("semantic_id", "no_sid"): ITEMS == 4,
    }
    for key, pick in cases.items():
        row = rows[key]
        y, p, u = LABELS[pick], PROBS[pick], USERS[pick]
        assert row["impressions"] == pick.sum(), key
        assert row["positives"] == y.sum(), key
        if row["status"] != "ok":
            assert 0 < y.sum() < y.size or row["status"] == "single_class"
            continue
        assert row["auc"] == pytest.approx(pairwise_auc(y, p)), key
        # Bayes figures are the same maths on the true CTR (here p / 2).
        assert row["bayes_auc"] == pytest.approx(pairwise_auc(y, p / 2))
        if any(0 < y[u == v].sum() < (u == v).sum() for v in set(u)):
            assert row["gauc"] == pytest.approx(loop_gauc(
                list(u), list(y), list(p))), key
        loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
        assert row["log_loss"] == pytest.approx(loss), key
        assert row["calibration"] == pytest.approx(p.mean() / y.mean())
    # history <50 is user 1 only: GAUC equals that user's AUC.
    assert rows[("history_length", "<50")]["gauc"] == pytest.approx(
        pairwise_auc([1, 0, 0, 1], [.9, .2, .4, .3]))


def test_popularity_thirds_of_impressions():
    # Item 1 has 5 of 12 impressions (the first third starts with it),
    # item 2 has 3 (starts at 5/12 < 2/3: torso), 3 and 4 have 2 each.
    index = slices.popularity_index(ITEMS)
    names = np.array(slices.POPULARITY)[index]
    assert dict(zip(ITEMS.tolist(), names.tolist())) == {
        1: "head", 2: "torso", 3: "tail", 4: "tail"}


@pytest.mark.parametrize("edges, names", [
    pytest.param((50, 200, 1000, 3000),
                 ["<50", "50–200", "200–1k", "1k–3k", "≥3k"], id="default"),
    pytest.param((5,), ["<5", "≥5"], id="one_edge"),
    pytest.param((1500,), ["<1.5k", "≥1.5k"], id="fractional_k"),
])
def test_bucket_names(edges, names):
    assert [slices.bucket_name(edges, i)
            for i in range(len(edges) + 1)] == names


def test_batch_keys_counts_recent_behaviours_and_repeats_per_candidate():
    day = slices.DAY_S
    batch = {
        "hist_raw_length": np.array([700, 3]),
        "request_time": np.array([10 * day, 10 * day]),
        # request 0: two within 7 days, one older; request 1: padding only
        "hist_timestamps": np.array([[1 * day, 4 * day, 9 * day],
                                     [0, 0, 0]]),
        "cand_item_ids": np.array([[5, 6], [7, 0]]),
    }
    mask = np.array([[True, True], [True, False]])
    keys = slices.batch_keys(batch, mask, 7.0)
    assert keys["history_length"].tolist() == [700, 700, 3]
    assert keys["recent_behaviours"].tolist() == [2, 2, 0]
    assert keys["item_ids"].tolist() == [5, 6, 7]


def test_reliability_bins_by_hand():
    labels = [0, 0, 1, 0, 1, 1]
    probs = [0.1, 0.2, 0.3, 0.6, 0.7, 0.8]
    out = cal.calibration(labels, probs, num_bins=2)
    low, high = out["bins"]
    assert low["impressions"] == high["impressions"] == 3
    assert low["mean_prediction"] == pytest.approx(0.2)
    assert low["observed_ctr"] == pytest.approx(1 / 3)
    assert high["mean_prediction"] == pytest.approx(0.7)
    assert high["observed_ctr"] == pytest.approx(2 / 3)
    assert (low["lower"], low["upper"]) == (0.1, 0.3)
    # ECE = 1/2 · |0.2 − 1/3| + 1/2 · |0.7 − 2/3| = 1/15 + 1/60 = 1/12.
    assert out["ece"] == pytest.approx(1 / 12)
    assert out["ratio"] == pytest.approx(0.45 / 0.5)


def test_perfectly_calibrated_bins_have_zero_ece():
    out = cal.calibration([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], num_bins=1)
    assert out["ece"] == 0 and out["ratio"] == 1


# ------------------------------------------------------------ bad input
def test_predictions_outside_unit_interval_name_the_count():
    probs = PROBS.copy()
    probs[[0, 3]] = [1.5, -0.1]
    with pytest.raises(ValueError, match=r"2 of 12 predictions are outside"):
        checked_rows(USERS, LABELS, probs, KEYS, SETTINGS)


def test_nan_predictions_name_every_slice_holding_them():
    probs = PROBS.copy()
    probs[9] = np.nan  # user 3: history 900, item 1
    with pytest.raises(ValueError) as e:
        checked_rows(USERS, LABELS, probs, KEYS, SETTINGS)
    text = str(e.value)
    assert "slice history_length=≥200: 1 of 3 predictions are NaN" in text
    assert "semantic_id=has_sid" in text
    assert "history_length=<50" not in text


def test_empty_single_class_and_small_slices_say_so():
    settings = slices.SliceSettings(history_buckets=(50, 200, 5000),
                                    activity_buckets=(5,),
                                    min_impressions=4)
    rows = rows_by_slice(slices.slice_rows(USERS, LABELS, PROBS, KEYS,
                                           settings))
    empty = rows[("history_length", "≥5k")]
    assert empty["status"] == "empty" and "auc" not in empty
    assert empty["message"] == ("slice history_length=≥5k is empty: "
                                "no impressions")
    small = rows[("history_length", "200–5k")]  # user 3: 3 impressions
    assert small["status"] == "too_small" and "auc" not in small
    assert small["positives"] == 1
    # no_sid: items 4 of users 1 (clicked) and 2 (not): 2 impressions.
    few = rows[("semantic_id", "no_sid")]
    assert few["status"] == "too_small" and few["impressions"] == 2
    assert "semantic_id=no_sid has 2 impressions (1 clicked)" in \
        few["message"]
    one = slices.slice_rows(USERS[:3], [0, 0, 0], PROBS[:3],
                            slices.SliceKeys(*(k[:3] for k in KEYS)),
                            settings)
    assert one[0]["status"] == "single_class"
    assert "slice all=all has 3 impressions, none clicked" in \
        one[0]["message"]


# --------------------------------------------------- report + TensorBoard
def test_sliced_evaluation_writes_files_and_tensorboard(tmp_path):
    cfg = config_lib.load_config("tiny", [
        f'training.model_dir="{tmp_path}"',
        "evaluation.history_buckets=[50, 200]",
        "evaluation.min_slice_impressions=1",
        "evaluation.calibration_bins=2"])
    out = sliced_evaluation(cfg, USERS, LABELS, PROBS, PROBS / 2, KEYS)
    report = {"auc": metrics.auc(LABELS, PROBS), **out.report}
    assert (tmp_path / report["predictions_file"]).exists()
    assert (tmp_path / report["reliability_png"]).exists()
    assert report["bayes_calibration"]["mean_prediction"] == pytest.approx(
        PROBS.mean() / 2)
    assert "history_length   50–200" in format_sliced(report)
    log_dir = eval_summaries.write_eval_summaries(str(tmp_path), 7, report,
                                                 out.png)
    tags = set()
    for path in tf.io.gfile.glob(log_dir + "/events.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags |= {v.tag for v in event.summary.value}
    assert {"auc", "calibration/ece", "calibration/reliability",
            "slices/history_length/lt50/auc",
            "slices/history_length/ge200/auc", "slices"} <= tags
    assert not math.isnan(report["calibration"]["ece"])


def test_no_impressions_leave_the_refusal_to_the_global_metrics(tmp_path):
    cfg = config_lib.load_config(
        "tiny", [f'training.model_dir="{tmp_path}"'])
    empty = np.zeros(0)
    keys = slices.SliceKeys(empty, empty, empty, empty.astype(bool))
    out = sliced_evaluation(cfg, empty, empty, empty, None, keys)
    assert out.report == {} and out.png is None
    assert format_sliced(out.report) == ""
    assert not list(tmp_path.iterdir())
