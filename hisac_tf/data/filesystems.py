"""Paths on any filesystem, and a process exit that survives tensorflow-io.

Local paths and `gs://` work through TensorFlow itself. `s3://` and
`hdfs://` need tensorflow-io, whose import registers those schemes with
`tf.io.gfile`: `ensure_filesystem(path)` does that import on demand and
remembers that a remote filesystem was used.

Why a special exit: with tensorflow 2.17.1 and tensorflow-io 0.37.1 a
process that touched an `s3://` path (even one `tf.io.gfile.exists`)
aborts while the interpreter exits, after its work is done, in C++
static destructors (stderr: "pure virtual method called / terminate
called without an active exception"; SIGABRT, exit status 134 in a shell,
-6 from `subprocess`). Importing tensorflow-io alone does not do it.
Every job therefore leaves through `run_job` / `exit_cleanly`: when a
remote filesystem was used they do by hand what a normal exit would do
for Python (close open TFRecord writers, `tf.io.gfile.GFile`s
and Python files; run the `atexit` handlers, which flush logging; flush
stdout and stderr) and then leave with `os._exit(code)`, which skips the
C++ destructors. Without a remote filesystem the exit is the normal one.

S3 settings are read from the environment by tensorflow-io's AWS client:
`S3_ENDPOINT` (a full URL: `http://host:port` for a plain-HTTP server such
as MinIO; without a scheme HTTPS is used), `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), `AWS_REGION`, and
optionally `S3_CA_FILE`, `S3_CONNECT_TIMEOUT_MSEC`,
`S3_REQUEST_TIMEOUT_MSEC`. HDFS needs the Hadoop client libraries
(`HADOOP_HDFS_HOME`, `CLASSPATH`), as for TensorFlow.
"""

from __future__ import annotations

import atexit
import gc
import io
import os
import sys
import traceback
from typing import Callable, NoReturn

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

REMOTE_SCHEMES = ("s3", "hdfs")
# Schemes TensorFlow handles itself (no tensorflow-io needed).
BUILTIN_SCHEMES = ("", "file", "gs", "ram")

_remote_used = False


class FilesystemError(RuntimeError):
    """A path whose filesystem cannot be used in this process."""


def scheme(path: str) -> str:
    """The URL scheme of `path` (`"s3"`, `"gs"`, ...), `""` when local."""
    head, sep, _ = str(path).partition("://")
    return head.lower() if sep and "/" not in head else ""


def is_remote(path: str) -> bool:
    """Whether `path` lives on a filesystem that needs tensorflow-io."""
    return scheme(path) in REMOTE_SCHEMES


def ensure_filesystem(path: str) -> str:
    """Makes `path`'s filesystem usable through `tf.io.gfile`.

    Args:
      path: a local path, or a `gs://`, `s3://` or `hdfs://` URL.
    Returns:
      `path` unchanged.
    Raises:
      FilesystemError: tensorflow-io is needed for `path` but cannot be
        imported; the message names the path and the import error.
    """
    global _remote_used
    if is_remote(path):
        try:
            import tensorflow_io  # noqa: F401  (registers s3://, hdfs://)
        except Exception as e:  # ImportError, or a kernel that won't load.
            raise FilesystemError(
                f"path {path!r} needs tensorflow-io for {scheme(path)}://, "
                f"but it failed to load: {type(e).__name__}: {e}"
            ) from e
        _remote_used = True
    return path


def remote_filesystem_used() -> bool:
    """Whether this process has used an `s3://` or `hdfs://` path."""
    return _remote_used


def glob(pattern: str) -> list[str]:
    """Sorted paths matching `pattern` on any supported filesystem.

    Raises:
      FileNotFoundError: nothing matches; the message names the pattern.
    """
    ensure_filesystem(pattern)
    try:
        found = tf.io.gfile.glob(pattern)
    except tf.errors.NotFoundError:
        found = []
    if not found:
        raise FileNotFoundError(f"no file matches {pattern!r}")
    return sorted(found)


# ---------------------------------------------------------------- exiting
def _is_std_stream(obj) -> bool:
    try:
        return obj.fileno() in (0, 1, 2)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False


def _open_file_types() -> tuple[type, ...]:
    """Classes of writable files whose data a skipped destructor loses."""
    types: list[type] = [io.IOBase]
    if "tensorflow" in sys.modules:
        from tensorflow.python.lib.io import file_io, tf_record

        types += [file_io.FileIO, tf_record.TFRecordWriter]
    return tuple(types)


def _close_order(obj) -> int:
    """Wrappers before what they wrap: text, then buffered, then raw."""
    if isinstance(obj, io.TextIOBase):
        return 0
    if isinstance(obj, io.BufferedIOBase):
        return 1
    return 2


def _is_closed(obj) -> bool:
    try:
        return bool(obj.closed)
    except Exception:  # A detached wrapper: nothing left to close.
        return True


def close_open_files() -> int:
    """Closes every live file object the interpreter would close at exit.

    Covers Python files, `tf.io.gfile.GFile` and `tf.io.TFRecordWriter`
    (closing finishes GZIP streams and uploads S3 objects); the standard
    streams are only flushed. Errors are reported on stderr, not raised.

    Returns:
      how many objects were closed.
    """
    types = _open_file_types()
    files = [obj for obj in gc.get_objects() if isinstance(obj, types)]
    files.sort(key=_close_order)
    closed = 0
    for obj in files:
        try:
            if isinstance(obj, io.IOBase):
                if _is_closed(obj):
                    continue
                if _is_std_stream(obj):
                    obj.flush()
                    continue
            obj.close()
            closed += 1
        except Exception as e:  # Keep closing the others.
            print(f"warning: closing {type(obj).__name__} at exit failed: "
                  f"{e}", file=sys.stderr)
    return closed


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def exit_cleanly(code: int = 0) -> NoReturn:
    """Ends the process with `code`, surviving tensorflow-io's s3 abort.

    Without a remote filesystem this is `sys.exit(code)`. After an
    `s3://` or `hdfs://` path was used: closes open files
    (`close_open_files`), runs the `atexit` handlers, flushes stdout and
    stderr, then `os._exit(code)` so that no C++ static destructor runs.
    """
    code = int(code)
    if not _remote_used:
        sys.exit(code)
    close_open_files()
    try:
        atexit._run_exitfuncs()
    except Exception as e:
        print(f"warning: atexit handler failed: {e}", file=sys.stderr)
    _flush_std_streams()
    os._exit(code)


def _return_code(value) -> int:
    """Exit status for a job's return value: an int as is, else 0."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value & 0xFF
    return 0  # None, or the summary a job returns on success.


def _system_exit_code(code) -> int:
    """Exit status for `SystemExit(code)`, as the interpreter would."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)  # sys.exit("message"): message, then 1.
    return 1


def run_job(main_fn: Callable[[], object]) -> NoReturn:
    """Runs a job's main and exits through `exit_cleanly`.

    Args:
      main_fn: no-argument callable; an int it returns is the exit
        status, anything else (None, a summary dict) means 0. An exception
        prints its traceback and exits 1; `SystemExit` exits as the
        interpreter would; Ctrl-C exits 130.
    """
    try:
        code = _return_code(main_fn())
    except SystemExit as e:
        code = _system_exit_code(e.code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except Exception as e:
        traceback.print_exc()
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        code = 1
    exit_cleanly(code)
