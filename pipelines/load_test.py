"""Job: load test a served model: concurrent gRPC clients, QPS, latency.

    hisac-loadtest --config=tiny --load_target=localhost:8500 \
        [--load_request=request.json] [--load_history=1000 \
        --load_candidates=100] --load_concurrency=8 --load_duration_s=10 \
        [--load_mode=predict|two_step|examples] \
        [--load_output=load_test.json] [--load_overload=2,4
        --load_deadline_s=1] [--load_tls_ca=ca.pem]

Without --load_request the request is a random one of the given history
length and candidate count; prints the report of
`serving.load_test.run_load_test` (and writes it to --load_output).
With --load_overload, that closed-loop QPS is the capacity (1x), and an
open-loop run at each given multiple of it follows
(`run_overload_test`): goodput, status codes, the latency of a small
call once the overload has passed.
"""

from __future__ import annotations

import json

import tensorflow as tf
from absl import flags

from hisac_tf.config import Config
from hisac_tf.data.feature_spec import FeatureSpec
from pipelines import cli
from serving import grpc_client, load_test

flags.DEFINE_string("load_target", "localhost:8500", "host:port.")
flags.DEFINE_string("load_request", None,
                    "Request file (.json or request TFRecord); default a "
                    "random request.")
flags.DEFINE_integer("load_history", 1000,
                     "History length of the random request.")
flags.DEFINE_integer("load_candidates", 100,
                     "Candidates of the random request.")
flags.DEFINE_integer("load_requests", 1, "Requests per call.")
flags.DEFINE_enum("load_mode", "predict", list(load_test.MODES),
                  "Signature path.")
flags.DEFINE_integer("load_concurrency", 8, "Client threads.")
flags.DEFINE_float("load_duration_s", 10.0, "Measured seconds.")
flags.DEFINE_float("load_warmup_s", 1.0, "Unmeasured seconds first.")
flags.DEFINE_string("load_model_name", "hisac", "Model name.")
flags.DEFINE_integer("load_version", None, "Model version to pin.")
flags.DEFINE_string("load_version_label", None, "Version label.")
flags.DEFINE_float("load_timeout_s", 10.0, "Deadline per call.")
flags.DEFINE_string("load_output", None, "JSON report path.")
flags.DEFINE_list("load_overload", [],
                  "Multiples of the measured capacity to offer open-loop "
                  "(e.g. 2,4).")
flags.DEFINE_float("load_deadline_s", 1.0, "Deadline of overload calls.")
flags.DEFINE_string("load_tls_ca", None,
                    "PEM CA of the server's certificate: use TLS.")
flags.DEFINE_string("load_tls_cert", None, "PEM client cert (mutual TLS).")
flags.DEFINE_string("load_tls_key", None, "PEM client key (mutual TLS).")
FLAGS = flags.FLAGS


def main(cfg: Config) -> dict:
    spec = FeatureSpec.from_config(cfg.data, features=cfg.all_features,
                                   statistics=False)
    if FLAGS.load_request:
        features = grpc_client.load_request(FLAGS.load_request, spec,
                                            FLAGS.load_requests)
    else:
        features = load_test.random_request(
            spec, FLAGS.load_history, FLAGS.load_candidates,
            FLAGS.load_requests)
    tls = {"tls_ca": FLAGS.load_tls_ca, "tls_cert": FLAGS.load_tls_cert,
           "tls_key": FLAGS.load_tls_key}
    report = load_test.run_load_test(
        FLAGS.load_target, features, spec=spec, mode=FLAGS.load_mode,
        concurrency=FLAGS.load_concurrency,
        duration_s=FLAGS.load_duration_s, warmup_s=FLAGS.load_warmup_s,
        model_name=FLAGS.load_model_name, version=FLAGS.load_version,
        version_label=FLAGS.load_version_label,
        timeout_s=FLAGS.load_timeout_s, client_kwargs=tls,
    )
    overload = {}
    for text in FLAGS.load_overload:
        multiple = float(text)
        overload[text] = load_test.run_overload_test(
            FLAGS.load_target, features, multiple * report["qps"],
            spec=spec, duration_s=FLAGS.load_duration_s,
            deadline_s=FLAGS.load_deadline_s,
            model_name=FLAGS.load_model_name, client_kwargs=tls)
    if overload:
        report["overload"] = overload
    text = json.dumps(report, indent=2)
    if FLAGS.load_output:
        with tf.io.gfile.GFile(FLAGS.load_output, "w") as f:
            f.write(text + "\n")
    print(text)
    return report


def run():
    """`hisac-loadtest`: concurrent gRPC clients for a fixed time."""
    cli.run(main)


if __name__ == "__main__":
    run()
