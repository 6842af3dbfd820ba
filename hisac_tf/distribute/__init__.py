"""Distribution: the `tf.distribute` strategy of `cluster.strategy` from
TF_CONFIG, the task roles of a cluster, and the local loopback cluster."""
