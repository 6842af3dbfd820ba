"""The `tf.distribute` strategy named by `training.strategy`, from TF_CONFIG.

One process or a cluster is a matter of `training.strategy` and the
`TF_CONFIG` environment variable only; the model code is the same
(docs/distributed.md):

- `default`: one device.
- `mirrored`: every local GPU (`MirroredStrategy`); TF_CONFIG must not
  describe a cluster.
- `multi_worker_mirrored` (`multi_worker` is an alias): synchronous data
  parallelism over the `worker` (and `chief`) tasks of TF_CONFIG
  (`MultiWorkerMirroredStrategy`); every variable is replicated and the
  gradients are all-reduced.
- `parameter_server`: the chief task coordinates, `worker` tasks run the
  steps, `ps` tasks hold the variables (`ParameterServerStrategy`). The
  trainable embedding tables (Keras `Embedding` weights: item, category,
  user, user features, SID) are split along their rows across the PS by
  `TablePartitioner` (`training.ps_shards` shards, default one per PS,
  none smaller than `training.ps_min_shard_bytes`). Every other variable
  (dense weights, the frozen semantic tables, metrics, the step) is kept
  whole on one PS, placed round-robin. The frozen semantic tables are not
  split because the lookup binary-searches the whole sorted id column
  (`SemanticIdLookup`), which a split table would have to gather back on
  every step; they are read-only, so they cost no gradient or optimizer
  traffic (docs/distributed.md, "The frozen semantic tables").
  Worker and PS tasks only serve (`serve_forever`); the chief trains.

Faults: a TF_CONFIG that does not fit the strategy raises `ClusterError`
naming the field or task; a task that cannot be reached within
`training.cluster_timeout_s` raises `ClusterError` naming the task and
its address, rather than waiting forever.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf
# MultiWorkerMirroredStrategy waits for every worker twice with no limit by
# default: the coordination service's registration, and the first
# all-reduce (`_check_health_initial_timeout`, 0: forever). The public API
# has no setting for either, so `_multi_worker` sets both from
# training.cluster_timeout_s through these modules.
from tensorflow.tsl.protobuf import coordination_config_pb2
from tensorflow.python.distribute import collective_all_reduce_strategy
from tensorflow.python.distribute import multi_worker_util
from tensorflow.python.eager import context as eager_context

from hisac_tf.config import STRATEGIES  # (one list, TF-free)
from hisac_tf.config import STRATEGY_ALIASES as ALIASES

# Task types of TF_CONFIG each cluster strategy accepts.
TASK_TYPES = {
    "multi_worker_mirrored": ("chief", "worker"),
    "parameter_server": ("chief", "worker", "ps"),
}


class ClusterError(RuntimeError):
    """A TF_CONFIG that does not fit the strategy, or a task not reached."""


@dataclasses.dataclass(frozen=True)
class ClusterSettings:
    """What the strategies read from `training` (plain values)."""

    strategy: str = "default"
    ps_shards: int = 0  # 0: one shard per PS task
    ps_min_shard_bytes: int = 1 << 20
    cluster_timeout_s: float = 120.0

    @classmethod
    def from_config(cls, training) -> "ClusterSettings":
        return cls(
            strategy=canonical(training.strategy),
            ps_shards=int(getattr(training, "ps_shards", 0)),
            ps_min_shard_bytes=int(
                getattr(training, "ps_min_shard_bytes", 1 << 20)),
            cluster_timeout_s=float(
                getattr(training, "cluster_timeout_s", 120.0)),
        )


def canonical(name: str) -> str:
    """The strategy's name with aliases resolved; ValueError if unknown."""
    name = ALIASES.get(name, name)
    if name not in STRATEGIES:
        raise ValueError(
            f"training.strategy {name!r} is not supported (choose from "
            f"{', '.join(STRATEGIES)})"
        )
    return name


def read_tf_config(environ=None) -> dict:
    """TF_CONFIG as a dict ({} when unset); ClusterError when malformed."""
    text = (environ if environ is not None else os.environ).get(
        "TF_CONFIG", "")
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ClusterError(f"TF_CONFIG is not JSON ({e}): {text[:200]!r}")
    if not isinstance(value, dict):
        raise ClusterError(f"TF_CONFIG must be a JSON object, got {text!r}")
    return value


def task_of(tf_config: dict) -> tuple[str, int]:
    """(task type, index) of this process; ("chief", 0) without TF_CONFIG."""
    task = tf_config.get("task") or {}
    return str(task.get("type", "chief")), int(task.get("index", 0))


def is_chief(tf_config: dict | None = None) -> bool:
    """Whether this process writes the run's files (checkpoints, config,
    summaries): the chief, or worker 0 of a cluster without a chief."""
    tf_config = read_tf_config() if tf_config is None else tf_config
    cluster = tf_config.get("cluster") or {}
    kind, index = task_of(tf_config)
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in cluster


def cluster_size(tf_config: dict) -> int:
    return sum(len(v) for v in (tf_config.get("cluster") or {}).values())


def check_tf_config(strategy: str, tf_config: dict) -> None:
    """Raises ClusterError when TF_CONFIG does not fit `strategy`."""
    cluster = tf_config.get("cluster") or {}
    if strategy in ("default", "mirrored"):
        if cluster_size(tf_config) > 1:
            raise ClusterError(
                f"TF_CONFIG describes a cluster ({describe(cluster)}) but "
                f"training.strategy is {strategy!r}: use "
                "multi_worker_mirrored or parameter_server, or unset "
                "TF_CONFIG"
            )
        return
    if not isinstance(cluster, dict):
        raise ClusterError(f"TF_CONFIG cluster must be an object: {cluster!r}")
    allowed = TASK_TYPES[strategy]
    for kind, addresses in cluster.items():
        if kind not in allowed:
            raise ClusterError(
                f"TF_CONFIG has {kind!r} tasks, which training.strategy "
                f"{strategy!r} does not use (it takes {', '.join(allowed)})"
            )
        if not isinstance(addresses, list) or not addresses:
            raise ClusterError(
                f"TF_CONFIG cluster.{kind} must be a non-empty list of "
                f"host:port, got {addresses!r}"
            )
    kind, index = task_of(tf_config)
    if cluster and index >= len(cluster.get(kind, [])):
        raise ClusterError(
            f"TF_CONFIG task {kind}:{index} is not in the cluster "
            f"({describe(cluster)})"
        )
    if strategy == "parameter_server":
        for needed in ("chief", "worker", "ps"):
            if not cluster.get(needed):
                raise ClusterError(
                    "training.strategy 'parameter_server' needs 'chief', "
                    f"'worker' and 'ps' tasks in TF_CONFIG; {needed!r} is "
                    f"missing ({describe(cluster) or 'no TF_CONFIG'})"
                )
        if len(cluster["chief"]) != 1:
            raise ClusterError(
                "TF_CONFIG must have exactly one 'chief' task under "
                f"parameter_server, got {len(cluster['chief'])}"
            )


def describe(cluster: dict) -> str:
    return ", ".join(f"{len(v)} {k}" for k, v in sorted(cluster.items()))


def unreachable(tf_config: dict, timeout_s: float,
                skip_self: bool = True) -> list[str]:
    """The tasks ("worker:1 at host:port") whose port does not accept a TCP
    connection within `timeout_s` (probed in turn until the deadline)."""
    own = task_of(tf_config)
    pending = []
    for kind, addresses in sorted((tf_config.get("cluster") or {}).items()):
        for index, address in enumerate(addresses):
            if skip_self and (kind, index) == own:
                continue
            pending.append((kind, index, address))
    deadline = time.monotonic() + timeout_s
    while pending:
        pending = [t for t in pending if not _accepts(t[2])]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    return [f"{k}:{i} at {a}" for k, i, a in pending]


def _accepts(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), 1.0):
            return True
    except (OSError, ValueError):
        return False


def wait_for_cluster(tf_config: dict, timeout_s: float) -> None:
    """Raises ClusterError naming every task not reached in `timeout_s`."""
    missing = unreachable(tf_config, timeout_s)
    if missing:
        raise ClusterError(
            f"{len(missing)} task(s) of TF_CONFIG not reachable after "
            f"{timeout_s:g} s (training.cluster_timeout_s): "
            + "; ".join(missing)
        )


# ------------------------------------------------------------ partitioner
_PARTITION = threading.local()


class TablePartitioner:
    """Splits embedding tables along rows across the PS.

    `MinSizePartitioner(min_shard_bytes, max_shards=num_shards)` on the
    variables created inside `table_partitioning()` with the name
    "embeddings" (Keras `Embedding` tables) that are trainable; one shard
    (no split) for every other variable.
    """

    def __init__(self, num_shards: int, min_shard_bytes: int):
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self.num_shards = num_shards
        self.inner = tf.distribute.experimental.partitioners.\
            MinSizePartitioner(min_shard_bytes=max(1, min_shard_bytes),
                               max_shards=num_shards)

    def __call__(self, shape, dtype, axis=0):
        if not getattr(_PARTITION, "table", False):
            return [1] * len(shape)
        return self.inner(shape, dtype, axis)


@contextlib.contextmanager
def table_partitioning():
    """Marks the Keras embedding tables created inside for `TablePartitioner`
    (enter it inside `strategy.scope()`; harmless under other strategies)."""

    def creator(next_creator, **kwargs):
        name = str(kwargs.get("name") or "")
        table = (kwargs.get("trainable", True) is not False
                 and name.split("/")[-1].split(":")[0] == "embeddings")
        before = getattr(_PARTITION, "table", False)
        _PARTITION.table = table
        try:
            return next_creator(**kwargs)
        finally:
            _PARTITION.table = before

    with tf.variable_creator_scope(creator):
        yield


def num_ps(tf_config: dict) -> int:
    return len((tf_config.get("cluster") or {}).get("ps", []))


# ---------------------------------------------------------------- strategy
def is_server_task(settings: ClusterSettings, tf_config: dict) -> bool:
    """A worker or PS task of `parameter_server`: it serves, not trains."""
    return (settings.strategy == "parameter_server"
            and task_of(tf_config)[0] in ("worker", "ps"))


def serve_forever(tf_config: dict) -> None:
    """Runs this worker or PS task's server until the process is stopped."""
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    server = tf.distribute.Server(
        resolver.cluster_spec(),
        job_name=resolver.task_type,
        task_index=resolver.task_id,
        protocol=resolver.rpc_layer or "grpc",
        start=True,
    )
    kind, index = task_of(tf_config)
    print(f"{kind}:{index} serving at "
          f"{tf_config['cluster'][kind][index]}", flush=True)
    server.join()


def make_strategy(settings: ClusterSettings | str,
                  environ=None) -> tf.distribute.Strategy:
    """The distribution strategy of `settings` (or a strategy name), with
    TF_CONFIG checked against it first."""
    if isinstance(settings, str):
        settings = ClusterSettings(strategy=canonical(settings))
    name = canonical(settings.strategy)
    tf_config = read_tf_config(environ)
    check_tf_config(name, tf_config)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        return _multi_worker(settings, tf_config)
    return _parameter_server(settings, tf_config)


def _multi_worker(settings: ClusterSettings, tf_config: dict):
    extended = collective_all_reduce_strategy.CollectiveAllReduceExtended
    timeout = max(1, int(settings.cluster_timeout_s))
    extended._check_health_initial_timeout = timeout
    # A worker that dies is noticed within about 5 + 3 x 5 s and the
    # collectives abort with UnavailableError instead of hanging. (No
    # timeout on the collectives themselves: a slow step or a long save
    # on one worker is not a fault.)
    extended._check_health_interval = 5
    extended._check_health_timeout = 5
    cluster = tf_config.get("cluster") or {}
    if cluster_size(tf_config) > 1 and (
            eager_context.context().coordination_service is None):
        spec = tf.train.ClusterSpec(cluster)
        eager_context.context().configure_coordination_service(
            service_type="standalone",
            service_leader=multi_worker_util.coordination_leader(spec),
            cluster_register_timeout_in_ms=timeout * 1000,
            coordinated_jobs=[
                coordination_config_pb2.CoordinatedJob(
                    name=job, num_tasks=len(cluster[job]))
                for job in ("chief", "worker") if job in cluster
            ],
        )
    # Creating the remote context blocks in C++, holding the GIL, until
    # every peer answers: past the timeout a watchdog process names the
    # missing tasks and ends this one (SIGKILL: it ignores SIGTERM then).
    watchdog = subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, str(os.getpid()), str(timeout),
         json.dumps(tf_config)],
        stdin=subprocess.PIPE,
    )
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, tf.errors.OpError) as e:
        if isinstance(e, RuntimeError) and (
                "Timeout waiting for the cluster" not in str(e)):
            raise
        missing = unreachable(tf_config, 1.0) or ["(every port answers)"]
        raise ClusterError(
            f"the workers did not all join within {timeout} s "
            "(training.cluster_timeout_s); not reachable: "
            + "; ".join(missing)
        ) from e


    finally:
        watchdog.stdin.close()  # built or failed: the watchdog stands down
        watchdog.wait()


WATCHDOG = """
import json, os, select, signal, socket, sys
pid, timeout, tf_config = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ready, _, _ = select.select([sys.stdin], [], [], timeout)
if ready:
    sys.exit(0)
config = json.loads(tf_config)
own = (config["task"]["type"], int(config["task"]["index"]))
missing = []
for kind, addresses in sorted(config["cluster"].items()):
    for index, address in enumerate(addresses):
        if (kind, index) == own:
            continue
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), 1).close()
        except OSError:
            missing.append(f"{kind}:{index} at {address}")
print("ClusterError: the workers did not all join within %g s "
      "(training.cluster_timeout_s); not reachable: %s"
      % (timeout, "; ".join(missing) or "(every port answers)"),
      file=sys.stderr, flush=True)
os.kill(pid, signal.SIGKILL)  # SIGTERM is not acted on while blocked
"""


def _parameter_server(settings: ClusterSettings, tf_config: dict):
    wait_for_cluster(tf_config, settings.cluster_timeout_s)
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    shards = settings.ps_shards or num_ps(tf_config)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return tf.distribute.experimental.ParameterServerStrategy(
        resolver,
        variable_partitioner=TablePartitioner(
            shards, settings.ps_min_shard_bytes),
    )


def is_parameter_server(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(
        strategy, tf.distribute.experimental.ParameterServerStrategy)


def placement(model: tf.keras.Model) -> dict:
    """{variable name: [device of each shard]} of the model's weights; the
    shards of a split table ("<name>/part_<i>") are listed under <name>."""
    out: dict[str, list[str]] = {}
    for var in model.weights:
        name = var.name.split(":")[0]
        base, sep, part = name.rpartition("/part_")
        key = base if sep and part.isdigit() else name
        out.setdefault(key, []).append(var.device)
    return out
