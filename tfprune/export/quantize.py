"""Dynamic INT8 quantization of an ONNX model (weights int8, activations quantized at run time)."""
from __future__ import annotations


def quantize_int8(fp32_path: str, int8_path: str) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Shape inference knows no com.microsoft ops (the fused graph's): their outputs are float.
    quantize_dynamic(fp32_path, int8_path, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
