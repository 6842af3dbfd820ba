"""The generator's raw log, the importer's warnings on it, and the raw-log
statistics of `hisac-inspect --raw`.

`hisac-generate --format=userbehavior` writes the synthetic world as
events.csv / items.csv / users.csv; the importer reads them back, says
what it loses (warnings naming the option) and stays silent on a clean
import; `raw_log_stats` agrees with what the importer then writes.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from hisac_tf.config import load_config
from hisac_tf.data.importers.log_importer import import_logs
from hisac_tf.data.importers.raw_log_stats import (format_raw_log_stats,
                                                   raw_log_stats)
from hisac_tf.data.synthetic.raw_log import (EVENT_COLUMNS, EVENTS_FILE,
                                             ITEMS_FILE, USERS_FILE,
                                             write_raw_log)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "logs"


@pytest.fixture(scope="module")
def raw_log(tmp_path_factory):
    """The tiny preset's world as a raw log (40 users)."""
    out = tmp_path_factory.mktemp("raw")
    summary = write_raw_log(load_config("tiny"), str(out), progress=False)
    return out, summary


def config(tmp_path, raw_dir, **importer):
    """tiny, importing raw_dir into tmp_path/data; N, C via importer."""
    data = {k: importer.pop(k) for k in ("max_history", "max_candidates")
            if k in importer}
    data["data_dir"] = str(tmp_path / "data")
    return load_config("tiny").replace(data=data, importer=dict(
        input=str(raw_dir / EVENTS_FILE), items=str(raw_dir / ITEMS_FILE),
        users=str(raw_dir / USERS_FILE), **importer))


def rows(path):
    with open(path) as f:
        return list(csv.reader(f))


def test_raw_log_files_have_the_importer_layouts(raw_log):
    raw_dir, summary = raw_log
    events = rows(raw_dir / EVENTS_FILE)
    assert tuple(events[0]) == EVENT_COLUMNS
    assert len(events) - 1 == summary["events"]
    assert {r[3] for r in events[1:]} <= {"pv", "cart", "fav", "buy"}
    by_user = [(int(r[0]), int(r[4])) for r in events[1:]]
    assert by_user == sorted(by_user)  # users in order, time within each
    items = rows(raw_dir / ITEMS_FILE)
    assert items[0][:3] == ["item_id", "category_id", "emb_0"]
    assert len(items[0]) == 2 + load_config("tiny").synthetic.content_dim
    assert rows(raw_dir / USERS_FILE)[0] == ["user_id", "gender",
                                             "age_bucket"]
    assert summary["impressions"] == 40 * 2 * 5  # users x requests x cands
    assert 0 < summary["clicks"] < summary["impressions"]


def test_clean_import_of_the_raw_log_is_silent(tmp_path, raw_log, capsys):
    raw_dir, summary = raw_log
    cfg = config(tmp_path, raw_dir, max_history=100, max_candidates=50,
                 negatives_per_request=2, eval_days=5,
                 warn_min_requests=10, warn_min_impressions=10)
    imported = import_logs(cfg)
    assert imported["events"] == summary["events"]
    assert imported["item_table"]["items"] == summary["items"]
    assert imported["warnings"] == []
    err = capsys.readouterr().err
    assert "import settings (config 'tiny')" in err
    assert "label 1 for an item with a behaviour in" in err
    assert "split starts: valid none, eval" in err and "UTC" in err
    assert "WARNINGS" not in err


LOSSY = {
    "candidates truncated": (
        dict(max_candidates=1),
        ["candidates were dropped", "data.max_candidates=1",
         "--max_candidates", "--request_window_s"]),
    "histories truncated": (
        dict(max_history=2),
        ["histories were cut", "data.max_history=2", "--max_history"]),
    "requests dropped": (
        dict(min_history=10),
        ["requests were dropped", "importer.min_history=10"]),
    "negatives without room": (
        dict(max_candidates=6, negatives_per_request=10),
        ["found no room", "data.max_candidates=6"]),
    "few requests": (
        dict(warn_min_requests=10 ** 6),
        ["split train has", "split eval has",
         "importer.warn_min_requests=1000000", "importer.eval_days"]),
    "few impressions": (
        dict(warn_min_impressions=10 ** 6),
        ["impressions, fewer than", "importer.warn_min_impressions=1000000",
         "importer.negatives_per_request"]),
}


@pytest.mark.parametrize("fields,expected", LOSSY.values(), ids=LOSSY)
def test_lossy_import_warns_naming_the_option(tmp_path, raw_log, capsys,
                                              fields, expected):
    raw_dir, _ = raw_log
    clean = dict(max_history=100, max_candidates=50,
                 negatives_per_request=2, eval_days=5, warn_min_requests=10,
                 warn_min_impressions=10)
    cfg = config(tmp_path, raw_dir, **{**clean, **fields})
    warnings = "\n".join(import_logs(cfg)["warnings"])
    for text in expected:
        assert text in warnings
    err = capsys.readouterr().err
    assert err.index("import settings") < err.index("WARNINGS (")


def test_skipped_bad_rows_warn(tmp_path, raw_log):
    raw_dir, _ = raw_log
    bad_dir = tmp_path / "bad"
    shutil.copytree(raw_dir, bad_dir)
    lines = (bad_dir / EVENTS_FILE).read_text().splitlines()
    lines += ["1,0,1,pv,1511568000"] * (len(lines) // 5)  # item id 0: bad
    (bad_dir / EVENTS_FILE).write_text("\n".join(lines) + "\n")
    cfg = config(tmp_path, bad_dir, skip_bad_rows=True)
    warnings = "\n".join(import_logs(cfg)["warnings"])
    assert "rows were bad and skipped (importer.skip_bad_rows)" in warnings


def test_the_example_logs_import_as_documented(tmp_path):
    cfg = load_config("tiny").replace(
        data={"data_dir": str(tmp_path / "data")},
        importer=dict(input=str(EXAMPLES / "events.csv"),
                      items=str(EXAMPLES / "items.csv"),
                      users=str(EXAMPLES / "users.csv"),
                      negatives_per_request=0, warn_min_requests=0,
                      warn_min_impressions=0))
    summary = import_logs(cfg)
    assert summary["events"] == 17 and summary["users"] == 3
    assert summary["item_table"]["items"] == 6
    assert summary["user_table"]["users_in_table"] == 3
    assert summary["warnings"] == []


@pytest.mark.parametrize("window,c", [(3600, 6), (600, 2), (86400, 3)],
                         ids=["hour-C6", "10min-C2", "day-C3"])
def test_raw_log_stats_agree_with_the_import(tmp_path, raw_log, window, c):
    raw_dir, _ = raw_log
    cfg = config(tmp_path, raw_dir, max_candidates=c, request_window_s=window,
                 negatives_per_request=0, eval_days=3, min_history=1)
    stats = raw_log_stats(cfg)
    mine = next(w for w in stats["windows"] if w["window_s"] == window)
    at_c = next(x for x in mine["by_max_candidates"]
                if x["max_candidates"] == c)
    imported = import_logs(cfg)
    assert at_c["truncated"] == imported["truncated_candidates"]
    assert mine["window_candidates"] == imported["window_candidates"]
    assert mine["histories_over_max_history"] == (
        imported["histories_truncated"])
    for split in ("train", "eval"):
        assert mine["splits"][split]["requests"] == (
            imported["splits"][split]["requests"])
        assert mine["splits"][split]["positive_candidates"] >= (
            imported["splits"][split]["positives"])
    text = format_raw_log_stats(stats)
    assert f"window {window} s:" in text and f"C={c} " in text


def test_raw_log_stats_refuse_bad_windows(tmp_path, raw_log):
    raw_dir, _ = raw_log
    with pytest.raises(ValueError, match="windows must be integers >= 1"):
        raw_log_stats(config(tmp_path, raw_dir), windows=[0, 3600])


def test_raw_log_stats_name_a_missing_input(tmp_path):
    cfg = load_config("tiny").replace(
        importer={"input": str(tmp_path / "nope.csv")})
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        raw_log_stats(cfg)
