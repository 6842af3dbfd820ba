"""Task roles: `run_task` does each process's part of a cluster job, and
`train` always returns (it refuses the roles that are not its own)."""

import json
import os

import pytest

from hisac_tf import config as config_lib
from hisac_tf.distribute.strategy import ClusterError, ClusterSettings
from hisac_tf.distribute.strategy import task_role
from hisac_tf.training.trainer import train as train_fn
from pipelines import train as train_job

CLUSTER = {"chief": ["localhost:1"], "worker": ["localhost:2",
                                                "localhost:3"],
           "ps": ["localhost:4"]}


def tf_config(kind, index=0, cluster=CLUSTER):
    return {"cluster": cluster, "task": {"type": kind, "index": index}}


@pytest.mark.parametrize("strategy, config, role", [
    ("default", {}, "chief"),
    ("parameter_server", tf_config("chief"), "chief"),
    ("parameter_server", tf_config("worker", 1), "server"),
    ("parameter_server", tf_config("ps"), "server"),
    ("multi_worker_mirrored", tf_config("worker", 1), "worker"),
    ("multi_worker_mirrored",
     tf_config("worker", 0, {"worker": ["a:1", "a:2"]}), "chief"),
    ("multi_worker_mirrored",
     tf_config("worker", 1, {"worker": ["a:1", "a:2"]}), "worker"),
])
def test_task_role(strategy, config, role):
    assert task_role(ClusterSettings(strategy), config) == role


def make_cfg(tmp_path, strategy="default", mode="train_and_eval"):
    return config_lib.load_config("tiny", [
        f"data.data_dir={tmp_path}/data",
        f"training.model_dir={tmp_path}/model",
        f"training.mode={mode}", f"cluster.strategy={strategy}"])


@pytest.mark.parametrize("strategy, config, message", [
    ("parameter_server", tf_config("ps"),
     "ps:0 task of parameter_server, which serves"),
    ("multi_worker_mirrored", tf_config("worker", 1),
     "non-chief worker:1 task"),
])
def test_train_refuses_a_role_that_is_not_its_own(
        tmp_path, monkeypatch, strategy, config, message):
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    with pytest.raises(ClusterError, match=message):
        train_fn(make_cfg(tmp_path, strategy), progress=False)
    assert not os.path.exists(tmp_path / "model")  # nothing written


class Calls:
    """Stands in for train / evaluate / serve_forever; records calls."""

    def __init__(self, monkeypatch):
        self.log = []
        monkeypatch.setattr(train_job, "train", self.train)
        monkeypatch.setattr(train_job, "evaluate", self.evaluate)
        monkeypatch.setattr(train_job, "serve_forever", self.serve)

    def train(self, cfg, progress=True, resume_from=None):
        self.log.append(("train", cfg.training.model_dir, resume_from))
        return {"step": 1}

    def evaluate(self, cfg, progress=True):
        self.log.append(("evaluate", cfg.training.model_dir))
        return {"auc": 0.5}

    def serve(self, tf_config):
        self.log.append(("serve", tf_config["task"]["type"]))


def test_run_task_chief_trains_and_evaluates(tmp_path, monkeypatch):
    calls = Calls(monkeypatch)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    model_dir = str(tmp_path / "model")
    results = train_job.run_task(make_cfg(tmp_path), progress=False)
    assert calls.log == [("train", model_dir, None),
                         ("evaluate", model_dir)]
    assert results == {"mode": "train_and_eval", "role": "chief",
                       "train": {"step": 1}, "eval": {"auc": 0.5}}
    with open(os.path.join(model_dir, "train_results.json")) as f:
        assert json.load(f) == results


def test_run_task_eval_mode_only_evaluates(tmp_path, monkeypatch):
    calls = Calls(monkeypatch)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    train_job.run_task(make_cfg(tmp_path, mode="eval"), progress=False)
    assert calls.log == [("evaluate", str(tmp_path / "model"))]


def test_run_task_server_only_serves(tmp_path, monkeypatch):
    calls = Calls(monkeypatch)
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config("worker", 1)))
    results = train_job.run_task(make_cfg(tmp_path, "parameter_server"),
                                 progress=False)
    assert calls.log == [("serve", "worker")]
    assert results["role"] == "server"
    assert not os.path.exists(tmp_path / "model")


def test_run_task_worker_trains_in_its_own_dir(tmp_path, monkeypatch):
    calls = Calls(monkeypatch)
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config("worker", 1)))
    model_dir = str(tmp_path / "model")
    own = os.path.join(model_dir, "workers", "worker-1")
    results = train_job.run_task(
        make_cfg(tmp_path, "multi_worker_mirrored"), progress=False)
    # Resumes from the chief's checkpoints; never evaluates.
    assert calls.log == [("train", own, model_dir)]
    assert results["role"] == "worker" and "eval" not in results
    assert os.path.isfile(os.path.join(own, "train_results.json"))
    assert not os.path.exists(os.path.join(model_dir,
                                            "train_results.json"))
