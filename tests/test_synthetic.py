"""Tests of the synthetic data generator (hisac_tf/data/synthetic/)."""

import fnmatch
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import metrics
from hisac_tf.config import ConfigError, load_config
from hisac_tf.data.feature_spec import FeatureSpec, item_table_parse_spec
from pipelines import generate_synthetic
from hisac_tf.data import synthetic


def tiny(*overrides):
    return load_config("tiny", list(overrides))


def read_requests(directory, pattern, spec):
    """All records of `pattern`, parsed, one dict of numpy values each."""
    files = sorted(glob.glob(os.path.join(directory, pattern)))
    out = []
    for serialized in tf.data.TFRecordDataset(files, "GZIP").batch(1024):
        raw = spec.parse(serialized)
        checks = spec.check_ops(
            raw, tf.fill(tf.shape(serialized), pattern))  # raise if broken
        del checks
        for i in range(int(tf.shape(serialized)[0])):
            out.append({k: v[i].numpy() for k, v in raw.items()})
    return out


def read_items(directory, content_dim):
    files = glob.glob(os.path.join(directory, "items-*.tfrecord.gz"))
    ds = tf.data.TFRecordDataset(files, "GZIP").batch(4096)
    parts = [tf.io.parse_example(b, item_table_parse_spec(content_dim))
             for b in ds]
    return {k: np.concatenate([p[k].numpy() for p in parts])
            for k in parts[0]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    cfg = tiny()
    out = str(tmp_path_factory.mktemp("tiny"))
    summary = synthetic.generate(cfg, out, progress=False)
    spec = FeatureSpec.from_config(cfg.data, with_true_ctr=True)
    return {
        "cfg": cfg,
        "dir": out,
        "summary": summary,
        "train": read_requests(out, cfg.data.train_pattern, spec),
        "eval": read_requests(out, cfg.data.eval_pattern, spec),
        "items": read_items(out, cfg.synthetic.content_dim),
    }


def test_files_names_config_and_summary(data):
    cfg, out = data["cfg"], data["dir"]
    names = sorted(os.listdir(out))
    assert names == [
        "config.json",
        "eval-00000-of-00002.tfrecord.gz",
        "eval-00001-of-00002.tfrecord.gz",
        "items-00000-of-00001.tfrecord.gz",
        "summary.json",
        "train-00000-of-00002.tfrecord.gz",
        "train-00001-of-00002.tfrecord.gz",
    ]
    for name, pattern in (
        (names[1], cfg.data.eval_pattern),
        (names[3], cfg.data.item_table_pattern),
        (names[5], cfg.data.train_pattern),
    ):
        assert fnmatch.fnmatch(name, pattern)
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f) == data["summary"]
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f) == cfg.to_dict()
    assert data["summary"]["config"] == cfg.to_dict()


def test_records_follow_the_contract(data):
    cfg, syn = data["cfg"], data["cfg"].synthetic
    item_cat = dict(zip(data["items"]["item_id"], data["items"]["category_id"]))
    requests = data["train"] + data["eval"]
    assert len(requests) == syn.num_users * syn.requests_per_user
    per_user = {}
    for r in requests:
        per_user.setdefault(int(r["user_id"]), []).append(r)
        ts = r["hist_timestamps"]
        assert len(ts) >= syn.min_history
        assert np.all(np.diff(ts) > 0), "history must be strictly increasing"
        assert ts[-1] < r["request_time"], "history strictly before request"
        for name in ("hist_category_ids", "hist_behaviors"):
            assert len(r[name]) == len(ts)
        assert set(r["hist_behaviors"]) <= {1, 2, 3, 4}
        cand = r["cand_item_ids"]
        assert len(cand) == syn.candidates_per_request
        assert len(set(cand)) == len(cand), "candidates must be distinct"
        assert [item_cat[c] for c in cand] == list(r["cand_category_ids"])
        assert [item_cat[c] for c in r["hist_item_ids"]] == list(
            r["hist_category_ids"])
        assert set(r["labels"]) <= {0, 1}
        assert np.all((r["true_ctr"] > 0) & (r["true_ctr"] < 1))
        assert r["gender"] in (1, 2) and 1 <= r["age_bucket"] <= 8
    assert sorted(per_user) == list(range(1, syn.num_users + 1))
    for reqs in per_user.values():
        times = sorted(int(r["request_time"]) for r in reqs)
        assert len(set(times)) == len(times)
        # A later request's history extends the earlier one's.
        reqs.sort(key=lambda r: r["request_time"])
        for a, b in zip(reqs, reqs[1:]):
            n = len(a["hist_item_ids"])
            np.testing.assert_array_equal(b["hist_item_ids"][:n],
                                          a["hist_item_ids"])
    assert cfg.data.max_candidates >= syn.candidates_per_request


def test_split_by_time(data):
    train_t = [int(r["request_time"]) for r in data["train"]]
    eval_t = [int(r["request_time"]) for r in data["eval"]]
    split = data["summary"]["eval_split_time"]
    assert train_t and eval_t
    assert max(train_t) < split <= min(eval_t)


@pytest.mark.parametrize("split", ["train", "eval"])
def test_summary_matches_records_and_bayes_auc(data, split):
    recs, s = data[split], data["summary"][split]
    labels = np.concatenate([r["labels"] for r in recs])
    ctr = np.concatenate([r["true_ctr"] for r in recs])
    users = np.concatenate([np.full(len(r["labels"]), r["user_id"])
                            for r in recs])
    assert s["requests"] == len(recs)
    assert s["impressions"] == labels.size
    assert s["clicks"] == labels.sum()
    assert abs(s["bayes_auc"] - metrics.auc(labels, ctr)) < 1e-3
    assert s["bayes_gauc"] == pytest.approx(metrics.gauc(users, labels, ctr))
    assert s["bayes_log_loss"] == pytest.approx(
        metrics.log_loss(labels, ctr), rel=1e-5)
    assert s["mean_true_ctr"] == pytest.approx(ctr.mean(), rel=1e-5)
    assert s["bayes_auc"] > 0.7


def test_click_model_rewards_history_subtopics(data):
    """Candidates of a sub-topic the user has seen click far more often."""
    subtopic = dict(zip(data["items"]["item_id"],
                        data["items"]["subtopic_id"]))
    seen, unseen = [], []
    for r in data["train"] + data["eval"]:
        hist = {subtopic[i] for i in r["hist_item_ids"]}
        for item, p in zip(r["cand_item_ids"], r["true_ctr"]):
            (seen if subtopic[item] in hist else unseen).append(p)
    assert len(seen) > 50 and len(unseen) > 50
    assert np.mean(seen) > 2 * np.mean(unseen)
    summary = data["summary"]
    overall = (summary["train"]["mean_true_ctr"] * summary["train"][
        "impressions"] + summary["eval"]["mean_true_ctr"] * summary["eval"][
        "impressions"]) / summary["impressions"]
    assert overall == pytest.approx(synthetic.TARGET_CTR, abs=0.03)


def test_some_histories_exceed_max_history(data):
    n = data["cfg"].data.max_history
    lengths = np.array([len(r["hist_item_ids"])
                        for r in data["train"] + data["eval"]])
    assert (lengths > n).sum() >= 1
    assert (lengths > n).sum() == data["summary"]["histories_over_max_history"]
    assert lengths.max() == data["summary"]["history_max"]
    assert lengths.max() <= int(1.5 * n)
    assert data["summary"]["history_median"] == np.median(lengths)


def nearest_centroid_accuracy(emb, labels):
    classes = np.unique(labels)
    centres = np.stack([emb[labels == c].mean(0) for c in classes])
    dist = ((emb[:, None, :] - centres[None]) ** 2).sum(-1)  # [I, S]
    return float(np.mean(classes[dist.argmin(1)] == labels))


def test_item_table_and_content_clusters(data):
    syn = data["cfg"].synthetic
    items = data["items"]
    assert sorted(items["item_id"]) == list(range(1, syn.num_items + 1))
    sub = items["subtopic_id"]
    num_s = syn.num_topics * syn.subtopics_per_topic
    assert set(sub) == set(range(1, num_s + 1))
    np.testing.assert_array_equal(
        items["category_id"], (sub - 1) // syn.subtopics_per_topic + 1)
    sizes = np.bincount(sub)[1:]
    assert sizes.max() > 2 * sizes.min(), "sub-topic sizes are uneven"
    emb = items["content_embedding"]
    assert emb.shape == (syn.num_items, syn.content_dim)
    # Measured on tiny: 0.94 (seed 0); chance is 1/12.
    acc = nearest_centroid_accuracy(emb, sub)
    assert 0.5 < acc < 0.999
    # Hierarchy: sub-topics of one topic lie closer than across topics.
    centres = np.stack([emb[sub == s].mean(0) for s in range(1, num_s + 1)])
    topic = np.arange(num_s) // syn.subtopics_per_topic
    dist = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1))
    same = (topic[:, None] == topic[None]) & ~np.eye(num_s, dtype=bool)
    cross = topic[:, None] != topic[None]
    assert dist[same].mean() < 0.8 * dist[cross].mean()


def test_content_clusters_across_seeds():
    """Not trivially separable, well above chance, whatever the seed."""
    for seed in range(1, 6):
        syn = tiny(f"synthetic.seed={seed}").synthetic
        world = synthetic.build_world(syn)
        emb = synthetic.item_embeddings(world, syn, 1, syn.num_items + 1)
        acc = nearest_centroid_accuracy(emb, world.item_subtopic[1:])
        assert 0.5 < acc < 0.999, (seed, acc)


def shard_bytes(directory):
    out = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".tfrecord.gz"):
            with open(os.path.join(directory, name), "rb") as f:
                out[name] = f.read()
    return out


def test_deterministic_from_seed(data, tmp_path):
    again = synthetic.generate(data["cfg"], str(tmp_path / "a"),
                               progress=False)
    first = shard_bytes(data["dir"])
    assert shard_bytes(str(tmp_path / "a")) == first
    assert again["train"] == data["summary"]["train"]
    synthetic.generate(tiny("synthetic.seed=1"), str(tmp_path / "b"),
                       progress=False)
    other = shard_bytes(str(tmp_path / "b"))
    assert other.keys() == first.keys()
    for name in first:
        assert other[name] != first[name], name


def test_users_do_not_depend_on_shard_count(tmp_path):
    """Each user has its own generator: re-sharding keeps every record."""
    def records(shards, where):
        cfg = tiny(f"synthetic.num_shards={shards}")
        synthetic.generate(cfg, where, progress=False)
        files = sorted(glob.glob(os.path.join(where, "*-of-*.tfrecord.gz")))
        files = [f for f in files if "items-" not in f]
        return sorted(r.numpy() for r in tf.data.TFRecordDataset(files,
                                                                 "GZIP"))
    where = str(tmp_path / "d")
    three = records(3, where)
    assert len(glob.glob(os.path.join(where, "train-*"))) == 3
    one = records(1, where)
    assert one == three
    # The run with one shard removed the three-shard files.
    assert sorted(os.listdir(where)) == [
        "config.json", "eval-00000-of-00001.tfrecord.gz",
        "items-00000-of-00001.tfrecord.gz", "summary.json",
        "train-00000-of-00001.tfrecord.gz",
    ]


@pytest.mark.parametrize(
    "overrides, message",
    [
        pytest.param(["synthetic.candidates_per_request=7"],
                     r"synthetic.candidates_per_request \(7\) must be <= "
                     r"data.max_candidates \(6\)", id="too_many_candidates"),
        pytest.param(["synthetic.num_items=10"],
                     r"synthetic.num_items \(10\) must be >= "
                     r"synthetic.num_topics", id="fewer_items_than_subtopics"),
        pytest.param(["data.user_features=[\"gender\", \"city\"]"],
                     "data.user_features holds 'city'", id="unknown_feature"),
        pytest.param(["data.train_pattern=train.tfrecord.gz"],
                     "exactly one '\\*'", id="pattern_without_star"),
        pytest.param(["synthetic.dominant_interests=0",
                      "synthetic.longtail_interests=0"],
                     "dominant_interests \\+ synthetic.longtail_interests "
                     "must be >= 1", id="no_interests"),
    ],
)
def test_config_errors(overrides, message, tmp_path):
    with pytest.raises(ValueError, match=message) as info:
        synthetic.generate(tiny(*overrides), str(tmp_path / "x"),
                           progress=False)
    assert isinstance(info.value, ConfigError)
    assert not os.path.exists(tmp_path / "x"), "checked before writing"


def test_progress_lines_and_cli_summary(tmp_path, capsys):
    cfg = tiny("synthetic.num_users=10")
    synthetic.generate(cfg, str(tmp_path / "q"), progress=False)
    assert capsys.readouterr().err == ""
    summary = generate_synthetic.main(cfg, str(tmp_path / "p"), True)
    captured = capsys.readouterr()
    assert "synthetic: 10/10 users (100%)" in captured.err
    assert "Bayes-optimal AUC" in captured.out
    assert f"{summary['train']['requests']} requests" in captured.out


def test_default_output_dir_is_data_dir(tmp_path):
    cfg = tiny("synthetic.num_users=4",
               f"data.data_dir={json.dumps(str(tmp_path / 'dd'))}")
    summary = synthetic.generate(cfg, progress=False)
    assert summary["output_dir"] == str(tmp_path / "dd")
    assert os.path.exists(tmp_path / "dd" / "summary.json")
