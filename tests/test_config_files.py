"""Bad config files and preset chains are named errors (issue 22, item 11).

A missing or directory `--config` path, a JSON list or scalar at top level
and a non-UTF-8 file (also as the `base` of a preset) used to end in an
uncaught traceback; each is a `ConfigError` naming the file and what is
wrong, and every job entry point exits 2 with it and no traceback.
"""

import json
import os
import subprocess
import sys

import pytest

from hisac_tf import config as config_lib
from hisac_tf.config import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bad_file(tmp_path, kind):
    """A bad config file of `kind`; returns (path, expected message)."""
    path = tmp_path / f"{kind}.json"
    if kind == "missing":
        return path, f"config file {path} does not exist"
    if kind == "directory":
        path.mkdir()
        return path, f"config file {path} is a directory, not a JSON file"
    if kind == "list":
        path.write_text(json.dumps([{"model": {}}]))
        return path, (f"config file {path} must hold a JSON object "
                      r"\{section: \{key: value\}\}, got a list")
    if kind == "scalar":
        path.write_text("3")
        return path, f"config file {path} must hold a JSON object .*got an? "
    if kind == "latin1":
        path.write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
        return path, (f"config file {path} is not UTF-8 text "
                      r"\(byte 0xe9 at offset 13")
    if kind == "bad-base":
        path.write_text(json.dumps({"base": 3}))
        return path, (f"config file {path}: field base must name a preset "
                      "or a JSON file, got 3")
    raise ValueError(kind)


KINDS = ["missing", "directory", "list", "scalar", "latin1", "bad-base"]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_config_file_is_named(tmp_path, kind):
    path, message = bad_file(tmp_path, kind)
    with pytest.raises(ConfigError, match=message):
        config_lib.load_config(str(path))


@pytest.mark.parametrize("kind", ["missing", "directory", "list", "latin1"])
def test_bad_base_of_a_preset_is_named_with_the_chain(tmp_path, kind):
    base, message = bad_file(tmp_path, kind)
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"base": str(base)}))
    with pytest.raises(ConfigError, match=message) as e:
        config_lib.load_config(str(mine))
    assert f"(base of {mine})" in str(e.value)


def test_an_unknown_base_preset_names_the_file_that_asks(tmp_path):
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"base": "tinyy"}))
    with pytest.raises(ConfigError, match=(
            r"unknown config preset 'tinyy' .*\(base of .*mine.json\)")):
        config_lib.load_config(str(mine))


def entry_points():
    """The console scripts of setup.py: (name, module)."""
    text = open(os.path.join(ROOT, "setup.py")).read()
    found = []
    for line in text.splitlines():
        line = line.strip().strip('",')
        if line.startswith("hisac-") and "=pipelines." in line:
            name, target = line.split("=")
            found.append((name, target.split(":")[0]))
    return found


# Runs every entry point's run() in one process (TensorFlow is imported
# once): each must exit 2 with "config error: ..." and no traceback.
_PROBE = r"""
import contextlib, importlib, io, json, sys
results = {}
for name, module, config in json.loads(sys.argv[1]):
    sys.argv = [name, "--config=" + config]
    err = io.StringIO()
    code = None
    with contextlib.redirect_stderr(err):
        try:
            importlib.import_module(module).run()
        except SystemExit as e:
            code = e.code
    results[name] = [code, err.getvalue()]
print(json.dumps(results))
"""


@pytest.mark.slow
def test_every_entry_point_exits_2_without_traceback(tmp_path):
    path, _ = bad_file(tmp_path, "list")
    scripts = [(n, m, str(path)) for n, m in entry_points()]
    assert len(scripts) >= 14, scripts
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(scripts)],
                         capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for name, (code, err) in results.items():
        assert code == 2, (name, code, err[-2000:])
        assert "Traceback" not in err, (name, err[-2000:])
        assert f"config error: config file {path} must hold a JSON " \
            "object" in err, (name, err[-2000:])
