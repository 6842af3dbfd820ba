"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import platform


def device_name() -> str:
    """The accelerator the run used, or the CPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)}"
    return f"CPU: {platform.processor() or platform.machine()}"
