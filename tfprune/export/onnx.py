"""ONNX conversion with tf2onnx, and the checks every export passes: logits parity with TensorFlow and the
zeros of every kernel still zeros in the file.

tf2onnx 1.17 has no handler for `Erfc`, which TF 2.21's exact GELU lowers to: `_erfc_handler` writes it as
1 - Erf(x), exact in float32 to ~1e-7, and every export checks parity against TensorFlow.
"""
from __future__ import annotations

import gzip

import numpy as np

from tfprune.export.runtime import session

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
PARITY_TOLERANCE = 1e-4


class ParityError(RuntimeError):
    """An exported model that does not compute what the TensorFlow model computes: a bug, never the user's."""


def _erfc_handler(ctx, node, name, args):
    """tf2onnx handler: Erfc(x) -> Sub(1, Erf(x)), in place of the node."""
    from tf2onnx import utils

    dtype = ctx.get_dtype(node.input[0])
    erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=node.name)
    one = ctx.make_const(utils.make_name("one"), np.array(1, dtype=utils.map_onnx_to_numpy_type(dtype)))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


CUSTOM_HANDLERS = {"Erfc": (_erfc_handler, [])}


def export_bert(model, path: str, opset: int = 17) -> None:
    """TFBert*ForSequenceClassification -> ONNX with int32 inputs, dynamic batch and sequence axes."""
    import tensorflow as tf
    import tf2onnx

    spec = tuple(tf.TensorSpec((None, None), tf.int32, name=name) for name in INPUT_NAMES)

    @tf.function(input_signature=spec)
    def logits(input_ids, attention_mask, token_type_ids):
        return {"logits": model({"input_ids": input_ids, "attention_mask": attention_mask,
                                 "token_type_ids": token_type_ids}, training=False).logits}

    tf2onnx.convert.from_function(logits, input_signature=spec, opset=opset, custom_op_handlers=CUSTOM_HANDLERS,
                                  output_path=path)


def export_keras(model, path: str, opset: int = 17) -> None:
    """A single-input Keras model (such as the MNIST MLP) -> ONNX with a dynamic batch axis."""
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32, name="inputs"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, custom_op_handlers=CUSTOM_HANDLERS,
                               output_path=path)


def export_keras_checked(model, path: str, sample: np.ndarray) -> dict:
    """export_keras, then parity on `sample` and the zeros of every 2-D kernel; raises when either fails."""
    export_keras(model, path)
    sess = session(path)
    got = sess.run(None, {sess.get_inputs()[0].name: sample.astype(np.float32)})[0]
    max_diff = checked_parity(model(sample).numpy(), got, path)
    zeros = checked_zeros(path, [w.numpy() for w in model.weights if len(w.shape) == 2])
    return {"max_abs_logit_diff": max_diff, "zeros": sum(z["onnx_zeros"] for z in zeros), **file_sizes(path)}


def checked_parity(expected: np.ndarray, got: np.ndarray, what: str) -> float:
    """max |expected - got|, raising when it exceeds PARITY_TOLERANCE."""
    max_diff = float(np.abs(expected - got).max())
    if max_diff > PARITY_TOLERANCE:
        raise ParityError(f"ONNX parity failed for {what}: max |logit difference| {max_diff:.2e} > {PARITY_TOLERANCE:g}")
    return max_diff


def checked_zeros(path: str, kernels: list[np.ndarray]) -> list[dict]:
    """initializer_zeros, raising when a kernel's zeros are not all in the ONNX file."""
    zeros = initializer_zeros(path, kernels)
    if any(z["onnx_zeros"] != z["tf_zeros"] for z in zeros):
        raise ParityError(f"ONNX export {path} lost zeros: a kernel's zero count differs in the ONNX initializers")
    return zeros


def initializer_zeros(path: str, kernels: list[np.ndarray]) -> list[dict]:
    """For each TF kernel, the ONNX initializer holding it (as is or transposed) and both zero counts."""
    import onnx
    from onnx import numpy_helper

    initializers = [numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer]
    rows = []
    for kernel in kernels:
        match = next((a for a in initializers if a.shape == kernel.shape and np.array_equal(a, kernel)), None)
        if match is None:
            match = next((a for a in initializers if a.shape == kernel.T.shape and np.array_equal(a, kernel.T)), None)
        rows.append({"shape": list(kernel.shape), "tf_zeros": int(kernel.size - np.count_nonzero(kernel)),
                     "onnx_zeros": None if match is None else int(match.size - np.count_nonzero(match))})
    return rows


def file_sizes(path: str) -> dict:
    with open(path, "rb") as handle:
        raw = handle.read()
    return {"bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, compresslevel=6))}
