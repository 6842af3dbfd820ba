"""hisac_tf.data."""
