"""The trained RQ-VAE back from the tokenizer's output directory.

`train_tokenizer` writes the model's config into `tokenizer_report.json`
(`model`) and its weights (the input standardisation included) as a TF
checkpoint under `rqvae/weights`; `load_rqvae` rebuilds the same model,
so a job that assigns SIDs elsewhere (`beam_sid_assignment`) calls the
same `RQVAE.tokenize` as the tokenizer's own assignment pass.
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import json
import os

import tensorflow as tf

from hisac_tf.data.feature_spec import DataError
from hisac_tf.tokenizer.rqvae import RQVAE

REPORT = "tokenizer_report.json"
WEIGHTS = os.path.join("rqvae", "weights")


def load_rqvae(tokenizer_dir: str) -> RQVAE:
    """The RQ-VAE that `train_tokenizer` wrote into `tokenizer_dir`.

    Raises DataError naming the file when the report or the weights are
    missing.
    """
    report_path = os.path.join(tokenizer_dir, REPORT)
    if not tf.io.gfile.exists(report_path):
        raise DataError(f"{report_path}: tokenizer report is missing (train "
                        "the tokenizer first: hisac-tokenize)")
    with tf.io.gfile.GFile(report_path) as f:
        config = json.loads(f.read()).get("model")
    if not config:
        raise DataError(f"{report_path}: no 'model' config")
    weights = os.path.join(tokenizer_dir, WEIGHTS)
    if not tf.io.gfile.glob(weights + ".index"):
        raise DataError(f"{weights}: RQ-VAE weights are missing")
    model = RQVAE(**config)
    model.load_weights(weights).expect_partial()
    return model
