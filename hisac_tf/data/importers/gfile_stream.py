"""A `tf.io.gfile.GFile` (s3://, hdfs://, gs://) as a seekable io stream,
and `open_input`: the byte stream of an input file on any filesystem (the
CSV and the Parquet readers both open files through it)."""

from __future__ import annotations

import io
from typing import BinaryIO

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.data import filesystems


def open_input(path: str) -> BinaryIO:
    """A seekable byte stream of `path` (not decompressed): a local file
    opened directly, a remote one (s3://, hdfs://, gs://) through a
    buffered `GFileStream`.

    Raises:
      FileNotFoundError: naming `path` when there is no such file.
    """
    filesystems.ensure_filesystem(path)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"input file {path!r} does not exist")
    if filesystems.scheme(path) in ("", "file"):
        return open(path.removeprefix("file://"), "rb")
    return io.BufferedReader(GFileStream(path), buffer_size=1 << 20)


class GFileStream(io.RawIOBase):
    """A GFile opened "rb" as a raw, seekable io stream.

    The csv and gzip modules and pyarrow read through it (pyarrow needs
    `closed`, `seek` and `tell`, which a bare GFile lacks or differs in).
    """

    def __init__(self, path: str):
        super().__init__()
        self._gfile = tf.io.gfile.GFile(path, "rb")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._gfile.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            offset, whence = self._gfile.size() + offset, io.SEEK_SET
        self._gfile.seek(offset, whence)
        return self._gfile.tell()

    def tell(self) -> int:
        return self._gfile.tell()

    def close(self) -> None:
        if not self.closed:
            self._gfile.close()
        super().close()
