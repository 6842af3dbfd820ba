"""hisac_tf.tokenizer."""
