"""A local cluster: chief, workers and PS as processes on loopback ports.

`run_local_cluster(command, num_workers, num_ps)` starts one process per
task of the cluster, each running `command` with its own `TF_CONFIG`
(the same cluster, its own task), prefixes every line of its output
with the task ("[worker:1] ...") and streams it, and stops them all
(SIGTERM, then SIGKILL after `grace_s`) when the job ends or one task
fails. It returns the job's exit code:

- with PS tasks (`parameter_server`): the job is the chief; workers and
  PS serve until stopped. The code is the chief's, or the first failing
  task's when a worker or PS dies before the chief ends.
- without (`multi_worker_mirrored`): the job is every worker; the code is
  0 when all exit 0, else the first non-zero code.

Ports are free loopback ports taken just before the start. `hisac-cluster`
(pipelines/cluster.py) is the command line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, Sequence, TextIO


@dataclasses.dataclass
class Task:
    kind: str
    index: int
    process: subprocess.Popen
    thread: threading.Thread
    start: Callable[[], tuple[subprocess.Popen, threading.Thread]]
    restarts: int = 0

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.index}"


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they
    differ, then released)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def cluster_spec(num_workers: int, num_ps: int,
                 chief: bool | None = None) -> dict:
    """{"chief": [...], "worker": [...], "ps": [...]} on loopback ports.

    A chief is added when there are PS tasks (it coordinates), unless
    `chief` says otherwise.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if num_ps < 0:
        raise ValueError(f"num_ps must be >= 0, got {num_ps}")
    chief = num_ps > 0 if chief is None else chief
    counts = {"chief": int(chief), "worker": num_workers, "ps": num_ps}
    ports = iter(free_ports(sum(counts.values())))
    return {
        kind: [f"127.0.0.1:{next(ports)}" for _ in range(n)]
        for kind, n in counts.items() if n
    }


def tf_config(cluster: dict, kind: str, index: int) -> str:
    return json.dumps(
        {"cluster": cluster, "task": {"type": kind, "index": index}})


def _stream(prefix: str, source, sink: TextIO, lock: threading.Lock):
    for line in iter(source.readline, ""):
        with lock:
            sink.write(f"[{prefix}] {line}")
            if not line.endswith("\n"):
                sink.write("\n")
            sink.flush()
    source.close()


def start_tasks(command: Sequence[str], cluster: dict,
                env: dict | None = None, sink: TextIO | None = None,
                cwd: str | None = None) -> list[Task]:
    """Starts one process per task of `cluster`; PS first, chief last."""
    sink = sink or sys.stdout
    lock = threading.Lock()
    tasks = []
    for kind in ("ps", "worker", "chief"):
        for index, _ in enumerate(cluster.get(kind, [])):
            task_env = dict(os.environ if env is None else env)
            task_env["TF_CONFIG"] = tf_config(cluster, kind, index)
            task_env.setdefault("PYTHONUNBUFFERED", "1")
            name = f"{kind}:{index}"

            def start(task_env=task_env, name=name):
                process = subprocess.Popen(
                    list(command), env=task_env, cwd=cwd,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    text=True, bufsize=1, start_new_session=True,
                )
                thread = threading.Thread(
                    target=_stream,
                    args=(name, process.stdout, sink, lock), daemon=True,
                )
                thread.start()
                return process, thread

            tasks.append(Task(kind, index, *start(), start=start))
    return tasks


def stop_tasks(tasks: Sequence[Task], grace_s: float = 5.0) -> None:
    """SIGTERM to every running task's process group, SIGKILL after
    `grace_s`; waits for all and for their log streams."""
    running = [t for t in tasks if t.process.poll() is None]
    for t in running:
        _signal(t.process, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for t in running:
        try:
            t.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(t.process, signal.SIGKILL)
            t.process.wait()
    for t in tasks:
        t.thread.join(timeout=2.0)


def _signal(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def supervise(tasks: Sequence[Task], timeout_s: float | None = None,
              sink: TextIO | None = None, grace_s: float = 5.0,
              poll_s: float = 0.2, restart_workers: int = 0) -> int:
    """Waits for the job of `tasks`; stops every task; the job's code.

    The job is the chief when there is one, else every worker. A task that
    exits non-zero before the job ends fails the job with its code; a
    timeout stops everything with code 124. With PS tasks and
    `restart_workers` > 0, a worker that dies is started again (up to that
    many times in all) as a cluster manager would restart its pod; the
    parameter-server coordinator moves its steps to the other workers and
    takes it back when it returns.
    """
    sink = sink or sys.stderr
    has_chief = any(t.kind == "chief" for t in tasks)
    has_ps = any(t.kind == "ps" for t in tasks)
    job = [t for t in tasks
           if t.kind == "chief" or (not has_chief and t.kind == "worker")]
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    restarts_left = restart_workers if has_ps else 0
    code = None
    try:
        while code is None:
            for t in tasks:
                rc = t.process.poll()
                if (rc is not None and t.kind == "worker" and has_ps
                        and restarts_left > 0 and job[0].process.poll()
                        is None):
                    restarts_left -= 1
                    t.restarts += 1
                    print(f"[cluster] {t.name} exited with code {rc}; "
                          "starting it again", file=sink, flush=True)
                    t.thread.join(timeout=2.0)
                    t.process, t.thread = t.start()
                    continue
                if rc not in (None, 0):
                    print(f"[cluster] {t.name} exited with code {rc}; "
                          "stopping every task", file=sink, flush=True)
                    code = rc
                    break
                if rc == 0 and t not in job:
                    print(f"[cluster] {t.name} (a server) exited early; "
                          "stopping every task", file=sink, flush=True)
                    code = 1
                    break
            else:
                if all(t.process.poll() == 0 for t in job):
                    code = 0
                elif deadline is not None and time.monotonic() > deadline:
                    print(f"[cluster] the job ran past {timeout_s:g} s; "
                          "stopping every task", file=sink, flush=True)
                    code = 124
                else:
                    time.sleep(poll_s)
    finally:
        stop_tasks(tasks, grace_s)
    return code


def run_local_cluster(command: Sequence[str], num_workers: int,
                      num_ps: int = 0, env: dict | None = None,
                      timeout_s: float | None = None,
                      sink: TextIO | None = None,
                      cwd: str | None = None,
                      grace_s: float = 5.0,
                      restart_workers: int = 0) -> int:
    """Starts the cluster's tasks running `command`; the job's exit code
    (see `supervise`)."""
    cluster = cluster_spec(num_workers, num_ps)
    sink = sink or sys.stdout
    print(f"[cluster] {json.dumps(cluster)}", file=sink, flush=True)
    tasks = start_tasks(command, cluster, env=env, sink=sink, cwd=cwd)
    return supervise(tasks, timeout_s=timeout_s, sink=sink, grace_s=grace_s,
                     restart_workers=restart_workers)
