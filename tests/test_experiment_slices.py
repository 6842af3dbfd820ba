"""The experiment report's history-length slices: table and plot."""

import os

import pytest

from hisac_tf.experiments import report


def sliced(auc_short, auc_long, status_long="ok"):
    return [
        {"slice": "<50", "status": "ok", "impressions": 900,
         "auc": auc_short, "gauc": 0.6, "bayes_auc": 0.8},
        {"slice": "50–200", "status": status_long, "impressions": 40,
         "auc": auc_long if status_long == "ok" else None,
         "gauc": None, "bayes_auc": 0.85 if status_long == "ok" else None},
    ]


ROWS = [
    {"name": "short", "compressor": "recent", "n": 50,
     "history_slices": sliced(0.70, 0.71)},
    {"name": "hisac", "compressor": "hisac", "n": 50,
     "history_slices": sliced(0.72, 0.78)},
    # A row from before slices: skipped.
    {"name": "old", "compressor": "hisac", "n": 50},
]


def test_history_slices_keep_only_the_history_dimension():
    evaluated = {"slices": {"rows": [
        {"dimension": "all", "slice": "all", "status": "ok",
         "impressions": 5, "auc": 0.7},
        {"dimension": "history_length", "slice": "<50", "status":
         "too_small", "impressions": 3},
        {"dimension": "semantic_id", "slice": "has_sid", "status": "ok",
         "impressions": 5, "auc": 0.7}]}}
    assert report.history_slices(evaluated) == [
        {"slice": "<50", "status": "too_small", "impressions": 3,
         "auc": None, "gauc": None, "bayes_auc": None}]
    assert report.history_slices({"auc": 0.7}) == []


def test_history_table_has_a_column_per_slice_and_the_bayes_row():
    table = report.format_history_table(ROWS).splitlines()
    assert table[0] == "| name | N | <50 | 50–200 |"
    assert table[2] == "| short | 50 | 0.7000 | 0.7100 |"
    assert table[3] == "| hisac | 50 | 0.7200 | 0.7800 |"
    assert table[4] == "| impressions | | 900 | 40 |"
    assert table[5] == "| Bayes | | 0.8000 | 0.8500 |"
    assert report.format_history_table(ROWS[2:]) == ""


def test_unmeasured_slice_is_a_dash():
    rows = [{"name": "a", "compressor": "hisac", "n": 10,
             "history_slices": sliced(0.7, None, "too_small")}]
    assert report.format_history_table(rows).splitlines()[2] == \
        "| a | 10 | 0.7000 | – |"


@pytest.mark.skipif(report.Figure is None, reason="needs matplotlib")
def test_plot_written_only_with_slices(tmp_path):
    path = str(tmp_path / "auc_by_history_length.png")
    assert report.plot_auc_by_history_length(ROWS, path)
    assert os.path.getsize(path) > 1000
    assert not report.plot_auc_by_history_length(ROWS[2:], path + "2")
