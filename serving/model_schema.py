"""`ModelSchema`: a served model's inputs, read from its signatures.

docs/design.md §6. The client builds every request from what the server
says the model takes (`GetModelMetadata`, the signature_def map), not
from a data config, so a client written for one export works against
another (other user features, N, C, extra declared features):

    serving_default    every request input: name, dtype, shape
    encode_user        its inputs are the user side
    score_with_state   its inputs minus serving_default's are the state;
                       the rest are the candidate side

Padded groups come from the names alone: a rank-1 integer input
`<p>_length` or `<p>_count` counts the lists of every input named `<p>`
or `<p>_*` of rank >= 2 (hist_length counts hist_*, cand_count counts
cand_*). Such a group's inputs share one width per request; its count is
filled from the lists' lengths. A rank >= 2 input in no group (a
multi-valued feature) is padded on its own.

Dtypes are handled by name (int64, int32, ..., float32, ..., string,
bool); padding is 0, 0.0, b"" or False. This module needs numpy only
(no TensorFlow), so that request loading stays light.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

SERVING_DEFAULT = "serving_default"
ENCODE_USER = "encode_user"
SCORE_WITH_STATE = "score_with_state"
PREDICT_EXAMPLES = "predict_examples"
HISTORY_COUNT = "hist_length"  # The group whose newest items are kept.
CANDIDATE_PREFIX = "cand_"  # Candidate side when encode_user is absent.
_COUNT_SUFFIXES = ("_length", "_count")


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One signature input.

    Attributes:
      name: the input's name.
      dtype: TF dtype name ("int64", "int32", "float32", "string", ...).
      shape: dimensions, None where unknown; None for an unknown rank.
    """

    name: str
    dtype: str
    shape: tuple | None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def kind(self) -> str:
        """"int", "float", "string" or "bool" (ValueError otherwise)."""
        if self.dtype.startswith(("int", "uint")):
            return "int"
        if self.dtype in ("float16", "float32", "float64", "half", "float",
                          "double", "bfloat16"):
            return "float"
        if self.dtype == "string":
            return "string"
        if self.dtype == "bool":
            return "bool"
        raise ValueError(
            f"input {self.name!r} has dtype {self.dtype}, which the client "
            "cannot build (int*, uint*, float*, string, bool)")

    @property
    def numpy_dtype(self):
        kind = self.kind
        if kind == "string":
            return np.dtype(object)
        if kind == "float":
            return np.dtype({"half": "float16", "float": "float32",
                             "double": "float64",
                             "bfloat16": "float32"}.get(self.dtype,
                                                        self.dtype))
        return np.dtype(self.dtype)

    @property
    def pad_value(self):
        return {"int": 0, "float": 0.0, "string": b"",
                "bool": False}[self.kind]

    def shape_text(self) -> str:
        if self.shape is None:
            return "<any>"
        names = ["R", "X", "Y", "Z"]
        return "[" + ", ".join(
            names[i] if d is None and i < len(names) else
            ("?" if d is None else str(d))
            for i, d in enumerate(self.shape)) + "]"

    def describe(self) -> str:
        return f"{self.dtype} {self.shape_text()}"

    def convert(self, value, where: str = "feature") -> np.ndarray:
        """`value` as this input's numpy dtype, checked (not coerced).

        Integers become any int dtype in range; integers and floats become
        floats; str and bytes become strings (UTF-8). The rank must match
        when it is known.

        Raises:
          ValueError: naming the input, what it needs and what it got.
        """
        kind = self.kind
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        want = self.numpy_dtype
        label = f"{where} {self.name!r}"
        if self.rank is not None and arr.ndim != self.rank:
            raise ValueError(
                f"{label} must have rank {self.rank} (shape "
                f"{self.shape_text()}), got shape {list(arr.shape)}")
        if kind == "string":
            return _as_strings(label, arr)
        if arr.dtype == want:
            return arr
        empty = arr.size == 0
        if kind == "int":
            if not empty and (arr.dtype.kind not in "iu"):
                raise ValueError(
                    f"{label} must hold integers ({self.dtype}), got "
                    f"dtype {arr.dtype}")
            if not empty:
                info = np.iinfo(want)
                low, high = arr.min(), arr.max()
                if low < info.min or high > info.max:
                    raise ValueError(
                        f"{label} has values outside {self.dtype}: "
                        f"[{low}, {high}]")
            return arr.astype(want)
        if kind == "float":
            if not empty and arr.dtype.kind not in "iuf":
                raise ValueError(
                    f"{label} must hold numbers ({self.dtype}), got dtype "
                    f"{arr.dtype}")
            return arr.astype(want)
        if not empty and arr.dtype.kind != "b":
            raise ValueError(
                f"{label} must hold booleans, got dtype {arr.dtype}")
        return arr.astype(want)


def _as_strings(label: str, arr: np.ndarray) -> np.ndarray:
    """str / bytes values -> an object array of bytes (UTF-8)."""
    if arr.dtype.kind == "S":
        return arr.astype(object)
    if arr.dtype.kind == "U":
        return np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(
            arr) if arr.size else arr.astype(object)
    if arr.dtype.kind == "O":
        out = np.empty(arr.shape, object)
        for index, item in np.ndenumerate(arr):
            if isinstance(item, bytes):
                out[index] = item
            elif isinstance(item, str):
                out[index] = item.encode("utf-8")
            else:
                raise ValueError(
                    f"{label} must hold strings, got {item!r} "
                    f"({type(item).__name__}) at {list(index)}")
        return out
    if arr.size == 0:
        return arr.astype(object)
    raise ValueError(f"{label} must hold strings, got dtype {arr.dtype}")


@dataclasses.dataclass(frozen=True)
class ListGroup:
    """Padded inputs that share one width per request and one count.

    Attributes:
      count: the rank-1 count input ("hist_length", "cand_count").
      members: the rank >= 2 inputs it counts, in signature order.
    """

    count: str
    members: tuple[str, ...]

    @property
    def keeps_newest(self) -> bool:
        """Histories keep their newest items when cut (as training)."""
        return self.count == HISTORY_COUNT


@dataclasses.dataclass(frozen=True)
class ModelSchema:
    """The inputs of a served model's signatures.

    Attributes:
      signatures: signature name -> {input name: InputSpec}.
      outputs: signature name -> output names.
      version: the version the metadata came from (None: built offline).
      max_history: when set, request loading keeps each history's newest
        `max_history` items (the model keeps its newest N anyway).
    """

    signatures: Mapping[str, Mapping[str, InputSpec]]
    outputs: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
    version: int | None = None
    max_history: int | None = None

    # ------------------------------------------------------ construction
    @classmethod
    def from_metadata(cls, metadata: Mapping[str, object],
                      max_history: int | None = None) -> "ModelSchema":
        """From `Transport.metadata()` ({signature: {"inputs": {name:
        {"dtype", "shape"}}, "outputs": ...}, "_version": v})."""
        signatures, outputs = {}, {}
        for name, sig in metadata.items():
            if name.startswith("_"):
                continue
            signatures[name] = {
                key: InputSpec(key, info["dtype"], _shape(info["shape"]))
                for key, info in sig["inputs"].items()
            }
            outputs[name] = tuple(sig.get("outputs", {}))
        if SERVING_DEFAULT not in signatures:
            raise ValueError(
                f"the model has no {SERVING_DEFAULT!r} signature; it has "
                f"{sorted(signatures)}")
        return cls(signatures, outputs, metadata.get("_version"),
                   max_history)

    @classmethod
    def from_feature_spec(cls, spec) -> "ModelSchema":
        """Offline, from a `FeatureSpec` (its `input_signature()`):
        serving_default, encode_user (the non-candidate inputs) and the
        candidate inputs of score_with_state (no state); histories cut to
        its max_history."""
        full = {
            name: InputSpec(name, ts.dtype.name, tuple(ts.shape.as_list()))
            for name, ts in spec.input_signature().items()
        }
        user = {k: v for k, v in full.items()
                if not k.startswith(CANDIDATE_PREFIX)}
        cands = {k: v for k, v in full.items()
                 if k.startswith(CANDIDATE_PREFIX)}
        return cls({SERVING_DEFAULT: full, ENCODE_USER: user,
                    SCORE_WITH_STATE: cands}, {}, None, spec.max_history)

    def with_max_history(self, max_history: int | None) -> "ModelSchema":
        return dataclasses.replace(self, max_history=max_history)

    # ------------------------------------------------------------ inputs
    def inputs(self, signature: str) -> Mapping[str, InputSpec]:
        if signature not in self.signatures:
            raise ValueError(
                f"the model{self.version_note()} has no {signature!r} "
                f"signature; it has {sorted(self.signatures)}")
        return self.signatures[signature]

    @property
    def request_inputs(self) -> Mapping[str, InputSpec]:
        """serving_default's inputs: everything a request holds."""
        return self.inputs(SERVING_DEFAULT)

    @property
    def candidate_names(self) -> tuple[str, ...]:
        """Request inputs of the candidate side (score_with_state's)."""
        full = self.request_inputs
        if SCORE_WITH_STATE in self.signatures:
            return tuple(k for k in full
                         if k in self.signatures[SCORE_WITH_STATE])
        return tuple(k for k in full if k.startswith(CANDIDATE_PREFIX))

    @property
    def user_names(self) -> tuple[str, ...]:
        """Request inputs of the user side (encode_user's)."""
        if ENCODE_USER in self.signatures:
            return tuple(self.signatures[ENCODE_USER])
        cands = set(self.candidate_names)
        return tuple(k for k in self.request_inputs if k not in cands)

    @property
    def state_names(self) -> tuple[str, ...]:
        """score_with_state's state inputs (encode_user's outputs)."""
        full = self.request_inputs
        return tuple(sorted(k for k in self.inputs(SCORE_WITH_STATE)
                            if k not in full))

    @property
    def groups(self) -> tuple[ListGroup, ...]:
        """The padded groups of the request inputs (module docstring)."""
        full = self.request_inputs
        out = []
        for name, spec in full.items():
            if spec.rank != 1 or spec.kind != "int":
                continue
            for suffix in _COUNT_SUFFIXES:
                if not name.endswith(suffix):
                    continue
                prefix = name[: -len(suffix)]
                members = tuple(
                    k for k, s in full.items()
                    if (k == prefix or k.startswith(prefix + "_"))
                    and k != name and (s.rank or 0) >= 2)
                if members:
                    out.append(ListGroup(name, members))
        return tuple(out)

    def group_of(self, name: str) -> ListGroup | None:
        for group in self.groups:
            if name in group.members:
                return group
        return None

    @property
    def count_names(self) -> tuple[str, ...]:
        return tuple(g.count for g in self.groups)

    def split(self, features: Mapping[str, object]) -> tuple[dict, dict]:
        """(user side, candidate side) of request features."""
        cands = set(self.candidate_names)
        user = {k: v for k, v in features.items() if k not in cands}
        return user, {k: v for k, v in features.items() if k in cands}

    def check_known(self, names, where: str = "features") -> None:
        """ValueError naming any of `names` that is not a request input."""
        unknown = sorted(set(names) - set(self.request_inputs))
        if unknown:
            raise ValueError(
                f"{where} hold {unknown}, which the model"
                f"{self.version_note()} does not take; its inputs are "
                f"{sorted(self.request_inputs)}")

    def arrays(self, features: Mapping[str, object], names,
               signature: str = SERVING_DEFAULT) -> dict[str, np.ndarray]:
        """Padded `features` of `names` as their inputs' dtypes, checked.

        Raises:
          ValueError: a feature the model does not take, one of `names`
            missing, or a value of the wrong kind or rank (naming it).
        """
        self.check_known(features)
        specs = self.request_inputs
        out = {}
        for name in names:
            if name not in features:
                raise ValueError(
                    f"features are missing {name!r} "
                    f"({specs[name].describe()}); signature {signature!r}"
                    f"{self.version_note()} needs {list(names)}")
            out[name] = specs[name].convert(features[name])
        return out

    def describe(self) -> dict:
        """{input: "dtype [shape]"} of the request inputs."""
        return {k: v.describe() for k, v in self.request_inputs.items()}

    def version_note(self) -> str:
        """" (version v)" for messages; "" when built offline."""
        return "" if self.version is None else f" (version {self.version})"


def _shape(dims) -> tuple | None:
    if dims is None:
        return None
    return tuple(None if d is None or d < 0 else int(d) for d in dims)
