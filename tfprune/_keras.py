"""The one place that picks the Keras in use: tf-keras (Keras 2), the Keras of transformers' TF models.

TensorFlow 2.16+ resolves `tf.keras` to Keras 3 unless TF_USE_LEGACY_KERAS=1 is set before it first
resolves it (the package's __init__ sets it); a wrapper must be built on the same Keras as the layer it wraps.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO and WARNING lines

import tf_keras as keras  # noqa: E402

__all__ = ["keras"]
