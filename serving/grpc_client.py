"""gRPC client of a served hisac model (TF Serving or `local_server`).

The HiSAC calls, on `serving.transport.Transport` (channel, TLS,
deadlines, retries) and `tensorflow-serving-api`'s `PredictionService`:

    predict(features)            serving_default   -> ctr [R, C]
    encode_user(user features)   encode_user       -> state (cacheable)
    score_with_state(state, c)   score_with_state  -> ctr [R, C]
    predict_examples(serialized) predict_examples  -> ctr [B]

Every input's name, dtype and shape comes from the served model itself
(`GetModelMetadata`, read once per model and version into a
`serving.model_schema.ModelSchema`), never from a data config: the same
client scores exports with other user features, N, C or extra declared
features. Features are checked against that schema before they are sent
(a feature the model does not take, a missing input, a value of the
wrong kind or rank is a `ValueError` naming it). Without a pinned
version, a refused call (INVALID_ARGUMENT, NOT_FOUND, or a client-side
schema error) re-reads the metadata once: when a newer version serves,
the call is rebuilt for it and sent again.

Requests come from JSON files (`serving.request_loading`, light: no
TensorFlow input pipeline) or request-level TFRecord files
(`serving.tfrecord_requests`); the command line is `pipelines/score.py`
(hisac-score).
"""

from __future__ import annotations

import warnings
from typing import Callable, Mapping, Sequence

import grpc

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from serving.model_schema import (
    ENCODE_USER,
    PREDICT_EXAMPLES,
    SCORE_WITH_STATE,
    SERVING_DEFAULT,
    ModelSchema,
)
from serving.request_loading import (  # noqa: F401  (the client's API)
    request_from_dict,
    request_from_json,
    requests_from_dicts,
    split_request,
)
from serving.transport import (  # noqa: F401  (the client's API)
    MiB,
    ServingError,
    Transport,
    channel_credentials,
)

CTR = "ctr"
# Codes after which a model served without a pinned version may have
# changed under the client (a new version with other inputs).
_STALE_CODES = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)


class HisacClient(Transport):
    """Client of one served model (see the module docstring).

    Args:
      target, model_name, version, version_label, timeout_s, retries,
      max_message_mb, backoff_s, tls_ca, tls_cert, tls_key,
      tls_server_name: as `serving.transport.Transport`.
      spec: deprecated: a `FeatureSpec`, kept as `self.spec` for older
        callers; requests no longer use it (inputs come from the
        server's metadata).
      schema: a `ModelSchema` already read from this model (shared by
        the clients of a load test); read from the server when None.
    """

    def __init__(
        self,
        target: str,
        model_name: str = "hisac",
        version: int | None = None,
        version_label: str | None = None,
        timeout_s: float = 5.0,
        retries: int = 3,
        max_message_mb: int = 256,
        spec=None,
        backoff_s: float = 0.1,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_server_name: str | None = None,
        schema: ModelSchema | None = None,
    ):
        super().__init__(
            target, model_name=model_name, version=version,
            version_label=version_label, timeout_s=timeout_s,
            retries=retries, max_message_mb=max_message_mb,
            backoff_s=backoff_s, tls_ca=tls_ca, tls_cert=tls_cert,
            tls_key=tls_key, tls_server_name=tls_server_name)
        if spec is not None:
            warnings.warn(
                "HisacClient(spec=...) is deprecated: input names, dtypes "
                "and shapes come from the server's GetModelMetadata",
                DeprecationWarning, stacklevel=2)
        self.spec = spec
        self._schemas: dict = {}
        if schema is not None:
            self._schemas[self._selector()] = schema

    def __enter__(self) -> "HisacClient":
        return self

    # ----------------------------------------------------------- schema
    def _selector(self) -> tuple:
        return (self.model_name, self.version, self.version_label)

    def schema(self, refresh: bool = False) -> ModelSchema:
        """The served model's `ModelSchema` (GetModelMetadata, cached per
        model and version or label; `refresh` reads it again)."""
        key = self._selector()
        if refresh or key not in self._schemas:
            self._schemas[key] = ModelSchema.from_metadata(self.metadata())
        return self._schemas[key]

    def _call(self, signature: str,
              make_inputs: Callable[[ModelSchema], dict],
              output_filter: Callable[[ModelSchema], Sequence[str]]
              = lambda schema: ()) -> dict[str, np.ndarray]:
        """Builds and runs a call from the schema; once more from a fresh
        schema when the served version has changed since it was read."""
        schema = self.schema()
        try:
            return self.run(signature, make_inputs(schema),
                            output_filter(schema))
        except (ServingError, ValueError) as e:
            stale = isinstance(e, ValueError) or e.code in _STALE_CODES
            if self.version is not None or not stale:
                raise
            fresh = self.schema(refresh=True)
            if fresh.version == schema.version:
                raise
        return self.run(signature, make_inputs(fresh), output_filter(fresh))

    # ------------------------------------------------------- signatures
    def predict_request(self, features: Mapping[str, object]):
        """The serving_default PredictRequest of `predict(features)`."""
        schema = self.schema()
        return self.build_request(
            SERVING_DEFAULT,
            schema.arrays(features, list(schema.request_inputs)))

    def predict(self, features: Mapping[str, object]) -> np.ndarray:
        """ctr [R, C] of R padded requests (`serving_default`)."""
        return self._call(
            SERVING_DEFAULT,
            lambda s: s.arrays(features, list(s.request_inputs)))[CTR]

    def encode_user(self, features: Mapping[str, object]) -> dict:
        """The cacheable compressed state of R users (`encode_user`).

        `features` may be whole requests: candidate inputs are left out.
        Returns the state score_with_state takes (for HiSAC: keys,
        values, bias, mask, user_embedding, model_fingerprint).
        """
        def wanted(s: ModelSchema):
            return (s.state_names if SCORE_WITH_STATE in s.signatures
                    else ())

        return self._call(
            ENCODE_USER,
            lambda s: s.arrays(features, list(s.inputs(ENCODE_USER)),
                               ENCODE_USER),
            wanted)

    def score_with_state(self, state: Mapping[str, np.ndarray],
                         candidates: Mapping[str, object]) -> np.ndarray:
        """ctr [R, C] of candidates given `encode_user`'s state.

        `candidates` may be whole requests: user inputs are left out.
        """
        def inputs(s: ModelSchema) -> dict:
            out = s.arrays(candidates, list(s.candidate_names),
                           SCORE_WITH_STATE)
            for name in s.state_names:
                if name not in state:
                    raise ValueError(
                        f"state is missing {name!r}; it has "
                        f"{sorted(state)} (pass what encode_user "
                        "returned)")
                out[name] = np.asarray(state[name])
            return out

        return self._call(SCORE_WITH_STATE, inputs)[CTR]

    def predict_examples(self, serialized: Sequence[bytes]) -> np.ndarray:
        """ctr [B] of serialized per-impression tf.Examples."""
        examples = np.asarray(list(serialized), dtype=object)
        if examples.ndim != 1:
            raise ValueError(
                f"serialized must be a flat list of bytes, got shape "
                f"{examples.shape}"
            )
        return self.run(PREDICT_EXAMPLES, {"examples": examples})[CTR]

    def split_request(self, features: Mapping[str, object]
                      ) -> tuple[dict, dict]:
        """(user side, candidate side) of padded requests, by the
        served model's encode_user and score_with_state inputs."""
        return self.schema().split(features)

    def impression_examples(self, features: Mapping[str, object]
                            ) -> list[list[bytes]]:
        """`impression_examples(features, self.schema())`."""
        return impression_examples(features, self.schema())


# ------------------------------------------------------------ examples
def impression_examples(features: Mapping[str, object],
                        schema: ModelSchema) -> list[list[bytes]]:
    """Serialized per-impression tf.Examples of padded requests, the
    input of `predict_examples` (`FeatureSpec.impression_parse_spec`'s
    layout, for any schema): per request r and valid candidate j, one
    example with every rank-1 input's value, the lists of the other
    groups cut to their counts (a multi-valued input in no group without
    its trailing padding), and each candidate input's entry j under its
    singular name (cand_item_ids -> cand_item_id).

    Returns:
      one list per request [R] of its serialized examples.
    Raises:
      ValueError: an input of rank > 2 (not one tf.Example feature).
    """
    specs = schema.request_inputs
    arrays = schema.arrays(features, list(specs))
    cands = set(schema.candidate_names)
    counts = {g.count: g for g in schema.groups}
    cand_count = next((g.count for g in schema.groups
                       if set(g.members) <= cands), None)
    if cand_count is None:
        raise ValueError(
            f"the model{schema.version_note()} has no counted candidate inputs "
            f"(cand_count); inputs: {sorted(specs)}")
    out = []
    for r in range(int(arrays[cand_count].shape[0])):
        common = {}
        for name, spec in specs.items():
            if name in counts or name in cands:
                continue
            value = arrays[name][r]
            if spec.rank == 1:
                common[name] = _feature(spec, [value])
                continue
            if spec.rank != 2:
                raise ValueError(
                    f"input {name!r} ({spec.describe()}) cannot be one "
                    "tf.Example feature of predict_examples")
            group = schema.group_of(name)
            if group is not None:
                value = value[: int(arrays[group.count][r])]
            else:
                keep = np.flatnonzero(value != spec.pad_value)
                value = value[: keep[-1] + 1] if keep.size else value[:0]
            common[name] = _feature(spec, value)
        row = []
        for j in range(int(arrays[cand_count][r])):
            feats = dict(common)
            for name in schema.candidate_names:
                if name == cand_count:
                    continue
                single = name[:-1] if name.endswith("s") else name
                feats[single] = _feature(specs[name], [arrays[name][r, j]])
            example = tf.train.Example(
                features=tf.train.Features(feature=feats))
            row.append(example.SerializeToString())
        out.append(row)
    return out


def _feature(spec, values) -> tf.train.Feature:
    kind = spec.kind
    if kind == "string":
        return tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[bytes(v) for v in values]))
    if kind == "float":
        return tf.train.Feature(float_list=tf.train.FloatList(
            value=np.asarray(values, np.float32).ravel()))
    return tf.train.Feature(int64_list=tf.train.Int64List(
        value=np.asarray(values, np.int64).ravel()))
