"""`ModelRegistry`: the served versions of one model under an export dir.

docs/design.md §6.

    export_dir/1/saved_model.pb ─┐  refresh (every poll_s)
    export_dir/2/saved_model.pb ─┼─ ModelRegistry ── select(model_spec)
    [models.config: labels]  ────┘  (versions, labels, failures)

Versions: integer-named directories holding `saved_model.pb` (the export
writes them atomically by rename); a name with leading zeros (`0004`) is
ignored with a warning. A models.config that names a version not on
disk (not copied yet, or a typo) unloads nothing: the loaded versions keep
serving and a warning names the missing version. The registry loads the newest
`keep_versions` of them plus every version a label names, loads a new
version before it unloads an old one, replays the version's
`assets.extra/tf_serving_warmup_requests` before it answers with it, and
reports a version that fails to load as END with the error (the others
keep serving). A failed version is tried again at once when anything in
its directory changes (the fingerprint of every file's path, size and
mtime in ns: a version copied in non-atomically, its `variables/` after
`saved_model.pb`, loads once the copy is complete), and otherwise after a
backoff that doubles from `retry_s` up to `MAX_RETRY_S`.

Selection: `model_spec.version` names a loaded version; `version_label`
names a label of the optional `models.config` (a `ModelServerConfig` text
proto, the file TF Serving reads; its `model_version_policy` is honoured
too); "stable" means the latest loaded version unless the config labels
it. A request without either gets the latest version. Unknown model,
version or label -> NOT_FOUND; no version loaded yet -> UNAVAILABLE.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import grpc
from absl import logging

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from hisac_tf.data import filesystems
from hisac_tf.export import warmup
from serving.model_version import ModelVersion, load_version, run_predict
from serving.request_checks import RequestError, clean_message
from serving.request_limits import RequestLimits

STABLE_LABEL = "stable"
MODEL_CONFIG_FILE = "models.config"
WARMUP_FILE = f"{warmup.ASSETS_EXTRA}/{warmup.WARMUP_FILE}"
MiB = 1 << 20
MAX_RETRY_S = 300.0

_State = get_model_status_pb2.ModelVersionStatus.State


@dataclasses.dataclass
class _Failure:
    stamp: object  # The directory's fingerprint when the load failed.
    message: str
    attempts: int = 1
    retry_at: float = 0.0  # time.monotonic() of the next try if unchanged.


class ModelRegistry:
    """The versions of one model under an export directory.

    Args:
      export_dir: directory of integer-named SavedModel versions (any
        `tf.io.gfile` path).
      model_name: the name requests must use.
      keep_versions: how many of the newest versions stay loaded (besides
        the labelled ones) when the model config sets no version policy.
      model_config: path of a `ModelServerConfig` text proto with version
        labels and policy; None reads `<export_dir>/models.config` when it
        exists.
      max_message_bytes: the largest tensor a request may describe.
      warmup_records: warm-up requests replayed per version (0: none).
      limits: bounds on each request's declared shapes
        (`serving.request_limits`; default `RequestLimits()`).
      retry_s: first wait before a failed, unchanged version is tried
        again; doubles each failure up to `MAX_RETRY_S`.
    """

    def __init__(
        self,
        export_dir: str,
        model_name: str = "hisac",
        keep_versions: int = 2,
        model_config: str | None = None,
        max_message_bytes: int = 256 * MiB,
        warmup_records: int = 100,
        limits: RequestLimits | None = None,
        retry_s: float = 2.0,
    ):
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be >= 1, got {keep_versions}")
        if not model_name:
            raise ValueError("model_name must not be empty")
        self.export_dir = export_dir
        self.model_name = model_name
        self.keep_versions = keep_versions
        self.model_config = model_config
        self.max_message_bytes = max_message_bytes
        self.warmup_records = warmup_records
        self.limits = limits or RequestLimits()
        self.retry_s = retry_s
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._versions: dict[int, ModelVersion] = {}
        self._failures: dict[int, _Failure] = {}
        self._labels: dict[str, int] = {}
        self._policy: tuple = ("latest", keep_versions)
        self._config_read = False
        self._missing: tuple = ()
        self._odd_names: set = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ polling
    def start_polling(self, poll_s: float) -> None:
        """Re-scans the export directory every `poll_s` seconds."""
        if poll_s <= 0 or self._thread is not None:
            return

        def loop():
            while not self._stop.wait(poll_s):
                try:
                    self.refresh()
                except Exception as e:  # Keep polling whatever happens.
                    logging.error("refresh of %s failed: %s",
                                  self.export_dir, e)

        self._thread = threading.Thread(
            target=loop, name="hisac-version-poller", daemon=True
        )
        self._thread.start()

    def stop_polling(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def refresh(self) -> list[int]:
        """Loads new versions, unloads unwanted ones; returns those loaded.

        A version that fails to load (or to warm up) does not count towards
        `keep_versions`: the next older one stays in service.
        """
        with self._refresh_lock:
            self._read_model_config()
            on_disk = self._versions_on_disk()
            kind, arg = self._policy
            newest_first = sorted(on_disk, reverse=True)
            wanted: set[int] = set()
            if kind == "latest":
                for version in newest_first:
                    if len(wanted) >= arg:
                        break
                    if self._ensure_loaded(version):
                        wanted.add(version)
            else:
                chosen = (newest_first if kind == "all"
                          else [v for v in newest_first if v in arg])
                wanted = {v for v in chosen
                          if self._ensure_loaded(v)}
            for version in set(self._labels.values()) & set(on_disk):
                if self._ensure_loaded(version):
                    wanted.add(version)
            named = set(self._labels.values())
            if kind == "specific":
                named |= set(arg)
            self._warn_missing(named - set(on_disk))
            with self._lock:
                if named - set(on_disk):
                    # The config is ahead of the disk (a version not copied
                    # yet, or a typo): unload nothing until it is there.
                    wanted |= set(self._versions)
                for version in list(self._versions):
                    if version not in wanted:
                        del self._versions[version]
                        logging.info("unloaded %s version %d",
                                     self.model_name, version)
                for version in list(self._failures):
                    if version not in on_disk:
                        del self._failures[version]
                return sorted(self._versions)

    def _warn_missing(self, missing: set) -> None:
        """Logs (once per change) the versions the model config names
        that are not under the export directory."""
        missing = tuple(sorted(missing))
        if missing and missing != self._missing:
            logging.warning(
                "model config %s names %s version(s) %s, not found under "
                "%s; keeping the loaded versions %s in service",
                self.model_config or _join(self.export_dir,
                                           MODEL_CONFIG_FILE),
                self.model_name, list(missing), self.export_dir,
                self.versions())
        self._missing = missing

    def _ensure_loaded(self, version: int) -> bool:
        """Loads `version` unless loaded; False if it cannot be loaded."""
        with self._lock:
            if version in self._versions:
                return True
        failure = self._failures.get(version)
        path = _join(self.export_dir, str(version))
        stamp = _fingerprint(path)
        if (failure is not None and failure.stamp == stamp
                and time.monotonic() < failure.retry_at):
            return False  # Failed before, unchanged, backing off.
        try:
            model = load_version(path, version)
            self._warm_up(model)
        except Exception as e:
            message = clean_message(f"{type(e).__name__}: {e}")
            attempts = 1 if failure is None else failure.attempts + 1
            wait = min(self.retry_s * 2 ** (attempts - 1), MAX_RETRY_S)
            logging.error("cannot load %s (attempt %d; tried again when "
                          "its files change, else in %.0f s): %s", path,
                          attempts, wait, message)
            self._failures[version] = _Failure(
                stamp, message, attempts, time.monotonic() + wait)
            return False
        self._failures.pop(version, None)
        with self._lock:
            self._versions[version] = model
        logging.info("loaded %s version %d", self.model_name, version)
        return True

    def _versions_on_disk(self) -> dict[int, object]:
        """Integer version directories with a saved_model.pb -> stamp."""
        found = {}
        try:
            names = tf.io.gfile.listdir(self.export_dir)
        except tf.errors.NotFoundError:
            return found
        for name in names:
            name = name.rstrip("/")
            if not (name.isascii() and name.isdigit()):
                continue  # Temporary export directories, config files.
            if name != str(int(name)):
                # "0004" would be served as version 4 from ".../4/": refuse.
                if name not in self._odd_names:
                    self._odd_names.add(name)
                    logging.warning(
                        "ignored %s: a version directory must be named by "
                        "its number without leading zeros (%s)",
                        _join(self.export_dir, name), int(name))
                continue
            pb = _join(self.export_dir, name, "saved_model.pb")
            try:
                stat = tf.io.gfile.stat(pb)
            except tf.errors.NotFoundError:
                continue  # Not complete yet.
            found[int(name)] = (stat.length, stat.mtime_nsec)
        return found

    def _read_model_config(self) -> None:
        path = self.model_config
        if path is None:
            path = _join(self.export_dir, MODEL_CONFIG_FILE)
            if not tf.io.gfile.exists(path):
                self._labels, self._policy = {}, ("latest",
                                                  self.keep_versions)
                return
        with tf.io.gfile.GFile(path) as f:
            text = f.read()
        config = model_server_config_pb2.ModelServerConfig()
        try:
            text_format.Parse(text, config)
        except text_format.ParseError as e:
            if not self._config_read:
                raise ValueError(f"model config {path}: {e}") from e
            # Being rewritten, or broken: keep the labels read before.
            logging.error("model config %s unreadable, kept the previous "
                          "one: %s", path, e)
            return
        self._config_read = True
        entries = [c for c in config.model_config_list.config
                   if c.name == self.model_name]
        if not entries:
            self._labels, self._policy = {}, ("latest", self.keep_versions)
            return
        entry = entries[0]
        self._labels = dict(entry.version_labels)
        policy = entry.model_version_policy
        which = policy.WhichOneof("policy_choice")
        if which == "all":
            self._policy = ("all", None)
        elif which == "specific":
            self._policy = ("specific", tuple(policy.specific.versions))
        elif which == "latest":
            self._policy = ("latest", max(1, policy.latest.num_versions))
        else:
            self._policy = ("latest", self.keep_versions)

    def _warm_up(self, model: ModelVersion) -> None:
        """Replays the version's warm-up Predict requests (as TF Serving)."""
        path = _join(model.path, WARMUP_FILE)
        if not self.warmup_records or not tf.io.gfile.exists(path):
            return
        records = tf.data.TFRecordDataset(path).take(self.warmup_records)
        for index, record in enumerate(records):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if log.WhichOneof("log_type") != "predict_log":
                continue
            request = log.predict_log.request
            try:
                run_predict(model, request, self.max_message_bytes,
                            self.limits)
            except RequestError as e:
                raise ValueError(
                    f"warm-up request {index} of {path} failed "
                    f"({e.code.name}): {e.message}"
                ) from None

    # ---------------------------------------------------------- selection
    def versions(self) -> list[int]:
        with self._lock:
            return sorted(self._versions)

    def select(self, spec) -> ModelVersion:
        """The loaded version a `ModelSpec` asks for (or RequestError)."""
        if not spec.name:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               "model_spec.name is empty")
        if spec.name != self.model_name:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"model {spec.name!r} not found; this server serves "
                f"{self.model_name!r}",
            )
        with self._lock:
            versions = dict(self._versions)
            labels = self._labels_locked()
        loaded = sorted(versions)
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            version = spec.version.value
            if version not in versions:
                raise RequestError(
                    grpc.StatusCode.NOT_FOUND,
                    f"model {self.model_name!r} version {version} not "
                    f"found; loaded versions: {loaded}",
                )
            return versions[version]
        if choice == "version_label":
            label = spec.version_label
            if label not in labels:
                raise RequestError(
                    grpc.StatusCode.NOT_FOUND,
                    f"model {self.model_name!r} has no version label "
                    f"{label!r}; labels: {sorted(labels)}",
                )
            version = labels[label]
            if version not in versions:
                raise RequestError(
                    grpc.StatusCode.NOT_FOUND,
                    f"label {label!r} of model {self.model_name!r} names "
                    f"version {version}, which is not loaded; loaded "
                    f"versions: {loaded}",
                )
            return versions[version]
        if not versions:
            raise RequestError(
                grpc.StatusCode.UNAVAILABLE,
                f"model {self.model_name!r} has no version loaded yet "
                f"under {self.export_dir}",
            )
        return versions[loaded[-1]]

    def labels(self) -> dict[str, int]:
        with self._lock:
            return self._labels_locked()

    def _labels_locked(self) -> dict[str, int]:
        labels = dict(self._labels)
        if STABLE_LABEL not in labels and self._versions:
            labels[STABLE_LABEL] = max(self._versions)
        return labels

    def statuses(self) -> list[tuple[int, int, int, str]]:
        """(version, state, error code, message) of every known version."""
        with self._lock:
            out = [(v, _State.AVAILABLE, 0, "") for v in self._versions]
        for version, failure in list(self._failures.items()):
            out.append((version, _State.END,
                        grpc.StatusCode.UNKNOWN.value[0], failure.message))
        return sorted(out)


def _fingerprint(path: str) -> tuple:
    """(relative path, size, mtime ns) of every file under `path`, sorted.

    Local directories use `os.stat` (ns mtimes; `tf.io.gfile.stat` has
    whole seconds there); other filesystems `tf.io.gfile`.
    """
    out = []
    if not filesystems.scheme(path):
        for folder, _, files in os.walk(path):
            for name in files:
                full = os.path.join(folder, name)
                try:
                    st = os.stat(full)
                except OSError:
                    continue  # Removed while we looked.
                out.append((os.path.relpath(full, path), st.st_size,
                            st.st_mtime_ns))
        return tuple(sorted(out))
    for folder, _, files in tf.io.gfile.walk(path):
        for name in files:
            full = _join(folder, name)
            try:
                st = tf.io.gfile.stat(full)
            except tf.errors.NotFoundError:
                continue
            out.append((full[len(path):], st.length, st.mtime_nsec))
    return tuple(sorted(out))


def _join(*parts: str) -> str:
    return "/".join([parts[0].rstrip("/")] + [p.strip("/") for p in parts[1:]])

