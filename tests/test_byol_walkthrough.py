"""The README's "Bring your own log" walkthrough, run as written.

The shell block after `<!-- byol-walkthrough -->` is read from README.md
(so the README cannot rot), its sizes line is set to the tiny preset and a
free port, `.venv/bin/` becomes a directory of shims running this
checkout's console scripts (setup.py's entry points) with this Python, and
the block runs under `bash -e`: generate raw log -> inspect --raw ->
import -> tokenize -> train -> evaluate -> export -> serve and score over
gRPC.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- byol-walkthrough -->"
SIZES = re.compile(r"^PRESET=\S+ USERS=\d+ PORT=\d+ RUN=\S+$", re.M)


def walkthrough_block(readme: str) -> str:
    """The ```sh block right after the marker."""
    after = readme.split(MARKER, 1)
    if len(after) != 2:
        raise AssertionError(f"README.md has no {MARKER!r}")
    match = re.match(r"\s*```sh\n(.*?)\n```", after[1], re.S)
    if not match:
        raise AssertionError(f"no ```sh block right after {MARKER!r}")
    return match.group(1)


def entry_points() -> dict[str, str]:
    """Console script name -> "module:function" from setup.py."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    scripts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = re.fullmatch(r"(hisac-[\w-]+)=([\w.]+):(\w+)", node.value)
            if m:
                scripts[m.group(1)] = f"{m.group(2)}:{m.group(3)}"
    return scripts


def write_shims(directory: Path) -> None:
    """One executable per console script, running it with this Python."""
    directory.mkdir()
    for name, target in entry_points().items():
        module, func = target.split(":")
        path = directory / name
        path.write_text(
            f"#!/bin/sh\nexec {sys.executable} -c 'import sys; "
            f"from {module} import {func}; sys.exit({func}())' \"$@\"\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_block_has_the_sizes_line_and_every_stage():
    block = walkthrough_block((ROOT / "README.md").read_text())
    assert len(SIZES.findall(block)) == 1, "sizes line changed"
    for job in ("hisac-generate", "hisac-inspect", "hisac-import",
                "hisac-tokenize", "hisac-train", "hisac-evaluate",
                "hisac-export", "hisac-serve", "hisac-score"):
        assert f".venv/bin/{job} " in block, job
        assert job in entry_points(), job


@pytest.mark.slow
def test_readme_walkthrough_runs_on_a_tiny_log(tmp_path):
    block = walkthrough_block((ROOT / "README.md").read_text())
    run_dir = tmp_path / "byol"
    script = SIZES.sub(
        f"PRESET=tiny USERS=40 PORT={free_port()} RUN={run_dir}", block)
    write_shims(tmp_path / "bin")
    script = script.replace(".venv/bin/", f"{tmp_path / 'bin'}/")
    env = {k: v for k, v in os.environ.items()
           if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.Popen(
        ["bash", "-e", "-c", script], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        try:  # The server, should the block have stopped before its trap.
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, out[-6000:]
    assert "request window" in out and "WARNINGS" in out  # import
    assert "window 3600 s:" in out  # inspect --raw
    assert "Unable to register" not in out  # quiet CPU logs
    scores = json.loads(out.strip().splitlines()[-1])
    assert scores["mode"] == "serving_default"
    assert len(scores["ctr"]) == 2
    assert all(0.0 < p < 1.0 for row in scores["ctr"] for p in row)
    evaluated = json.loads((run_dir / "model" / "eval.json").read_text())
    assert evaluated["impressions"] > 0
