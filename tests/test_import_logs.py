"""Raw-log importer: request formation, formats, side tables, bad input."""

import collections
import csv
import glob
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from hisac_tf.data.feature_spec import (
    DataError,
    FeatureSpec,
    item_table_parse_spec,
)
from pipelines import import_logs
from pipelines.import_logs import BadRowError, ImportConfig

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
    return FeatureSpec(cfg.max_history, cfg.max_candidates)


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


def run_import(tmp_path, inp, name="out", **fields):
    fields.setdefault("max_history", 10)
    fields.setdefault("max_candidates", 8)
    fields.setdefault("negatives_per_request", 0)
    cfg = ImportConfig(input=inp, output_dir=str(tmp_path / name),
                       **fields)
    return cfg, import_logs.main(cfg)


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
    train = read_records(cfg.output_dir, "train", spec_of(cfg))
    ev = read_records(cfg.output_dir, "eval", spec_of(cfg))
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
    assert os.path.exists(os.path.join(cfg.output_dir, "summary.json"))


def test_truncation_of_history_and_candidates(tmp_path):
    rows = GOLDEN + [(1, 20, 103, "pv", 90001), (1, 21, 103, "pv", 90002),
                     (1, 22, 103, "buy", 90003)]
    path = write_csv(tmp_path / "log.csv", rows)
    cfg, summary = run_import(tmp_path, path, max_history=3,
                              max_candidates=2, eval_days=0)
    last = read_records(cfg.output_dir, "train", spec_of(cfg))[-1]
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
    third = read_records(cfg.output_dir, "train", spec_of(cfg))[2]
    assert third["cand_item_ids"] == [12, 13]
    assert third["labels"] == labels


def test_negatives_hand_computed(tmp_path):
    path = write_csv(tmp_path / "log.csv", GOLDEN)
    cfg, summary = run_import(tmp_path, path, negatives_per_request=2,
                              eval_days=0)
    recs = read_records(cfg.output_dir, "train", spec_of(cfg))
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


def test_negative_sampler_follows_past_popularity():
    items = np.array([1] * 90 + [2] * 10 + [3] * 100)  # In time order.
    ts = np.arange(200)
    sampler = import_logs.NegativeSampler(items, items + 100, ts, seed=0)
    draws = [sampler.sample(1, 100, set()) for _ in range(3000)]
    share = np.mean([d[0] == [1] for d in draws])
    assert abs(share - 0.9) < 0.03  # Item 3 lies in the future: never.
    assert all(d[0][0] in (1, 2) and d[1][0] == d[0][0] + 100
               for d in draws)
    assert sampler.sample(5, 100, {1}) == ([2], [102])  # Only 2 is left.
    assert sampler.sample(3, 0, set()) == ([], [])  # Nothing seen yet.
    first = import_logs.NegativeSampler(items, items, ts, seed=3)
    again = import_logs.NegativeSampler(items, items, ts, seed=3)
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
    fast = import_logs.request_example(spec, request)
    assert fast == spec.to_example(request)  # Equal messages (map order
    parsed = spec.parse(tf.constant([fast.SerializeToString()]))  # aside).
    assert parsed["cand_item_ids"].to_list() == [[8, 9]]
    empty = dict(request, hist_item_ids=[], hist_category_ids=[],
                 hist_behaviors=[], hist_timestamps=[])
    assert import_logs.request_example(spec, empty) == spec.to_example(empty)


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
    train = read_records(cfg.output_dir, "train", spec)
    ev = read_records(cfg.output_dir, "eval", spec)
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
    shards = raw_records(cfg.output_dir)
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
    import gzip

    write_csv(tmp_path / "a.csv", GOLDEN[:4])
    with gzip.open(tmp_path / "b.csv.gz", "wt", newline="") as f:
        csv.writer(f).writerows(GOLDEN[4:])
    _, summary = run_import(
        tmp_path, f"{tmp_path}/a.csv,{tmp_path}/*.gz", eval_days=0)
    assert summary["events"] == 9 and len(summary["inputs"]) == 2


def test_tensorflow_io_reads_parquet(tmp_path):
    """Fails when tensorflow-io or its Parquet kernels cannot load."""
    import tensorflow_io as tfio

    path = write_parquet(tmp_path / "x.parquet", GOLDEN, row_group_size=4)
    ds = tfio.IODataset.from_parquet(path, columns=HEADER)
    got = {k: [] for k in HEADER}
    for batch in ds.batch(100):
        for k in HEADER:
            got[k] += batch[k].numpy().tolist()
    assert got["user_id"] == [r[0] for r in GOLDEN]
    assert got["category_id"] == [r[2] for r in GOLDEN]
    assert got["behavior_type"] == [r[3].encode() for r in GOLDEN]
    assert got["timestamp"] == [r[4] for r in GOLDEN]
    # The importer's reader, in batches that cross the row groups.
    batches = list(import_logs._parquet_batches(path, HEADER, batch_rows=3))
    assert [len(b["user_id"]) for b in batches] == [3, 3, 3]
    for k in HEADER:
        assert np.concatenate([b[k] for b in batches]).tolist() == got[k]
    num_rows, columns = import_logs.parquet_columns(path)
    assert num_rows == 9
    assert columns["category_id"].physical_type == "INT32"
    assert columns["behavior_type"].physical_type == "BYTE_ARRAY"


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
    recs = read_records(cfg.output_dir, "train", spec_of(cfg))
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
    text = import_logs.format_summary(summary)
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


def test_parquet_file_problems_stop_the_job(tmp_path):
    nulls = pa.table({c: pa.array([1, None], pa.int64()) if c != (
        "behavior_type") else pa.array(["pv", "pv"]) for c in HEADER})
    pq.write_table(nulls, str(tmp_path / "nulls.parquet"))
    with pytest.raises(DataError, match="'user_id' holds 1 null"):
        run_import(tmp_path, str(tmp_path / "nulls.parquet"),
                   skip_bad_rows=True)
    floats = pa.table({c: pa.array([1.0, 2.0]) if c == "item_id" else (
        pa.array(["pv", "pv"]) if c == "behavior_type"
        else pa.array([1, 2], pa.int64())) for c in HEADER})
    pq.write_table(floats, str(tmp_path / "floats.parquet"))
    with pytest.raises(DataError, match="'item_id' has Parquet type DOUBLE"):
        run_import(tmp_path, str(tmp_path / "floats.parquet"), name="f")
    missing = pa.table({"user_id": pa.array([1], pa.int64())})
    pq.write_table(missing, str(tmp_path / "missing.parquet"))
    with pytest.raises(DataError, match="no column 'item_id'"):
        run_import(tmp_path, str(tmp_path / "missing.parquet"), name="m")
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


@pytest.mark.parametrize("layout", ["csv_header", "csv_plain", "parquet"])
def test_item_table(tmp_path, layout):
    rows = item_rows()
    if layout == "parquet":
        items = str(tmp_path / "items.parquet")
        cols = list(zip(*rows))
        pq.write_table(pa.table({
            "item_id": pa.array(cols[0], pa.int64()),
            "category_id": pa.array(cols[1], pa.int64()),
            **{f"emb_{d}": pa.array(cols[2 + d], pa.float32())
               for d in range(3)}}), items)
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
    got = read_items(cfg.output_dir, 3)
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
    nested = tmp_path / "nested.parquet"
    pq.write_table(pa.table({
        "item_id": pa.array([10], pa.int64()),
        "category_id": pa.array([100], pa.int64()),
        "emb": pa.array([[1.0, 2.0]], pa.list_(pa.float32()))}),
        str(nested))
    with pytest.raises(DataError, match=r"\['emb'\] cannot be used"):
        run_import(tmp_path, log, name="n", items=str(nested))


def test_user_table_and_unknown_users(tmp_path):
    users = tmp_path / "users.csv"
    users.write_text("user_id,age_bucket,gender\n1,5,2\n")
    log = write_csv(tmp_path / "log.csv", GOLDEN)
    cfg, summary = run_import(tmp_path, log, users=str(users), eval_days=0)
    recs = read_records(cfg.output_dir, "train", spec_of(cfg))
    got = {(r["user_id"], r["gender"], r["age_bucket"]) for r in recs}
    assert got == {(1, 2, 5), (2, 1, 1)}
    assert summary["user_table"]["users_in_table"] == 1
    users.write_text("user_id,gender\n1,2\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['age_bucket'"):
        run_import(tmp_path, log, name="b", users=str(users))


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("fields, match", [
    pytest.param({"request_window_s": 0}, "request_window_s", id="window"),
    pytest.param({"positive_behaviors": ("click",)}, "'click'", id="beh"),
    pytest.param({"format": "json"}, "format", id="format"),
    pytest.param({"max_candidates": 0}, "max_candidates", id="cands"),
    pytest.param({"negatives_per_request": -1}, "negatives_per_request",
                 id="negatives"),
    pytest.param({"header": "maybe"}, "header", id="header"),
    pytest.param({"bogus": 1}, "unknown import config key 'bogus'",
                 id="unknown-key"),
])
def test_config_errors_name_the_field(fields, match):
    with pytest.raises(ValueError, match=match):
        import_logs.main(dict(input="x.csv", output_dir="o", **fields))


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
