"""Job: the local gRPC server (TF Serving's API) over exported versions.

    hisac-serve --config=demo [--server_export_dir=runs/demo/export]
        [--server_port=8500] [--server_model_name=hisac]
        [--server_model_config=models.config] [--server_poll_s=2]

The export directory, port and model name default to the config's
`export.export_dir`, `export.grpc_port` and `export.model_name`; serves
until interrupted (`serving.local_server`).
"""

from __future__ import annotations

from absl import flags, logging

from hisac_tf.config import Config
from pipelines import cli
from serving import local_server

flags.DEFINE_string("server_export_dir", None,
                    "Directory of <version>/ SavedModels (default: "
                    "export.export_dir).")
flags.DEFINE_integer("server_port", None,
                     "gRPC port, 0: any free (default: export.grpc_port).")
flags.DEFINE_string("server_host", "0.0.0.0", "Address to bind.")
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
    server, port = local_server.start_server(
        export_dir, port, host=FLAGS.server_host, model_name=model_name,
        model_config=FLAGS.server_model_config, poll_s=FLAGS.server_poll_s,
        keep_versions=FLAGS.server_keep_versions,
        max_message_mb=FLAGS.server_max_message_mb,
        max_workers=FLAGS.server_max_workers,
    )
    print(f"serving {model_name!r} versions {server.registry.versions()} "
          f"from {export_dir} on port {port}", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop(1.0)


def run():
    """`hisac-serve`: the local PredictionService server."""
    cli.run(main)


if __name__ == "__main__":
    run()
