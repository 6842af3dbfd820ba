"""No silent fallbacks: a job on a missing or empty data path stops with
the path named and generates nothing; TensorFlow's C++ logs stay quiet on
a CPU machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hisac_tf.config import load_config
from hisac_tf.data.data_summary import summarize_data
from hisac_tf.data.split_files import split_files
from hisac_tf.experiments.runner import ensure_inputs
from hisac_tf.evaluation.evaluation import evaluate
from hisac_tf.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]


def tiny(tmp_path, layout):
    """tiny with data.data_dir missing, or present and empty."""
    data_dir = tmp_path / "data"
    if layout == "empty":
        data_dir.mkdir()
    return load_config("tiny").replace(
        data={"data_dir": str(data_dir)},
        training={"model_dir": str(tmp_path / "model")},
        tokenizer={"output_dir": str(tmp_path / "tokenizer")}), data_dir


JOBS = {
    "train": lambda cfg: train(cfg, progress=False),
    "evaluate": lambda cfg: evaluate(cfg, progress=False),
    "experiment": lambda cfg: ensure_inputs(cfg, None),
    "inspect": summarize_data,
}


@pytest.mark.parametrize("layout", ["missing", "empty"])
@pytest.mark.parametrize("job", list(JOBS), ids=list(JOBS))
def test_job_without_data_names_the_path_and_generates_nothing(
        tmp_path, job, layout):
    cfg, data_dir = tiny(tmp_path, layout)
    with pytest.raises(FileNotFoundError) as raised:
        JOBS[job](cfg)
    assert str(data_dir) in str(raised.value)
    assert "data" in str(raised.value)
    found = sorted(data_dir.iterdir()) if data_dir.exists() else []
    assert found == []  # nothing generated, nothing written


@pytest.mark.parametrize("split", ["train", "valid", "eval"])
def test_split_files_say_what_was_expected(tmp_path, split):
    cfg, data_dir = tiny(tmp_path, "empty")
    with pytest.raises(FileNotFoundError) as raised:
        split_files(cfg.data, split)
    text = str(raised.value)
    assert f"no {split} data" in text and str(data_dir) in text
    assert f"data.{split}_pattern=" in text
    assert "hisac-import or hisac-generate" in text
    assert "no data is generated" in text


def test_split_files_refuse_an_unknown_split(tmp_path):
    cfg, _ = tiny(tmp_path, "empty")
    with pytest.raises(ValueError, match="'test'"):
        split_files(cfg.data, "test")


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(extra)
    return env


def test_train_job_on_a_typo_fails_quietly_and_generates_nothing(tmp_path):
    """The job as a user runs it: exit 1, the path, no TF C++ noise."""
    typo = tmp_path / "dtaa"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.train", "--config=tiny",
         f"--set=data.data_dir={typo}",
         f"--set=training.model_dir={tmp_path / 'model'}"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"no train data: nothing matches '{typo}" in proc.stderr
    assert not typo.exists()
    if not os.path.exists("/dev/nvidia0"):  # quiet by default on CPU
        out = proc.stdout + proc.stderr
        assert "Unable to register" not in out
        assert "external/local_xla" not in out


@pytest.mark.parametrize("given,expected", [(None, None), ("1", "1")],
                         ids=["default", "user-set"])
def test_tf_log_level_default_and_override(given, expected):
    env = _env() if given is None else _env(TF_CPP_MIN_LOG_LEVEL=given)
    level = subprocess.run(
        [sys.executable, "-c", "import hisac_tf, os; "
         "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"],
        cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120).stdout.strip()
    if expected is None:
        expected = "2" if os.path.exists("/dev/nvidia0") else "3"
    assert level == expected
