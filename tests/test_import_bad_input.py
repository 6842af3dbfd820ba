"""Importer against careless input (issue 12, items 8 and 9).

Outlier and millisecond timestamps, one-label splits, bytes that are not
UTF-8, a byte-order mark, truncated gzip files and duplicate rows: each
used to give a silently wrong import or a traceback naming no file.
"""

import gzip
import os

import numpy as np
import pytest

from hisac_tf.data.feature_spec import DataError
from hisac_tf.data.importers.bad_rows import BadRowError
from hisac_tf.data.importers.duplicate_events import duplicate_mask
from hisac_tf.data.importers.timestamps import detect_unit
from tests.test_import_logs import (
    GOLDEN,
    HEADER,
    raw_records,
    random_log,
    run_import,
    write_csv,
)

EPOCH = 1_511_539_200  # 2017-11-25, the Taobao UserBehavior days.


def dated_log(seed=5):
    """A six-day log in epoch seconds (every split has both labels)."""
    rows = random_log(seed=seed, events=400, span_s=6 * 86400)
    return [(u, i, c, b, EPOCH + t) for u, i, c, b, t in rows]


# ------------------------------------------------------ item 8: timestamps
def test_one_outlier_timestamp_is_dropped_not_splitting(tmp_path, capsys):
    rows = dated_log()
    clean = write_csv(tmp_path / "clean.csv", rows)
    dirty = write_csv(tmp_path / "dirty.csv",
                      rows + [(3, 12, 2, "pv", 99999999999)])
    _, want = run_import(tmp_path, clean, "a", eval_days=1,
                         allow_single_class_split=False)
    _, got = run_import(tmp_path, dirty, "b", eval_days=1,
                        allow_single_class_split=False)
    assert got["timestamps_out_of_range"] == 1
    assert got["timestamps_out_of_range_examples"] == [99999999999]
    assert got["splits"] == want["splits"]
    assert got["splits"]["eval"]["requests"] > 20
    assert "dropped 1 out of range [99999999999]" in capsys.readouterr().err


def test_in_range_outlier_does_not_move_the_split(tmp_path):
    """A stray future time within the valid range: the split end comes
    from quantiles, so eval stays the log's last day."""
    rows = dated_log()
    end = max(r[4] for r in rows)
    path = write_csv(tmp_path / "log.csv",
                     rows + [(3, 12, 2, "buy", end + 400 * 86400)])
    _, summary = run_import(tmp_path, path, eval_days=1,
                            allow_single_class_split=False)
    assert summary["split_end_ts"] == end
    assert summary["events_after_split_end"] == 1
    assert summary["eval_start_ts"] == end - 86400
    assert summary["splits"]["eval"]["requests"] > 20


@pytest.mark.parametrize("unit, scale", [("ms", 1000), ("us", 10**6),
                                         ("ns", 10**9)])
def test_timestamp_unit_is_detected(tmp_path, unit, scale):
    rows = dated_log()
    seconds = write_csv(tmp_path / "s.csv", rows)
    scaled = write_csv(tmp_path / f"{unit}.csv", [
        (u, i, c, b, t * scale + scale // 2) for u, i, c, b, t in rows])
    _, want = run_import(tmp_path, seconds, "s", eval_days=1)
    _, got = run_import(tmp_path, scaled, unit, eval_days=1)
    assert got["timestamp_unit"] == f"{unit} (auto)"
    assert want["timestamp_unit"] == "s (auto)"
    assert got["requests"] == want["requests"]
    assert raw_records(tmp_path / unit) == raw_records(tmp_path / "s")


def test_unit_detection_uses_the_median():
    assert detect_unit(np.array([1000, 2000])) == "s"
    assert detect_unit(np.array([EPOCH * 1000] * 3 + [5])) == "ms"


def test_refuses_a_split_without_positives_keeping_old_outputs(tmp_path):
    path = write_csv(tmp_path / "log.csv", GOLDEN)
    run_import(tmp_path, path, eval_start_ts=7000)
    before = raw_records(tmp_path / "out")
    with pytest.raises(DataError, match=(
            r"split eval would hold no positive label \(1 requests, "
            r"request_time 90000..90000\).*importer.eval_days / "
            r"importer.eval_start_ts.*--allow_single_class_split")):
        run_import(tmp_path, path, eval_start_ts=80000, overwrite=True,
                   positive_behaviors=("cart",),
                   allow_single_class_split=False)
    assert raw_records(tmp_path / "out") == before
    _, summary = run_import(tmp_path, path, eval_start_ts=80000,
                            overwrite=True, positive_behaviors=("cart",),
                            allow_single_class_split=True)
    assert summary["splits"]["eval"]["positives"] == 0


@pytest.mark.parametrize("fields, match", [
    pytest.param({"eval_start_ts": 86400}, "split eval would hold no "
                 "negative label", id="eval-all-positive"),
    pytest.param({"eval_start_ts": 999999}, r"split eval would be empty",
                 id="eval-empty"),
    pytest.param({"eval_start_ts": 0}, r"split train would be empty",
                 id="train-empty"),
])
def test_refuses_empty_or_one_label_splits(tmp_path, fields, match):
    path = write_csv(tmp_path / "log.csv", GOLDEN)
    with pytest.raises(DataError, match=match):
        run_import(tmp_path, path, allow_single_class_split=False, **fields)


def test_refuses_a_split_whose_sampled_negatives_never_came(tmp_path):
    """Sampling could have given negatives; none came: nothing is left."""
    rows = [(1, 10, 100, "pv", 1000), (1, 11, 100, "buy", 1000),
            (1, 12, 100, "buy", 90000)]
    path = write_csv(tmp_path / "log.csv", rows)
    with pytest.raises(DataError, match="split eval holds no negative label"
                       r" \(1 impressions, all positive\)"):
        run_import(tmp_path, path, eval_start_ts=86400,
                   negatives_per_request=2, allow_single_class_split=False)
    assert os.listdir(tmp_path / "out") == []


# ------------------------------------------------- item 9: bytes and rows
def test_random_bytes_name_file_and_line(tmp_path):
    path = tmp_path / "noise.csv"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(BadRowError, match=(
            f"{path}, line 1: field '\\(row\\)' is not UTF-8 text")):
        run_import(tmp_path, str(path))


def test_non_utf8_row_names_line_and_can_be_skipped(tmp_path):
    path = tmp_path / "log.csv"
    text = "\n".join(",".join(map(str, r)) for r in GOLDEN)
    lines = text.encode().split(b"\n")
    lines.insert(3, b"1,10,100,pv,\xff\xfe5")
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(BadRowError, match=(
            f"{path}, line 4: field '\\(row\\)' is not UTF-8 text "
            r"\(byte 0xff at byte 13 of the line\)")):
        run_import(tmp_path, str(path), header="no")
    _, summary = run_import(tmp_path, str(path), header="no",
                            skip_bad_rows=True)
    assert summary["skipped_rows"] == 1 and summary["events"] == 9


@pytest.mark.parametrize("damage", ["truncated", "not-gzip"])
def test_broken_gzip_names_the_file(tmp_path, damage):
    plain = write_csv(tmp_path / "log.csv", dated_log())
    data = gzip.compress(open(plain, "rb").read())
    path = tmp_path / "log.csv.gz"
    path.write_bytes(data[: len(data) // 2] if damage == "truncated"
                     else open(plain, "rb").read())
    with pytest.raises(DataError, match=(
            f"{path}: truncated or corrupt compressed file after line "
            r"\d+ \((EOFError|BadGzipFile)")):
        run_import(tmp_path, str(path))


@pytest.mark.parametrize("header", [True, False], ids=["header", "no-header"])
def test_utf8_bom_is_accepted(tmp_path, header):
    plain = write_csv(tmp_path / "log.csv", GOLDEN, header=header)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + open(plain, "rb").read())
    run_import(tmp_path, plain, "a", eval_start_ts=86400)
    _, summary = run_import(tmp_path, str(bom), "b", eval_start_ts=86400)
    assert summary["events"] == 9
    assert raw_records(tmp_path / "b") == raw_records(tmp_path / "a")


def test_duplicates_are_counted_and_dropped_when_asked(tmp_path):
    path = write_csv(tmp_path / "dup.csv", GOLDEN + [GOLDEN[3]] * 200)
    _, kept = run_import(tmp_path, path, "kept", eval_start_ts=86400)
    assert (kept["duplicate_events"], kept["duplicate_events_dropped"],
            kept["events"]) == (200, 0, 209)
    _, dropped = run_import(tmp_path, path, "dropped", eval_start_ts=86400,
                            drop_duplicates=True)
    assert (dropped["duplicate_events"], dropped["duplicate_events_dropped"],
            dropped["events"]) == (200, 200, 9)
    run_import(tmp_path, write_csv(tmp_path / "g.csv", GOLDEN), "golden",
               eval_start_ts=86400)
    assert raw_records(tmp_path / "dropped") == raw_records(
        tmp_path / "golden")


def test_duplicate_mask_keeps_the_first_copy():
    cols = {h: np.array(v) for h, v in zip(HEADER, zip(*[
        (1, 2, 3, 1, 5), (1, 2, 3, 1, 6), (1, 2, 3, 1, 5), (1, 2, 3, 1, 5)]))}
    assert duplicate_mask(cols, HEADER).tolist() == [False, False, True,
                                                      True]
