"""Job: export the latest checkpoint as a SavedModel for TF Serving.

`main(cfg, version=None) -> dict` restores the latest checkpoint of
`cfg.training.model_dir` and writes `<export.export_dir>/<version>/`
(docs/design.md §6):

    <version>/saved_model.pb, variables/   signatures of
                                           `hisac_tf.export.signatures`
    <version>/assets.extra/
        tf_serving_warmup_requests         PredictionLog records, built
                                           from real eval records
        config.json                        the resolved config
        export_summary.json                what was exported
    <export_dir>/models.config             TF Serving model config over
                                           this directory: the previous
                                           newest version `stable`, the
                                           new one `canary`
    <export_dir>/export_summary.json       the latest export's summary

The version is `version`, else `export.version` when > 0, else the
highest integer version already there + 1 (1 for the first); an existing
version is never overwritten. The export is atomic: everything is written
into a hidden temporary directory beside the versions (TF Serving only
loads directories named by an integer), loaded back and checked (every
warmup request runs, and its scores equal the trained model's), and only
then renamed to `<version>`; on any failure the temporary directory is
removed and no version appears. (The rename is atomic on local disks and
HDFS; on object stores such as gs:// or s3:// it is a copy, so export to
local disk and sync.)
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from hisac_tf.config import Config, write_resolved
from hisac_tf.data.feature_spec import CANDIDATE_FEATURES, HISTORY_FEATURES
from hisac_tf.data import filesystems
from hisac_tf.data import input_pipeline
from hisac_tf.export import signatures as sig
from hisac_tf.export import tf_serving_config
from hisac_tf.training.checkpoints import restore_latest

ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
SUMMARY_FILE = "export_summary.json"
TMP_PREFIX = ".tmp-export-"
WARMUP_BATCH = 4  # Requests per warmup batch (also one of a single one).
VERIFY_ATOL = 1e-5


class ExportError(RuntimeError):
    """An export that failed its checks; no version was published."""


# ----------------------------------------------------------------- versions
def existing_versions(export_dir: str) -> list[int]:
    """Sorted integer version directories under `export_dir`."""
    if not tf.io.gfile.isdir(export_dir):
        return []
    names = (n.rstrip("/") for n in tf.io.gfile.listdir(export_dir))
    return sorted(
        int(n) for n in names
        if n.isdigit() and tf.io.gfile.isdir(os.path.join(export_dir, n))
    )


def resolve_version(export_dir: str, requested: int | None) -> int:
    """`requested` if > 0, else the highest existing version + 1."""
    versions = existing_versions(export_dir)
    if requested is not None and requested < 0:
        raise ValueError(f"export version must be >= 1, got {requested}")
    version = requested or (versions[-1] + 1 if versions else 1)
    if version in versions:
        raise FileExistsError(
            f"export version {version} already exists under {export_dir} "
            "(export.version); versions are never overwritten: pick "
            "another or set export.version=0 for the next free one"
        )
    return version


# ------------------------------------------------------------------ restore
def restore(cfg: Config):
    """The trained model, its FeatureSpec and a batch of real requests.

    Returns:
      (spec, model, step, checkpoint path, batch): `batch` is the first
      padded batch of the eval split (train split if there is none), also
      used to build the model so that the checkpoint's weights load.
    """
    state, path, status = restore_latest(cfg, "export")
    batch = first_batch(cfg, state.spec, WARMUP_BATCH)
    state.model(batch, training=False)  # Creates the variables.
    status.assert_existing_objects_matched().expect_partial()  # no slots
    return state.spec, state.model, int(state.step.numpy()), path, batch


def first_batch(cfg: Config, spec, batch_size: int) -> dict:
    """The first padded batch of the eval records (else the train ones)."""
    files = []
    for pattern in (cfg.data.eval_pattern, cfg.data.train_pattern):
        try:
            files = input_pipeline.list_files(
                os.path.join(cfg.data.data_dir, pattern))
            break
        except FileNotFoundError:
            continue
    if not files:
        raise FileNotFoundError(
            f"no eval or train records under {cfg.data.data_dir} "
            "(data.data_dir) to build the warmup requests from")
    ds = input_pipeline.request_dataset(
        files, spec, batch_size, compression=cfg.data.compression,
        deterministic=True, num_parallel_reads=1,
    )
    return next(iter(ds))


# ------------------------------------------------------------------- warmup
def warmup_cases(module: sig.ServingModule, batch: dict) -> list[tuple]:
    """(signature, inputs as numpy, expected ctr or None) for the warmup.

    For R = 1 and R = len(batch): serving_default, encode_user,
    score_with_state (on that state) and predict_examples (one example
    per impression). Expected scores are `sigmoid(model(batch))`.
    """
    spec, model = module.spec, module.model
    np_batch = {k: v.numpy() for k, v in batch.items()}
    probs = tf.sigmoid(tf.cast(model(batch, training=False), tf.float32))
    counts = np_batch["cand_count"]  # [R]
    valid = np.arange(probs.shape[1])[None, :] < counts[:, None]  # [R, C]
    expected = np.where(valid, probs.numpy(), 0.0)  # [R, C]
    names = tuple(spec.input_signature())
    cases = []
    for rows in sorted({1, len(counts)}):
        request = {k: np_batch[k][:rows] for k in names}
        user = {k: request[k] for k in module.user_input_names}
        state = {
            k: v.numpy() for k, v in module.encode_user(user).items()
        }
        cands = {k: request[k] for k in sig.CANDIDATE_INPUTS}
        examples = np.array([
            ex.SerializeToString()
            for r in range(rows)
            for ex in spec.impression_examples(request_values(request, r))
        ], dtype=object)
        cases += [
            (sig.SERVING_DEFAULT, request, expected[:rows]),
            (sig.ENCODE_USER, user, None),
            (sig.SCORE_WITH_STATE, {**state, **cands}, expected[:rows]),
            (sig.PREDICT_EXAMPLES, {sig.EXAMPLES: examples},
             expected[:rows][valid[:rows]]),
        ]
    return cases


def request_values(request: dict, r: int) -> dict:
    """Row r of a padded batch as plain per-request values (lists cut)."""
    n, c = int(request["hist_length"][r]), int(request["cand_count"][r])
    out = {k: int(v[r]) for k, v in request.items() if v.ndim == 1}
    for name in HISTORY_FEATURES:
        out[name] = request[name][r, :n].tolist()
    for name in CANDIDATE_FEATURES:
        out[name] = request[name][r, :c].tolist()
    return out


def prediction_log(model_name: str, signature: str, inputs: dict):
    """One PredictionLog holding a PredictRequest."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))


def write_warmup(path: str, model_name: str, cases) -> int:
    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs, _ in cases:
            writer.write(prediction_log(
                model_name, signature, inputs).SerializeToString())
    return len(cases)


def read_warmup(path: str) -> list:
    """The PredictionLog records of a warmup file."""
    return [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(path)
    ]


# ------------------------------------------------------------------- checks
def graph_ops(saved_model_dir: str) -> list[str]:
    """Sorted op types of the SavedModel's graph and function library."""
    from tensorflow.core.protobuf import saved_model_pb2

    with tf.io.gfile.GFile(
        os.path.join(saved_model_dir, "saved_model.pb"), "rb"
    ) as f:
        saved = saved_model_pb2.SavedModel.FromString(f.read())
    ops = set()
    for meta in saved.meta_graphs:
        ops.update(node.op for node in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            ops.update(node.op for node in fn.node_def)
    return sorted(ops)


def verify(path: str, cases, fingerprint: int) -> None:
    """Loads the export back and runs every warmup case through it.

    Raises:
      ExportError: a signature is missing, fails, or scores differently
        from the trained model.
    """
    loaded = tf.saved_model.load(path)
    missing = set(sig.SIGNATURE_NAMES) - set(loaded.signatures)
    if missing:
        raise ExportError(f"signatures {sorted(missing)} are missing")
    saved = getattr(loaded, sig.FINGERPRINT, None)
    if saved is None or int(saved.numpy()) != fingerprint:
        raise ExportError(
            f"the saved {sig.FINGERPRINT} is not {fingerprint}: {saved}")
    for signature, inputs, expected in cases:
        out = loaded.signatures[signature](
            **{k: tf.constant(v) for k, v in inputs.items()})
        if expected is None:
            continue
        got = out[sig.CTR].numpy()
        if got.shape != expected.shape or not np.allclose(
            got, expected, atol=VERIFY_ATOL, rtol=0
        ):
            raise ExportError(
                f"{signature} scores differ from the trained model's "
                f"(max |diff| {np.max(np.abs(got - expected)):.3g}, shapes "
                f"{got.shape} vs {expected.shape})")
    bad = [op for op in graph_ops(path) if op.startswith("IO>")]
    if bad:
        raise ExportError(f"tensorflow-io ops in the graph: {bad}")


# --------------------------------------------------------------------- job
def write_export(
    module: sig.ServingModule, path: str, cfg: Config, cases, summary: dict
) -> None:
    """SavedModel + assets.extra into `path` (a fresh directory)."""
    tf.saved_model.save(module, path, signatures=module.signatures())
    extra = os.path.join(path, ASSETS_EXTRA)
    tf.io.gfile.makedirs(extra)
    write_warmup(os.path.join(extra, WARMUP_FILE), cfg.export.model_name,
                 cases)
    write_resolved(cfg, extra)
    _write_json(os.path.join(extra, SUMMARY_FILE), summary)


def main(cfg: Config, version: int | None = None,
         progress: bool = True) -> dict:
    began = time.time()
    export_dir = filesystems.ensure_filesystem(cfg.export.export_dir)
    tf.io.gfile.makedirs(export_dir)
    version = resolve_version(
        export_dir, version if version is not None else cfg.export.version)
    _say(progress, f"restoring {cfg.training.model_dir}")
    spec, model, step, checkpoint, batch = restore(cfg)
    module = sig.ServingModule(model, spec, version)
    cases = warmup_cases(module, batch)
    summary = publish(cfg, module, cases, {
        "checkpoint": checkpoint, "step": step}, progress=progress)
    summary["seconds"] = time.time() - began
    _write_json(os.path.join(export_dir, SUMMARY_FILE), summary)
    _say(progress, f"exported {summary['path']} in "
                   f"{summary['seconds']:.1f} s (model_fingerprint "
                   f"{module.fingerprint})")
    return summary


def publish(
    cfg: Config, module: sig.ServingModule, cases, extra: dict | None = None,
    progress: bool = False,
) -> dict:
    """Writes, checks and atomically publishes `<export_dir>/<version>`.

    Args:
      module: the `ServingModule`; its export version is the directory.
      cases: `warmup_cases(module, batch)`: the warmup requests and the
        scores the export must reproduce.
      extra: more summary entries (checkpoint, step).
    Returns:
      the export summary.
    Raises:
      FileExistsError: the version exists already.
      ExportError: the written export failed its checks.
      Whatever the writing raised; in every failure case the temporary
      directory is removed and no version directory appears.
    """
    began = time.time()
    export_dir = cfg.export.export_dir
    version = int(module.export_version.numpy())
    previous = existing_versions(export_dir)
    if version in previous:
        raise FileExistsError(
            f"export version {version} already exists under {export_dir}")
    final = os.path.join(export_dir, str(version))
    tmp = os.path.join(
        export_dir, f"{TMP_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
    summary = {
        **(extra or {}),
        "model_name": cfg.export.model_name,
        "version": version,
        "path": final,
        "model_fingerprint": module.fingerprint,
        "max_history": module.spec.max_history,
        "warmup_requests": len(cases),
    }
    try:
        _say(progress, f"writing SavedModel version {version}")
        write_export(module, tmp, cfg, cases, summary)
        _say(progress, "loading it back and checking every signature")
        verify(tmp, cases, module.fingerprint)
        summary["signatures"] = signature_summary(module)
        summary["ops"] = graph_ops(tmp)
        summary["publish_seconds"] = time.time() - began
        _write_json(os.path.join(tmp, ASSETS_EXTRA, SUMMARY_FILE), summary)
        tf.io.gfile.rename(tmp, final, overwrite=False)
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.rmtree(tmp)
        raise
    stable = previous[-1] if previous else version
    tf_serving_config.write_texts(export_dir, {
        tf_serving_config.MODELS_CONFIG: tf_serving_config.to_text(
            tf_serving_config.model_server_config(
                cfg.export.model_name, _absolute(export_dir),
                sorted({stable, version}), stable=stable, canary=version)),
    })
    return summary


def signature_summary(module: sig.ServingModule) -> dict:
    """name -> inputs/outputs: {tensor name: [dtype, shape]}."""
    out = {}
    for name, fn in module.signatures().items():
        inputs = tf.nest.flatten(fn.structured_input_signature)
        out[name] = {
            "inputs": {v.name: [v.dtype.name, v.shape.as_list()]
                       for v in sorted(inputs, key=lambda s: s.name)},
            "outputs": {k: [v.dtype.name, v.shape.as_list()]
                        for k, v in sorted(fn.structured_outputs.items())},
        }
    return out


def _absolute(path: str) -> str:
    return path if filesystems.scheme(path) else os.path.abspath(path)


def _write_json(path: str, value: dict) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"export: {text}", file=sys.stderr, flush=True)


def run():
    from pipelines import cli

    cli.run(main)


if __name__ == "__main__":
    run()
