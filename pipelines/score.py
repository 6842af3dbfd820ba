"""Job: score requests over gRPC (TF Serving or the local server).

    hisac-score --config=tiny --client_target=localhost:8500 \
        --client_request=request.json [--client_two_step |
        --client_examples] [--client_version=2 |
        --client_version_label=canary] [--client_timeout_s=5]
        [--client_tls_ca=ca.pem [--client_tls_cert=c.pem
        --client_tls_key=c.key]]

The request is a JSON file (one request object or a list of them;
`serving.request_loading`), whose fields are the served model's inputs
as its metadata names them (GetModelMetadata: names, dtypes, shapes,
whatever the --config), or the first --client_max_requests requests of a
request-level TFRecord file (laid out as the --config's data section
says). --client_max_history, when > 0, keeps each JSON history's newest
items (the model keeps its newest N itself). Prints one JSON line with
the scores of each request's candidates.
"""

from __future__ import annotations

import json
import sys
import time

from absl import flags

from hisac_tf.config import Config
from hisac_tf.data.feature_spec import FeatureSpec
from pipelines import cli
from serving import grpc_client
from serving.request_loading import read_json_request
from serving.tfrecord_requests import load_request

flags.DEFINE_string("client_target", "localhost:8500", "host:port.")
flags.DEFINE_string("client_request", None,
                    "Request file: .json (a request or a list of them) or "
                    "a request-level TFRecord (.tfrecord[.gz]).")
flags.DEFINE_integer("client_max_requests", 1,
                     "Requests read from a TFRecord file.")
flags.DEFINE_integer("client_max_history", 0,
                     "Keep the newest this many history items of JSON "
                     "requests (0: send them all).")
flags.DEFINE_bool("client_two_step", False,
                  "Score through encode_user + score_with_state.")
flags.DEFINE_bool("client_examples", False,
                  "Score through predict_examples (one per candidate).")
flags.DEFINE_bool("client_metadata", False,
                  "Print the model's metadata and status instead.")
flags.DEFINE_string("client_model_name", "hisac", "Model name.")
flags.DEFINE_integer("client_version", None, "Model version to pin.")
flags.DEFINE_string("client_version_label", None,
                    "Version label (stable, canary).")
flags.DEFINE_float("client_timeout_s", 5.0, "Deadline per attempt.")
flags.DEFINE_integer("client_retries", 3, "Retries on UNAVAILABLE.")
flags.DEFINE_integer("client_max_message_mb", 256, "Largest message, MiB.")
flags.DEFINE_string("client_tls_ca", None,
                    "PEM CA of the server's certificate: use TLS.")
flags.DEFINE_string("client_tls_cert", None, "PEM client cert (mutual TLS).")
flags.DEFINE_string("client_tls_key", None, "PEM client key (mutual TLS).")
flags.DEFINE_string("client_tls_server_name", None,
                    "Name the server's certificate holds, if not the "
                    "target's host.")
flags.DEFINE_float("client_wait_s", 0.0,
                   "Wait up to this long for the server and its model to "
                   "be ready first (0: do not wait).")
FLAGS = flags.FLAGS


def main(cfg: Config) -> dict:
    if FLAGS.client_request.endswith(".json"):
        # A bad file is named before any connection is tried.
        try:
            read_json_request(FLAGS.client_request)
        except (OSError, ValueError) as e:
            print(f"hisac-score: --client_request {FLAGS.client_request}: "
                  f"not valid JSON: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
    client = grpc_client.HisacClient(
        FLAGS.client_target, model_name=FLAGS.client_model_name,
        version=FLAGS.client_version,
        version_label=FLAGS.client_version_label,
        timeout_s=FLAGS.client_timeout_s, retries=FLAGS.client_retries,
        max_message_mb=FLAGS.client_max_message_mb,
        tls_ca=FLAGS.client_tls_ca, tls_cert=FLAGS.client_tls_cert,
        tls_key=FLAGS.client_tls_key,
        tls_server_name=FLAGS.client_tls_server_name,
    )
    with client:
        if FLAGS.client_wait_s > 0:
            client.wait_until_ready(FLAGS.client_wait_s)
        if FLAGS.client_metadata:
            out = {"metadata": client.metadata(), "status": client.status()}
            print(json.dumps(out, indent=2))
            return out
        if not FLAGS.client_request:
            raise SystemExit("--client_request is required")
        schema = client.schema().with_max_history(
            FLAGS.client_max_history or None)
        features = load_request(
            FLAGS.client_request, schema, FLAGS.client_max_requests,
            spec=FeatureSpec.from_config(
                cfg.data, features=cfg.all_features, statistics=False))
        counts = features["cand_count"]
        start = time.perf_counter()
        if FLAGS.client_examples:
            ctr = [client.predict_examples(ex).tolist()
                   for ex in client.impression_examples(features)]
            mode = "predict_examples"
        else:
            if FLAGS.client_two_step:
                user, cands = client.split_request(features)
                ctr = client.score_with_state(client.encode_user(user),
                                              cands)
                mode = "encode_user+score_with_state"
            else:
                ctr = client.predict(features)
                mode = "serving_default"
            ctr = [row[:n].tolist() for row, n in zip(ctr, counts)]
        latency_ms = round(1000 * (time.perf_counter() - start), 3)
        out = {"mode": mode, "version": client.schema().version}
        for name in ("user_id", "cand_item_ids"):  # When the model has.
            if name in features:
                value = features[name]
                out[name] = (value.tolist() if value.ndim == 1 else
                             [row[:n].tolist()
                              for row, n in zip(value, counts)])
        out["ctr"] = ctr
        out["latency_ms"] = latency_ms
    print(json.dumps(out))
    return out


def run():
    """`hisac-score`: score requests over gRPC."""
    cli.run(main)


if __name__ == "__main__":
    run()
