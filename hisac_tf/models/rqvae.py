"""`RQVAE`, re-exported: it lives in `hisac_tf.tokenizer.rqvae`.

The tokenizer package holds the RQ-VAE beside its trainer (data ->
tokenizer -> layers -> models, one direction); `hisac_tf.models` keeps the
name so the public models API lists every model.
"""

from hisac_tf.tokenizer.rqvae import RQVAE

__all__ = ["RQVAE"]
