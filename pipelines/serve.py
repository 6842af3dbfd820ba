"""Job: the local gRPC server (TF Serving's API) over exported versions.

    hisac-serve --config=demo [--server_export_dir=runs/demo/export]
        [--server_port=8500] [--server_model_name=hisac]
        [--server_model_config=models.config] [--server_poll_s=2]
        [--server_host=127.0.0.1] [--server_tls_cert=server.pem
        --server_tls_key=server.key [--server_tls_client_ca=ca.pem]]
        [--wait_for_export] [--server_reuse_port]

The export directory, port and model name default to the config's
`export.export_dir`, `export.grpc_port` and `export.model_name`; the
request limits and the admission limit to `export.max_*`. Binds loopback
unless --server_host says otherwise; the server has no authentication, so
beyond loopback use TLS (mutual TLS with --server_tls_client_ca). Serves
until interrupted (`serving.local_server`). Refused at start, exit code
2 or 1 with the reason: a port outside 1..65535 or already in use (unless
--server_reuse_port), an export directory that does not exist (unless
--wait_for_export), TLS files that are not PEM (the file named).
"""

from __future__ import annotations

import sys

from absl import flags, logging

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.config import Config
from pipelines import cli
from serving import local_server
from serving.request_limits import RequestLimits

flags.DEFINE_string("server_export_dir", None,
                    "Directory of <version>/ SavedModels (default: "
                    "export.export_dir).")
flags.DEFINE_integer("server_port", None,
                     "gRPC port, 1..65535 (default: export.grpc_port).",
                     lower_bound=1, upper_bound=65535)
flags.DEFINE_bool("server_reuse_port", False,
                  "Share the port with other processes (SO_REUSEPORT); "
                  "off: a port in use is refused.")
flags.DEFINE_bool("wait_for_export", False,
                  "Start even when the export directory does not exist "
                  "yet, and serve its versions once they appear.")
flags.DEFINE_string("server_host", "127.0.0.1",
                    "Address to bind (0.0.0.0: every interface; the server "
                    "has no authentication, so use TLS there).")
flags.DEFINE_string("server_tls_cert", None,
                    "PEM certificate chain: serve TLS (with --server_tls_key).")
flags.DEFINE_string("server_tls_key", None, "PEM private key of the cert.")
flags.DEFINE_string("server_tls_client_ca", None,
                    "PEM CA that client certificates must be signed by "
                    "(mutual TLS).")
flags.DEFINE_integer("server_max_concurrent_rpcs", None,
                     "Calls admitted at once; more get RESOURCE_EXHAUSTED "
                     "(default: export.max_concurrent_rpcs).")
flags.DEFINE_string("server_model_name", None,
                    "Served model name (default: export.model_name).")
flags.DEFINE_string("server_model_config", None,
                    "ModelServerConfig text proto (version labels).")
flags.DEFINE_float("server_poll_s", 2.0,
                   "Seconds between scans for new versions.")
flags.DEFINE_integer("server_keep_versions", 2,
                     "Newest versions kept loaded.")
flags.DEFINE_integer("server_max_message_mb", 256,
                     "Largest gRPC message, MiB.")
flags.DEFINE_integer("server_max_workers", 8, "Request threads.")
FLAGS = flags.FLAGS


def main(cfg: Config) -> None:
    logging.set_verbosity(logging.INFO)
    export_dir = FLAGS.server_export_dir or cfg.export.export_dir
    model_name = FLAGS.server_model_name or cfg.export.model_name
    port = (cfg.export.grpc_port if FLAGS.server_port is None
            else FLAGS.server_port)
    if not tf.io.gfile.isdir(export_dir):
        where = ("--server_export_dir" if FLAGS.server_export_dir
                 else "export.export_dir")
        if not FLAGS.wait_for_export:
            print(f"hisac-serve: {where}: no export directory "
                  f"{export_dir!r}; export a model first, or pass "
                  "--wait_for_export to serve it once it appears",
                  file=sys.stderr, flush=True)
            raise SystemExit(2)
        logging.warning("%s %s does not exist yet; waiting for an export "
                        "(--wait_for_export)", where, export_dir)
    try:
        server, port = _start(cfg, export_dir, port, model_name)
    except (OSError, ValueError) as e:  # Port in use, bad TLS files.
        print(f"hisac-serve: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    print(f"serving {model_name!r} versions {server.registry.versions()} "
          f"from {export_dir} on {FLAGS.server_host}:{port} "
          f"({'TLS' if FLAGS.server_tls_cert else 'plaintext'})",
          flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop(1.0)


def _start(cfg: Config, export_dir: str, port: int, model_name: str):
    return local_server.start_server(
        export_dir, port, host=FLAGS.server_host, model_name=model_name,
        model_config=FLAGS.server_model_config, poll_s=FLAGS.server_poll_s,
        keep_versions=FLAGS.server_keep_versions,
        max_message_mb=FLAGS.server_max_message_mb,
        max_workers=FLAGS.server_max_workers,
        limits=RequestLimits.from_config(cfg.export),
        max_concurrent_rpcs=(FLAGS.server_max_concurrent_rpcs
                             or cfg.export.max_concurrent_rpcs),
        tls_cert=FLAGS.server_tls_cert, tls_key=FLAGS.server_tls_key,
        tls_client_ca=FLAGS.server_tls_client_ca,
        reuse_port=FLAGS.server_reuse_port,
    )


def run():
    """`hisac-serve`: the local PredictionService server."""
    cli.run(main)


if __name__ == "__main__":
    run()
