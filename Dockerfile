# hisac_tf: training image and TF Serving image (docs/design.md §6).
#
# Both images use the TensorFlow version pinned in setup.py (TF_VERSION):
# a SavedModel serves in the TF Serving release built against the
# TensorFlow that exported it (tests/test_serving_configs.py checks this
# file against setup.py, hisac_tf/export/ and serving/configs/).
#
# train: the jobs, on GPU.
#   docker build --target train -t hisac-train .
#   docker run --gpus all -v "$PWD/runs:/src/runs" hisac-train \
#       hisac-demo --config=demo
#   docker run --gpus all -v "$PWD/runs:/src/runs" hisac-train \
#       python -m pipelines.export --config=demo
#
# serve: stock TF Serving on GPU with the exported versions of EXPORT_DIR
# at /models/hisac and serving/configs/ at /config; gRPC on 8500, REST and
# Prometheus metrics (/monitoring/prometheus/metrics) on 8501.
#   docker build --target serve --build-arg EXPORT_DIR=runs/demo/export \
#       -t hisac-serve .
#   docker run --gpus all -p 8500:8500 -p 8501:8501 hisac-serve
# serving/configs/models.config names the versions served and the stable /
# canary labels; regenerate it for the versions you ship:
#   python -m pipelines.serving_config --serving_versions=1,2 \
#       --serving_stable=1 --serving_canary=2

FROM tensorflow/tensorflow:2.17.1-gpu AS train
WORKDIR /src
COPY setup.py pyproject.toml README.md constraints.txt ./
COPY hisac_tf/ hisac_tf/
COPY pipelines/ pipelines/
COPY serving/ serving/
COPY configs/ configs/
# A plain install: the presets ship inside the package (hisac_tf/presets).
RUN pip install --no-cache-dir -c constraints.txt . \
    && python -m pipelines.check_stack
CMD ["hisac-demo", "--config=demo"]

FROM tensorflow/serving:2.17.1-gpu AS serve
ARG EXPORT_DIR=runs/demo/export
COPY ${EXPORT_DIR}/ /models/hisac/
COPY serving/configs/ /config/
EXPOSE 8500 8501
ENTRYPOINT ["tensorflow_model_server", \
            "--port=8500", \
            "--rest_api_port=8501", \
            "--model_config_file=/config/models.config", \
            "--allow_version_labels_for_unavailable_models=true", \
            "--enable_batching=true", \
            "--batching_parameters_file=/config/batching.config", \
            "--monitoring_config_file=/config/monitoring.config"]
