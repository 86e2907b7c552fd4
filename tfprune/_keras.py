"""The one place that picks the Keras in use, tf-keras (Keras 2, the Keras of transformers' TF models), and
that loads TensorFlow.

TensorFlow 2.16+ resolves `tf.keras` to Keras 3 unless TF_USE_LEGACY_KERAS=1 is set before it first
resolves it; a wrapper must be built on the same Keras as the layer it wraps. When tfprune is the first to
load TensorFlow, it does so with stderr's file descriptor on /dev/null: TensorFlow 2.21 prints its C++
start-up lines (oneDNN, CUDA drivers) through absl before TF_CPP_MIN_LOG_LEVEL applies. TFPRUNE_TF_LOGS=1
keeps them; a Python exception raised meanwhile still reaches the caller.
"""
import contextlib
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO and WARNING lines


@contextlib.contextmanager
def quiet_stderr():
    """stderr's file descriptor on /dev/null (C++ writes too), unless TFPRUNE_TF_LOGS=1."""
    if os.environ.get("TFPRUNE_TF_LOGS") == "1":
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_devices_quietly() -> None:
    """Let TensorFlow find its devices and start its eager context now, quietly (its "failed call to cuInit
    ... error" line on a machine without a GPU among them). For the command-line programs: afterwards
    device and thread settings can no longer change."""
    import tensorflow as tf

    with quiet_stderr():
        tf.config.list_physical_devices()
        tf.constant(0)


if "tensorflow" in sys.modules:
    import tf_keras as keras
else:
    with quiet_stderr():
        import tf_keras as keras

__all__ = ["keras", "quiet_stderr", "start_devices_quietly"]
