"""Installs hisac_tf, pipelines and serving with their job entry points."""

from setuptools import find_packages, setup

# One pinned set measured to work together (see README "Dependencies").
TF_VERSION = "2.17.1"
INSTALL_REQUIRES = [
    f"tensorflow=={TF_VERSION}",
    "tf-keras==2.17.0",
    "tensorflow-recommenders==0.7.7",
    "tensorflow-io==0.37.1",
    "tensorflow-io-gcs-filesystem==0.37.1",
    f"tensorflow-serving-api=={TF_VERSION}",
    "numpy==1.26.4",
    "absl-py==2.5.1",
    "protobuf==4.25.9",
    "grpcio==1.85.3",
]
EXTRAS_REQUIRE = {
    "test": [
        "pytest==9.2.0",
        "moto[server]==5.2.5",
        "pyarrow==17.0.0",
        "ruff==0.17.6",
    ],
    "plots": ["matplotlib==3.11.2"],
    "gpu": [f"tensorflow[and-cuda]=={TF_VERSION}"],
}

setup(
    name="hisac_tf",
    version="0.1.0",
    description=(
        "HiSAC: hierarchical sparse activation compression of ultra-long "
        "behaviour sequences for CTR ranking, in TensorFlow/Keras."
    ),
    python_requires=">=3.9,<3.13",
    packages=find_packages(include=["hisac_tf*", "pipelines*", "serving*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "hisac-generate=pipelines.generate_synthetic:run",
            "hisac-import=pipelines.import_logs:run",
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
        ]
    },
)
