"""Shipping pruned models: ONNX conversion with parity and zeros checks (`onnx`), ONNX Runtime sessions
(`runtime`), ORT's BERT fusions on tf2onnx graphs (`fusion`), INT8 (`quantize`), timing in a bare process
(`timing`), and the BERT classifier pipeline over all of them (`bert_report`).

    python -m tfprune.export RUN_OR_MODEL_DIR       # the command line: tfprune.cli.export
"""
from tfprune.export.onnx import (
                                 PARITY_TOLERANCE,
                                 ParityError,
                                 checked_parity,
                                 checked_zeros,
                                 export_bert,
                                 export_keras,
                                 export_keras_checked,
                                 file_sizes,
                                 initializer_zeros,
)
from tfprune.export.quantize import quantize_int8
from tfprune.export.runtime import ort_feed, session

__all__ = ["PARITY_TOLERANCE", "ParityError", "checked_parity", "checked_zeros", "export_bert", "export_keras",
           "export_keras_checked", "file_sizes", "initializer_zeros", "ort_feed", "quantize_int8", "session"]
