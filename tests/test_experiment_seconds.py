"""Honest experiment timings: a run's seconds survive an interruption.

A run interrupted (an error, Ctrl-C) leaves its seconds so far in its
model dir; resumed, its row's "seconds" is those plus the resumed
invocation's, so results.json counts every run's own time.
"""

from __future__ import annotations

import json

import pytest

from hisac_tf.config import Config
from hisac_tf.experiments.plan_schema import ExperimentRun
from hisac_tf.experiments import runner
from hisac_tf.layers.routing_diagnostics import ROUTING_KEYS


class FakeClock:
    """time.time() that advances `step` seconds per call."""

    def __init__(self, step: float):
        self.now, self.step = 1000.0, step

    def time(self) -> float:
        self.now += self.step
        return self.now


def _fakes(monkeypatch, clock, train):
    monkeypatch.setattr(runner, "time", clock)
    monkeypatch.setattr(runner, "train", train)
    monkeypatch.setattr(runner, "evaluate", lambda cfg, progress: {
        "auc": 0.6, "gauc": 0.6, "log_loss": 0.6, "impressions": 10,
        "checkpoint": "ckpt-1"})
    monkeypatch.setattr(runner, "diagnose", lambda cfg, checkpoint: {
        "groups": 1, "parameters": 1, "compressor_parameters": 1,
        "active_mean": 1.0, "active_max": 1, "checkpoint": checkpoint,
        **{k: None for k in ROUTING_KEYS}})
    monkeypatch.setattr(runner, "config_flops", lambda cfg: {
        "user": 1, "per_candidate": 1, "request": 1})


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError],
                         ids=["ctrl-c", "error"])
def test_resumed_run_counts_the_interrupted_invocation(
        tmp_path, monkeypatch, interruption):
    base = Config().replace(training={"model_dir": str(tmp_path)})
    run = ExperimentRun(name="a", compressor="hisac", lengths=(10,))

    def broken(cfg, progress):
        raise interruption("stopped")

    _fakes(monkeypatch, FakeClock(7.0), broken)
    with pytest.raises(interruption):
        runner.run_one(base, run, 10)
    saved = json.loads((tmp_path / "a-N10" / runner.SECONDS_FILE)
                       .read_text())
    assert saved == {"seconds": 7.0}  # began, then the failure: one step.

    _fakes(monkeypatch, FakeClock(3.0),
           lambda cfg, progress: {"step": 10, "seconds": 1.0})
    row = runner.run_one(base, run, 10)
    assert row["seconds_this_invocation"] == pytest.approx(3.0)
    assert row["seconds"] == pytest.approx(7.0 + 3.0)


def test_an_unreadable_seconds_file_warns_and_counts_nothing(tmp_path,
                                                             capsys):
    (tmp_path / runner.SECONDS_FILE).write_text('{"seconds": "soon"}')
    assert runner.seconds_before(str(tmp_path)) == 0.0
    assert "expected a number" in capsys.readouterr().err


def test_a_run_never_interrupted_has_no_seconds_before(tmp_path):
    assert runner.seconds_before(str(tmp_path / "fresh")) == 0.0


def test_a_finished_run_folds_the_seconds_into_its_row(tmp_path,
                                                       monkeypatch):
    base = Config().replace(training={"model_dir": str(tmp_path)})
    run = ExperimentRun(name="a", compressor="hisac", lengths=(10,))
    (tmp_path / "a-N10").mkdir()
    (tmp_path / "a-N10" / runner.SECONDS_FILE).write_text(
        '{"seconds": 5.0}')
    _fakes(monkeypatch, FakeClock(2.0),
           lambda cfg, progress: {"step": 10, "seconds": 1.0})
    row = runner.run_one(base, run, 10)
    assert row["seconds"] == pytest.approx(5.0 + 2.0)
    assert not (tmp_path / "a-N10" / runner.SECONDS_FILE).exists()
    saved = json.loads((tmp_path / "a-N10" / runner.ROW_FILE).read_text())
    assert saved["row"]["seconds"] == pytest.approx(7.0)
