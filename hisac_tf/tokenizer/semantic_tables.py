"""`SemanticTables`: the tokenizer's outputs that the ranker loads frozen.

docs/design.md §2.1 and §4: item → (SID, latent z) tables plus the codebooks.

Storage, one directory (local, `gs://`, or any path `tf.io.gfile` knows,
e.g. `s3://` once tensorflow-io is imported), every file written and read
through `tf.io.gfile`:

    semantic_tables.json   manifest: format, num_items (V), num_levels (L),
                           codebook_sizes (K_l), latent_dim (Ds), dtypes
    item_ids.npy           [V] int64, strictly increasing, ids >= 1
    sids.npy               [V, L] int32, code of level l in [0, K_l)
    latents.npy            [V, Ds] float32, the frozen encoder latent z_i
    codebooks.npz          arrays level_1 .. level_L, each [K_l, Ds] float32

`.npy`/`.npz` are numpy's own formats (no pickling: loaded with
`allow_pickle=False`). Every load checks the files against the manifest
and each other; a mismatch raises ValueError naming the file and the
field.
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import dataclasses
import io
import json
import os

import numpy as np
import tensorflow as tf

from hisac_tf import json_io

FORMAT = "hisac_tf.semantic_tables/1"
MANIFEST = "semantic_tables.json"
ITEM_IDS = "item_ids.npy"
SIDS = "sids.npy"
LATENTS = "latents.npy"
CODEBOOKS = "codebooks.npz"


@dataclasses.dataclass(frozen=True)
class SemanticTables:
    """Frozen semantic tables of V items.

    Attributes:
      item_ids: [V] int64, sorted strictly ascending, ids >= 1.
      sids: [V, L] int32 codes, level l in [0, K_l).
      latents: [V, Ds] float32, the frozen encoder latent z_i.
      codebooks: L arrays [K_l, Ds] float32.
    """

    item_ids: np.ndarray
    sids: np.ndarray
    latents: np.ndarray
    codebooks: tuple[np.ndarray, ...]

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "item_ids", np.asarray(self.item_ids))
        set_(self, "sids", np.asarray(self.sids))
        set_(self, "latents", np.asarray(self.latents))
        set_(self, "codebooks",
             tuple(np.asarray(b) for b in self.codebooks))
        problem = _check(self)
        if problem:
            field, message = problem
            raise ValueError(f"SemanticTables.{field}: {message}")

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return tuple(int(b.shape[0]) for b in self.codebooks)

    @property
    def num_levels(self) -> int:
        return len(self.codebooks)

    @property
    def latent_dim(self) -> int:
        return int(self.latents.shape[1])

    @property
    def num_items(self) -> int:
        return int(self.item_ids.shape[0])


def _check(t: SemanticTables) -> tuple[str, str] | None:
    """First problem as (field, message), else None."""
    if t.item_ids.dtype != np.int64 or t.item_ids.ndim != 1:
        return "item_ids", (
            f"must be a [V] int64 array, got dtype {t.item_ids.dtype} shape "
            f"{list(t.item_ids.shape)}")
    v = t.item_ids.shape[0]
    if v < 1:
        return "item_ids", "must hold at least one item, got 0"
    if t.item_ids.min() < 1:
        return "item_ids", f"ids must be >= 1, got {int(t.item_ids.min())}"
    steps = np.diff(t.item_ids)
    if np.any(steps <= 0):
        at = int(np.flatnonzero(steps <= 0)[0])
        return "item_ids", (
            "must be strictly increasing (sorted, no duplicates); id "
            f"{int(t.item_ids[at + 1])} follows {int(t.item_ids[at])} at "
            f"row {at + 1}")
    if not t.codebooks:
        return "codebooks", "must hold at least one level, got none"
    ds = t.codebooks[0].shape[1] if t.codebooks[0].ndim == 2 else None
    for level, book in enumerate(t.codebooks, start=1):
        if book.dtype != np.float32 or book.ndim != 2 or book.shape[0] < 1:
            return f"codebooks[level_{level}]", (
                f"must be a [K, Ds] float32 array, got dtype {book.dtype} "
                f"shape {list(book.shape)}")
        if book.shape[1] != ds:
            return f"codebooks[level_{level}]", (
                f"has Ds = {book.shape[1]} but level_1 has Ds = {ds}")
    num_levels = len(t.codebooks)
    if t.sids.dtype != np.int32 or t.sids.shape != (v, num_levels):
        return "sids", (
            f"must be a [V, L] = [{v}, {num_levels}] int32 array, got dtype "
            f"{t.sids.dtype} shape {list(t.sids.shape)}")
    for level, book in enumerate(t.codebooks):
        column = t.sids[:, level]
        bad = (column < 0) | (column >= book.shape[0])
        if np.any(bad):
            row = int(np.flatnonzero(bad)[0])
            return "sids", (
                f"level {level + 1} code {int(column[row])} of item "
                f"{int(t.item_ids[row])} is outside [0, {book.shape[0]})")
    if t.latents.dtype != np.float32 or t.latents.shape != (v, ds):
        return "latents", (
            f"must be a [V, Ds] = [{v}, {ds}] float32 array, got dtype "
            f"{t.latents.dtype} shape {list(t.latents.shape)}")
    if not np.all(np.isfinite(t.latents)):
        row = int(np.flatnonzero(~np.isfinite(t.latents).all(1))[0])
        return "latents", (
            f"non-finite latent of item {int(t.item_ids[row])}")
    return None


def _write_npy(path: str, array: np.ndarray) -> None:
    with tf.io.gfile.GFile(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def save_semantic_tables(tables: SemanticTables, directory: str) -> None:
    """Writes `tables` into `directory` (created if needed); see module."""
    tf.io.gfile.makedirs(directory)
    _write_npy(os.path.join(directory, ITEM_IDS), tables.item_ids)
    _write_npy(os.path.join(directory, SIDS), tables.sids)
    _write_npy(os.path.join(directory, LATENTS), tables.latents)
    buffer = io.BytesIO()
    np.savez(buffer, **{
        f"level_{level}": book
        for level, book in enumerate(tables.codebooks, start=1)
    })
    with tf.io.gfile.GFile(os.path.join(directory, CODEBOOKS), "wb") as f:
        f.write(buffer.getvalue())
    manifest = {
        "format": FORMAT,
        "num_items": tables.num_items,
        "num_levels": tables.num_levels,
        "codebook_sizes": list(tables.codebook_sizes),
        "latent_dim": tables.latent_dim,
        "dtypes": {"item_ids": "int64", "sids": "int32",
                   "latents": "float32", "codebooks": "float32"},
    }
    # The manifest goes last: a directory with it is complete.
    json_io.write_json(os.path.join(directory, MANIFEST), manifest,
                       sort_keys=True)


def _read_bytes(path: str) -> bytes:
    if not tf.io.gfile.exists(path):
        raise ValueError(f"{path}: semantic-table file is missing")
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def _read_npy(path: str) -> np.ndarray:
    data = _read_bytes(path)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npy array ({e})") from e


def load_semantic_tables(directory: str) -> SemanticTables:
    """Reads and validates the tables written by `save_semantic_tables`.

    Raises:
      ValueError: naming the file and the field that is missing, unreadable
        or inconsistent with the manifest or the other files.
    """
    manifest_path = os.path.join(directory, MANIFEST)
    try:
        manifest = json.loads(_read_bytes(manifest_path).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{manifest_path}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict):
        raise ValueError(
            f"{manifest_path}: must hold a JSON object, got {manifest!r}")
    if manifest.get("format") != FORMAT:
        raise ValueError(
            f"{manifest_path}: field format must be {FORMAT!r}, got "
            f"{manifest.get('format')!r}")
    for key in ("num_items", "num_levels", "codebook_sizes", "latent_dim"):
        if key not in manifest:
            raise ValueError(f"{manifest_path}: field {key} is missing")
    v = manifest["num_items"]
    sizes = [int(k) for k in manifest["codebook_sizes"]]
    ds = manifest["latent_dim"]
    if len(sizes) != manifest["num_levels"]:
        raise ValueError(
            f"{manifest_path}: field codebook_sizes has {len(sizes)} levels "
            f"but num_levels is {manifest['num_levels']}")

    def expect(path, field, array, dtype, shape):
        if array.dtype != dtype or tuple(array.shape) != tuple(shape):
            raise ValueError(
                f"{path}: field {field} must be {np.dtype(dtype).name} of "
                f"shape {list(shape)} (manifest), got {array.dtype.name} of "
                f"shape {list(array.shape)}")

    path = os.path.join(directory, ITEM_IDS)
    item_ids = _read_npy(path)
    expect(path, "item_ids", item_ids, np.int64, [v])
    path = os.path.join(directory, SIDS)
    sids = _read_npy(path)
    expect(path, "sids", sids, np.int32, [v, len(sizes)])
    path = os.path.join(directory, LATENTS)
    latents = _read_npy(path)
    expect(path, "latents", latents, np.float32, [v, ds])
    path = os.path.join(directory, CODEBOOKS)
    try:
        archive = np.load(io.BytesIO(_read_bytes(path)), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npz archive ({e})") from e
    codebooks = []
    for level, k in enumerate(sizes, start=1):
        name = f"level_{level}"
        if name not in archive.files:
            raise ValueError(
                f"{path}: field {name} is missing (has {archive.files})")
        book = archive[name]
        expect(path, name, book, np.float32, [k, ds])
        codebooks.append(book)
    extra = sorted(set(archive.files) - {
        f"level_{i}" for i in range(1, len(sizes) + 1)})
    if extra:
        raise ValueError(
            f"{path}: field {extra[0]} is not in the manifest's "
            f"{len(sizes)} levels")
    try:
        return SemanticTables(item_ids, sids, latents, tuple(codebooks))
    except ValueError as e:
        field = str(e).split(":")[0].replace("SemanticTables.", "")
        files = {"item_ids": ITEM_IDS, "sids": SIDS, "latents": LATENTS}
        name = files.get(field, CODEBOOKS)
        raise ValueError(f"{os.path.join(directory, name)}: {e}") from e


def shuffled_tables(tables: SemanticTables, seed: int) -> SemanticTables:
    """The "SIDs from random codes" ablation of `tables`.

    Applies one seeded random permutation to the rows of `sids` [V, L] and
    `latents` [V, Ds] together, keeping `item_ids` [V] and the codebooks:
    item i gets the (SID, latent) pair of item perm[i]. The code-usage
    distribution, the tree shape and the latent cloud are unchanged; the
    link between an item and its content is destroyed. A uniform random
    permutation, so about one row stays in place on average.

    Args:
      tables: the trained tables.
      seed: int >= 0; the same seed gives the same permutation.

    Raises:
      ValueError: the seed is not an int >= 0.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) \
            or seed < 0:
        raise ValueError(f"shuffled_tables: seed must be an int >= 0, got "
                         f"{seed!r}")
    perm = np.random.default_rng(int(seed)).permutation(tables.num_items)
    return SemanticTables(
        item_ids=tables.item_ids,
        sids=tables.sids[perm],  # [V, L]
        latents=tables.latents[perm],  # [V, Ds]
        codebooks=tables.codebooks,
    )
