"""Item embedding values beyond float32 are refused at import (issue 22,
item 12).

1e39 is finite as a Python float (float64) but +inf in the float32
item table; the importer used to write it as +inf, caught only later by
the tokenizer. It is now a bad row naming the file, the line (or row)
and the column, for CSV and Parquet item tables (the Beam importer writes
the item table with the same `write_items`).
"""

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hisac_tf.data.importers.bad_rows import BadRowError, BadValue
from hisac_tf.data.importers.field_values import float_value
from tests.test_import_logs import GOLDEN, run_import, write_csv


@pytest.mark.parametrize("text", ["1e39", "-1e39", "3.5e38", "1e300"])
def test_float_value_refuses_what_float32_cannot_hold(text):
    with pytest.raises(BadValue, match="does not fit in float32"):
        float_value(text, "emb_0")


@pytest.mark.parametrize("text", ["3.4e38", "-3.4e38", "1e-50", "0"])
def test_float_value_keeps_float32_values(text):
    assert float_value(text, "emb_0") == float(text)


def test_csv_item_table_names_file_line_and_column(tmp_path):
    log = write_csv(tmp_path / "log.csv", GOLDEN)
    items = tmp_path / "items.csv"
    items.write_text("item_id,category_id,emb_0,emb_1\n"
                     "10,100,0.5,1.0\n11,100,0.5,1e39\n")
    with pytest.raises(BadRowError, match=re.escape(
            f"{items}, line 3: field 'emb_1' does not fit in float32 "
            "(|value| <= 3.4028235e+38), got '1e39'")):
        run_import(tmp_path, log, items=str(items))
    _, summary = run_import(tmp_path, log, name="skip", items=str(items),
                            skip_bad_rows=True, eval_days=0)
    assert summary["item_table"]["items"] == 1
    assert summary["item_table"]["skipped_by_reason"] == {
        "emb_1 does not fit in float32 (|value| <= 3.4028235e+38)": 1}


@pytest.mark.parametrize("layout", ["flat", "list"])
def test_parquet_item_table_names_file_row_and_column(tmp_path, layout):
    log = write_csv(tmp_path / "log.csv", GOLDEN)
    items = tmp_path / "items.parquet"
    ids = {"item_id": pa.array([10, 11], pa.int64()),
           "category_id": pa.array([100, 100], pa.int64())}
    if layout == "flat":
        emb = {"emb_0": pa.array([0.5, -1e39], pa.float64()),
               "emb_1": pa.array([1.0, 2.0], pa.float64())}
        field = "emb_0"
    else:
        emb = {"emb": pa.array([[0.5, 1.0], [2.0, -1e39]],
                               pa.list_(pa.float64()))}
        field = "emb[1]"
    pq.write_table(pa.table({**ids, **emb}), str(items))
    with pytest.raises(BadRowError, match=re.escape(
            f"{items}, row 2: field {field!r} does not fit in float32")):
        run_import(tmp_path, log, items=str(items))
