"""`ServingModule`: the serving signatures of a trained HiSACRanker.

docs/design.md §6. Four `tf.function`s over the ranker's variables, saved as the
SavedModel's signatures (only core TensorFlow ops; raw ids are hashed or
binary-searched inside the graph):

    serving_default   R requests: user features [R], histories [R, N'],
                      hist_length [R], candidates [R, C], cand_count [R],
                      and the declared request features (user, context
                      [R] / [R, M] / [R, dim]; event hist_<name> [R, N'];
                      DT_STRING for string features; item features are
                      looked up in the graph)
                      -> ctr [R, C] float32 (0.0 past cand_count).
                      The user side (compress_user) runs once per request,
                      then the C candidates are scored against it.
    encode_user       the user/history inputs of serving_default
                      -> the cacheable state of the model's branches
                      (`HiSACRanker.state_spec()`): keys, values
                      [R, H, G, dk] float32, bias [R, G] float32, mask
                      [R, G] int32 (1 = active group) of the long-term
                      branch (+ group_categories [R, G] int64 for
                      `sim_hard`); short_keys .. short_mask of the
                      short-term branch (G = S); count_keys [R, T, M']
                      int64, count_values, count_gaps [R, T, M'] and
                      count_lengths [R, T] float32 of the match counts;
                      user_embedding [R, Du] float32 (user and context
                      features); model_fingerprint [R] int64.
    score_with_state  that state (same names, model_fingerprint included)
                      + cand_item_ids, cand_category_ids [R, C], cand_count
                      [R] -> ctr [R, C]. A state whose model_fingerprint is
                      not this model's, or with a NaN or inf anywhere in
                      its float tensors, is rejected (INVALID_ARGUMENT,
                      naming the input).
    predict_examples  examples [B] serialized per-impression tf.Example
                      (`FeatureSpec.impression_parse_spec`) -> ctr [B].

All give `sigmoid(model(features))` for the same inputs, and never a
non-finite ctr: the graph fails (INVALID_ARGUMENT) rather than return one.

Input rules (the table of `hisac_tf.export.input_contract`, shared with
the development server's request checks; checked in the graph with
`tf.debugging.Assert`, which TF Serving reports as INVALID_ARGUMENT
naming the field, the value and the request row; a wrong dtype is refused
before the graph runs, also with INVALID_ARGUMENT; a wrong rank fails the
shape checks below or the first op that needs the rank):
  * hist_* tensors share one shape [R, N'], cand_* one shape [R, C], and
    every per-request tensor has R rows;
  * 0 <= hist_length <= N' and 1 <= cand_count <= C (an empty candidate
    list is an error);
  * entries past hist_length / cand_count are padding and are ignored
    whatever they hold (TF Serving's batching pads variable-length inputs
    with the tensor's first element, not with 0);
  * within the lengths: item ids >= 1, category ids, behaviours >= 0
    (0 = unknown), timestamps sorted oldest first and <= request_time;
    user_id and user features >= 0 (0 = unknown);
  * histories longer than the exported N (`max_history`) keep their newest
    N items (the last N of the first hist_length entries), as the training
    reader does; shorter ones are used as they are;
  * item ids unknown to the tokenizer tables or to training take the OOV
    path (no semantic ID; hashed embedding row).

With batching, TF Serving concatenates several callers' requests; a
request that fails a check fails its whole batch, so clients should
validate before sending. TF Serving also returns ctr padded to the widest
C in the batch: callers keep the first C (or cand_count) entries of their
rows.
"""

from __future__ import annotations

import hashlib

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf.data.feature_spec import (
    CANDIDATE_FEATURES,
    HISTORY_FEATURES,
    IMPRESSION_CANDIDATE_FEATURES,
    FeatureSpec,
)
from hisac_tf.export import input_contract as contract
from hisac_tf.feature_config import FeatureConfig
from hisac_tf.models.hisac_ranker import STATE_KEYS, HiSACRanker

SERVING_DEFAULT = "serving_default"
ENCODE_USER = "encode_user"
SCORE_WITH_STATE = "score_with_state"
PREDICT_EXAMPLES = "predict_examples"
SIGNATURE_NAMES = (
    SERVING_DEFAULT, ENCODE_USER, SCORE_WITH_STATE, PREDICT_EXAMPLES
)
CTR = "ctr"
EXAMPLES = "examples"
FINGERPRINT = "model_fingerprint"
# encode_user outputs = score_with_state state inputs (for HiSAC and the
# candidate-independent baselines; `ServingModule.state_keys` in general).
STATE_OUTPUTS = STATE_KEYS + (FINGERPRINT,)
CANDIDATE_INPUTS = contract.CANDIDATE_INPUTS
# State invariants (score_with_state). A float state tensor's magnitude
# must stay within its bound: STATE_BOUND_FACTOR x the largest magnitude
# (at least 1) seen on real requests at export (`record_state_bounds`);
# count_gaps (hours) at least up to MAX_GAP_HOURS, the importer's latest
# timestamp (2100-01-01) in hours. Counts are bounded by their own rules.
STATE_BOUND_FACTOR = 100.0
MAX_GAP_HOURS = 4_102_444_800 / 3600.0
COUNT_LENGTHS, COUNT_VALUES = "count_lengths", "count_values"
UNBOUNDED_STATE = (COUNT_LENGTHS, COUNT_VALUES)


class _Holder:
    """Plain Python state kept out of the SavedModel's object graph.

    Holds the Keras model (only its variables are saved, as
    `ServingModule.weights`, so that saving does not run Keras' own layer
    serialization) and the metadata that needs no saving.
    """

    def __init__(self, model, spec):
        self.model = model
        self.spec = spec
        self.state_shapes: dict = {}
        self.bool_state: set = set()


def weights_fingerprint(variables, version: int) -> int:
    """A positive int64 identifying the export: sha256 of the weights.

    Args:
      variables: the model's variables, in a fixed order (their values,
        shapes and dtypes are hashed; names are not, as Keras may number
        them differently from one process to the next).
      version: the export version, mixed in so that two exports of the
        same weights still tell their states apart.
    """
    digest = hashlib.sha256(f"hisac-export-v{int(version)}".encode())
    for var in variables:
        value = np.ascontiguousarray(var.numpy())
        digest.update(f"|{value.dtype}|{value.shape}|".encode())
        if value.dtype == object:  # strings (item features): their bytes
            for item in value.ravel():
                digest.update(len(item).to_bytes(8, "big") + item)
        else:
            digest.update(value.tobytes())
    return int.from_bytes(digest.digest()[:8], "big") & (2**63 - 1)


class ServingModule(tf.Module):
    """The exported object: signatures over a trained HiSACRanker.

    Args:
      model: a built, trained `HiSACRanker` (its variables exist).
      spec: the `FeatureSpec` it was trained with (N = max_history).
      version: the export version (part of the fingerprint).
    Attributes:
      weights: the model's variables (saved with the SavedModel).
      model_fingerprint, export_version, max_history, max_candidates:
        non-trainable int64 variables, readable from the loaded
        SavedModel.
    """

    def __init__(
        self, model: HiSACRanker, spec: FeatureSpec, version: int,
        name: str = "hisac_serving",
    ):
        super().__init__(name=name)
        if not model.built or not model.variables:
            raise ValueError(
                "ServingModule needs a built model (call it once, e.g. on "
                "a batch, after restoring the checkpoint); got an unbuilt "
                f"{type(model).__name__}"
            )
        if version < 1:
            raise ValueError(f"version must be >= 1, got {version}")
        self._holder = _Holder(model, spec)
        self.weights = list(model.variables)
        self.fingerprint = weights_fingerprint(self.weights, version)
        self.model_fingerprint = tf.Variable(
            self.fingerprint, dtype=tf.int64, trainable=False,
            name="model_fingerprint")
        self.export_version = tf.Variable(
            int(version), dtype=tf.int64, trainable=False,
            name="export_version")
        self.max_history = tf.Variable(
            spec.max_history, dtype=tf.int64, trainable=False,
            name="max_history")
        # The exported C: the development server sizes its work budget
        # from it (serving/request_limits.py).
        self.max_candidates = tf.Variable(
            spec.max_candidates, dtype=tf.int64, trainable=False,
            name="max_candidates")
        self._holder.state_shapes = self._state_shapes()
        # Per float state tensor, the magnitude score_with_state accepts;
        # float32.max until `record_state_bounds` measures real requests.
        self.state_bounds = {
            name: tf.Variable(
                float(np.finfo(np.float32).max), dtype=tf.float32,
                trainable=False, name=f"{name}_bound")
            for name in self._bounded_state_keys()
        }
        full = dict(spec.input_signature())
        for f in self.request_features:  # declared features per the spec
            full.setdefault(f.batch_key, feature_input_spec(f))
        user_sig = {k: full[k] for k in self.user_input_names}
        cand_sig = {k: full[k] for k in CANDIDATE_INPUTS}
        state_sig = {
            name: tf.TensorSpec(shape, dtype, name)
            for name, (shape, dtype) in self.state_shapes.items()
        }
        self.serving_default = tf.function(
            self._serving_default, input_signature=[full])
        self.encode_user = tf.function(
            self._encode_user, input_signature=[user_sig])
        self.score_with_state = tf.function(
            self._score_with_state,
            input_signature=[{**state_sig, **cand_sig}])
        self.predict_examples = tf.function(
            self._predict_examples,
            input_signature=[tf.TensorSpec([None], tf.string, EXAMPLES)])

    @property
    def model(self) -> HiSACRanker:
        return self._holder.model

    @property
    def spec(self) -> FeatureSpec:
        return self._holder.spec

    @property
    def state_shapes(self) -> dict:
        """encode_user output name -> (shape [None, ...], dtype)."""
        return self._holder.state_shapes

    @property
    def request_features(self) -> tuple[FeatureConfig, ...]:
        """The model's declared features that requests carry (user,
        context, event; item features are looked up in the graph)."""
        return tuple(f for f in self.model.features if f.in_request)

    @property
    def user_input_names(self) -> tuple[str, ...]:
        """Inputs of encode_user (and the user part of serving_default):
        the core user and history inputs, then the declared user, context
        and event features (the context is part of the request's state)."""
        names = (
            self.spec.scalar_features + HISTORY_FEATURES + ("hist_length",)
        )
        return names + tuple(f.batch_key for f in self.request_features
                             if f.batch_key not in names)

    def signatures(self) -> dict:
        """Signature name -> concrete function, for `tf.saved_model.save`."""
        return {
            name: getattr(self, name).get_concrete_function()
            for name in SIGNATURE_NAMES
        }

    # ------------------------------------------------------------- shapes
    @property
    def state_keys(self) -> tuple[str, ...]:
        """The model's cacheable state, in order (`HiSACRanker.state_keys`:
        each branch's names, then user_embedding)."""
        return tuple(self.model.state_keys)

    def _state_shapes(self) -> dict:
        """name -> (shape [None, ...], dtype) of encode_user's outputs,
        from the model's `state_spec()`. Booleans (masks) travel as
        int32, floats as float32."""
        out = {}
        for name, spec in self.model.state_spec().items():
            dtype = spec.dtype
            if dtype == tf.bool:
                dtype = tf.int32
                self._holder.bool_state.add(name)
            elif dtype.is_floating:
                dtype = tf.float32
            out[name] = (spec.shape.as_list(), dtype)
        out[FINGERPRINT] = ([None], tf.int64)
        return out

    def _bounded_state_keys(self) -> tuple[str, ...]:
        return tuple(
            name for name in self.state_keys
            if self.state_shapes[name][1].is_floating
            and name not in UNBOUNDED_STATE)

    def record_state_bounds(self, features: dict,
                            factor: float = STATE_BOUND_FACTOR) -> dict:
        """Sets the magnitude bounds of the state from real requests.

        Args:
          features: the user inputs (or whole requests) of real requests,
            e.g. a batch of the eval split.
          factor: bound = factor x max(largest |value|, 1) per tensor
            (a bias only where its mask is set: masked agents hold
            float32.min); count_gaps at least MAX_GAP_HOURS.
        Returns:
          name -> the bound recorded (saved with the SavedModel).
        """
        if not factor >= 1.0:
            raise ValueError(f"factor must be >= 1, got {factor}")
        user = {k: tf.convert_to_tensor(features[k])
                for k in self.user_input_names}
        state = self._encode_user(user)
        out = {}
        for name in self._bounded_state_keys():
            x = tf.abs(tf.cast(state[name], tf.float32))
            mask = _mask_of(name)
            if mask in state:
                x = tf.where(tf.cast(state[mask], tf.bool), x, 0.0)
            bound = factor * max(float(tf.reduce_max(x)), 1.0)
            if name == "count_gaps":
                bound = max(bound, MAX_GAP_HOURS)
            self.state_bounds[name].assign(bound)
            out[name] = bound
        return out

    # --------------------------------------------------------- signatures
    def _serving_default(self, features: dict) -> dict:
        """Request-level scoring: user side once, C candidates after."""
        user = self._prepare_user(features)
        cands, valid = self._prepare_candidates(
            features, rows=tf.shape(features["hist_item_ids"])[0])
        state = self.model.compress_user(user, training=False)
        logits = self.model.score(state, cands, training=False)  # [R, C]
        return {CTR: _masked_ctr(logits, valid)}

    def _encode_user(self, features: dict) -> dict:
        """The cacheable compressed user state."""
        user = self._prepare_user(features)
        state = self.model.compress_user(user, training=False)
        rows = tf.shape(features["hist_item_ids"])[0]
        out = {
            name: tf.cast(state[name], self.state_shapes[name][1])
            for name in self.state_keys
        }  # keys, values [R, H, A, dk]; bias, mask [R, A]; user [R, Du]
        out[FINGERPRINT] = tf.fill([rows], self.model_fingerprint)  # [R]
        return out

    def _score_with_state(self, inputs: dict) -> dict:
        """Candidates scored against a state from `encode_user`."""
        first = self.state_keys[0]
        rows = tf.shape(inputs[first])[0]
        names = self.state_keys + (FINGERPRINT,)
        checks = [
            _same_rows(name, inputs[name], first, rows) for name in names
        ]
        with tf.control_dependencies(checks):
            fp = tf.identity(inputs[FINGERPRINT])
            checks = [
                _check_first(
                    tf.not_equal(fp, self.model_fingerprint), fp,
                    f"{FINGERPRINT} must be this model's "
                    "(state encoded by another model or export version: "
                    "call encode_user again); this model's "
                    f"{FINGERPRINT} is {self.fingerprint}",
                ),
            ] + [
                _check_first(
                    tf.logical_and(inputs[name] != 0, inputs[name] != 1),
                    inputs[name], f"{name} must hold 0 or 1")
                for name in sorted(self._holder.bool_state)
            ] + [
                _check_finite(name, inputs[name])
                for name in self.state_keys
                if self.state_shapes[name][1].is_floating
            ]
        with tf.control_dependencies(checks):
            state = {
                name: (tf.not_equal(inputs[name], 0)  # [R, A] bool
                       if name in self._holder.bool_state
                       else tf.identity(inputs[name]))
                for name in self.state_keys
            }
        with tf.control_dependencies(self._state_invariants(state)):
            state = {name: tf.identity(x) for name, x in state.items()}
            for name in self.state_keys:
                mask = _mask_of(name)
                if mask in state:  # A masked agent's bias is ignored.
                    state[name] = tf.where(
                        state[mask], state[name],
                        tf.float32.min)  # [R, A]
        cands, valid = self._prepare_candidates(inputs, rows=rows)
        logits = self.model.score(state, cands, training=False)  # [R, C]
        return {CTR: _masked_ctr(logits, valid)}

    def _state_invariants(self, state: dict) -> list:
        """Asserts that a state could come from encode_user: magnitudes
        within `state_bounds` (a bias where its mask is set), count
        lengths in [0, N], counts in [0, their type's length]."""
        checks = []
        for name in self._bounded_state_keys():
            x = tf.cast(state[name], tf.float32)
            bound = tf.identity(self.state_bounds[name])
            bad = tf.abs(x) > bound
            mask = _mask_of(name)
            if mask in state:
                bad = tf.logical_and(bad, state[mask])  # [R, A]
            checks.append(_check_flat(
                bad, x, f"{name} must lie within +-bound (recorded at "
                f"export: {STATE_BOUND_FACTOR:g} x the largest magnitude "
                "on real requests); bound =", bound))
        if COUNT_LENGTHS in state and COUNT_VALUES in state:
            n = float(self.spec.max_history)
            lengths = tf.cast(state[COUNT_LENGTHS], tf.float32)  # [R, T]
            counts = tf.cast(state[COUNT_VALUES], tf.float32)  # [R, T, M]
            checks.append(_check_flat(
                tf.logical_or(lengths < 0, lengths > n), lengths,
                f"{COUNT_LENGTHS} must lie in [0, N] (behaviours per key "
                "type); N =", int(n)))
            shape = tf.debugging.Assert(
                tf.reduce_all(tf.equal(tf.shape(counts)[:2],
                                       tf.shape(lengths))),
                [f"invalid input: {COUNT_VALUES} [R, T, M] must have the "
                 f"[R, T] of {COUNT_LENGTHS}; got", tf.shape(counts), "vs",
                 tf.shape(lengths)])
            with tf.control_dependencies([shape]):
                over = tf.logical_or(
                    counts < 0, counts > lengths[:, :, None])  # [R, T, M]
            checks.append(_check_flat(
                over, counts, f"{COUNT_VALUES} must lie in [0, "
                f"{COUNT_LENGTHS}] (a key cannot have more behaviours "
                "than its type)"))
        return checks

    def _predict_examples(self, examples: tf.Tensor) -> dict:
        """Per-impression examples [B] -> ctr [B].

        Histories keep their newest N items while still ragged (the rule
        of every signature), so one long history among B examples costs
        its own entries, never B x its width once padded.
        """
        raw = self.spec.parse_impressions(examples)
        lengths = tf.cast(
            raw["hist_item_ids"].row_lengths(), tf.int64)  # [B]
        checks = []
        for name in HISTORY_FEATURES[1:]:
            n = tf.cast(raw[name].row_lengths(), tf.int64)  # [B]
            checks.append(_check_first(
                tf.not_equal(n, lengths), n,
                f"{name} must have as many entries as hist_item_ids"))
        with tf.control_dependencies(checks):
            rows = tf.shape(examples, out_type=tf.int64)[0]
            n = self.spec.max_history
            lengths = tf.minimum(lengths, n)  # [B]
            width = tf.reduce_max(tf.concat([lengths, [0]], 0))  # <= N
            dense = {
                name: raw[name][:, -n:].to_tensor(
                    0, shape=tf.stack([rows, width]))
                for name in HISTORY_FEATURES
            }  # [B, min(N', N)] each: the newest N items
        features = {name: raw[name] for name in self.spec.scalar_features}
        features.update(dense)
        for feat in self.request_features:
            x = raw[feat.batch_key]
            if isinstance(x, tf.RaggedTensor):  # lists: padded [B, W]
                x = x.to_tensor(_padding(x.dtype))
            features[feat.batch_key] = x
        features["hist_length"] = tf.cast(lengths, tf.int32)
        for plural, single in zip(
            CANDIDATE_FEATURES, IMPRESSION_CANDIDATE_FEATURES
        ):
            features[plural] = raw[single][:, None]  # [B, 1]
        features["cand_count"] = tf.ones([rows], tf.int32)  # [B]
        ctr = self._serving_default(features)[CTR]  # [B, 1]
        return {CTR: ctr[:, 0]}  # [B]

    # ------------------------------------------------------------ inputs
    def _prepare_user(self, f: dict) -> dict:
        """Checks the user/history inputs; truncates to the newest N.

        Returns:
          the model's user inputs: scalars [R], hist_* [R, min(N', N)]
          (at least one column) zero past hist_length, hist_length [R].
        """
        hist = f["hist_item_ids"]  # [R, N']
        rows, width = tf.shape(hist)[0], tf.shape(hist)[1]
        checks = [
            _same_shape(name, f[name], "hist_item_ids", hist)
            for name in HISTORY_FEATURES[1:]
        ]
        checks += [
            _same_rows(name, f[name], "hist_item_ids", rows)
            for name in self.spec.scalar_features + ("hist_length",)
        ]
        for feat in self.request_features:
            x = f[feat.batch_key]
            if feat.location == "event":
                checks.append(_same_shape(
                    feat.batch_key, tf.shape(x)[:2], "hist_item_ids",
                    tf.shape(hist), shapes=True))
            else:
                checks.append(_same_rows(
                    feat.batch_key, x, "hist_item_ids", rows))
        with tf.control_dependencies(checks):
            length = tf.identity(f["hist_length"])  # [R] int32
        group = contract.HISTORY
        checks = [_check_first(
            tf.logical_or(length < group.min_count, length > width), length,
            group.count_rule())]
        valid = tf.sequence_mask(
            tf.clip_by_value(length, 0, width), width)  # [R, N']
        scalar_lows = contract.scalar_min_values(self.spec.scalar_features)
        for name, low in scalar_lows.items():
            checks.append(_check_first(
                f[name] < low, f[name], contract.min_value_rule(name, low)))
        checks += _min_value_checks(f, group, valid)
        ts = f[contract.TIMESTAMPS]  # [R, N']
        later, unsorted = contract.TIMESTAMP_RULES
        checks.append(_check_first(
            tf.logical_and(valid, ts > f[contract.REQUEST_TIME][:, None]),
            ts, later))
        # [R, N']: older than its predecessor. The first column is
        # valid[:, :1] & False (not a pad of one column, which would give
        # [R, 1] for an empty history, N' = 0).
        earlier = tf.concat([
            tf.zeros_like(valid[:, :1]),  # [R, min(N', 1)]
            tf.logical_and(valid[:, 1:], ts[:, 1:] < ts[:, :-1]),
        ], axis=1)  # [R, N']
        checks.append(_check_first(earlier, ts, unsorted))
        checks += _dense_feature_checks(self.request_features, f, valid)
        with tf.control_dependencies(checks):
            out = {
                name: tf.identity(f[name])
                for name in self.spec.scalar_features
            }
            n = self.spec.max_history
            for name in HISTORY_FEATURES:
                out[name] = _newest(
                    tf.identity(f[name]), length, n)  # [R, <=N]
            for feat in self.request_features:
                x = tf.identity(f[feat.batch_key])
                if feat.location == "event":
                    x = _newest(x, length, n)  # [R, <=N(, dim)]
                out[feat.batch_key] = x
            out["hist_length"] = tf.minimum(length, n)  # [R]
        return out

    def _prepare_candidates(self, f: dict, rows: tf.Tensor):
        """Checks candidates; zeroes the padding past cand_count.

        Returns:
          ({cand_item_ids, cand_category_ids [R, C], cand_count [R]},
          valid [R, C] bool).
        """
        items = f["cand_item_ids"]  # [R, C]
        checks = [
            _same_shape("cand_category_ids", f["cand_category_ids"],
                        "cand_item_ids", items),
            _same_rows("cand_item_ids", items, "the user inputs", rows),
            _same_rows("cand_count", f["cand_count"], "the user inputs",
                       rows),
        ]
        with tf.control_dependencies(checks):
            count = tf.identity(f["cand_count"])  # [R] int32
        width = tf.shape(items)[1]
        valid = tf.sequence_mask(
            tf.clip_by_value(count, 0, width), width)  # [R, C]
        group = contract.CANDIDATES
        checks = [_check_first(
            tf.logical_or(count < group.min_count, count > width), count,
            group.count_rule())]
        checks += _min_value_checks(f, group, valid)
        with tf.control_dependencies(checks):
            out = {
                name: tf.where(valid, f[name], tf.zeros_like(f[name]))
                for name in CANDIDATE_FEATURES
            }  # [R, C] each
            out["cand_count"] = tf.identity(count)
        return out, valid


# ----------------------------------------------------------------- helpers
def _masked_ctr(logits: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """logits [R, C] -> float32 probabilities, 0.0 where not valid.

    Fails (InvalidArgumentError) on a NaN score within the counts rather
    than return it (sigmoid maps +-inf to 1 and 0).
    """
    probs = tf.sigmoid(tf.cast(logits, tf.float32))  # [R, C]
    check = _check_first(
        tf.logical_and(valid, tf.math.is_nan(probs)), probs,
        "the model scored NaN (not answered; check the weights and the "
        "state)")
    with tf.control_dependencies([check]):
        return tf.where(valid, probs, tf.zeros_like(probs))


def _check_finite(name: str, x: tf.Tensor):
    """An Assert that `x` [R, ...] (float) holds no NaN or inf, naming
    `name`, the first bad value, its request and flat position."""
    shape = tf.shape(x)
    flat = tf.reshape(
        x, tf.stack([shape[0], tf.reduce_prod(shape[1:])]))  # [R, M]
    return _check_first(
        tf.logical_not(tf.math.is_finite(flat)), flat,
        f"{name} must be finite (no NaN or inf)")


def _mask_of(name: str) -> str:
    """The mask of an attention state's bias ("short_bias" ->
    "short_mask"); "" for any other tensor."""
    return name[:-len("bias")] + "mask" if name.endswith("bias") else ""


def _check_flat(bad: tf.Tensor, x: tf.Tensor, rule: str, limit=None):
    """An Assert on `x` [R, ...] naming its first bad entry: its value,
    request and flat position; `rule` is followed by `limit` (a scalar
    tensor or number, e.g. the bound), if given."""
    shape = tf.shape(x)
    cols = tf.reduce_prod(shape[1:])
    flat = tf.reshape(x, tf.stack([shape[0], cols]))  # [R, M]
    flat_bad = tf.reshape(bad, tf.stack([shape[0], cols]))  # [R, M]
    if limit is None:
        return _check_first(flat_bad, flat, rule)
    values = tf.reshape(flat, [-1])
    first = tf.argmax(tf.concat(
        [tf.cast(tf.reshape(flat_bad, [-1]), tf.int32), [1]], 0),
        output_type=tf.int32)  # [] in [0, R*M]
    value = tf.gather(tf.concat([values, tf.zeros([1], x.dtype)], 0),
                      first)
    cols = tf.maximum(tf.cast(cols, tf.int32), 1)
    return tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        [f"invalid input: {rule}", limit, "; got", value, "at request",
         first // cols, "position", first % cols],
    )


def _newest(x: tf.Tensor, length: tf.Tensor, n: int) -> tf.Tensor:
    """The newest min(length, n) entries of each row, zero-padded.

    Args:
      x: [R, W] or [R, W, K] (int64, float32 or string), oldest first,
        padded past `length`.
      length: [R] int32 valid entries per row (0 <= length <= W).
      n: the history length kept (N).
    Returns:
      [R, max(min(W, n), 1)(, K)]: row r holds x[r, s:length[r]] with
      s = max(length[r] - n, 0), then padding (0, 0.0 or b"").
    """
    width = tf.shape(x)[1]
    out_width = tf.maximum(tf.minimum(width, n), 1)
    length = tf.clip_by_value(length, 0, width)
    start = tf.maximum(length - n, 0)  # [R]
    kept = tf.minimum(length, n)  # [R]
    pads = [[0, 0], [0, 1]] + [[0, 0]] * (x.shape.rank - 2)
    padded = tf.pad(x, pads, constant_values=_padding(
        x.dtype))  # [R, W + 1(, K)]; column W is padding
    pos = tf.range(out_width)[None, :]  # [1, W']
    idx = tf.where(
        pos < kept[:, None], start[:, None] + pos, width
    )  # [R, W'] column indices; padding points at the zero column
    return tf.gather(padded, idx, batch_dims=1)  # [R, W']


def _check_first(bad: tf.Tensor, values: tf.Tensor, message: str):
    """An Assert that fails naming the first bad entry's value and row.

    Args:
      bad: bool [R] or [R, X]; values: same shape.
    """
    flat_bad = tf.reshape(bad, [-1])  # [M]
    flat = tf.reshape(values, [-1])  # [M]
    first = tf.argmax(
        tf.concat([tf.cast(flat_bad, tf.int32), [1]], 0),
        output_type=tf.int32,
    )  # [] in [0, M]; M when nothing is bad (the appended entry).
    value = tf.gather(tf.concat([flat, tf.zeros([1], flat.dtype)], 0), first)
    if bad.shape.rank == 2:
        cols = tf.maximum(tf.shape(bad)[1], 1)
        where = ["at request", first // cols, "position", first % cols]
    else:
        where = ["at request", first]
    return tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        [f"invalid input: {message}; got", value] + where,
    )


def _min_value_checks(f: dict, group: contract.PaddedGroup,
                      valid: tf.Tensor) -> list:
    """Asserts of the group's lower bounds within each row's count.

    Args:
      f: the inputs; the group's tensors are [R, W].
      valid: [R, W] bool, True within the count.
    """
    return [
        _check_first(
            tf.logical_and(valid, f[name] < low), f[name],
            contract.min_value_rule(name, low))
        for name, low in contract.PADDED_MIN_VALUES.items()
        if name in group.tensors
    ]


def _same_shape(name: str, x: tf.Tensor, ref_name: str, ref: tf.Tensor,
                shapes: bool = False):
    """An Assert that x and ref have one shape (`shapes`: x and ref are
    shapes already, e.g. the leading [R, N'] of a vector input)."""
    x_shape = x if shapes else tf.shape(x)
    ref_shape = ref if shapes else tf.shape(ref)
    return tf.debugging.Assert(
        tf.reduce_all(tf.equal(x_shape, ref_shape)),
        [f"invalid input: {name} must have the shape of {ref_name}; got",
         x_shape, "vs", ref_shape],
    )


def _padding(dtype: tf.DType):
    """The padding value of a dtype: b"" for strings, else 0."""
    return "" if dtype == tf.string else tf.zeros([], dtype)


def feature_input_spec(feature: FeatureConfig) -> tf.TensorSpec:
    """The serving input of a declared request feature (`FeatureSpec`'s
    layout): [R] (categorical, dense), [R, M] (multi_categorical),
    [R, dim] (vector); an event feature adds the history axis N' after R.
    int64 or string (DT_STRING) ids, float32 values."""
    if feature.is_categorical:
        dtype = tf.string if feature.dtype == "string" else tf.int64
    else:
        dtype = tf.float32
    shape = [None]
    if feature.location == "event":
        shape.append(None)
    if feature.kind == "multi_categorical":
        shape.append(None)
    elif feature.kind == "vector":
        shape.append(feature.dim)
    return tf.TensorSpec(shape, dtype, feature.batch_key)


def _dense_feature_checks(features, f: dict, valid: tf.Tensor) -> list:
    """Asserts that dense features without a default hold no NaN (within
    the history for event features), naming the input and the row."""
    checks = []
    for feat in features:
        if feat.is_categorical or feat.default is not None:
            continue
        x = f[feat.batch_key]  # [R(, N')(, dim)]
        bad = tf.math.is_nan(x)
        if feat.kind == "vector":
            bad = tf.reduce_any(bad, axis=-1)
            x = tf.reduce_sum(x, axis=-1)
        if feat.location == "event":
            bad = tf.logical_and(valid, bad)
        checks.append(_check_first(
            bad, x, f"{feat.batch_key} must not be NaN (the feature has no "
            "default)"))
    return checks


def _same_rows(name: str, x: tf.Tensor, ref_name: str, rows: tf.Tensor):
    return tf.debugging.Assert(
        tf.equal(tf.shape(x)[0], rows),
        [f"invalid input: {name} must have one row per request (as "
         f"{ref_name}); got", tf.shape(x)[0], "rows vs", rows],
    )
