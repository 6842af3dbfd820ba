"""The import and the SID assignment on Apache Beam (DirectRunner).

The Beam pipeline must write the single-process importer's records, split
for split (order within a split and the shard of a record may differ),
and its summary; a failing pipeline leaves nothing at the output path.
"""

from __future__ import annotations

import glob
import os

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf

from hisac_tf.config import ConfigError
from hisac_tf.data.beam_import.beam_importer import import_logs_beam
from hisac_tf.data.beam_import.staged_output import StagedOutput
from hisac_tf.data.feature_spec import DataError
from hisac_tf.data.importers.log_importer import import_logs
from hisac_tf.data.importers.negative_sampler import NegativeSampler
from hisac_tf.data.importers.popularity_table import (
    merge_popularity,
    popularity_table,
)
from hisac_tf.tokenizer.beam_sid_assignment import (
    assign_sids_beam,
    load_sid_shards,
    sample_item_table_beam,
)
from hisac_tf.tokenizer.semantic_tables import load_semantic_tables
from pipelines import import_logs as import_job
from pipelines import tokenize_items
from tests.test_import_logs import (
    make_config,
    random_log,
    write_csv,
    write_parquet,
)
from tests.test_tokenize_items import _cfg as tokenizer_config
from tests.test_tokenize_items import make_items, write_table

HEAVY_USER = 99


def log_rows(seed: int) -> list[tuple]:
    """A random log plus a heavy hitter (a third of the events) and ties."""
    rows = random_log(seed=seed, users=10, items=40, events=360)
    rng = np.random.default_rng(seed + 100)
    rows += [(HEAVY_USER, int(rng.integers(1, 41)), 1, "pv",
              int(rng.integers(0, 2 * 86400))) for _ in range(180)]
    rows += [(3, 7, 1, "buy", 5000), (3, 8, 1, "pv", 5000)]  # A tie.
    return rows


BAD_LINES = ["1,2,3,pv,notatime", "0,2,3,pv,10", "1,2,3,jump,10", "1,2"]


def write_inputs(tmp_path, kind: str, rows: list[tuple]) -> str:
    """Two input files (ties across them) of `kind`; returns the spec."""
    half = len(rows) // 2
    if kind == "parquet":
        a = write_parquet(tmp_path / "a.parquet", rows[:half])
        b = write_parquet(tmp_path / "b.parquet", rows[half:],
                          behavior_as="id")
    else:
        a = write_csv(tmp_path / "a.csv", rows[:half])
        b = write_csv(tmp_path / "b.csv", rows[half:], header=False)
        if kind == "csv-bad-rows":
            with open(b, "a") as f:
                f.write("\n".join(BAD_LINES) + "\n")
    return f"{a},{b}"


def split_records(out_dir: str) -> dict[str, list[bytes]]:
    """Split name -> its serialized records, sorted (order-free)."""
    out: dict[str, list[bytes]] = {}
    for path in glob.glob(os.path.join(out_dir, "*.tfrecord.gz")):
        split = os.path.basename(path).split("-")[0]
        out.setdefault(split, []).extend(
            r.numpy() for r in tf.data.TFRecordDataset(path, "GZIP"))
    return {k: sorted(v) for k, v in out.items()}


def comparable(summary: dict) -> dict:
    """A summary without the run's time and output paths."""
    out = {k: v for k, v in summary.items()
           if k not in ("seconds", "files", "config")}
    out["files"] = {k: [os.path.basename(p) for p in v]
                    for k, v in summary["files"].items()}
    if summary["item_table"]:
        out["item_table"] = dict(summary["item_table"], file=os.path.basename(
            summary["item_table"]["file"]))
    return out


CASES = {
    "csv-bad-rows": dict(skip_bad_rows=True, valid_days=1, eval_days=1,
                         min_history=2, num_shards=2, max_history=6),
    "parquet": dict(eval_start_ts=150000, valid_start_ts=120000,
                    num_shards=3, exclude_history_from_negatives=False),
}


def write_side_tables(tmp_path) -> dict:
    """A user table (some users unknown) and an item table, as CSV."""
    users = tmp_path / "users.csv"
    users.write_text("user_id,gender,age_bucket\n1,2,3\n4,1,5\n"
                     f"{HEAVY_USER},2,2\n")
    items = tmp_path / "items.csv"
    items.write_text("".join(f"{i},{i % 3 + 1},0.{i},1.5\n"
                             for i in range(1, 41)))
    return {"users": str(users), "items": str(items)}


@pytest.mark.parametrize("kind", list(CASES))
def test_beam_import_equals_single_process(tmp_path, kind):
    rows = log_rows(seed=len(kind))
    inputs = write_inputs(tmp_path, kind, rows)
    kw = dict(negatives_per_request=3, max_candidates=8, **CASES[kind])
    if kind == "parquet":
        kw.update(write_side_tables(tmp_path))
    local = import_logs(make_config(tmp_path, inputs, "local", **kw))
    beam = import_logs_beam(make_config(tmp_path, inputs, "beam", **kw))
    want = split_records(str(tmp_path / "local"))
    got = split_records(str(tmp_path / "beam"))
    assert sorted(got) == sorted(want)
    for split in want:
        assert got[split] == want[split], split
    assert got.get("items") == want.get("items")
    assert comparable(beam) == comparable(local)
    assert local["negatives_sampled"] > 100
    assert local["histories_truncated"] > 0  # The heavy hitter's.
    if kind == "csv-bad-rows":
        assert local["skipped_rows"] == len(BAD_LINES)
        assert local["valid_start_ts"] is not None
    else:
        assert local["user_table"]["users_in_table"] == 3
        assert local["item_table"]["items"] == 40
    assert sorted(os.listdir(tmp_path / "beam")) == sorted(
        os.listdir(tmp_path / "local"))


EPOCH_S = 1_500_000_000
OUT_OF_RANGE_MS = 9 * 10**15  # The year 287,000: dropped.
FUTURE_MS = 4_000_000_000_000  # 2096, in range: past the split end.


def messy_rows(seed: int, unit_ms: bool) -> list[tuple]:
    """`log_rows` with duplicates (in a file and across the two files),
    one timestamp out of range and one far in the future; in ms or s."""
    rows = log_rows(seed)
    rng = np.random.default_rng(seed)
    if unit_ms:
        rows = [(u, i, c, b, (t + EPOCH_S) * 1000 + int(rng.integers(1000)))
                for u, i, c, b, t in rows]
    rows[30:30] = rows[20:26]  # Duplicates within the first file.
    rows += rows[5:15] + [rows[7]]  # Across the files, one twice.
    far = FUTURE_MS if unit_ms else FUTURE_MS // 1000
    rows.insert(100, (2, 4, 1, "buy", far))
    rows.insert(200, (1, 3, 1, "pv", OUT_OF_RANGE_MS if unit_ms
                      else OUT_OF_RANGE_MS // 1000))
    return rows


@pytest.mark.parametrize("unit_ms, drop, unit", [
    (True, False, "auto"), (True, True, "auto"), (False, True, "auto"),
    (True, False, "ms")],
    ids=["ms-keep-duplicates", "ms-drop-duplicates", "s-drop-duplicates",
         "ms-configured"])
def test_beam_cleans_the_log_as_single_process(tmp_path, unit_ms, drop,
                                               unit):
    rows = messy_rows(seed=3, unit_ms=unit_ms)
    inputs = write_inputs(tmp_path, "csv", rows)
    kw = dict(negatives_per_request=2, valid_days=1, eval_days=1,
              num_shards=2, drop_duplicates=drop, timestamp_unit=unit)
    local = import_logs(make_config(tmp_path, inputs, "local", **kw))
    beam = import_logs_beam(make_config(tmp_path, inputs, "beam", **kw))
    want = split_records(str(tmp_path / "local"))
    assert split_records(str(tmp_path / "beam")) == want
    assert comparable(beam) == comparable(local)
    assert local["timestamp_unit"] == (
        "ms" if unit == "ms" else "ms (auto)" if unit_ms else "s (auto)")
    assert local["timestamps_out_of_range"] == 1
    assert local["timestamps_out_of_range_examples"] == [rows[200][4]]
    assert local["duplicate_events"] == 17
    assert local["duplicate_events_dropped"] == (17 if drop else 0)
    assert local["events"] == len(rows) - 1 - (17 if drop else 0)
    assert local["events_after_split_end"] == 1
    assert local["split_end_ts"] < FUTURE_MS // 1000
    assert len(want["eval"]) > 10


def refused_rows(kind: str) -> list[tuple]:
    rows = log_rows(seed=4)
    if kind == "no-positive":
        return [(u, i, c, "pv", t) for u, i, c, b, t in rows]
    if kind == "no-negative":  # One item: no negative to sample.
        return [(u, 1, 1, "buy", t) for u, i, c, b, t in rows]
    return rows


@pytest.mark.parametrize("kind, fields, message", [
    ("no-positive", {}, "split train would hold no positive label"),
    ("empty-eval", {"eval_start_ts": 10**9},
     r"split eval would be empty \(0 requests\)"),
    ("no-negative", {}, "split train holds no negative label"),
], ids=["no-positive", "empty-eval", "no-negative-written"])
def test_beam_refuses_a_single_class_split_as_single_process(
        tmp_path, kind, fields, message):
    inputs = write_inputs(tmp_path, "csv", refused_rows(kind))
    kw = dict(negatives_per_request=2, allow_single_class_split=False,
              overwrite=True, **fields)
    for name in ("local", "beam"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train-old.tfrecord.gz").write_text("old")
    with pytest.raises(DataError, match=message) as local:
        import_logs(make_config(tmp_path, inputs, "local", **kw))
    with pytest.raises(DataError) as beam:
        import_logs_beam(make_config(tmp_path, inputs, "beam", **kw))
    assert str(beam.value) == str(local.value)
    assert os.listdir(tmp_path / "beam") == ["train-old.tfrecord.gz"]
    assert glob.glob(str(tmp_path / "local" / "*-of-*")) == []


def test_failing_pipeline_leaves_no_output(tmp_path):
    inputs = write_inputs(tmp_path, "csv-bad-rows", log_rows(seed=1))
    cfg = make_config(tmp_path, inputs, "beam")
    with pytest.raises(Exception, match=r"b\.csv, line \d+: field "
                                        r"'timestamp' is not an integer"):
        import_logs_beam(cfg)
    assert os.listdir(tmp_path / "beam") == []  # No shard, no staging.


def test_existing_output_needs_overwrite(tmp_path):
    inputs = write_inputs(tmp_path, "csv", log_rows(seed=2))
    (tmp_path / "beam").mkdir()
    (tmp_path / "beam" / "summary.json").write_text("{}")
    with pytest.raises(FileExistsError, match="--overwrite"):
        import_logs_beam(make_config(tmp_path, inputs, "beam"))


def test_empty_log_is_an_error(tmp_path):
    path = write_csv(tmp_path / "a.csv", [])
    with pytest.raises(Exception, match="no valid events"):
        import_logs_beam(make_config(tmp_path, path, "beam"))
    assert os.listdir(tmp_path / "beam") == []


def test_staged_output_commits_summary_last(tmp_path):
    staged = StagedOutput(str(tmp_path))
    for name in ("summary.json", "b", "a"):
        (tmp_path / os.path.basename(staged.path) / name).write_text(name)
    moved = staged.commit(last="summary.json")
    assert [os.path.basename(p) for p in moved] == ["a", "b",
                                                    "summary.json"]
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "summary.json"]


def test_popularity_table_does_not_depend_on_order_or_parts():
    rng = np.random.default_rng(0)
    ts, items = rng.integers(0, 20, 300), rng.integers(1, 9, 300)
    cats = items % 3 + 1
    whole = popularity_table(ts, items, cats)
    order = rng.permutation(300)
    parts = [popularity_table(ts[p], items[p], cats[p])
             for p in np.array_split(order, 4)]
    merged = merge_popularity(parts)
    for field in ("ts", "items", "cats", "counts", "cum"):
        np.testing.assert_array_equal(getattr(merged, field),
                                      getattr(whole, field), field)
    assert whole.events == 300 and whole.seen_before(0) == 0


def test_keyed_negatives_do_not_depend_on_call_order():
    items = np.arange(1, 201) % 37 + 1  # In time order.
    ts = np.arange(200)
    keys = [(u, t) for u in (1, 2, 3) for t in (50, 120, 199)]
    first = NegativeSampler(items, items, ts, seed=5)
    again = NegativeSampler(items, items, ts, seed=5)
    want = {k: first.sample(4, k[1], set(), key=k[0]) for k in keys}
    got = {k: again.sample(4, k[1], set(), key=k[0])
           for k in reversed(keys)}
    assert got == want
    other = NegativeSampler(items, items, ts, seed=6)
    assert {k: other.sample(4, k[1], set(), key=k[0]) for k in keys} != want


@pytest.mark.parametrize("values, want", [
    ({}, []),
    ({"runner": "DirectRunner", "direct_num_workers": 2,
      "direct_running_mode": "multi_processing"},
     ["--runner=DirectRunner", "--direct_num_workers=2",
      "--direct_running_mode=multi_processing"]),
    ({"runner": "DataflowRunner",
      "beam_pipeline_args": "--project=p --region='europe-west1'"},
     ["--runner=DataflowRunner", "--project=p", "--region=europe-west1"]),
], ids=["none", "direct-multi-processing", "dataflow"])
def test_beam_args_from_flags(values, want):
    assert import_job.beam_args(values) == want


def test_beam_import_names_the_empty_input(tmp_path):
    with pytest.raises(ConfigError, match="importer.input"):
        import_logs_beam(make_config(tmp_path, " ", "beam"))


# ---------------------------------------------------------- SID assignment
@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tok")
    ids, cats, subs, x = make_items(num_items=240)
    pattern = write_table(str(tmp / "items"), ids, cats, subs, x, shards=3)
    cfg = tokenizer_config(tmp, epochs=2)
    tokenize_items.main(cfg, items_pattern=pattern, progress=False)
    return {"pattern": pattern, "tok": str(tmp / "tok"), "ids": ids}


@pytest.mark.parametrize("shards", [1, 4], ids=["one-shard", "four-shards"])
def test_beam_sids_equal_single_process_tables(tokenizer_run, tmp_path,
                                                shards):
    out = str(tmp_path / "sids")
    counts = assign_sids_beam(tokenizer_run["tok"], tokenizer_run["pattern"],
                              out, shards=shards)
    want = load_semantic_tables(tokenizer_run["tok"])
    got = load_semantic_tables(out)
    assert counts["items"] == want.num_items == len(tokenizer_run["ids"])
    np.testing.assert_array_equal(got.item_ids, want.item_ids)
    np.testing.assert_array_equal(got.sids, want.sids)
    np.testing.assert_allclose(got.latents, want.latents, atol=1e-5)
    for a, b in zip(got.codebooks, want.codebooks):
        np.testing.assert_array_equal(a, b)
    assert len(glob.glob(os.path.join(out, "sid_table-*.npz"))) == shards
    ids, sids, _ = load_sid_shards(out)
    np.testing.assert_array_equal(ids, want.item_ids)
    np.testing.assert_array_equal(sids, want.sids)


def test_item_sample_is_seeded_and_sized(tokenizer_run, tmp_path):
    first = sample_item_table_beam(tokenizer_run["pattern"], 50, 7,
                                   str(tmp_path / "a"))
    again = sample_item_table_beam(tokenizer_run["pattern"], 50, 7,
                                   str(tmp_path / "b"))
    other = sample_item_table_beam(tokenizer_run["pattern"], 50, 8,
                                   str(tmp_path / "c"))
    read = [[r.numpy() for r in tf.data.TFRecordDataset(p, "GZIP")]
            for p in (first, again, other)]
    assert len(read[0]) == 50 and read[0] == read[1] and read[0] != read[2]


def test_sid_assignment_without_tokenizer_names_the_file(tmp_path,
                                                         tokenizer_run):
    with pytest.raises(Exception, match="tokenizer_report.json"):
        assign_sids_beam(str(tmp_path / "none"), tokenizer_run["pattern"],
                         str(tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == []
