"""End to end on the tiny preset: data → tokenizer → train → evaluate.

Also kills a training process mid-run (and stops one by an exception
inside `fit`) and checks that the restarted job resumes at its last
checkpoint; trains with a valid split and checks that evaluation scores
the best checkpoint, and what TensorBoard receives.
"""

import glob
import json
import os
import shutil
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
    # A valid split for model selection: the eval shards under its name.
    for path in glob.glob(f"{root}/data/eval-*"):
        shutil.copy(path, path.replace("/eval-", "/valid-"))
    return root, overrides


class StopAt(tf.keras.callbacks.Callback):
    """Raises inside `fit` once the global step reaches `step` (a crash:
    no end-of-training checkpoint)."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 >= self.step:
            raise KeyboardInterrupt(f"stopped at batch {batch + 1}")


def summary_tags(directory):
    tags = set()
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    return tags


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
    assert ev["checkpoint_kind"] == "latest"  # no valid split configured
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


@pytest.mark.slow
def test_crash_inside_fit_resumes_from_last_checkpoint(prepared):
    root, overrides = prepared
    model_dir = f"{root}/model-crash"
    cfg = config_lib.load_config(
        "tiny", overrides + [f"training.model_dir={model_dir}",
                             "training.train_steps=9",
                             "training.checkpoint_every=3"])
    with pytest.raises(KeyboardInterrupt):
        train.train(cfg, progress=False, callbacks=[StopAt(5)])
    ckpt = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert ckpt.endswith("-3")  # step 5 was never checkpointed
    resumed = train.train(cfg, progress=False)
    assert resumed["resumed_at"] == 3  # 2 steps redone (< checkpoint_every)
    assert resumed["step"] == 9  # train_steps is the total
    assert resumed["steps_run"] == 6


@pytest.mark.slow
def test_valid_split_selects_the_checkpoint_evaluate_scores(prepared):
    root, overrides = prepared
    model_dir = f"{root}/model-valid"
    cfg = config_lib.load_config(
        "tiny", overrides + [f"training.model_dir={model_dir}",
                             "training.train_steps=10",
                             "training.valid_every=4",
                             "training.log_every=2"])
    results = train.main(cfg, progress=False)
    curve = json.load(open(os.path.join(model_dir, "learning_curve.json")))
    steps = [p["step"] for p in curve["points"]]
    assert steps == [4, 8, 10]  # every valid_every steps and the last
    best = max(curve["points"], key=lambda p: p["auc"])
    assert curve["best"]["step"] == best["step"]
    assert results["train"]["best"]["step"] == best["step"]
    ev = results["eval"]
    assert ev["checkpoint_kind"] == "best"
    assert ev["step"] == best["step"]
    assert ev["checkpoint"].endswith(f"best/ckpt-{best['step']}")
    # The eval split is the valid split's copy here: same figures.
    assert ev["auc"] == pytest.approx(best["auc"], abs=1e-6)
    latest = config_lib.load_config(
        "tiny", overrides + [f"training.model_dir={model_dir}",
                             "training.train_steps=10",
                             "evaluation.checkpoint=latest"])
    again = evaluate.main(latest, progress=False)
    assert (again["checkpoint_kind"], again["step"]) == ("latest", 10)
    board = os.path.join(model_dir, "tensorboard")
    assert {"loss", "regularization_loss", "auc_approx", "log_loss"} <= (
        summary_tags(os.path.join(board, "train")))
    assert {"auc", "gauc", "log_loss", "num_active_mean", "num_active",
            "routing/effective_items_per_agent", "routing/off_sid_mass",
            "routing/agents_per_user"} <= (
        summary_tags(os.path.join(board, "valid")))
    # The learning curve carries the routing figures of the tiny (hisac)
    # ranker too.
    assert all(p["effective_items_per_agent"] >= 1.0
               for p in curve["points"])


@pytest.mark.slow
def test_training_with_the_sparse_routing_plan_in_the_pipeline(prepared):
    """`fit` on the real input pipeline with the routing plan as a
    `tf.data` map and sparse routing: the step embeds only the routed
    items (their positions from the plan), and the run trains, saves
    and evaluates as any other."""
    root, overrides = prepared
    cfg = config_lib.load_config("tiny", overrides + [
        f"training.model_dir={root}/model-routed",
        "training.routing_in_input_pipeline=true",
        "model.routing_top_m=3", "training.train_steps=4",
        "training.checkpoint_every=4", "training.log_every=2"])
    results = train.main(cfg, progress=False)
    assert results["train"]["steps_run"] == 4
    assert 0.0 < results["eval"]["auc"] < 1.0
