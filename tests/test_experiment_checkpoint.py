"""An experiment row's AUC and diagnostics come from one checkpoint.

A run whose best checkpoint (by valid AUC) is not its latest: the row's
AUC is evaluate's, of the checkpoint `evaluation.checkpoint` names (the
best), and its routing diagnostics must be that model's too, not the
latest's (`runner.diagnose` once restored the latest).
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf.data import input_pipeline, synthetic
from hisac_tf.experiments import plan as plan_lib
from hisac_tf.experiments import runner
from hisac_tf.experiments.plan_schema import ExperimentRun
from hisac_tf.layers.routing_diagnostics import ROUTING_KEYS
from hisac_tf.models.hisac_ranker import HiSACRanker
from hisac_tf.tokenizer.semantic_tables import (
    SemanticTables,
    save_semantic_tables,
)
from hisac_tf.training.checkpoints import (
    best_manager,
    build_state,
    checkpoint_manager,
)

LENGTH = 10


def fake_tables(cfg) -> SemanticTables:
    """Random tables of every item of `cfg`'s synthetic world."""
    rng = np.random.default_rng(0)
    v, dim = cfg.synthetic.num_items, cfg.tokenizer.latent_dim
    sizes = cfg.tokenizer.codebook_sizes
    return SemanticTables(
        item_ids=np.arange(1, v + 1, dtype=np.int64),
        sids=np.stack([rng.integers(0, k, v) for k in sizes],
                      1).astype(np.int32),
        latents=rng.normal(size=(v, dim)).astype(np.float32),
        codebooks=tuple(rng.normal(size=(k, dim)).astype(np.float32)
                        for k in sizes),
    )


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A run dir holding a latest (step 4) and a best (step 2) checkpoint
    whose weights differ (best = latest + 0.5 everywhere)."""
    root = str(tmp_path_factory.mktemp("two_checkpoints"))
    base = config_lib.load_config("tiny", [
        f"data.data_dir={root}/data",
        f"tokenizer.output_dir={root}/tokenizer",
        f"training.model_dir={root}/models",
    ])
    synthetic.generate(base, progress=False)
    save_semantic_tables(fake_tables(base), base.tokenizer.output_dir)
    run = ExperimentRun(name="a", compressor=base.model.compressor,
                        lengths=(LENGTH,))
    run_cfg = plan_lib.run_config(base, run.compressor, LENGTH, run.name)
    state = build_state(run_cfg)
    files = sorted(tf.io.gfile.glob(
        os.path.join(run_cfg.data.data_dir, run_cfg.data.eval_pattern)))
    batch = next(iter(input_pipeline.request_dataset(
        files, state.spec, 4, compression=run_cfg.data.compression,
        deterministic=True)))
    state.model(batch, training=False)  # creates the variables
    state.step.assign(4)
    latest = checkpoint_manager(run_cfg, state.checkpoint,
                                state.step).save(checkpoint_number=4)
    for v in state.model.trainable_variables:
        v.assign_add(tf.fill(tf.shape(v), tf.cast(0.5, v.dtype)))
    state.step.assign(2)
    best = best_manager(run_cfg, state.checkpoint,
                        state.step).save(checkpoint_number=2)
    tf.keras.backend.clear_session()
    return base, run, run_cfg, latest, best


def weights_diagnostic(monkeypatch):
    """The ranker reports the sum of its weights as `off_sid_mass` ([B],
    a routing diagnostic), so a diagnostic tells which weights ran."""
    original = HiSACRanker.compress_user

    def compress_user(self, features, training=None, diagnostics=False):
        out = original(self, features, training=training)
        total = tf.add_n([tf.reduce_sum(tf.cast(v, tf.float32))
                          for v in self.trainable_variables])
        out["off_sid_mass"] = tf.fill(tf.shape(out["num_active"]),
                                      total)  # [B]
        return out

    monkeypatch.setattr(HiSACRanker, "compress_user", compress_user)


@pytest.mark.slow
def test_row_diagnostics_and_auc_come_from_the_same_checkpoint(
        two_checkpoints, monkeypatch):
    base, run, run_cfg, latest, best = two_checkpoints
    weights_diagnostic(monkeypatch)
    monkeypatch.setattr(runner, "train", lambda cfg, progress: {
        "step": 4, "seconds": 0.0})
    row = runner.run_one(base, run, LENGTH)
    with open(os.path.join(run_cfg.training.model_dir, "eval.json")) as f:
        evaluated = json.load(f)
    # The AUC is the best checkpoint's (evaluation.checkpoint "auto").
    assert evaluated["checkpoint"] == best
    assert (row["auc"], row["checkpoint"], row["checkpoint_kind"],
            row["checkpoint_step"]) == (evaluated["auc"], best, "best", 2)
    # ... and so are the diagnostics, which differ from the latest's.
    of_best = runner.diagnose(run_cfg, best)["off_sid_mass"]
    of_latest = runner.diagnose(run_cfg, latest)["off_sid_mass"]
    assert of_best != pytest.approx(of_latest)
    assert row["off_sid_mass"] == pytest.approx(of_best)


@pytest.mark.parametrize("kind", ["best", "latest"])
def test_run_one_diagnoses_the_checkpoint_evaluate_scored(
        tmp_path, monkeypatch, kind):
    """Without a model: whatever checkpoint evaluate reports, diagnose
    restores that one and the row names it."""
    checkpoint = str(tmp_path / "m" / kind / "ckpt-3")
    diagnosed = []

    def diagnose(cfg, path):
        diagnosed.append(path)
        return {"groups": 1, "parameters": 1, "compressor_parameters": 1,
                "active_mean": 1.0, "active_max": 1, "checkpoint": path,
                **{k: 0.5 for k in ROUTING_KEYS}}

    def train(cfg, progress):
        os.makedirs(cfg.training.model_dir)
        return {"step": 4, "seconds": 0.0}

    monkeypatch.setattr(runner, "train", train)
    monkeypatch.setattr(runner, "evaluate", lambda cfg, progress: {
        "auc": 0.6, "gauc": 0.6, "log_loss": 0.6, "impressions": 10,
        "step": 3, "checkpoint": checkpoint, "checkpoint_kind": kind})
    monkeypatch.setattr(runner, "diagnose", diagnose)
    monkeypatch.setattr(runner, "config_flops", lambda cfg: {
        "user": 1, "per_candidate": 1, "request": 1})
    base = config_lib.Config().replace(
        training={"model_dir": str(tmp_path / "m")})
    row = runner.run_one(base, ExperimentRun(
        name="a", compressor="hisac", lengths=(10,)), 10)
    assert diagnosed == [checkpoint]
    assert (row["checkpoint"], row["checkpoint_kind"],
            row["checkpoint_step"], row["step"]) == (checkpoint, kind, 3, 4)
