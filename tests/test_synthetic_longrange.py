"""Long-range structure, the oracle curve and the valid split of the
synthetic generator (hisac_tf/data/synthetic/)."""

import glob
import os

import numpy as np
import pytest

from hisac_tf import metrics
from hisac_tf.config import ConfigError, load_config
from hisac_tf.data import synthetic
from hisac_tf.data.feature_spec import FeatureSpec
from tests.test_synthetic import read_requests

LONG = [
    "data.max_history=300", "synthetic.mean_history=200",
    "synthetic.num_users=30", "synthetic.requests_per_user=4",
    "synthetic.span_days=30", "synthetic.valid_fraction=0.2",
    "synthetic.affinity_weight=0.0", "synthetic.longtail_weight=0.0",
    "synthetic.count_weight=0.7", "synthetic.recent_share_weight=2.0",
    "synthetic.periodic_interests=2", "synthetic.periodic_period_days=8.0",
    "synthetic.comeback_request_share=0.5",
    "synthetic.lifetime_candidate_share=0.4",
]


def tiny(*overrides):
    return load_config("tiny", list(overrides))


@pytest.fixture(scope="module")
def long_data(tmp_path_factory):
    cfg = tiny(*LONG)
    out = str(tmp_path_factory.mktemp("long"))
    summary = synthetic.generate(cfg, out, progress=False)
    spec = FeatureSpec.from_config(cfg.data, with_true_ctr=True)
    return {
        "cfg": cfg, "dir": out, "summary": summary,
        **{split: read_requests(out, getattr(cfg.data, f"{split}_pattern"),
                                spec)
           for split in ("train", "valid", "eval")},
    }


def test_default_config_data_is_unchanged(tmp_path):
    """The long-range knobs are off by default: the original data."""
    summary = synthetic.generate(tiny(), str(tmp_path), progress=False)
    # The original generator's figures on `tiny` (seed 0).
    assert summary["train"]["bayes_auc"] == 0.791440329218107
    assert summary["eval"]["bayes_auc"] == 0.726027397260274
    assert "valid" not in summary
    assert not glob.glob(os.path.join(str(tmp_path), "valid-*"))


def _oracle_logits(world, cfg, record, user_bias, window):
    """Independent re-computation of the click model from one record."""
    syn = cfg.synthetic
    items = record["hist_item_ids"]
    times = record["hist_timestamps"]
    if window is not None:
        items, times = items[-window:], times[-window:]
    sub = world.item_subtopic[items]
    age = np.arange(items.size)[::-1]  # 0 for the newest
    decay = 0.5 ** (age / syn.recent_half_life)
    out = []
    for item in record["cand_item_ids"]:
        s = world.item_subtopic[item]
        mine = sub == s
        n = int(mine.sum())
        recency = 0.0
        if n:
            gap = record["request_time"] - times[mine][-1]
            recency = np.exp(-gap / (syn.recency_days * synthetic.DAY_S))
        share = decay[mine].sum() / decay.sum() if items.size else 0.0
        out.append(user_bias + world.item_quality[item]
                   + syn.recency_weight * recency
                   + syn.popularity_weight * world.pop_z[item]
                   + syn.count_weight * np.log1p(n)
                   + syn.recent_share_weight * share)
    return np.array(out)


@pytest.mark.parametrize("split", ["train", "valid", "eval"])
def test_oracle_curve_matches_an_independent_recomputation(long_data,
                                                           split):
    cfg, summary = long_data["cfg"], long_data["summary"]
    world = synthetic.build_world(cfg.synthetic)
    bias = summary["calibrated_bias"]
    users = {u: synthetic.simulate_user(world, cfg, u).user_bias
             for u in range(1, cfg.synthetic.num_users + 1)}
    recs = long_data[split]
    labels = np.concatenate([r["labels"] for r in recs])
    user_ids = np.concatenate([np.full(len(r["labels"]), r["user_id"])
                               for r in recs])
    rows = summary[split]["history_window_oracle"]
    assert [r["window"] for r in rows] == [50, 100, 200, 300, "all"]
    for row in rows:
        window = None if row["window"] == "all" else row["window"]
        ctr = np.concatenate([
            1 / (1 + np.exp(-(_oracle_logits(world, cfg, r,
                                             users[int(r["user_id"])],
                                             window) + bias)))
            for r in recs])
        assert row["auc"] == pytest.approx(metrics.auc(labels, ctr),
                                           abs=2e-3), row
        assert row["gauc"] == pytest.approx(
            metrics.gauc(user_ids, labels, ctr), abs=2e-3), row
    # Over the whole history the oracle is the true click model.
    assert rows[-1]["auc"] == summary[split]["bayes_auc"]
    assert rows[-1]["gauc"] == summary[split]["bayes_gauc"]


def test_valid_split_by_time(long_data):
    summary, cfg = long_data["summary"], long_data["cfg"]
    times = {split: [int(r["request_time"]) for r in long_data[split]]
             for split in ("train", "valid", "eval")}
    assert all(times.values())
    assert max(times["train"]) < summary["valid_split_time"] <= min(
        times["valid"])
    assert max(times["valid"]) < summary["eval_split_time"] <= min(
        times["eval"])
    assert summary["valid"]["requests"] == len(long_data["valid"])
    assert sum(summary[s]["requests"] for s in times) == (
        cfg.synthetic.num_users * cfg.synthetic.requests_per_user)
    assert len(summary["files"]["valid"]) == cfg.synthetic.num_shards


def test_dormant_interest_candidates_click_beyond_the_window():
    """As a dormant interest comes back, the newest behaviours do not show
    it, yet its candidates are clicked by lifetime affinity."""
    cfg = tiny(*LONG, "synthetic.comeback_request_share=1.0",
               "synthetic.num_users=60")
    world = synthetic.build_world(cfg.synthetic)
    back_true, back_window, unseen = [], [], []
    for user in range(1, cfg.synthetic.num_users + 1):
        sample = synthetic.simulate_user(world, cfg, user)
        short = synthetic.window_logits(world, cfg.synthetic, sample, 20)
        whole = synthetic.history_features(
            world, sample.hist_item_ids, sample.hist_timestamps,
            sample.request_time, sample.hist_end, sample.cand_item_ids,
            None, None)
        cand_sub = world.item_subtopic[sample.cand_item_ids]
        back = cand_sub == sample.comeback_subtopic[:, None]
        back &= (sample.comeback_subtopic >= 0)[:, None]
        back_true.append(sample.logits[back])
        back_window.append(short[back])
        unseen.append(sample.logits[whole.count == 0])
    back_true = np.concatenate(back_true)
    assert back_true.size > 30
    # Clicked far above never-seen sub-topics, and above what the newest
    # 20 behaviours imply.
    assert back_true.mean() > np.concatenate(unseen).mean() + 1.0
    assert back_true.mean() > np.concatenate(back_window).mean() + 0.5


@pytest.mark.parametrize("count", [1, 10, 100, 1000])
def test_count_term_grows_without_saturating(count):
    cfg = tiny("synthetic.count_weight=1.0", "synthetic.affinity_weight=0",
               "synthetic.longtail_weight=0", "synthetic.recency_weight=0",
               "synthetic.popularity_weight=0")
    world = synthetic.build_world(cfg.synthetic)
    cands = np.array([[1]])

    def logit(n):
        feats = synthetic.HistoryFeatures(
            count=np.array([[n]]), gap=np.zeros((1, 1)), recent_share=None,
            length=np.array([[10 * n + 1]]))
        return synthetic.click_logits(world, cfg.synthetic, cands, 0.0,
                                      np.zeros((1, 1)),
                                      np.zeros((1, 1), bool), feats)[0, 0]

    # Ten times the behaviours adds about log(10), however many there are
    # (the original 1 - 2^-n term adds nothing past a few).
    step = logit(10 * count) - logit(count)
    assert 1.5 < step < np.log(10) + 0.01


@pytest.mark.parametrize("scale", [1, 3, 10])
def test_count_reference_makes_the_count_a_rate(scale):
    """With a reference length, n_s behaviours of L count as a rate:
    scaling both leaves the term as it is, and it is log1p(n · ref / L)."""
    cfg = tiny("synthetic.count_weight=1.0", "synthetic.count_reference=50",
               "synthetic.affinity_weight=0", "synthetic.longtail_weight=0",
               "synthetic.recency_weight=0", "synthetic.popularity_weight=0")
    world = synthetic.build_world(cfg.synthetic)
    feats = synthetic.HistoryFeatures(
        count=np.array([[4 * scale]]), gap=np.zeros((1, 1)),
        recent_share=None, length=np.array([[100 * scale]]))
    got = synthetic.click_logits(world, cfg.synthetic, np.array([[1]]), 0.0,
                                 np.zeros((1, 1)), np.zeros((1, 1), bool),
                                 feats)[0, 0]
    assert got == pytest.approx(world.item_quality[1] + np.log1p(2.0))


@pytest.mark.parametrize(
    "short, max_history, expected",
    [
        pytest.param(0, 20, [20], id="tiny"),
        pytest.param(0, 1000, [50, 100, 200, 500, 1000], id="n1000_s50"),
        pytest.param(100, 10000, [100, 200, 500, 1000, 10000], id="n10k"),
        pytest.param(300, 300, [100, 200, 300], id="s_equals_n"),
    ],
)
def test_oracle_windows(short, max_history, expected):
    cfg = tiny(f"model.short_term_length={short}",
               f"data.max_history={max_history}")
    assert synthetic.oracle_windows(cfg) == expected


@pytest.mark.parametrize(
    "overrides, message",
    [
        pytest.param(["synthetic.valid_fraction=0.8"],
                     r"synthetic.valid_fraction must be in \[0, 1 - ",
                     id="valid_plus_eval_over_1"),
        pytest.param(["synthetic.count_weight=-1"],
                     r"synthetic.count_weight must be >= 0, got -1",
                     id="negative_weight"),
        pytest.param(["synthetic.periodic_burst_share=1.5"],
                     r"synthetic.periodic_burst_share must be in \[0, 1\]",
                     id="burst_share"),
        pytest.param(["synthetic.recent_half_life=0"],
                     r"synthetic.recent_half_life must be > 0, got 0",
                     id="half_life"),
    ],
)
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny(*overrides)


def test_valid_pattern_must_differ(tmp_path):
    cfg = tiny("synthetic.valid_fraction=0.1",
               "data.valid_pattern=train-*.tfrecord.gz")
    with pytest.raises(ConfigError, match="data.valid_pattern must differ"):
        synthetic.generate(cfg, str(tmp_path / "x"), progress=False)
    assert not os.path.exists(tmp_path / "x"), "checked before writing"
