"""hisac_tf.export."""
