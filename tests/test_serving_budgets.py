"""Request bytes and work bounded before the graph runs (issue 22, 2-3).

`serving.request_limits.check_declared` on hand-built TensorProtos:
`predict_examples` strings that fill a declared shape count once per
element, every example's history width is checked like the `hist_*`
inputs, and the work budgets (R x C candidates scored, R x N' history
items) refuse a few hundred bytes that ask for seconds of work.
"""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

from hisac_tf import config as config_lib
from hisac_tf.data.feature_spec import FeatureSpec
from serving import model_version, request_limits
from serving.request_checks import RequestError
from serving.request_limits import RequestLimits

N, C = 20, 6  # The tiny preset's exported N and C.
SPEC = FeatureSpec(max_history=N, max_candidates=C)
INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
HISTORY = ("hist_item_ids", "hist_category_ids", "hist_behaviors",
           "hist_timestamps")


def declared(shape, dtype=tf.int64, value=1):
    """A TensorProto declaring `shape` with one value (it fills it)."""
    proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    if dtype == tf.string:
        proto.string_val.append(value)
    elif dtype == tf.int32:
        proto.int_val.append(value)
    else:
        proto.int64_val.append(value)
    return proto


def request(r, n, c):
    """serving_default inputs declaring R requests, N' and C."""
    inputs = {k: declared([r]) for k in (
        "user_id", "request_time", "gender", "age_bucket")}
    inputs.update({k: declared([r, n]) for k in HISTORY})
    inputs["hist_length"] = declared([r], tf.int32, 0)
    for k in ("cand_item_ids", "cand_category_ids"):
        inputs[k] = declared([r, c])
    inputs["cand_count"] = declared([r], tf.int32, 1)
    return inputs


def example(width, seed=0):
    """One serialized impression with a history of `width` items."""
    f = {"user_id": 1, "request_time": 10**9, "gender": 1, "age_bucket": 1,
         "hist_item_ids": np.arange(1, width + 1),
         "hist_category_ids": np.ones(width, np.int64),
         "hist_behaviors": np.ones(width, np.int64),
         "hist_timestamps": np.arange(1, width + 1),
         "cand_item_ids": [7], "cand_category_ids": [1]}
    return SPEC.impression_example(f, 0).SerializeToString()


def refused(inputs, limits=RequestLimits(), n=N, c=C):
    with pytest.raises(RequestError) as e:
        request_limits.check_declared(inputs, limits, n, c)
    return e.value


# ------------------------------------------ 2. predict_examples amplification
def test_one_string_filling_the_examples_shape_counts_per_element():
    # The request: examples [1024] with one 1 MB string. Before,
    # its bytes were counted once (about 1 MB) and it took +916 MiB.
    proto = declared([1024], tf.string, b"x" * (1 << 20))
    assert request_limits.declared_bytes(proto) == 1024 * (8 + (1 << 20))
    e = refused({"examples": proto})
    assert e.code == EXHAUSTED
    assert "'examples' declares shape [1024]" in e.message
    assert "more than max_request_bytes = 67108864" in e.message


def test_examples_history_width_is_bounded_like_hist_inputs():
    # The request: 128 examples, one with a 100,000-item history.
    examples = [example(3)] * 127 + [example(100_000)]
    proto = tf.make_tensor_proto(np.array(examples, dtype=object))
    e = refused({"examples": proto})
    assert e.code == INVALID
    assert ("history width N' = 100000, more than max_history_multiple x "
            "N = 4 x 20 = 80 (the newest N items are kept anyway)"
            in e.message)
    assert e.message.endswith("entry 127")
    # The same width limit and text as serving_default's hist_* inputs.
    e = refused(request(1, 100_000, 1))
    assert ("history width N' = 100000, more than max_history_multiple x "
            "N = 4 x 20 = 80" in e.message)
    # Within it, and a string that is no tf.Example (the graph names it).
    ok = tf.make_tensor_proto(np.array([example(80), b"\xff" * 9], object))
    assert request_limits.check_declared({"examples": ok}, RequestLimits(),
                                         N, C) > 0


def test_examples_count_is_bounded():
    e = refused({"examples": declared([2000], tf.string, example(1))})
    assert e.code == INVALID
    assert "R = 2000 requests, more than max_requests = 1024" in e.message


# --------------------------------------------------------- 3. work budgets
def test_candidates_budget_sized_from_the_exported_model():
    # The 405-byte request: R = 1024, C = 1024, within the shape
    # limits (4.4 s and +1 GiB before).
    inputs = request(1024, N, 1024)
    assert sum(p.ByteSize() for p in inputs.values()) < 1000
    e = refused(inputs)
    assert e.code == EXHAUSTED
    assert e.message.startswith(
        "work budget max_scored_candidates exceeded: R x C = 1024 x 1024 = "
        "1048576 candidates to score, more than max_scored_candidates = "
        "6144: max_requests 1024 x the exported C = 6")
    # The largest request of the trained shape passes.
    assert request_limits.check_declared(
        request(1024, N, C), RequestLimits(), N, C) > 0


def test_history_budget_names_itself():
    e = refused(request(1024, 4 * N, C))
    assert e.code == EXHAUSTED
    assert e.message.startswith(
        "work budget max_history_items exceeded: R x N' = 1024 x 80 = "
        "81920 history items, more than max_history_items = 20480: "
        "max_requests 1024 x the exported N = 20")
    e = refused({"examples": declared([1000], tf.string, example(4 * N))})
    assert "max_history_items exceeded: R x N' = 1000 x 80" in e.message


def test_budgets_from_the_export_config():
    cfg = config_lib.load_config("tiny", [
        "export.max_scored_candidates=100", "export.max_history_items=50"])
    limits = RequestLimits.from_config(cfg.export)
    assert limits.max_scored_candidates == 100
    e = refused(request(20, 2, 6), limits)
    assert "R x C = 20 x 6 = 120 candidates to score, more than " \
           "max_scored_candidates = 100; split the call" in e.message
    e = refused(request(10, 6, 1), limits)
    assert "max_history_items = 50" in e.message
    # 0 (the default): sized from the served version.
    default = RequestLimits.from_config(config_lib.load_config("tiny").export)
    assert default.max_scored_candidates is None
    with pytest.raises(config_lib.ConfigError,
                       match="export.max_history_items must be >= 0"):
        config_lib.load_config("tiny", ["export.max_history_items=-1"])
    with pytest.raises(ValueError, match="max_scored_candidates must be an "
                       "int >= 1 or None, got 0"):
        RequestLimits(max_scored_candidates=0)


def test_unknown_exported_c_leaves_that_budget_unset():
    assert request_limits.check_declared(
        request(1024, N, 1024), RequestLimits(), N, None) > 0


def test_the_served_version_reports_its_exported_c(tmp_path):
    module = tf.Module()
    module.max_history = tf.Variable(N, dtype=tf.int64, trainable=False)
    module.max_candidates = tf.Variable(C, dtype=tf.int64, trainable=False)
    module.f = tf.function(lambda x: {"y": x},
                           input_signature=[tf.TensorSpec([None], tf.int64,
                                                          "x")])
    path = str(tmp_path / "1")
    tf.saved_model.save(module, path, signatures={
        "serving_default": module.f.get_concrete_function()})
    loaded = model_version.load_version(path, 1)
    assert (loaded.max_history, loaded.max_candidates) == (N, C)

