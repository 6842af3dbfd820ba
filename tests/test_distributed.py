"""Distributed training on loopback: TF_CONFIG checks, input sharding, the
local-cluster launcher, multi-worker mirrored and parameter-server runs
(tiny preset), checkpoints and export across topologies."""

import glob
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf.data import input_pipeline, synthetic
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.export import exporter
from hisac_tf.export import signatures as sig
from hisac_tf.models.build import build_model, build_optimizer
from hisac_tf.distribute import local_cluster, strategy as strategy_lib
from hisac_tf.training.checkpoints import restore_checkpoint
from hisac_tf.distribute.strategy import ClusterError, ClusterSettings
from hisac_tf.training.trainer import compile_for_training
from pipelines import tokenize_items, train
from tests.test_hisac_ranker import CFG, SPEC, random_batch, random_tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2",
                                                "127.0.0.1:3"],
           "ps": ["127.0.0.1:4", "127.0.0.1:5"]}


def tf_config(cluster, kind="worker", index=0):
    return {"cluster": cluster, "task": {"type": kind, "index": index}}


# ------------------------------------------------------------ TF_CONFIG
@pytest.mark.parametrize(
    "strategy, config, message",
    [
        pytest.param("mirrored", tf_config(CLUSTER), "describes a cluster",
                     id="mirrored-with-cluster"),
        pytest.param("default", tf_config(CLUSTER), "describes a cluster",
                     id="default-with-cluster"),
        pytest.param("multi_worker_mirrored", tf_config(CLUSTER),
                     "'ps' tasks", id="mwms-with-ps"),
        pytest.param("parameter_server",
                     tf_config({"worker": ["a:1"], "chief": ["a:2"]}),
                     "'ps' is missing", id="ps-without-ps"),
        pytest.param("parameter_server",
                     tf_config({"worker": ["a:1"], "ps": ["a:2"]}),
                     "'chief' is missing", id="ps-without-chief"),
        pytest.param("multi_worker_mirrored",
                     tf_config({"worker": ["a:1"]}, "worker", 3),
                     "task worker:3 is not in the cluster",
                     id="task-not-in-cluster"),
        pytest.param("multi_worker_mirrored",
                     tf_config({"worker": []}), "non-empty list",
                     id="empty-task-list"),
    ],
)
def test_tf_config_not_matching_the_strategy_is_refused(
        strategy, config, message):
    with pytest.raises(ClusterError, match=message):
        strategy_lib.check_tf_config(strategy, config)


def test_malformed_tf_config_is_refused():
    with pytest.raises(ClusterError, match="TF_CONFIG is not JSON"):
        strategy_lib.read_tf_config({"TF_CONFIG": "{cluster"})


@pytest.mark.parametrize(
    "config, chief",
    [
        pytest.param({}, True, id="no-tf-config"),
        pytest.param(tf_config(CLUSTER, "chief"), True, id="chief"),
        pytest.param(tf_config(CLUSTER, "worker", 0), False,
                     id="worker-0-beside-a-chief"),
        pytest.param(tf_config({"worker": ["a:1", "a:2"]}, "worker", 0),
                     True, id="worker-0-without-chief"),
        pytest.param(tf_config({"worker": ["a:1", "a:2"]}, "worker", 1),
                     False, id="worker-1"),
    ],
)
def test_is_chief(config, chief):
    assert strategy_lib.is_chief(config) is chief


def test_unknown_strategy_is_a_config_error():
    with pytest.raises(config_lib.ConfigError, match="cluster.strategy"):
        config_lib.load_config("tiny", ["cluster.strategy=horovod"])


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_task_is_named_within_the_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    up = f"127.0.0.1:{listener.getsockname()[1]}"
    down = f"127.0.0.1:{closed_port()}"
    cluster = {"chief": ["127.0.0.1:9"], "worker": [up, down],
               "ps": [up]}
    began = time.monotonic()
    try:
        with pytest.raises(ClusterError) as e:
            strategy_lib.wait_for_cluster(tf_config(cluster, "chief"), 1.0)
    finally:
        listener.close()
    assert time.monotonic() - began < 10
    assert f"worker:1 at {down}" in str(e.value)
    assert "worker:0" not in str(e.value) and "ps:0" not in str(e.value)


def test_parameter_server_with_unreachable_tasks_fails_in_bounded_time():
    cluster = {"chief": [f"127.0.0.1:{closed_port()}"],
               "worker": [f"127.0.0.1:{closed_port()}"],
               "ps": [f"127.0.0.1:{closed_port()}"]}
    env = {"TF_CONFIG": json.dumps(tf_config(cluster, "chief"))}
    settings = ClusterSettings("parameter_server", timeout_s=1.0)
    began = time.monotonic()
    with pytest.raises(ClusterError, match="ps:0 at 127.0.0.1"):
        strategy_lib.make_strategy(settings, environ=env)
    assert time.monotonic() - began < 10


MWMS_JOIN = """
import sys
import hisac_tf
from hisac_tf.distribute import strategy
try:
    strategy.make_strategy(strategy.ClusterSettings(
        "multi_worker_mirrored", timeout_s=3))
except strategy.ClusterError as e:
    print(e)
    sys.exit(7)
"""


@pytest.mark.slow
def test_multi_worker_mirrored_names_a_worker_that_never_joins():
    own, missing = local_cluster.free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{own}", f"127.0.0.1:{missing}"]}
    env = dict(os.environ, PYTHONPATH=ROOT,
               TF_CONFIG=json.dumps(tf_config(cluster, "worker", 0)))
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", MWMS_JOIN], env=env,
                          capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    # TF blocks uninterruptibly while a peer is missing: the watchdog
    # names it and ends the process.
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert f"worker:1 at 127.0.0.1:{missing}" in done.stderr
    assert "did not all join within 3 s" in done.stderr
    assert time.monotonic() - began < 120


# ------------------------------------------------------------ the loss
@pytest.mark.slow
def test_fit_runs_under_a_strategy_with_the_same_loss():
    """A Keras loss with AUTO reduction raised inside a strategy; the
    averaged loss is the plain mean over valid candidates in one process.
    """
    batch = random_batch()
    model = build_model(CFG, SPEC, random_tables())
    logits = model(batch, training=False)
    valid = tf.sequence_mask(batch["cand_count"], tf.shape(logits)[1])
    want = tf.reduce_mean(tf.keras.losses.binary_crossentropy(
        tf.boolean_mask(batch["labels"], valid)[:, None],
        tf.boolean_mask(logits, valid)[:, None], from_logits=True))
    got = model.compute_loss(batch, training=False)
    assert float(got) == pytest.approx(float(want), rel=1e-6)

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0"])
    with mirrored.scope():
        model = build_model(CFG, SPEC, random_tables())
        model(batch)
        compile_for_training(model, build_optimizer(CFG, model))
    history = model.fit(tf.data.Dataset.from_tensors(batch).repeat(),
                        epochs=1, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


# ------------------------------------------------------------ launcher
def test_launcher_stops_every_task_when_one_fails(tmp_path):
    script = (
        "import json, os, sys, time\n"
        "task = json.loads(os.environ['TF_CONFIG'])['task']\n"
        "open(os.path.join(sys.argv[1], f\"{task['type']}-"
        "{task['index']}\"), 'w').write(str(os.getpid()))\n"
        "print('up', flush=True)\n"
        "if task == {'type': 'worker', 'index': 1}:\n"
        "    time.sleep(1); sys.exit(3)\n"
        "time.sleep(600)\n"
    )
    out = io.StringIO()
    began = time.monotonic()
    code = local_cluster.run_local_cluster(
        [sys.executable, "-c", script, str(tmp_path)], num_workers=2,
        num_ps=2, timeout_s=120, sink=out, grace_s=2)
    assert code == 3
    assert time.monotonic() - began < 60
    pids = [int(p.read_text()) for p in tmp_path.iterdir()]
    assert len(pids) == 5  # chief, 2 workers, 2 PS
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    text = out.getvalue()
    assert "[worker:1] up" in text and "[ps:0] up" in text
    assert "worker:1 exited with code 3; stopping every task" in text


def test_launcher_returns_the_job_code_and_times_out(tmp_path):
    ok = local_cluster.run_local_cluster(
        [sys.executable, "-c", "print('done')"], num_workers=2,
        sink=io.StringIO())
    assert ok == 0
    out = io.StringIO()
    late = local_cluster.run_local_cluster(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        num_workers=1, timeout_s=1, sink=out, grace_s=1)
    assert late == 124 and "ran past 1 s" in out.getvalue()


def test_cluster_spec_gives_distinct_loopback_ports():
    cluster = local_cluster.cluster_spec(2, 2)
    addresses = [a for kind in cluster.values() for a in kind]
    assert sorted(cluster) == ["chief", "ps", "worker"]
    assert len(set(addresses)) == 5
    assert all(a.startswith("127.0.0.1:") for a in addresses)
    assert "chief" not in local_cluster.cluster_spec(2, 0)


# ------------------------------------------------------------ tiny runs
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("dist"))
    cfg = config_lib.load_config("tiny", [
        f"data.data_dir={root}/data",
        f"tokenizer.output_dir={root}/tokenizer",
    ])
    synthetic.generate(cfg, progress=False)
    tokenize_items.main(cfg, progress=False)
    return root


def overrides(root, model_dir, strategy, steps, every):
    return [
        f"data.data_dir={root}/data",
        f"tokenizer.output_dir={root}/tokenizer",
        f"training.model_dir={model_dir}",
        f"export.export_dir={model_dir}-export",
        "training.mode=train",
        f"cluster.strategy={strategy}",
        f"training.train_steps={steps}",
        f"training.checkpoint_every={every}",
        f"training.log_every={every}",
        # tiny's smallest tables (SID levels) are 160 bytes.
        "cluster.ps_min_shard_bytes=64",
        "cluster.timeout_s=60",
        "training.dense_learning_rate=0.01",
        "training.embedding_learning_rate=0.05",
    ]


def record_ids(files, spec, **kwargs):
    ds = input_pipeline.request_dataset(files, spec, 4, **kwargs)
    return sorted(
        int(u) * 10_000 + int(t)
        for b in ds for u, t in zip(b["user_id"].numpy(),
                                    b["request_time"].numpy()))


@pytest.mark.slow
@pytest.mark.parametrize("num_files", [
    pytest.param(2, id="by-file"), pytest.param(1, id="by-record")])
def test_workers_read_disjoint_parts_of_the_data(prepared, num_files):
    files = sorted(glob.glob(f"{prepared}/data/train-*"))[:num_files]
    cfg = config_lib.load_config("tiny", [f"data.data_dir={prepared}/data"])
    spec = FeatureSpec.from_config(cfg.data)
    everything = record_ids(files, spec, deterministic=True)
    parts = [record_ids(files, spec, num_shards=2, shard_index=i,
                        shuffle_buffer=8, seed=3)
             for i in range(2)]
    assert parts[0] and parts[1]
    assert sorted(parts[0] + parts[1]) == everything
    # Deterministic mode still gives one order.
    again = [record_ids(files, spec, num_shards=2, shard_index=0,
                        deterministic=True, shuffle_buffer=8, seed=3)
             for _ in range(2)]
    assert again[0] == again[1]
    with pytest.raises(ValueError, match="shard_index"):
        input_pipeline.request_dataset(files, spec, 4, num_shards=2,
                                       shard_index=2)


def train_command(root, model_dir, strategy, steps, every):
    return [sys.executable, "-m", "pipelines.train", "--config=tiny"] + [
        f"--set={o}" for o in overrides(root, model_dir, strategy, steps,
                                        every)]


def run_cluster(command, workers, ps, kill=None, restart_workers=0):
    """(code, log) of a local cluster; `kill` = (path, task name): SIGKILL
    that task once `path` exists."""
    cluster = local_cluster.cluster_spec(workers, ps)
    out = io.StringIO()
    env = dict(os.environ, PYTHONPATH=ROOT)
    tasks = local_cluster.start_tasks(command, cluster, env=env, sink=out,
                                      cwd=ROOT)
    if kill:
        path, name = kill
        victim = next(t for t in tasks if t.name == name)

        def killer():
            deadline = time.monotonic() + 240
            while not os.path.exists(path) and time.monotonic() < deadline:
                time.sleep(0.05)
            os.killpg(victim.process.pid, signal.SIGKILL)

        threading.Thread(target=killer, daemon=True).start()
    code = local_cluster.supervise(tasks, timeout_s=300, sink=out,
                                   grace_s=3, poll_s=0.05,
                                   restart_workers=restart_workers)
    return code, out.getvalue()


def checkpoint_values(path):
    return {name: tf.train.load_checkpoint(path).get_tensor(name)
            for name, _ in tf.train.list_variables(path)
            if name.startswith("model/")}


@pytest.mark.slow
def test_multi_worker_mirrored_fails_on_a_killed_worker_then_resumes(
        prepared):
    model_dir = f"{prepared}/mwms"
    # Killed after its first checkpoint: the job fails and says which task.
    code, log = run_cluster(
        train_command(prepared, model_dir, "multi_worker_mirrored", 40, 2),
        workers=2, ps=0,
        kill=(f"{model_dir}/checkpoints/ckpt-2.index", "worker:1"))
    assert code != 0, log[-3000:]
    assert "worker:1 exited with code -9; stopping every task" in log
    last = int(tf.train.latest_checkpoint(f"{model_dir}/checkpoints")
               .rsplit("-", 1)[1])
    assert 2 <= last < 40
    # The restart resumes from that checkpoint on both workers.
    code, log = run_cluster(
        train_command(prepared, model_dir, "multi_worker_mirrored",
                      last + 2, 2), workers=2, ps=0)
    assert code == 0, log[-3000:]
    assert log.count(f"resumed from {model_dir}/checkpoints/ckpt-{last}") \
        == 2
    with open(f"{model_dir}/train_results.json") as f:
        results = json.load(f)["train"]
    assert results["resumed_at"] == last and results["step"] == last + 2
    # After the same steps every worker holds the same weights.
    chief = checkpoint_values(f"{model_dir}/checkpoints/ckpt-{last + 2}")
    other = checkpoint_values(
        f"{model_dir}/workers/worker-1/checkpoints/ckpt-{last + 2}")
    assert chief.keys() == other.keys() and len(chief) > 20
    for name, value in chief.items():
        np.testing.assert_array_equal(value, other[name], err_msg=name)


def mean_log_loss(cfg, checkpoint):
    state, status = restore_checkpoint(cfg, checkpoint)
    files = sorted(glob.glob(f"{cfg.data.data_dir}/train-*"))
    ds = input_pipeline.request_dataset(files, state.spec, 16,
                                        deterministic=True)
    losses = [float(state.model.compute_loss(b, training=False))
              for b in ds]
    status.assert_existing_objects_matched()
    return float(np.mean(losses))


@pytest.mark.slow
def test_parameter_server_splits_tables_and_crosses_topologies(prepared):
    model_dir = f"{prepared}/ps"
    # One process first: the cluster resumes from its checkpoint.
    single = config_lib.load_config(
        "tiny", overrides(prepared, model_dir, "default", 2, 2))
    train.main(single, progress=False)
    cfg = config_lib.load_config(
        "tiny", overrides(prepared, model_dir, "default", 14, 4))
    before = mean_log_loss(cfg, f"{model_dir}/checkpoints/ckpt-2")
    code, log = run_cluster(
        train_command(prepared, model_dir, "parameter_server", 14, 4),
        workers=2, ps=2, restart_workers=1,
        kill=(f"{model_dir}/checkpoints/ckpt-4.index", "worker:1"))
    assert code == 0, log[-3000:]
    assert f"resumed from {model_dir}/checkpoints/ckpt-2" in log
    # The killed worker came back and the coordinator went on.
    assert "worker:1 exited with code -9; starting it again" in log
    with open(f"{model_dir}/train_results.json") as f:
        assert json.load(f)["train"]["step"] == 14
    # Each trainable embedding table is split across both PS.
    with open(f"{model_dir}/placement.json") as f:
        placement = json.load(f)
    tables = {name: devices for name, devices in placement.items()
              if name.endswith("/embeddings")}
    assert {"item_embedding", "category_embedding", "user_embedding",
            "sid_level_0", "sid_level_1"} <= {
                name.split("/")[-2] for name in tables}, sorted(placement)
    for name, devices in tables.items():
        tasks = sorted(d.split("/task:")[1].split("/")[0] for d in devices)
        assert tasks == ["0", "1"], (name, devices)
    # The frozen semantic tables are whole, on one PS.
    assert len(placement["latents"]) == 1
    # The loss went down (scored in one process, on the train records).
    after = mean_log_loss(cfg, f"{model_dir}/checkpoints/ckpt-14")
    assert after < before
    # The export serves what a single-process restore scores.
    summary = exporter.export_model(cfg, progress=False)
    spec, model, step, _, _ = exporter.restore(cfg)
    assert step == 14
    names = tuple(spec.input_signature())
    batch = exporter.first_batch(cfg, spec, 8)
    loaded = tf.saved_model.load(summary["path"])
    served = loaded.signatures[sig.SERVING_DEFAULT](
        **{k: batch[k] for k in names})[sig.CTR].numpy()
    probs = tf.sigmoid(model({k: batch[k] for k in names})).numpy()
    valid = np.arange(probs.shape[1])[None] < batch["cand_count"].numpy()[
        :, None]
    np.testing.assert_allclose(served, np.where(valid, probs, 0), atol=1e-5)
    # Partitioned variables are merged: one variable per table.
    saved = [n for n, _ in tf.train.list_variables(
        os.path.join(summary["path"], "variables", "variables"))]
    assert saved and not [n for n in saved if "part_" in n]
