"""Stripping wrappers (zeros baked into plain Dense layers) and sparsity reports."""
from __future__ import annotations

import numpy as np
import tf_keras as keras


def nonzero_fraction(array: np.ndarray) -> float:
    return float(np.count_nonzero(array)) / array.size


def tensor_label(wrapper) -> str:
    """A readable name for a wrapped kernel in logs and plots: the wrapper's `label` if the injector set one
    (bert.py uses "layer_0/ffn_up"), else the kernel's variable path without the wrapper's own scope,
    "/kernel" and ":0", else the wrapper's name."""
    if getattr(wrapper, "label", None):
        return wrapper.label
    parts = [p for p in wrapper.kernel.name.split(":")[0].split("/") if p != wrapper.name]
    if parts and parts[-1] == "kernel":
        parts.pop()
    return "/".join(parts) or wrapper.name


def _replace_attribute(parent, old, new) -> bool:
    for attr, value in list(vars(parent).items()):
        if value is old:
            setattr(parent, attr, new)
            return True
    return False


def strip_model(model):
    """Replace every PrunableDense by its Dense with kernel * mask baked in, in place, and return the model.

    Works for Functional/Sequential models (rebuilt by cloning) and for subclassed models such as HF's,
    whose wrappers live as attributes of their parent layer (swapped back in place; the Dense keeps its
    original variables, so weight names and `save_pretrained` are as before wrapping).
    """
    from tfprune.layers import PrunableDense, prunable_layers

    wrappers = prunable_layers(model)
    for wrapper in wrappers:
        wrapper.bake()
    if isinstance(model, PrunableDense):
        return model.layer
    if isinstance(model, keras.Model) and (model._is_graph_network or isinstance(model, keras.Sequential)):
        def unwrap(layer):
            if isinstance(layer, PrunableDense):
                return layer.layer.__class__.from_config(layer.layer.get_config())
            return layer.__class__.from_config(layer.get_config())

        stripped = keras.models.clone_model(model, clone_function=unwrap)
        stripped.set_weights([w for w in _plain_weights(model)])
        return stripped
    for wrapper in wrappers:
        for parent in model.submodules:
            if parent is not wrapper and _replace_attribute(parent, wrapper, wrapper.layer):
                break
        else:
            raise ValueError(f"could not find the layer that owns {wrapper.name}; strip it by hand")
    return model


def _plain_weights(model):
    """The model's weights in the order a clone without wrappers expects (masks dropped)."""
    from tfprune.layers import PrunableDense

    for layer in model.layers:
        if isinstance(layer, PrunableDense):
            yield from (w.numpy() for w in layer.layer.weights)
        else:
            yield from (w.numpy() for w in layer.weights)


def sparsity_report(model, only_pruned: bool = False) -> dict:
    """Per 2-D kernel: shape, zeros, % non-zero; and totals. `only_pruned` limits it to wrapped kernels.

    Reads the kernels themselves, not the masks, so it reports what a checkpoint or export really holds.
    """
    from tfprune.layers import prunable_layers

    if only_pruned:
        kernels = [layer.kernel for layer in prunable_layers(model)]
    else:
        kernels = [w for w in model.weights if len(w.shape) == 2 and "embeddings" not in w.name]
    rows, zeros_total, size_total = [], 0, 0
    for kernel in kernels:
        values = kernel.numpy()
        zeros = int(values.size - np.count_nonzero(values))
        rows.append({"name": kernel.name.split(":")[0], "shape": list(values.shape), "size": int(values.size),
                     "zeros": zeros, "nonzero_pct": 100.0 * (values.size - zeros) / values.size})
        zeros_total += zeros
        size_total += values.size
    total = {"size": int(size_total), "zeros": int(zeros_total),
             "nonzero_pct": 100.0 * (size_total - zeros_total) / size_total if size_total else 100.0}
    return {"tensors": rows, "total": total}


def format_report(report: dict) -> str:
    """The report as a markdown table."""
    lines = ["| tensor | shape | zeros | % non-zero |", "|---|---|---:|---:|"]
    for row in report["tensors"]:
        lines.append(f"| {row['name']} | {'x'.join(map(str, row['shape']))} | {row['zeros']:,} | {row['nonzero_pct']:.2f} |")
    total = report["total"]
    lines.append(f"| **total** | {total['size']:,} weights | {total['zeros']:,} | {total['nonzero_pct']:.2f} |")
    return "\n".join(lines)
