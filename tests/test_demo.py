"""The README's main job end to end on the tiny preset, in a subprocess."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path):
    root = str(tmp_path)
    args = [
        sys.executable, "-m", "pipelines.demo", "--config=tiny",
        f"--set=data.data_dir={root}/data",
        f"--set=tokenizer.output_dir={root}/tokenizer",
        f"--set=training.model_dir={root}/model",
        f"--set=export.export_dir={root}/export",
    ]
    first = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    for stage in ("[1/7]", "[4/7]", "[7/7]", "Bayes-optimal AUC"):
        assert stage in first.stderr
    results = json.load(open(os.path.join(root, "demo_results.json")))
    assert 0.0 < results["eval"]["auc"] < 1.0
    assert results["eval"]["bayes_auc"] > 0.6
    assert "history_length" in first.stderr  # the sliced table
    assert os.path.isfile(os.path.join(root, "model", "reliability.png"))
    assert results["export"]["version"] == 1
    rows = results["grpc"]["requests"]
    assert len(rows) == 3 and all(0 < p < 1 for r in rows for p in r["ctr"])
    assert results["grpc"]["two_step_max_abs_diff"] < 1e-5

    # A second run reuses every finished stage and exports nothing new.
    second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("reusing") >= 3
    assert sorted(os.listdir(os.path.join(root, "export"))).count("2") == 0
