"""End to end on the tiny preset: data → tokenizer → train → evaluate.

Also kills a training process mid-run and checks that the restarted job
resumes at its last checkpoint.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from pipelines import evaluate, tokenize_items, train
from hisac_tf.data import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_overrides(root):
    return [
        f"data.data_dir={root}/data",
        f"tokenizer.output_dir={root}/tokenizer",
        f"training.model_dir={root}/model",
        "training.train_steps=12",
        "training.checkpoint_every=4",
        "training.log_every=4",
    ]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("e2e"))
    overrides = tiny_overrides(root)
    cfg = config_lib.load_config("tiny", overrides)
    synthetic.generate(cfg, progress=False)
    tokenize_items.main(cfg, progress=False)
    return root, overrides


@pytest.mark.slow
def test_train_then_evaluate_writes_metrics(prepared):
    root, overrides = prepared
    cfg = config_lib.load_config(
        "tiny", overrides + [f"training.model_dir={root}/model-e2e"]
    )
    results = train.main(cfg, progress=False)
    assert results["train"]["step"] == 12
    assert results["train"]["steps_run"] == 12
    ev = results["eval"]
    for key in ("auc", "gauc", "log_loss", "bayes_auc", "bayes_gauc"):
        assert 0.0 <= ev[key] or key == "log_loss"
    assert 0.0 < ev["auc"] < 1.0
    assert ev["bayes_auc"] > 0.6
    model_dir = cfg.training.model_dir
    saved = json.load(open(os.path.join(model_dir, "config.json")))
    assert saved["training"]["train_steps"] == 12
    assert json.load(open(os.path.join(model_dir, "eval.json")))["step"] == 12
    ckpt = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert ckpt.endswith("-12")
    # Evaluating again restores the same checkpoint: identical figures.
    again = evaluate.main(cfg, progress=False)
    assert again["auc"] == pytest.approx(ev["auc"], abs=1e-6)
    # A finished run asked again trains nothing more.
    assert train.train(cfg, progress=False)["steps_run"] == 0


@pytest.mark.slow
def test_killed_training_resumes_from_last_checkpoint(prepared):
    root, overrides = prepared
    model_dir = f"{root}/model-kill"
    args = [
        sys.executable, "-m", "pipelines.train", "--config=tiny",
        *[f"--set={o}" for o in overrides],
        f"--set=training.model_dir={model_dir}",
        "--set=training.train_steps=100000",
        "--set=training.checkpoint_every=3",
        '--set=training.mode="train"',
    ]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    deadline = time.time() + 120
    latest = None
    while time.time() < deadline:
        latest = tf.train.latest_checkpoint(ckpt_dir)
        if latest and int(latest.rsplit("-", 1)[1]) >= 6:
            break
        assert proc.poll() is None, "training exited before the kill"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = int(tf.train.latest_checkpoint(ckpt_dir).rsplit("-", 1)[1])
    assert saved >= 6 and saved % 3 == 0

    cfg = config_lib.load_config(
        "tiny", overrides + [f"training.model_dir={model_dir}",
                             f"training.train_steps={saved + 4}"])
    resumed = train.train(cfg, progress=False)
    assert resumed["resumed_at"] == saved  # no completed checkpoint lost
    assert resumed["step"] == saved + 4
    assert resumed["steps_run"] == 4


@pytest.mark.slow
def test_resuming_under_another_model_config_is_refused(prepared):
    root, overrides = prepared
    model_dir = f"{root}/model-other"
    cfg = config_lib.load_config(
        "tiny", overrides + [f"training.model_dir={model_dir}",
                             "training.train_steps=2"])
    train.train(cfg, progress=False)
    other = config_lib.load_config(
        "tiny", overrides + [f"training.model_dir={model_dir}",
                             "model.embedding_dim=4"])
    with pytest.raises(config_lib.ConfigError,
                       match="model.embedding_dim=8, not 4"):
        train.train(other, progress=False)
