"""Export the latest checkpoint as a SavedModel version for TF Serving.

docs/design.md §6. `export_model(cfg, version=None) -> dict` restores the
latest checkpoint of `cfg.training.model_dir` and writes
`<export.export_dir>/<version>/`:

    <version>/saved_model.pb, variables/   signatures of
                                           `hisac_tf.export.signatures`
    <version>/assets.extra/
        tf_serving_warmup_requests         PredictionLog records, built
                                           from real eval records
                                           (`hisac_tf.export.warmup`)
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
loads directories named by an integer), loaded back and checked
(`hisac_tf.export.verification`: every warmup request runs, and its
scores equal the trained model's), and only then renamed to `<version>`;
on any failure the temporary directory is removed and no version appears.
(The rename is atomic on local disks and HDFS; on object stores such as
gs:// or s3:// it is a copy, so export to local disk and sync.)

Concurrent exports: the version is reserved before anything is written,
by creating `<export_dir>/.tmp-export-<version>/` (`os.mkdir`, atomic on
a local disk), which holds `owner.json` (pid, host, start) and the
SavedModel being written (`model/`, renamed to `<version>` at the end).
Two exports into one directory therefore never pick the same version: the
second takes the next free one, or, when the version was asked for
explicitly, fails at once naming the path and version. Each export first
removes stale reservations (`remove_stale_reservations`): those of a
process of this host that no longer runs, those without an owner older
than its own start, and those of another host older than a day.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf import json_io
from hisac_tf.config import Config, write_resolved
from hisac_tf.data import filesystems, input_pipeline
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.export import signatures as sig
from hisac_tf.export import tf_serving_config, verification, warmup
from hisac_tf.training.checkpoints import restore_latest, select_checkpoint
from hisac_tf.training.divergence import check_not_diverged

SUMMARY_FILE = "export_summary.json"
TMP_PREFIX = ".tmp-export-"
OWNER_FILE = "owner.json"
MODEL_SUBDIR = "model"
OTHER_HOST_STALE_S = 24 * 3600.0
# A reservation is made (mkdir) before its owner file is written: another
# export that looks in between finds no owner. Without an owner it is stale
# only once older than this, so that window never reads as a dead export.
OWNERLESS_STALE_S = 60.0


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
    """`requested` if > 0, else the highest existing version + 1.

    Raises:
      ValueError: `requested` < 0.
      FileExistsError: version `requested` exists already.
    """
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


# ------------------------------------------------------------ reservations
@dataclasses.dataclass
class Reservation:
    """A version reserved by `reserve_version`.

    Attributes:
      export_dir: the export directory.
      version: the reserved version.
      path: `<export_dir>/.tmp-export-<version>` (owner.json, model/).
    """

    export_dir: str
    version: int
    path: str

    @property
    def model_path(self) -> str:
        """Where the SavedModel is written before it is renamed."""
        return os.path.join(self.path, MODEL_SUBDIR)

    @property
    def final_path(self) -> str:
        return os.path.join(self.export_dir, str(self.version))

    def release(self) -> None:
        """Removes the reservation (and whatever is left in it)."""
        if tf.io.gfile.exists(self.path):
            tf.io.gfile.rmtree(self.path)


def reserve_version(export_dir: str, requested: int | None,
                    started: float | None = None) -> Reservation:
    """Reserves `requested` (if > 0) or the next free version atomically.

    Args:
      export_dir: the export directory (created if missing).
      requested: the version asked for; None or 0 for the next free one.
      started: the export's start (time.time()); stale reservations older
        than it are removed first (default: now).
    Raises:
      ValueError: `requested` < 0.
      FileExistsError: `requested` exists, or another export is writing
        it (the message names the path, the version and the owner).
    """
    tf.io.gfile.makedirs(export_dir)
    remove_stale_reservations(export_dir,
                              time.time() if started is None else started)
    explicit = bool(requested)
    version = resolve_version(export_dir, requested)
    while True:
        path = os.path.join(export_dir, f"{TMP_PREFIX}{version}")
        clash = None
        if _make_dir_exclusive(path):
            _write_owner(path)
            if version not in existing_versions(export_dir):
                return Reservation(export_dir, version, path)
            tf.io.gfile.rmtree(path)  # Published between our two looks.
            clash = f"{os.path.join(export_dir, str(version))} exists"
        else:
            clash = (f"another export is writing it into {path} "
                     f"({_owner_text(path)})")
        if explicit:
            raise FileExistsError(
                f"export version {version} under {export_dir} clashes: "
                f"{clash}; pick another version or set export.version=0 "
                "for the next free one")
        version += 1


def remove_stale_reservations(export_dir: str, started: float) -> list[str]:
    """Removes reservations left by killed exports; returns their paths.

    Stale: the owner ran on this host and its pid is gone; or no readable
    owner and older than `started` - OWNERLESS_STALE_S (a reservation is
    made before its owner file is written); or another host's, older than
    `started` - OTHER_HOST_STALE_S.
    """
    removed = []
    if not tf.io.gfile.isdir(export_dir):
        return removed
    for name in tf.io.gfile.listdir(export_dir):
        name = name.rstrip("/")
        if not name.startswith(TMP_PREFIX):
            continue
        path = os.path.join(export_dir, name)
        try:
            mtime = tf.io.gfile.stat(path).mtime_nsec / 1e9
        except tf.errors.NotFoundError:
            continue
        owner = _read_owner(path)
        if owner is None:
            stale = mtime < started - OWNERLESS_STALE_S
        elif owner.get("host") == socket.gethostname():
            stale = not _pid_alive(int(owner.get("pid", -1)))
        else:
            stale = mtime < started - OTHER_HOST_STALE_S
        if stale:
            try:
                tf.io.gfile.rmtree(path)
            except tf.errors.NotFoundError:
                continue  # Removed by another export meanwhile.
            removed.append(path)
            print(f"export: removed the stale temporary directory {path} "
                  f"({_owner_text(path, owner)})", file=sys.stderr)
    return removed


def _make_dir_exclusive(path: str) -> bool:
    """Creates `path`; False if it exists (atomic on local disks)."""
    if not filesystems.scheme(path):
        try:
            os.mkdir(path)
            return True
        except FileExistsError:
            return False
    if tf.io.gfile.exists(path):
        return False
    tf.io.gfile.mkdir(path)
    return True


def _write_owner(path: str) -> None:
    write_json(os.path.join(path, OWNER_FILE), {
        "pid": os.getpid(), "host": socket.gethostname(),
        "started": time.time()})


def _read_owner(path: str) -> dict | None:
    try:
        with tf.io.gfile.GFile(os.path.join(path, OWNER_FILE)) as f:
            owner = json.load(f)
    except (tf.errors.OpError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _owner_text(path: str, owner: dict | None = None) -> str:
    owner = owner or _read_owner(path)
    if owner is None:
        return "owner unknown"
    when = time.strftime("%Y-%m-%d %H:%M:%S",
                         time.localtime(owner.get("started", 0)))
    return f"pid {owner.get('pid')} on {owner.get('host')}, started {when}"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------ restore
def restore(cfg: Config):
    """The trained model, its FeatureSpec and a batch of real requests.

    Returns:
      (spec, model, step, checkpoint path, batch): `batch` is the first
      padded batch of the eval split (train split if there is none),
      `warmup.WARMUP_BATCH` requests, also used to build the model so
      that the checkpoint's weights load.
    """
    # The checkpoint evaluation scores: the best by valid AUC when the run
    # kept one (training.evaluate_checkpoint), else the latest.
    _, chosen = select_checkpoint(cfg)
    state, path, status = restore_latest(cfg, "export", path=chosen)
    batch = first_batch(cfg, state.spec, warmup.WARMUP_BATCH)
    state.model(batch, training=False)  # Creates the variables.
    status.assert_existing_objects_matched().expect_partial()  # no slots
    return state.spec, state.model, int(state.step.numpy()), path, batch


def first_batch(cfg: Config, spec: FeatureSpec, batch_size: int) -> dict:
    """The first padded batch of the eval records (else the train ones).

    Raises:
      FileNotFoundError: neither split has records under data.data_dir.
    """
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


# ------------------------------------------------------------------ export
def export_model(cfg: Config, version: int | None = None,
                 progress: bool = True, force: bool = False) -> dict:
    """Restores the latest checkpoint and publishes it as a new version.

    Args:
      cfg: the resolved config (training.model_dir, export.*).
      version: the version to write (default: `export.version`, else the
        next free one).
      progress: print progress lines to stderr.
      force: export a model_dir marked diverged (with a warning).
    Returns:
      the export summary (also `<export_dir>/export_summary.json`).
    Raises:
      DivergedRunError: training.model_dir is marked diverged
        (`hisac_tf.training.divergence`) and `force` is not set.
    """
    check_not_diverged(cfg.training.model_dir, force)
    began = time.time()
    export_dir = filesystems.ensure_filesystem(cfg.export.export_dir)
    reservation = reserve_version(
        export_dir, version if version is not None else cfg.export.version,
        started=began)
    try:
        _say(progress, f"restoring {cfg.training.model_dir} as version "
                       f"{reservation.version}")
        spec, model, step, checkpoint, batch = restore(cfg)
        module = sig.ServingModule(model, spec, reservation.version)
        cases = warmup.warmup_cases(module, batch)
        summary = publish(cfg, module, cases, {
            "checkpoint": checkpoint, "step": step}, progress=progress,
            reservation=reservation)
    finally:
        reservation.release()
    summary["seconds"] = time.time() - began
    write_json(os.path.join(export_dir, SUMMARY_FILE), summary)
    _say(progress, f"exported {summary['path']} in "
                   f"{summary['seconds']:.1f} s (model_fingerprint "
                   f"{module.fingerprint})")
    return summary


def write_export(
    module: sig.ServingModule, path: str, cfg: Config, cases, summary: dict
) -> None:
    """SavedModel + assets.extra into `path` (a fresh directory)."""
    tf.saved_model.save(module, path, signatures=module.signatures())
    extra = os.path.join(path, warmup.ASSETS_EXTRA)
    tf.io.gfile.makedirs(extra)
    warmup.write_warmup(os.path.join(extra, warmup.WARMUP_FILE),
                        cfg.export.model_name, cases)
    write_resolved(cfg, extra)
    write_json(os.path.join(extra, SUMMARY_FILE), summary)


def publish(
    cfg: Config, module: sig.ServingModule, cases, extra: dict | None = None,
    progress: bool = False, reservation: Reservation | None = None,
) -> dict:
    """Writes, checks and atomically publishes `<export_dir>/<version>`.

    Args:
      module: the `ServingModule`; its export version is the directory.
      cases: `warmup.warmup_cases(module, batch)`: the warmup requests
        and the scores the export must reproduce.
      extra: more summary entries (checkpoint, step).
      reservation: the module's version reserved by `reserve_version`
        (default: reserved here, and released at the end).
    Returns:
      the export summary.
    Raises:
      FileExistsError: the version exists already, or another export is
        writing it.
      verification.ExportError: the written export failed its checks.
      Whatever the writing raised; in every failure case the temporary
      directory is removed and no version directory appears.
    """
    began = time.time()
    export_dir = cfg.export.export_dir
    version = int(module.export_version.numpy())
    own = reservation is None
    if own:
        reservation = reserve_version(export_dir, version, started=began)
    elif reservation.version != version:
        raise ValueError(
            f"the reservation is for version {reservation.version}, the "
            f"module's export version is {version}")
    try:
        return _publish(cfg, module, cases, extra, progress, reservation,
                        began)
    finally:
        if own:
            reservation.release()


def _publish(cfg, module, cases, extra, progress, reservation,
             began) -> dict:
    export_dir = cfg.export.export_dir
    version = reservation.version
    previous = [v for v in existing_versions(export_dir) if v != version]
    final = reservation.final_path
    tmp = reservation.model_path
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
        verification.verify(tmp, cases, module.fingerprint)
        summary["signatures"] = signature_summary(module)
        summary["ops"] = verification.graph_ops(tmp)
        summary["publish_seconds"] = time.time() - began
        write_json(os.path.join(tmp, warmup.ASSETS_EXTRA, SUMMARY_FILE),
                   summary)
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


def write_json(path: str, value: dict) -> None:
    """`value` as indented, sorted JSON (any tf.io.gfile path)."""
    json_io.write_json(path, value, sort_keys=True)


def _absolute(path: str) -> str:
    return path if filesystems.scheme(path) else os.path.abspath(path)


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"export: {text}", file=sys.stderr, flush=True)
