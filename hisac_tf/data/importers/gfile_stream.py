"""A `tf.io.gfile.GFile` (s3://, hdfs://, gs://) as a seekable io stream."""

from __future__ import annotations

import io

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf


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
