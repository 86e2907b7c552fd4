"""ONNX Runtime sessions as tfprune runs them: CPU, a set thread count, denormals flushed to zero."""
from __future__ import annotations

import numpy as np

# Padding drives attention into denormal floats, which slow a padded INT8 run (docs/results/onnx.md);
# TensorFlow flushes them to zero in its threads, so ONNX Runtime is set to do the same.
FLUSH_DENORMALS = ("session.set_denormal_as_zero", "1")


def session(path: str, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry(*FLUSH_DENORMALS)
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def ort_feed(sess, features: dict) -> dict:
    """Cast features to the dtypes the ONNX model declares (int32 or int64 inputs both work)."""
    dtypes = {"tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(float)": np.float32}
    return {i.name: np.asarray(features[i.name]).astype(dtypes[i.type]) for i in sess.get_inputs()}
