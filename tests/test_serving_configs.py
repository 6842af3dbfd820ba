"""TF Serving config files and the Dockerfile, cross-checked (no Docker).

The Dockerfile is parsed here: image versions must equal setup.py's
TF_VERSION (and the installed TensorFlow), ports the export config, the
config files named in ENTRYPOINT must be the ones in serving/configs/ and
copied where ENTRYPOINT looks, and models.config's base path and model
name must match where the Dockerfile puts the export and what the
presets call the model.
"""

import ast
import importlib.metadata
import json
import os
import re

import pytest
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf.export import tf_serving_config as tsc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(ROOT, "Dockerfile")


# ------------------------------------------------------------- Dockerfile
def parse_dockerfile(text: str) -> list[dict]:
    """Stages: {"image", "name", "steps": [(INSTRUCTION, arguments)]}."""
    joined, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        joined.append(current + stripped)
        current = ""
    stages = []
    for line in joined:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and \
                parts[1].upper() == "AS" else None
            stages.append({"image": parts[0], "name": name, "steps": []})
        elif stages:
            stages[-1]["steps"].append((instruction, args.strip()))
    return stages


def steps(stage: dict, instruction: str) -> list[str]:
    return [a for i, a in stage["steps"] if i == instruction]


def setup_py() -> tuple[str, set]:
    """(TF_VERSION, console script names) read from setup.py's source."""
    with open(os.path.join(ROOT, "setup.py")) as f:
        source = f.read()
    version = None
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "TF_VERSION" for t in node.targets
        ):
            version = ast.literal_eval(node.value)
    scripts = set(re.findall(r'"([\w-]+)=[\w.]+:\w+"', source))
    return version, scripts


def entrypoint_flags(stage: dict) -> tuple[str, dict]:
    (entry,) = steps(stage, "ENTRYPOINT")
    argv = json.loads(entry)  # Exec form: a JSON array.
    flags = {}
    for arg in argv[1:]:
        assert arg.startswith("--") and "=" in arg, arg
        key, value = arg[2:].split("=", 1)
        flags[key] = value
    return argv[0], flags


def presets() -> list:
    return [config_lib.load_config(name)
            for name in config_lib.preset_names()]


def dockerfile_problems(text: str, config_dir: str = tsc.CONFIG_DIR):
    """Every disagreement between a Dockerfile and the project."""
    problems = []
    tf_version, scripts = setup_py()
    stages = {s["name"]: s for s in parse_dockerfile(text)}
    if set(stages) != {"train", "serve"}:
        return [f"stages are {sorted(map(str, stages))}, want train, serve"]
    train, serve = stages["train"], stages["serve"]
    for stage, image in ((train, "tensorflow/tensorflow"),
                         (serve, "tensorflow/serving")):
        want = f"{image}:{tf_version}-gpu"
        if stage["image"] != want:
            problems.append(f"{stage['name']} image {stage['image']} != "
                            f"{want}")
    for cmd in steps(train, "CMD"):
        if json.loads(cmd)[0] not in scripts:
            problems.append(f"train CMD {cmd} is no console script")
    binary, flags = entrypoint_flags(serve)
    if binary != "tensorflow_model_server":
        problems.append(f"ENTRYPOINT runs {binary}")
    grpc_ports = {cfg.export.grpc_port for cfg in presets()}
    if grpc_ports != {tsc.GRPC_PORT} or flags.get("port") != str(
        tsc.GRPC_PORT
    ):
        problems.append(f"gRPC port {flags.get('port')} vs export.grpc_port"
                        f" {sorted(grpc_ports)}")
    if flags.get("rest_api_port") != str(tsc.REST_PORT):
        problems.append(f"REST port {flags.get('rest_api_port')}")
    exposed = {int(p) for e in steps(serve, "EXPOSE") for p in e.split()}
    if exposed != {tsc.GRPC_PORT, tsc.REST_PORT}:
        problems.append(f"EXPOSE {sorted(exposed)}")
    if flags.get("enable_batching") != "true":
        problems.append("batching is not enabled")
    copies = [c.split() for c in steps(serve, "COPY")]
    copied = {src.rstrip("/"): dst.rstrip("/") for src, dst in copies}
    config_dest = copied.get("serving/configs")
    for flag, name in (("model_config_file", tsc.MODELS_CONFIG),
                       ("batching_parameters_file", tsc.BATCHING_CONFIG),
                       ("monitoring_config_file", tsc.MONITORING_CONFIG)):
        path = flags.get(flag, "")
        if os.path.basename(path) != name or not os.path.exists(
            os.path.join(config_dir, name)
        ):
            problems.append(f"--{flag}={path} is not serving/configs/{name}")
        if os.path.dirname(path) != config_dest:
            problems.append(f"--{flag}={path} is not where serving/configs "
                            f"is copied ({config_dest})")
    args = dict(a.split("=", 1) for a in steps(serve, "ARG"))
    export_dest = copied.get("${EXPORT_DIR}")
    demo = config_lib.load_config("demo")
    if args.get("EXPORT_DIR") != demo.export.export_dir:
        problems.append(f"EXPORT_DIR default {args.get('EXPORT_DIR')} is not"
                        f" the demo export_dir {demo.export.export_dir}")
    models = tsc.read(os.path.join(config_dir, tsc.MODELS_CONFIG))
    (model,) = models.model_config_list.config
    if model.base_path != export_dest:
        problems.append(f"models.config base_path {model.base_path} != "
                        f"export COPY destination {export_dest}")
    names = {cfg.export.model_name for cfg in presets()}
    if names != {model.name}:
        problems.append(f"model name {model.name} vs presets {names}")
    return problems


def test_dockerfile_agrees_with_project():
    with open(DOCKERFILE) as f:
        assert dockerfile_problems(f.read()) == []


def test_pinned_version_is_the_installed_stack():
    tf_version, _ = setup_py()
    assert tf.__version__ == tf_version
    assert importlib.metadata.version("tensorflow-serving-api") == tf_version


@pytest.mark.parametrize("old, new, problem", [
    pytest.param("serving:2.17.1-gpu", "serving:2.16.1-gpu", "serve image",
                 id="serving_version"),
    pytest.param("tensorflow:2.17.1-gpu", "tensorflow:2.17.1", "train image",
                 id="cpu_train_image"),
    pytest.param("EXPOSE 8500 8501", "EXPOSE 8500", "EXPOSE",
                 id="rest_port_not_exposed"),
    pytest.param("--rest_api_port=8501", "--rest_api_port=9000",
                 "REST port", id="rest_port"),
    pytest.param("--port=8500", "--port=9500", "gRPC port", id="grpc_port"),
    pytest.param("/config/batching.config", "/config/batch.config",
                 "batching_parameters_file", id="config_name"),
    pytest.param("COPY serving/configs/ /config/",
                 "COPY serving/configs/ /etc/tfs/", "is copied",
                 id="config_destination"),
    pytest.param("/models/hisac/", "/models/ranker/", "base_path",
                 id="model_destination"),
    pytest.param('"--enable_batching=true", ', "", "batching",
                 id="no_batching"),
])
def test_dockerfile_check_catches(old, new, problem):
    with open(DOCKERFILE) as f:
        text = f.read()
    assert old in text
    problems = dockerfile_problems(text.replace(old, new))
    assert any(problem in p for p in problems), problems


def test_parse_dockerfile_joins_continuations():
    stages = parse_dockerfile(
        "# c\nFROM a:1 AS one\nRUN x \\\n    && y\n\nFROM b:2\nEXPOSE 1\n")
    assert [(s["image"], s["name"]) for s in stages] == [
        ("a:1", "one"), ("b:2", None)]
    assert stages[0]["steps"] == [("RUN", "x && y")]


# ---------------------------------------------------------- config files
def test_committed_configs_are_what_the_module_writes():
    want = tsc.default_texts(config_lib.Config().export.model_name)
    assert sorted(want) == sorted(tsc.CONFIG_FILES)
    for name, text in want.items():
        with open(os.path.join(tsc.CONFIG_DIR, name)) as f:
            assert f.read() == text, (
                f"serving/configs/{name} is stale: regenerate with "
                "python -m pipelines.serving_config")
    assert sorted(os.listdir(tsc.CONFIG_DIR)) == sorted(tsc.CONFIG_FILES)


def test_committed_configs_parse_with_the_expected_values():
    models = tsc.read(os.path.join(tsc.CONFIG_DIR, tsc.MODELS_CONFIG))
    (model,) = models.model_config_list.config
    assert model.name == "hisac"
    assert model.base_path == "/models/hisac"
    assert model.model_platform == "tensorflow"
    assert list(model.model_version_policy.specific.versions) == [1]
    assert dict(model.version_labels) == {"stable": 1, "canary": 1}
    batching = tsc.read(os.path.join(tsc.CONFIG_DIR, tsc.BATCHING_CONFIG))
    assert batching.pad_variable_length_inputs is True
    assert batching.max_batch_size.value == tsc.MAX_BATCH_SIZE
    assert batching.batch_timeout_micros.value == tsc.BATCH_TIMEOUT_MICROS
    assert batching.num_batch_threads.value >= 1
    monitoring = tsc.read(os.path.join(tsc.CONFIG_DIR,
                                       tsc.MONITORING_CONFIG))
    assert monitoring.prometheus_config.enable is True
    assert monitoring.prometheus_config.path == \
        "/monitoring/prometheus/metrics"


def test_stable_and_canary_versions(tmp_path):
    config = tsc.model_server_config("ranker", "/m/ranker", [3, 1, 2],
                                     stable=2)
    (model,) = config.model_config_list.config
    assert list(model.model_version_policy.specific.versions) == [1, 2, 3]
    assert dict(model.version_labels) == {"stable": 2, "canary": 3}
    paths = tsc.write_texts(str(tmp_path), {
        tsc.MODELS_CONFIG: tsc.to_text(config)})
    assert tsc.read(paths[tsc.MODELS_CONFIG]) == config
    assert os.listdir(tmp_path) == [tsc.MODELS_CONFIG]  # no temp file left


@pytest.mark.parametrize("kwargs, message", [
    pytest.param(dict(versions=[]), "versions", id="no_versions"),
    pytest.param(dict(versions=[0, 1]), "versions", id="version_zero"),
    pytest.param(dict(versions=[1, 2], canary=3), "canary",
                 id="canary_not_served"),
    pytest.param(dict(versions=[2], stable=1), "stable",
                 id="stable_not_served"),
    pytest.param(dict(name=""), "name", id="empty_name"),
])
def test_bad_model_config_is_refused(kwargs, message):
    args = dict(name="hisac", base_path="/models/hisac", versions=[1])
    args.update(kwargs)
    with pytest.raises(tsc.ServingConfigError, match=message):
        tsc.model_server_config(**args)


@pytest.mark.parametrize("kwargs, message", [
    pytest.param(dict(max_batch_size=0), "max_batch_size", id="zero_batch"),
    pytest.param(dict(num_batch_threads=0), "num_batch_threads",
                 id="no_threads"),
    pytest.param(dict(batch_timeout_micros=-1), "batch_timeout_micros",
                 id="negative_timeout"),
    pytest.param(dict(max_batch_size=64, allowed_batch_sizes=[8, 32]),
                 "allowed_batch_sizes", id="sizes_not_ending_at_max"),
    pytest.param(dict(max_batch_size=64, allowed_batch_sizes=[32, 8, 64]),
                 "allowed_batch_sizes", id="sizes_not_increasing"),
])
def test_bad_batching_parameters_are_refused(kwargs, message):
    with pytest.raises(tsc.ServingConfigError, match=message):
        tsc.batching_parameters(**kwargs)


def test_batching_text_round_trip_and_field_names():
    params = tsc.batching_parameters(max_batch_size=64,
                                     allowed_batch_sizes=[16, 64])
    text = tsc.to_text(params)
    # TF Serving's field names and wrapper syntax.
    assert "max_batch_size {\n  value: 64\n}" in text
    assert "allowed_batch_sizes: 16" in text
    assert "pad_variable_length_inputs: true" in text
    assert tsc.parse(text, tsc.BatchingParameters) == params


@pytest.mark.parametrize("text, message_type", [
    pytest.param("max_batch_sizes { value: 8 }", tsc.BatchingParameters,
                 id="misspelt_batching_field"),
    pytest.param("prometheus_config { enabled: true }", tsc.MonitoringConfig,
                 id="misspelt_monitoring_field"),
    pytest.param("model_config_list { config { nam: 'x' } }",
                 tsc.ModelServerConfig, id="misspelt_model_field"),
])
def test_misspelt_fields_are_refused(text, message_type):
    with pytest.raises(tsc.ServingConfigError, match="not a valid"):
        tsc.parse(text, message_type)


def test_monitoring_path_must_be_absolute():
    with pytest.raises(tsc.ServingConfigError, match="start with"):
        tsc.monitoring_config("metrics")


def test_unknown_config_file_name_is_refused(tmp_path):
    path = tmp_path / "other.config"
    path.write_text("")
    with pytest.raises(tsc.ServingConfigError, match="other.config"):
        tsc.read(str(path))
