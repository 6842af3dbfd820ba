"""Issue 21 end to end: a model with user-declared features is trained,
exported, served over gRPC, and scores as in process (within 1e-5).

Declared features (tiny synthetic world with side features):
    brand    item,    string categorical (hashed): one table for the
             candidates and every history position
    tags     item,    multi-valued categorical (pooled)
    price    item,    dense (log1p_standardize, statistics from
             feature_stats.json)
    content  item,    vector (the frozen content embedding, projected)
    hour     context, int64 categorical with a vocabulary file
    device   context, string categorical (hashed)
"""

import json
import os

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from hisac_tf import config as config_lib
from hisac_tf.data import synthetic
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.export import exporter
from hisac_tf.export import signatures as sig
from pipelines import tokenize_items, train
from serving import local_server

ATOL = 1e-5


def features_config(root: str) -> config_lib.Config:
    vocab = os.path.join(root, "hours.txt")
    with open(vocab, "w") as f:  # hour 0 is the padding id
        f.write("\n".join(str(h) for h in range(1, 24)) + "\n")
    path = os.path.join(root, "features.json")
    with open(path, "w") as f:
        json.dump({
            "name": "features_e2e",
            "base": "tiny",
            "data": {"data_dir": f"{root}/data"},
            "synthetic": {"brand_weight": 0.8, "price_weight": 0.8,
                          "hour_weight": 0.8},
            "tokenizer": {"output_dir": f"{root}/tokenizer", "epochs": 5},
            "model": {"short_term_length": 4, "count_slots": 8},
            "training": {"model_dir": f"{root}/model", "train_steps": 6,
                         "checkpoint_every": 6, "log_every": 6,
                         "mode": "train"},
            "export": {"export_dir": f"{root}/export"},
            "features": [
                {"name": "brand", "location": "item", "dtype": "string",
                 "hash_buckets": 16},
                {"name": "tags", "location": "item",
                 "kind": "multi_categorical", "hash_buckets": 16,
                 "max_values": 3},
                {"name": "price", "location": "item", "kind": "dense",
                 "transform": "log1p_standardize"},
                {"name": "content", "location": "item", "kind": "vector",
                 "dim": 8, "key": "content_embedding"},
                {"name": "hour", "location": "context",
                 "vocabulary_file": vocab},
                {"name": "device", "location": "context",
                 "dtype": "string", "hash_buckets": 8},
            ],
        }, f)
    return config_lib.load_config(path)


def grpc_predict(stub, signature: str, inputs: dict) -> dict:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hisac"
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    response = stub.Predict(request, timeout=60)
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


@pytest.mark.slow
def test_declared_features_train_export_serve_over_grpc(tmp_path):
    root = str(tmp_path)
    cfg = features_config(root)
    declared = {f.name: f for f in cfg.features}
    assert len(declared) >= 6
    synthetic.generate(cfg, progress=False)
    tokenize_items.main(cfg, progress=False)
    train.main(cfg, progress=False)
    summary = exporter.export_model(cfg, progress=False)
    spec, model, _, _, _ = exporter.restore(cfg)
    assert {f.name for f in model.features} >= set(declared)
    assert set(model.feature_embeddings.tables) >= {"brand", "tags",
                                                    "hour", "device"}
    batch = exporter.first_batch(cfg, spec, 4)
    names = tuple(spec.input_signature())
    assert {"hour", "device"} <= set(names)
    assert "brand" not in names  # item features are looked up
    assert spec.input_signature()["device"].dtype == tf.string
    request = {k: batch[k].numpy() for k in names}
    probs = tf.sigmoid(model({k: batch[k] for k in names})).numpy()
    valid = (np.arange(probs.shape[1])[None, :]
             < request["cand_count"][:, None])
    want = np.where(valid, probs, 0.0)

    server, port = local_server.start_server(cfg.export.export_dir,
                                             poll_s=0)
    try:
        with grpc.insecure_channel(f"localhost:{port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(
                channel)
            ctr = grpc_predict(stub, sig.SERVING_DEFAULT, request)["ctr"]
            np.testing.assert_allclose(ctr, want, atol=ATOL)
            loaded = tf.saved_model.load(summary["path"])
            user_names = loaded.signatures[sig.ENCODE_USER]\
                .structured_input_signature[1]
            assert {"hour", "device"} <= set(user_names)
            state = grpc_predict(
                stub, sig.ENCODE_USER,
                {k: request[k] for k in user_names})
            cands = {k: request[k] for k in sig.CANDIDATE_INPUTS}
            cached = grpc_predict(stub, sig.SCORE_WITH_STATE,
                                  {**state, **cands})["ctr"]
            np.testing.assert_allclose(cached, want, atol=ATOL)
    finally:
        server.stop()
    spec_again = FeatureSpec.from_config(cfg.data,
                                         features=cfg.all_features)
    assert spec_again.input_signature().keys() == spec.input_signature(
    ).keys()
