"""Raw-log importer: request formation, formats, side tables, bad input,
negatives without label leaks, the time split, the warnings and the CLI."""

import collections
import csv
import glob
import gzip
import os
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from hisac_tf.config import Config, ConfigError
from hisac_tf.data.feature_spec import (
    DataError,
    FeatureSpec,
    item_table_parse_spec,
)
from hisac_tf.data.importers.bad_rows import BadRowError, BadRows
from hisac_tf.data.importers.event_columns import EventColumns
from hisac_tf.data.importers.import_summary import format_summary
from hisac_tf.data.importers.log_importer import import_logs
from hisac_tf.data.importers.negative_sampler import NegativeSampler
from hisac_tf.data.importers.parquet_reader import parquet_log_events
from hisac_tf.data.importers.request_formation import request_example
from pipelines import import_logs as import_job

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
BEHAVIOR = {"pv": 1, "cart": 2, "fav": 3, "buy": 4}
NAMES = {v: k for k, v in BEHAVIOR.items()}

# Hand-made log, deliberately out of time order (4000 before 3900).
GOLDEN = [
    (1, 10, 100, "pv", 1000),
    (1, 11, 100, "pv", 1100),
    (2, 10, 100, "pv", 1200),
    (1, 12, 101, "buy", 4000),
    (1, 12, 101, "pv", 3900),
    (1, 13, 101, "pv", 4100),
    (2, 11, 100, "cart", 7300),
    (2, 14, 102, "pv", 7400),
    (1, 10, 100, "fav", 90000),
]


# ----------------------------------------------------------------- helpers
def write_csv(path, rows, header=True):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(HEADER)
        w.writerows(rows)
    return str(path)


def write_parquet(path, rows, behavior_as="name", row_group_size=None):
    cols = list(zip(*rows))
    beh = (pa.array([str(b) for b in cols[3]]) if behavior_as == "name"
           else pa.array([BEHAVIOR.get(b, b) for b in cols[3]], pa.int32()))
    table = pa.table({
        "user_id": pa.array(cols[0], pa.int64()),
        "item_id": pa.array(cols[1], pa.int64()),
        "category_id": pa.array(cols[2], pa.int32()),
        "behavior_type": beh,
        "timestamp": pa.array(cols[4], pa.int64()),
    })
    pq.write_table(table, str(path), row_group_size=row_group_size)
    return str(path)


def spec_of(cfg):
    return FeatureSpec(cfg.data.max_history, cfg.data.max_candidates)


def read_records(out_dir, split, spec):
    """Parsed records of a split, files in name order, as plain dicts."""
    files = sorted(glob.glob(os.path.join(out_dir, f"{split}-*.tfrecord.gz")))
    out = []
    for path in files:
        for rec in tf.data.TFRecordDataset(path, "GZIP"):
            p = spec.parse(tf.reshape(rec, [1]))
            out.append({k: (v.to_list()[0] if isinstance(v, tf.RaggedTensor)
                            else v.numpy().tolist()[0]) for k, v in p.items()})
    return out


def raw_records(out_dir):
    """Serialized records of every output shard, keyed by file name."""
    return {
        os.path.basename(p): [r.numpy() for r in
                              tf.data.TFRecordDataset(p, "GZIP")]
        for p in sorted(glob.glob(os.path.join(out_dir, "*.tfrecord.gz")))
    }


DATA_KEYS = ("max_history", "max_candidates", "user_features")


def make_config(tmp_path, inp, name="out", **fields):
    """A Config whose data section gets N, C and the output directory."""
    fields.setdefault("max_history", 10)
    fields.setdefault("max_candidates", 8)
    fields.setdefault("negatives_per_request", 0)
    fields.setdefault("warn_min_requests", 0)
    # The hand-made logs have tiny one-label splits; refusing them is
    # tested below with allow_single_class_split=False.
    fields.setdefault("allow_single_class_split", True)
    fields.setdefault("warn_min_impressions", 0)
    data = {k: fields.pop(k) for k in DATA_KEYS if k in fields}
    data["data_dir"] = str(tmp_path / name)
    return Config().replace(data=data, importer=dict(input=inp, **fields))


def run_import(tmp_path, inp, name="out", **fields):
    cfg = make_config(tmp_path, inp, name, **fields)
    return cfg, import_logs(cfg)


def random_log(seed=0, users=12, items=30, events=300, span_s=2 * 86400):
    rng = np.random.default_rng(seed)
    cat_of = rng.integers(1, 5, size=items + 1)
    rows = []
    for _ in range(events):
        item = int(rng.integers(1, items + 1))
        rows.append((int(rng.integers(1, users + 1)), item,
                     int(cat_of[item]),
                     NAMES[int(rng.choice(4, p=[.7, .1, .1, .1])) + 1],
                     int(rng.integers(0, span_s))))
    return rows


def reference_requests(rows, window_s, max_history, positive):
    """Independent reference: plain loops over the log, see the docstring."""
    by_user = collections.defaultdict(list)
    for idx, (u, i, c, b, t) in enumerate(rows):
        by_user[u].append((t, idx, i, c, BEHAVIOR[b]))
    out = []
    for u, evs in by_user.items():
        evs.sort()
        windows = collections.OrderedDict()
        for e in evs:
            windows.setdefault(e[0] // window_s, []).append(e)
        for group in windows.values():
            t = group[0][0]
            hist = [e for e in evs if e[0] < t][-max_history:]
            cands = collections.OrderedDict()
            for _, _, i, c, b in group:
                entry = cands.setdefault(i, [c, 0])
                entry[1] |= int(b in positive)
            out.append({
                "user_id": u, "request_time": t,
                "hist_item_ids": [e[2] for e in hist],
                "hist_category_ids": [e[3] for e in hist],
                "hist_behaviors": [e[4] for e in hist],
                "hist_timestamps": [e[0] for e in hist],
                "items": list(cands),
                "cats": [v[0] for v in cands.values()],
                "labels": [v[1] for v in cands.values()],
                "window_items": {e[2] for e in group},
            })
    return sorted(out, key=lambda r: (r["request_time"], r["user_id"]))


# ---------------------------------------------------------------- golden
def test_golden_requests_hand_computed(tmp_path):
    path = write_csv(tmp_path / "log.csv", GOLDEN)
    cfg, summary = run_import(tmp_path, path, eval_start_ts=86400,
                              eval_days=0)
    train = read_records(cfg.data.data_dir, "train", spec_of(cfg))
    ev = read_records(cfg.data.data_dir, "eval", spec_of(cfg))
    got = [(r["user_id"], r["request_time"], r["hist_item_ids"],
            r["hist_timestamps"], r["cand_item_ids"], r["cand_category_ids"],
            r["labels"]) for r in train + ev]
    assert got == [
        (1, 1000, [], [], [10, 11], [100, 100], [0, 0]),
        (2, 1200, [], [], [10], [100], [0]),
        (1, 3900, [10, 11], [1000, 1100], [12, 13], [101, 101], [1, 0]),
        (2, 7300, [10], [1200], [11, 14], [100, 102], [1, 0]),
        (1, 90000, [10, 11, 12, 12, 13], [1000, 1100, 3900, 4000, 4100],
         [10], [100], [1]),
    ]
    assert ev[0]["hist_behaviors"] == [1, 1, 1, 4, 1]
    assert ev[0]["hist_category_ids"] == [100, 100, 101, 101, 101]
    assert all(r["gender"] == 1 and r["age_bucket"] == 1
               for r in train + ev)
    assert (len(train), len(ev)) == (4, 1)
    assert summary["events"] == 9 and summary["users"] == 2
    assert summary["requests"] == 5 and summary["impressions"] == 8
    assert summary["positives"] == 3 and summary["skipped_rows"] == 0
    assert summary["splits"]["eval"] == {
        "requests": 1, "impressions": 1, "positives": 1}
    assert os.path.exists(os.path.join(cfg.data.data_dir, "summary.json"))


def test_truncation_of_history_and_candidates(tmp_path):
    rows = GOLDEN + [(1, 20, 103, "pv", 90001), (1, 21, 103, "pv", 90002),
                     (1, 22, 103, "buy", 90003)]
    path = write_csv(tmp_path / "log.csv", rows)
    cfg, summary = run_import(tmp_path, path, max_history=3,
                              max_candidates=2, eval_days=0)
    last = read_records(cfg.data.data_dir, "train", spec_of(cfg))[-1]
    # Newest 3 of the 5 earlier events; 10 (fav) and 22 (buy) are the
    # positives and are kept before the pv-only 20 and 21, in time order.
    assert last["hist_item_ids"] == [12, 12, 13]
    assert last["hist_timestamps"] == [3900, 4000, 4100]
    assert last["cand_item_ids"] == [10, 22]
    assert last["labels"] == [1, 1]
    assert summary["truncated_candidates"] == 2
    assert summary["histories_truncated"] == 1


@pytest.mark.parametrize("positive, labels", [
    pytest.param(("cart", "fav", "buy"), [1, 0], id="default"),
    pytest.param(("pv", "cart", "fav", "buy"), [1, 1], id="all-positive"),
    pytest.param(("buy",), [1, 0], id="buy-only"),
    pytest.param(("2",), [0, 0], id="cart-by-id"),
])
def test_positive_behaviors(tmp_path, positive, labels):
    path = write_csv(tmp_path / "log.csv", GOLDEN)
    cfg, _ = run_import(tmp_path, path, positive_behaviors=positive,
                        eval_days=0)
    third = read_records(cfg.data.data_dir, "train", spec_of(cfg))[2]
    assert third["cand_item_ids"] == [12, 13]
    assert third["labels"] == labels


def test_negatives_hand_computed_without_history_exclusion(tmp_path):
    path = write_csv(tmp_path / "log.csv", GOLDEN)
    cfg, summary = run_import(tmp_path, path, negatives_per_request=2,
                              eval_days=0,
                              exclude_history_from_negatives=False)
    recs = read_records(cfg.data.data_dir, "train", spec_of(cfg))
    negs = [(r["cand_item_ids"][k:], r["labels"][k:]) for r, k in
            zip(recs, [2, 1, 2, 2, 1])]
    assert negs[0] == ([], [])  # Nothing seen before t=1000.
    assert negs[1] == ([11], [0])  # Seen: 10, 11; 10 is in the window.
    assert sorted(negs[2][0]) == [10, 11] and negs[2][1] == [0, 0]
    # t=7300: seen 10, 11, 12, 13; the window holds 11 and 14.
    assert len(set(negs[3][0])) == 2 and set(negs[3][0]) <= {10, 12, 13}
    assert negs[3][1] == [0, 0]
    # t=90000: seen 10..14; the window holds 10.
    assert len(set(negs[4][0])) == 2 and set(negs[4][0]) <= {11, 12, 13, 14}
    assert summary["negatives_short"] == 3  # 2 at t=1000, 1 at t=1200.
    assert summary["negatives_sampled"] == 7
    # User 1's history at t=3900 is {10, 11}: both negatives leak; at
    # t=7300 user 2 has seen 10; at t=90000 user 1 has seen 11, 12, 13.
    leaks = 2 + (10 in negs[3][0]) + len(set(negs[4][0]) & {11, 12, 13})
    assert summary["negatives_from_history"] == leaks
    assert summary["negatives_history_rejected"] == 0


def test_negatives_hand_computed_with_history_exclusion(tmp_path):
    path = write_csv(tmp_path / "log.csv", GOLDEN)
    cfg, summary = run_import(tmp_path, path, negatives_per_request=2,
                              eval_days=0)
    recs = read_records(cfg.data.data_dir, "train", spec_of(cfg))
    negs = [r["cand_item_ids"][k:] for r, k in zip(recs, [2, 1, 2, 2, 1])]
    # t=1000: nothing seen. t=1200 (user 2, no history): 11. t=3900
    # (user 1 saw 10, 11; only 10 and 11 were seen): none. t=7300 (user 2
    # saw 10; window 11, 14): 12 and 13. t=90000 (user 1 saw 10..13): 14.
    assert [sorted(n) for n in negs] == [[], [11], [], [12, 13], [14]]
    assert summary["negatives_sampled"] == 4
    assert summary["negatives_short"] == 6
    assert summary["negatives_from_history"] == 0
    assert summary["negatives_history_rejected"] > 0


def user_histories(rows):
    """(user, request_time) -> the items the user had before (reference)."""
    return lambda user, t: {i for u, i, c, b, ts in rows
                            if u == user and ts < t}


@pytest.mark.parametrize("seed", [1, 2, 3], ids=lambda s: f"log{s}")
@pytest.mark.parametrize("exclude", [True, False],
                         ids=["exclusion-on", "exclusion-off"])
def test_negatives_never_leak_history_when_excluded(tmp_path, seed,
                                                    exclude):
    rows = random_log(seed=seed, users=6, items=25, events=250)
    path = write_csv(tmp_path / "log.csv", rows)
    cfg, summary = run_import(
        tmp_path, path, max_candidates=12, negatives_per_request=4,
        eval_days=0, seed=seed, exclude_history_from_negatives=exclude)
    before = user_histories(rows)
    ref = reference_requests(rows, 3600, 10, {2, 3, 4})
    recs = read_records(cfg.data.data_dir, "train", spec_of(cfg))
    leaks = 0
    for rec, want in zip(recs, ref):
        negatives = rec["cand_item_ids"][len(want["items"]):]
        history = before(rec["user_id"], rec["request_time"])
        leaks += len(set(negatives) & history)
    assert summary["negatives_sampled"] > 100
    assert summary["negatives_from_history"] == leaks
    if exclude:
        assert leaks == 0
        assert summary["negatives_history_rejected"] > 0
    else:
        assert leaks > 0
        assert summary["negatives_history_rejected"] == 0


def test_negative_sampler_follows_past_popularity():
    items = np.array([1] * 90 + [2] * 10 + [3] * 100)  # In time order.
    ts = np.arange(200)
    sampler = NegativeSampler(items, items + 100, ts, seed=0)
    draws = [sampler.sample(1, 100, set()) for _ in range(3000)]
    share = np.mean([d.items == [1] for d in draws])
    assert abs(share - 0.9) < 0.03  # Item 3 lies in the future: never.
    assert all(d.items[0] in (1, 2) and d.categories[0] == d.items[0] + 100
               for d in draws)
    assert sampler.sample(5, 100, {1})[:2] == ([2], [102])  # Only 2 left.
    assert sampler.sample(3, 0, set())[:2] == ([], [])  # Nothing seen yet.
    in_history = sampler.sample(5, 100, set(), history={1})
    assert in_history.items == [2] and in_history.history_rejected > 100
    first = NegativeSampler(items, items, ts, seed=3)
    again = NegativeSampler(items, items, ts, seed=3)
    assert [first.sample(2, 200, set()) for _ in range(20)] == [
        again.sample(2, 200, set()) for _ in range(20)]


def test_request_example_matches_feature_spec():
    spec = FeatureSpec(max_history=4, max_candidates=3)
    request = {
        "user_id": 7, "request_time": 1234, "gender": 2, "age_bucket": 1,
        "hist_item_ids": [5, 6], "hist_category_ids": [1, 2],
        "hist_behaviors": [1, 4], "hist_timestamps": [10, 11],
        "cand_item_ids": [8, 9], "cand_category_ids": [3, 3],
        "labels": [1, 0],
    }
    fast = request_example(spec, request)
    assert fast == spec.to_example(request)  # Equal messages (map order
    parsed = spec.parse(tf.constant([fast.SerializeToString()]))  # aside).
    assert parsed["cand_item_ids"].to_list() == [[8, 9]]
    empty = dict(request, hist_item_ids=[], hist_category_ids=[],
                 hist_behaviors=[], hist_timestamps=[])
    assert request_example(spec, empty) == spec.to_example(empty)


# ------------------------------------------------------------- invariants
@pytest.fixture(scope="module")
def random_rows():
    return random_log()


def test_random_log_matches_reference(tmp_path, random_rows):
    path = write_csv(tmp_path / "log.csv", random_rows)
    cfg, summary = run_import(
        tmp_path, path, max_history=6, max_candidates=12,
        negatives_per_request=3, num_shards=3, eval_days=1)
    spec = spec_of(cfg)
    train = read_records(cfg.data.data_dir, "train", spec)
    ev = read_records(cfg.data.data_dir, "eval", spec)
    ref = reference_requests(random_rows, 3600, 6, {2, 3, 4})
    assert len(train) + len(ev) == len(ref) == summary["requests"]
    cut = max(r[4] for r in random_rows) - 86400
    assert summary["eval_start_ts"] == cut
    assert all(r["request_time"] < cut for r in train)
    assert all(r["request_time"] >= cut for r in ev)
    times = [r["request_time"] for r in train + ev]
    assert times == sorted(times)  # Time order across shards and splits.
    for rec, want in zip(train + ev, ref):
        t = rec["request_time"]
        assert (rec["user_id"], t) == (want["user_id"], want["request_time"])
        for key in ("hist_item_ids", "hist_category_ids", "hist_behaviors",
                    "hist_timestamps"):
            assert rec[key] == want[key], key
        assert all(h < t for h in rec["hist_timestamps"])
        assert rec["hist_timestamps"] == sorted(rec["hist_timestamps"])
        k = len(want["items"])
        assert rec["cand_item_ids"][:k] == want["items"]
        assert rec["cand_category_ids"][:k] == want["cats"]
        assert rec["labels"][:k] == want["labels"]
        negatives = rec["cand_item_ids"][k:]
        assert len(negatives) <= 3 and rec["labels"][k:] == [0] * len(
            negatives)
        assert len(set(negatives)) == len(negatives)
        assert not set(negatives) & want["window_items"]
        past = {i for u, i, c, b, ts in random_rows if ts < t}
        assert set(negatives) <= past
    assert summary["impressions"] == sum(
        len(r["cand_item_ids"]) for r in train + ev)
    assert summary["positives"] == sum(sum(r["labels"]) for r in train + ev)
    shards = raw_records(cfg.data.data_dir)
    assert len(shards) == 6  # 3 train + 3 eval shards.
    # All records pass the FeatureSpec contract checks (eager asserts
    # raise when built).
    serialized = tf.constant([r for recs in shards.values() for r in recs])
    spec.check_ops(spec.parse(serialized),
                   tf.fill(tf.shape(serialized), "test"))


def test_deterministic_and_seeded(tmp_path, random_rows):
    path = write_csv(tmp_path / "log.csv", random_rows)
    kw = dict(negatives_per_request=3, eval_days=1)
    run_import(tmp_path, path, name="a", **kw)
    run_import(tmp_path, path, name="b", **kw)
    run_import(tmp_path, path, name="c", seed=1, **kw)
    a, b, c = (raw_records(str(tmp_path / n)) for n in "abc")
    assert a == b
    assert a != c


# ---------------------------------------------------------------- formats
def test_csv_and_parquet_give_identical_outputs(tmp_path, random_rows):
    inputs = {
        "csv_header": write_csv(tmp_path / "h.csv", random_rows),
        "csv_no_header": write_csv(tmp_path / "n.csv", random_rows,
                                   header=False),
        "parquet_names": write_parquet(tmp_path / "a.parquet", random_rows,
                                       row_group_size=64),
        "parquet_ids": write_parquet(tmp_path / "b.parquet", random_rows,
                                     behavior_as="id"),
    }
    outputs = {}
    for name, path in inputs.items():
        _, summary = run_import(tmp_path, path, name=name,
                                negatives_per_request=2, eval_days=1)
        assert summary["events"] == len(random_rows), name
        outputs[name] = raw_records(str(tmp_path / name))
    base = outputs.pop("csv_header")
    assert sum(len(v) for v in base.values()) > 50
    for name, out in outputs.items():
        assert out == base, name


def test_header_option_no_reads_first_row_as_data(tmp_path):
    path = write_csv(tmp_path / "log.csv", GOLDEN, header=False)
    _, summary = run_import(tmp_path, path, header="no", eval_days=0)
    assert summary["events"] == 9
    with pytest.raises(BadRowError, match=r"line 1: field 'user_id'"):
        run_import(tmp_path, write_csv(tmp_path / "h.csv", GOLDEN),
                   name="h", header="no")


def test_several_inputs_and_gzip(tmp_path):
    write_csv(tmp_path / "a.csv", GOLDEN[:4])
    with gzip.open(tmp_path / "b.csv.gz", "wt", newline="") as f:
        csv.writer(f).writerows(GOLDEN[4:])
    _, summary = run_import(
        tmp_path, f"{tmp_path}/a.csv,{tmp_path}/*.gz", eval_days=0)
    assert summary["events"] == 9 and len(summary["inputs"]) == 2


def test_parquet_reader_batches_cross_row_groups(tmp_path):
    path = write_parquet(tmp_path / "x.parquet", GOLDEN, row_group_size=4)
    out = EventColumns()
    rows = parquet_log_events(path, BadRows(False, "log"), out,
                              progress_every=100, batch_rows=3)
    got = out.arrays()
    assert rows == 9
    assert got["user_id"].tolist() == [r[0] for r in GOLDEN]
    assert got["category_id"].tolist() == [r[2] for r in GOLDEN]
    assert got["behavior_type"].tolist() == [BEHAVIOR[r[3]] for r in GOLDEN]
    assert got["timestamp"].tolist() == [r[4] for r in GOLDEN]


def per_user_lists(rows, lists=pa.list_):
    """The one-row-per-user layout: user_id plus list columns, in order."""
    by_user = collections.defaultdict(list)
    for r in rows:
        by_user[r[0]].append(r)
    users = list(by_user)
    return pa.table({
        "user_id": pa.array(users, pa.int64()),
        "item_id": pa.array([[r[1] for r in by_user[u]] for u in users],
                            lists(pa.int64())),
        "category_id": pa.array([[r[2] for r in by_user[u]] for u in users],
                                lists(pa.int32())),
        "behavior_type": pa.array([[r[3] for r in by_user[u]]
                                   for u in users], lists(pa.string())),
        "timestamp": pa.array([[r[4] for r in by_user[u]] for u in users],
                              lists(pa.int64())),
    })


@pytest.mark.parametrize("lists", [pa.list_, pa.large_list],
                         ids=["list", "large_list"])
def test_parquet_list_columns_one_row_per_user(tmp_path, random_rows, lists):
    """Same records as the flat CSV: events keep their order per user."""
    pq.write_table(per_user_lists(random_rows, lists),
                   str(tmp_path / "u.parquet"), row_group_size=5)
    kw = dict(negatives_per_request=2, eval_days=1)
    _, flat = run_import(tmp_path, write_csv(tmp_path / "h.csv", random_rows),
                         name="flat", **kw)
    _, nested = run_import(tmp_path, str(tmp_path / "u.parquet"),
                           name="nested", **kw)
    assert nested["events"] == flat["events"] == len(random_rows)
    assert raw_records(str(tmp_path / "nested")) == raw_records(
        str(tmp_path / "flat"))


def test_parquet_list_columns_bad_rows(tmp_path):
    table = per_user_lists(GOLDEN).to_pydict()
    table["timestamp"][1] = table["timestamp"][1][:-1]  # User 2: 2 of 3.
    table["item_id"][0][2] = None  # User 1, third event.
    pq.write_table(pa.table(table), str(tmp_path / "bad.parquet"))
    with pytest.raises(BadRowError, match=r"row 1, element 3: field "
                       r"'item_id' is missing, got None"):
        run_import(tmp_path, str(tmp_path / "bad.parquet"))
    _, summary = run_import(tmp_path, str(tmp_path / "bad.parquet"),
                            name="skip", skip_bad_rows=True, eval_days=0)
    assert summary["skipped_by_reason"] == {
        "item_id is missing": 1,
        "timestamp must hold as many values as item_id (3)": 1}
    assert summary["events"] == 5  # User 1's six events less one.


def test_parquet_timestamp_column_in_milliseconds(tmp_path):
    cols = list(zip(*GOLDEN))
    table = pa.table({
        "user_id": pa.array(cols[0], pa.int64()),
        "item_id": pa.array(cols[1], pa.int64()),
        "category_id": pa.array(cols[2], pa.int64()),
        "behavior_type": pa.array(cols[3]),
        "timestamp": pa.array([t * 1000 + 7 for t in cols[4]],
                              pa.timestamp("ms")),
    })
    pq.write_table(table, str(tmp_path / "ms.parquet"))
    cfg, _ = run_import(tmp_path, str(tmp_path / "ms.parquet"), eval_days=0)
    recs = read_records(cfg.data.data_dir, "train", spec_of(cfg))
    assert [r["request_time"] for r in recs] == [1000, 1200, 3900, 7300,
                                                 90000]


# ---------------------------------------------------------------- bad rows
BAD_ROWS = [
    pytest.param("1,10,100,pv", "timestamp", "None", "is missing",
                 id="missing-field"),
    pytest.param("1,,100,pv,5", "item_id", "''", "is empty",
                 id="empty-field"),
    pytest.param("1,abc,100,pv,5", "item_id", "'abc'", "not an integer",
                 id="non-integer"),
    pytest.param("1.5,10,100,pv,5", "user_id", "'1.5'", "not an integer",
                 id="float-id"),
    pytest.param("1,10,0,pv,5", "category_id", "'0'", "id >= 1",
                 id="id-zero"),
    pytest.param("-3,10,100,pv,5", "user_id", "'-3'", "id >= 1",
                 id="negative-id"),
    pytest.param("1,10,100,click,5", "behavior_type", "'click'",
                 "not a known behaviour", id="unknown-behaviour"),
    pytest.param("1,10,100,5,5", "behavior_type", "'5'",
                 "not a known behaviour", id="behaviour-out-of-range"),
    pytest.param("1,10,100,pv,-1", "timestamp", "'-1'", ">= 0",
                 id="negative-timestamp"),
    pytest.param("1,10,100,pv,5,9", "(row)", "", "6 fields",
                 id="extra-field"),
]


@pytest.mark.parametrize("line, field, value, reason", BAD_ROWS)
def test_bad_csv_row_names_file_line_field_value(tmp_path, line, field,
                                                 value, reason):
    path = tmp_path / "bad.csv"
    path.write_text("user_id,item_id,category_id,behavior_type,timestamp\n"
                    "1,10,100,pv,1\n" + line + "\n2,11,100,buy,9\n")
    with pytest.raises(BadRowError) as e:
        run_import(tmp_path, str(path))
    msg = str(e.value)
    assert f"{path}, line 3: field {field!r}" in msg
    assert reason in msg and value in msg
    assert isinstance(e.value, DataError)
    assert (e.value.field, e.value.where) == (field, "line 3")


def test_skip_bad_rows_counts_them(tmp_path):
    lines = [p.values[0] for p in BAD_ROWS]
    path = tmp_path / "bad.csv"
    path.write_text("1,10,100,pv,1\n" + "\n".join(lines) +
                    "\n\n2,11,100,buy,9\n")
    _, summary = run_import(tmp_path, str(path), skip_bad_rows=True,
                            eval_days=0)
    assert summary["skipped_rows"] == len(BAD_ROWS)
    assert summary["events"] == 2 and summary["rows_read"] == 12
    reasons = summary["skipped_by_reason"]
    assert reasons["item_id is not an integer"] == 1
    assert reasons["user_id is not an integer"] == 1
    assert reasons["category_id must be an id >= 1"] == 1
    assert sum(reasons.values()) == len(BAD_ROWS)
    text = format_summary(summary)
    assert f"skipped {len(BAD_ROWS)} bad rows" in text


@pytest.mark.parametrize("row, field, value, reason", [
    pytest.param((1, 0, 100, "pv", 5), "item_id", "0", "id >= 1",
                 id="id-zero"),
    pytest.param((1, 10, 100, "click", 5), "behavior_type", "'click'",
                 "not a known behaviour", id="unknown-behaviour"),
    pytest.param((1, 10, 100, "pv", -5), "timestamp", "-5", ">= 0",
                 id="negative-timestamp"),
])
def test_bad_parquet_row_names_row_field_value(tmp_path, row, field, value,
                                               reason):
    rows = [GOLDEN[0], GOLDEN[1], row, GOLDEN[2]]
    path = write_parquet(tmp_path / "bad.parquet", rows)
    with pytest.raises(BadRowError) as e:
        run_import(tmp_path, path)
    msg = str(e.value)
    assert f"{path}, row 3: field {field!r}" in msg
    assert reason in msg and f"got {value}" in msg
    _, summary = run_import(tmp_path, path, name="skip", skip_bad_rows=True,
                            eval_days=0)
    assert (summary["skipped_rows"], summary["events"]) == (1, 3)


@pytest.mark.parametrize("column", HEADER)
def test_parquet_null_is_a_bad_row_naming_row_and_column(tmp_path, column):
    cols = {c: list(v) for c, v in zip(HEADER, zip(*GOLDEN[:4]))}
    cols[column][1] = None
    table = pa.table({c: pa.array(v, pa.string() if c == "behavior_type"
                                  else pa.int64()) for c, v in cols.items()})
    path = str(tmp_path / "nulls.parquet")
    pq.write_table(table, path)
    with pytest.raises(BadRowError) as e:
        run_import(tmp_path, path)
    assert str(e.value) == (f"{path}, row 2: field {column!r} is missing, "
                            "got None")
    _, summary = run_import(tmp_path, path, name="skip", skip_bad_rows=True,
                            eval_days=0)
    assert (summary["events"], summary["skipped_rows"]) == (3, 1)
    assert summary["skipped_by_reason"] == {f"{column} is missing": 1}


def test_parquet_file_problems_stop_the_job(tmp_path):
    floats = pa.table({c: pa.array([1.0, 2.0]) if c == "item_id" else (
        pa.array(["pv", "pv"]) if c == "behavior_type"
        else pa.array([1, 2], pa.int64())) for c in HEADER})
    pq.write_table(floats, str(tmp_path / "floats.parquet"))
    with pytest.raises(DataError, match="'item_id' has type double, "
                       "expected an integer type"):
        run_import(tmp_path, str(tmp_path / "floats.parquet"),
                   skip_bad_rows=True)
    missing = pa.table({"user_id": pa.array([1], pa.int64())})
    pq.write_table(missing, str(tmp_path / "missing.parquet"))
    with pytest.raises(DataError, match="no column 'item_id'"):
        run_import(tmp_path, str(tmp_path / "missing.parquet"), name="m")
    half = per_user_lists(GOLDEN).set_column(
        4, "timestamp", pa.array([5, 6], pa.int64()))
    pq.write_table(half, str(tmp_path / "half.parquet"))
    with pytest.raises(DataError, match="'timestamp' has type int64, "
                       "expected a list column"):
        run_import(tmp_path, str(tmp_path / "half.parquet"), name="h")
    (tmp_path / "fake.parquet").write_text("user_id,item_id\n1,2\n")
    with pytest.raises(DataError, match="not a Parquet file"):
        run_import(tmp_path, str(tmp_path / "fake.parquet"), name="x")


def test_missing_input_and_missing_header_column(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        run_import(tmp_path, str(tmp_path / "nothing.csv"))
    with pytest.raises(FileNotFoundError, match=r"\*.csv"):
        run_import(tmp_path, str(tmp_path / "none" / "*.csv"))
    path = tmp_path / "h.csv"
    path.write_text("user_id,item_id,category,behavior_type,timestamp\n"
                    "1,2,3,pv,4\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['category_id'"):
        run_import(tmp_path, str(path))


# ------------------------------------------------------------ side tables
def item_rows():
    return [(10, 100, 0.5, -1.0, 2.0), (11, 100, 0.0, 1.5, 3.25),
            (12, 101, -2.0, 0.25, 1.0)]


def read_items(out_dir, dim):
    files = glob.glob(os.path.join(out_dir, "items-*.tfrecord.gz"))
    assert len(files) == 1
    spec = item_table_parse_spec(dim)
    return [{k: v.numpy().tolist() for k, v in
             tf.io.parse_single_example(r, spec).items()}
            for r in tf.data.TFRecordDataset(files[0], "GZIP")]


def item_parquet(path, rows, layout):
    cols = list(zip(*rows))
    ids = {"item_id": pa.array(cols[0], pa.int64()),
           "category_id": pa.array(cols[1], pa.int64())}
    if layout == "parquet":
        emb = {f"emb_{d}": pa.array(cols[2 + d], pa.float32())
               for d in range(len(cols) - 2)}
    else:
        kind = {"parquet_list": pa.list_(pa.float32()),
                "parquet_fixed_list": pa.list_(pa.float64(), 3)}[layout]
        emb = {"emb": pa.array([list(r[2:]) for r in rows], kind)}
    pq.write_table(pa.table({**ids, **emb}), str(path))
    return str(path)


@pytest.mark.parametrize("layout", ["csv_header", "csv_plain", "parquet",
                                    "parquet_list", "parquet_fixed_list"])
def test_item_table(tmp_path, layout):
    rows = item_rows()
    if layout.startswith("parquet"):
        items = item_parquet(tmp_path / "items.parquet", rows, layout)
    else:
        items = str(tmp_path / "items.csv")
        with open(items, "w", newline="") as f:
            w = csv.writer(f)
            if layout == "csv_header":
                w.writerow(["item_id", "category_id", "emb_0", "emb_1",
                            "emb_2"])
            w.writerows(rows)
    log = write_csv(tmp_path / "log.csv", GOLDEN)
    cfg, summary = run_import(tmp_path, log, items=items, eval_days=0)
    got = read_items(cfg.data.data_dir, 3)
    assert [(g["item_id"], g["category_id"], g["content_embedding"])
            for g in got] == [(r[0], r[1], list(r[2:])) for r in rows]
    assert summary["item_table"]["items"] == 3
    assert summary["item_table"]["content_dim"] == 3


def test_item_table_errors(tmp_path):
    log = write_csv(tmp_path / "log.csv", GOLDEN)
    bad = tmp_path / "bad_items.csv"
    bad.write_text("10,100,0.5,1.0\n11,100,0.5,x\n12,100,1.0,2.0\n"
                   "10,100,1.0,2.0\n")
    with pytest.raises(BadRowError, match=r"line 2: field 'emb_1' is not a "
                       r"number, got 'x'"):
        run_import(tmp_path, log, items=str(bad))
    _, summary = run_import(tmp_path, log, name="skip", items=str(bad),
                            skip_bad_rows=True, eval_days=0)
    assert summary["item_table"]["items"] == 2
    assert summary["item_table"]["skipped_by_reason"] == {
        "emb_1 is not a number": 1, "item_id is a duplicate": 1}
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({
        "item_id": pa.array([10], pa.int64()),
        "category_id": pa.array([100], pa.int64()),
        "vec": pa.array([[1.0, 2.0]], pa.list_(pa.float32()))}),
        str(other))
    with pytest.raises(DataError, match=r"no embedding.*found: \['vec'\]"):
        run_import(tmp_path, log, name="n", items=str(other))


@pytest.mark.parametrize("emb, field", [
    pytest.param([[0.5, 1.0], None], "emb", id="null-list"),
    pytest.param([[0.5, 1.0], [2.0, None]], "emb[1]", id="null-value"),
    pytest.param([[0.5, 1.0], [2.0]], "emb_*", id="short-list"),
])
def test_item_table_list_column_bad_rows(tmp_path, emb, field):
    log = write_csv(tmp_path / "log.csv", GOLDEN)
    items = str(tmp_path / "items.parquet")
    pq.write_table(pa.table({
        "item_id": pa.array([10, 11], pa.int64()),
        "category_id": pa.array([100, 100], pa.int64()),
        "emb": pa.array(emb, pa.list_(pa.float32()))}), items)
    with pytest.raises(BadRowError, match=re.escape(f"row 2: field {field!r}")):
        run_import(tmp_path, log, items=items)
    _, summary = run_import(tmp_path, log, name="skip", items=items,
                            skip_bad_rows=True, eval_days=0)
    assert summary["item_table"]["items"] == 1
    assert summary["item_table"]["skipped_rows"] == 1


def test_user_table_and_unknown_users(tmp_path):
    users = tmp_path / "users.csv"
    users.write_text("user_id,age_bucket,gender\n1,5,2\n")
    log = write_csv(tmp_path / "log.csv", GOLDEN)
    cfg, summary = run_import(tmp_path, log, users=str(users), eval_days=0)
    recs = read_records(cfg.data.data_dir, "train", spec_of(cfg))
    got = {(r["user_id"], r["gender"], r["age_bucket"]) for r in recs}
    assert got == {(1, 2, 5), (2, 1, 1)}
    assert summary["user_table"]["users_in_table"] == 1
    users.write_text("user_id,gender\n1,2\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['age_bucket'"):
        run_import(tmp_path, log, name="b", users=str(users))


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("fields, match", [
    pytest.param({"request_window_s": 0}, "importer.request_window_s must "
                 "be an integer >= 1, got 0", id="window"),
    pytest.param({"positive_behaviors": ("click",)}, "'click'", id="beh"),
    pytest.param({"format": "json"}, "importer.format", id="format"),
    pytest.param({"negatives_per_request": -1},
                 "importer.negatives_per_request", id="negatives"),
    pytest.param({"header": "maybe"}, "importer.header", id="header"),
    pytest.param({"valid_days": -1}, "importer.valid_days", id="valid-days"),
    pytest.param({"eval_start_ts": 5, "valid_start_ts": 9},
                 "importer.valid_start_ts must be <= importer.eval_start_ts",
                 id="valid-after-eval"),
    pytest.param({"eval_start_ts": "soon"}, "importer.eval_start_ts must be "
                 "an integer, got 'soon'", id="timestamp-type"),
    pytest.param({"bogus": 1}, "unknown config key importer.bogus",
                 id="unknown-key"),
])
def test_config_errors_name_the_field(fields, match):
    with pytest.raises(ConfigError, match=match):
        Config().replace(importer=dict(input="x.csv", **fields))


def test_missing_input_and_bad_data_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="importer.input must name"):
        import_logs(Config().replace(data={"data_dir": str(tmp_path)}))
    with pytest.raises(ConfigError, match="data.max_candidates"):
        make_config(tmp_path, "x.csv", max_candidates=0)
    cfg = make_config(tmp_path, "x.csv").replace(
        data={"valid_pattern": "valid.tfrecord.gz"})
    with pytest.raises(ConfigError, match="exactly one '\\*'"):
        import_logs(cfg)


def test_flags_map_onto_the_config():
    cfg = import_job.config_from_flags(Config(), {
        "input": "a.csv", "output_dir": "/tmp/o", "max_history": 7,
        "max_candidates": 5, "positive_behaviors": "buy, cart",
        "valid_days": 2, "seed": None, "exclude_history_from_negatives":
        False})
    assert (cfg.data.data_dir, cfg.data.max_history,
            cfg.data.max_candidates) == ("/tmp/o", 7, 5)
    assert cfg.importer.input == "a.csv"
    assert cfg.importer.positive_behaviors == ("buy", "cart")
    assert cfg.importer.valid_days == 2
    assert cfg.importer.seed == Config().importer.seed
    assert cfg.importer.exclude_history_from_negatives is False


# ------------------------------------------------------------ time split
def test_time_split_train_valid_eval(tmp_path):
    rows = random_log(seed=4, events=400, span_s=6 * 86400)
    path = write_csv(tmp_path / "log.csv", rows)
    cfg, summary = run_import(tmp_path, path, eval_days=1, valid_days=2,
                              num_shards=2, negatives_per_request=1)
    spec = spec_of(cfg)
    got = {s: read_records(cfg.data.data_dir, s, spec)
           for s in ("train", "valid", "eval")}
    last = max(r[4] for r in rows)
    eval_start = last - 86400
    valid_start = eval_start - 2 * 86400
    assert (summary["valid_start_ts"], summary["eval_start_ts"]) == (
        valid_start, eval_start)
    times = {s: [r["request_time"] for r in recs] for s, recs in got.items()}
    assert all(t < valid_start for t in times["train"])
    assert all(valid_start <= t < eval_start for t in times["valid"])
    assert all(t >= eval_start for t in times["eval"])
    every = times["train"] + times["valid"] + times["eval"]
    assert every == sorted(every)
    ref = reference_requests(rows, 3600, 10, {2, 3, 4})
    assert len(every) == len(ref)
    for split, recs in got.items():
        assert len(recs) > 10, split
        assert summary["splits"][split] == {
            "requests": len(recs),
            "impressions": sum(len(r["labels"]) for r in recs),
            "positives": sum(sum(r["labels"]) for r in recs)}
    names = sorted(os.listdir(cfg.data.data_dir))
    assert [n for n in names if n.startswith("valid-")] == [
        "valid-00000-of-00002.tfrecord.gz",
        "valid-00001-of-00002.tfrecord.gz"]


@pytest.mark.parametrize("fields, want", [
    pytest.param({"eval_days": 0, "valid_days": 0}, (0, 0), id="train-only"),
    pytest.param({"eval_start_ts": 7000, "valid_start_ts": 3000}, (1, 2),
                 id="timestamps"),
    pytest.param({"eval_days": 0, "valid_start_ts": 7000}, (2, 0),
                 id="valid-without-eval"),
])
def test_time_split_boundaries(tmp_path, fields, want):
    path = write_csv(tmp_path / "log.csv", GOLDEN)
    cfg, summary = run_import(tmp_path, path, **fields)
    splits = summary["splits"]
    assert (splits.get("valid", {}).get("requests", 0),
            splits["eval"]["requests"]) == want
    assert ("valid" in splits) == ("valid_start_ts" in fields)
    assert summary["requests"] == 5


def test_time_split_valid_after_eval_is_an_error(tmp_path):
    path = write_csv(tmp_path / "log.csv", GOLDEN)
    with pytest.raises(ConfigError, match="valid_start_ts .* must be <="):
        run_import(tmp_path, path, eval_days=1, valid_start_ts=89000)


# -------------------------------------------------------------- warnings
def test_lossy_import_warns_naming_the_option(tmp_path, random_rows,
                                              capsys):
    path = write_csv(tmp_path / "log.csv", random_rows)
    _, summary = run_import(tmp_path, path, max_history=2, max_candidates=1,
                            eval_days=1, warn_min_requests=1000)
    warnings = "\n".join(summary["warnings"])
    assert "candidates were dropped" in warnings
    assert "--max_candidates" in warnings
    assert "data.max_history=2" in warnings
    assert "split eval has" in warnings
    assert "importer.warn_min_requests=1000" in warnings
    err = capsys.readouterr().err
    assert "N = data.max_history = 2" in err  # The settings come first.
    assert "WARNINGS (" in err and "warning: " in err


def test_clean_import_gives_no_warnings(tmp_path, capsys):
    path = write_csv(tmp_path / "log.csv", GOLDEN)
    _, summary = run_import(tmp_path, path, eval_start_ts=7300)
    assert summary["warnings"] == []
    assert "WARNINGS" not in capsys.readouterr().err


def test_one_label_split_warns(tmp_path):
    path = write_csv(tmp_path / "log.csv", GOLDEN)
    _, summary = run_import(tmp_path, path, eval_start_ts=86400,
                            positive_behaviors=("cart",))
    assert any("split eval holds only label 0" in w
               for w in summary["warnings"])


def test_outputs_are_not_overwritten_silently(tmp_path):
    path = write_csv(tmp_path / "log.csv", GOLDEN)
    run_import(tmp_path, path, num_shards=3)
    with pytest.raises(FileExistsError, match="overwrite"):
        run_import(tmp_path, path)
    bad = write_csv(tmp_path / "bad.csv", GOLDEN + [(1, 0, 1, "pv", 5)])
    with pytest.raises(BadRowError):  # Old outputs survive a failed run.
        run_import(tmp_path, bad, overwrite=True)
    assert len(os.listdir(tmp_path / "out")) == 7
    _, summary = run_import(tmp_path, path, overwrite=True, num_shards=1)
    names = sorted(os.listdir(tmp_path / "out"))
    assert names == ["eval-00000-of-00001.tfrecord.gz", "summary.json",
                     "train-00000-of-00001.tfrecord.gz"]


def test_cli_bad_row_exits_1_naming_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("1,10,100,pv,1\n1,10,100,click,2\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.import_logs", f"--input={path}",
         f"--output_dir={tmp_path / 'out'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert (f"{path}, line 2: field 'behavior_type' is not a known "
            "behaviour") in proc.stderr
