"""Installs hisac_tf, pipelines and serving with their job entry points."""

from setuptools import find_packages, setup

# Compatible ranges, so that hisac_tf installs beside other packages. The
# exact set measured to work together is constraints.txt (`make` installs
# with it; see README "Dependencies"). TF_VERSION is that set's TensorFlow:
# the Dockerfile's images and TF Serving must match it.
TF_VERSION = "2.17.1"
TF_RANGE = ">=2.17.1,<2.18"  # tensorflow-io 0.37's kernels need TF 2.17.
INSTALL_REQUIRES = [
    f"tensorflow{TF_RANGE}",
    "tf-keras>=2.17,<2.18",
    "tensorflow-recommenders>=0.7.3,<0.8",
    "tensorflow-io>=0.37,<0.38",
    "tensorflow-io-gcs-filesystem>=0.37,<0.38",
    f"tensorflow-serving-api{TF_RANGE}",
    "numpy>=1.23.5,<2",
    "absl-py>=1.0,<3",
    "protobuf>=3.20.3,<5",
    "grpcio>=1.24.3,<2",
    # The importer reads Parquet with pyarrow; 18+ wheels need numpy 2.
    "pyarrow>=14,<18",
]
EXTRAS_REQUIRE = {
    "test": [
        "pytest>=7,<10",
        "moto[server]>=5,<6",
        "pyarrow>=15,<18",
        "ruff>=0.17,<0.18",
        "apache-beam>=2.60,<3",  # tests/test_beam_import.py
    ],
    "plots": ["matplotlib>=3.7,<4"],
    # hisac-import --engine=beam and the SID assignment on Beam
    # (docs/data_at_scale.md); 2.72 resolves with TF 2.17 and protobuf 4.
    "beam": ["apache-beam>=2.60,<3"],
    "gpu": [f"tensorflow[and-cuda]{TF_RANGE}"],
}
PRESETS = "hisac_tf.presets"  # configs/*.json, installed as package data.

setup(
    name="hisac_tf",
    version="0.1.0",
    description=(
        "HiSAC: hierarchical sparse activation compression of ultra-long "
        "behaviour sequences for CTR ranking, in TensorFlow/Keras."
    ),
    python_requires=">=3.9,<3.13",
    packages=find_packages(include=["hisac_tf*", "pipelines*", "serving*"])
    + [PRESETS],
    # The presets stay at the top-level configs/ and ship inside the package
    # as hisac_tf/presets/ (hisac_tf.config finds them either way).
    package_dir={PRESETS: "configs"},
    package_data={PRESETS: ["*.json", "experiments/*.json"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "hisac-generate=pipelines.generate_synthetic:run",
            "hisac-import=pipelines.import_logs:run",
            "hisac-assign-sids=pipelines.assign_sids:run",
            "hisac-inspect=pipelines.inspect_data:run",
            "hisac-tokenize=pipelines.tokenize_items:run",
            "hisac-train=pipelines.train:run",
            "hisac-evaluate=pipelines.evaluate:run",
            "hisac-export=pipelines.export:run",
            "hisac-experiment=pipelines.experiment:run",
            "hisac-serve=pipelines.serve:run",
            "hisac-score=pipelines.score:run",
            "hisac-loadtest=pipelines.load_test:run",
            "hisac-demo=pipelines.demo:run",
            "hisac-cluster=pipelines.cluster:run",
        ]
    },
)
