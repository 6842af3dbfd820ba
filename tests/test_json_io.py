"""Strict JSON: every file the project writes parses under RFC 8259."""

import json
import math
import os
import re
import subprocess

import numpy as np
import pytest

from hisac_tf import json_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def strict_load(text):
    def refuse(token):
        raise ValueError(f"not JSON: {token}")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("value, want", [
    pytest.param(float("nan"), None, id="nan"),
    pytest.param(float("inf"), None, id="inf"),
    pytest.param(np.float32("-inf"), None, id="numpy-inf"),
    pytest.param(np.float64(0.5), 0.5, id="numpy-float"),
    pytest.param(np.int64(3), 3, id="numpy-int"),
    pytest.param(np.array([1.0, np.nan]), [1.0, None], id="array"),
    pytest.param({"a": (1, float("nan"))}, {"a": [1, None]}, id="nested"),
])
def test_non_finite_becomes_null(tmp_path, value, want):
    path = json_io.write_json(str(tmp_path / "x.json"), {"v": value})
    with open(path) as f:
        assert strict_load(f.read()) == {"v": want}


def test_finite_values_round_trip():
    value = {"auc": 0.75, "n": 3, "s": "x", "l": [1, 2.5], "b": True}
    assert json.loads(json_io.dumps(value)) == value
    assert json_io.dumps([float("nan"), math.inf]) == "[null, null]"


def test_no_writer_bypasses_the_strict_helper():
    """Every JSON file written by the library and the jobs goes through
    json_io (a plain json.dump would write NaN as a bare token)."""
    found = subprocess.run(
        ["git", "grep", "-n", "-E", r"json\.dump\(|json\.dumps\(.*indent",
         "--", "hisac_tf", "pipelines/train.py", "pipelines/demo.py"],
        cwd=ROOT, capture_output=True, text=True).stdout
    offenders = [line for line in found.splitlines()
                 if not re.match(r"hisac_tf/json_io\.py", line)
                 # Config.to_json: validated finite, allow_nan=False.
                 and "json.dumps(self.to_dict()" not in line]
    assert offenders == []
